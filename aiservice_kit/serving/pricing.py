"""Prices per 1,000 instances per model, the server config file, and bills.

The config file (TOML or JSON) holds the price list, the plans and,
optionally, per-model serving settings:

```toml
currency = "USD"

[prices]            # per 1,000 instances of a successful call
mnist = 0.40
"*" = 0.10          # any other model

[plans.free]
requests_per_second = 5
burst = 10
monthly_instances = 10000

[models.mnist]      # optional: `serve --model` can give the path instead
base_path = "exports/mnist"
max_batch_size = 64
max_wait_ms = 0
keep_versions = 2
version_labels = { stable = 1, canary = 2 }   # /labels/stable:predict
```
"""

import dataclasses
import decimal
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from aiservice_kit.serving.batching import BatchingConfig
from aiservice_kit.serving.metering import UsageSummary
from aiservice_kit.serving.ratelimit import DEFAULT_PLANS
from aiservice_kit.serving.ratelimit import Plan
from aiservice_kit.serving.registry import ModelConfig

_CENTS = decimal.Decimal("0.000001")


def _price(model: str, value: Any) -> decimal.Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(
            f"The price of model {model!r} must be a number >= 0 (per 1,000 "
            f"instances). Received: {value!r}"
        )
    try:
        price = decimal.Decimal(str(value))
    except decimal.InvalidOperation:
        raise ValueError(
            f"The price of model {model!r} must be a number >= 0 (per 1,000 "
            f"instances). Received: {value!r}"
        ) from None
    if not price.is_finite() or price < 0:
        raise ValueError(
            f"The price of model {model!r} must be a number >= 0 (per 1,000 "
            f"instances). Received: {value!r}"
        )
    return price


@dataclasses.dataclass(frozen=True)
class BillLine:
    """The charge for one key's use of one model.

    Attributes:
        key_id: str or None. The key (None: anonymous).
        key_name: str or None. Its owner.
        model: str. Model name.
        requests: int. Calls recorded.
        errors: int. Calls that did not return 200 (not billed).
        instances: int. Billed instances (successful calls).
        price_per_1000: Decimal. Price per 1,000 instances.
        amount: Decimal. `instances / 1000 * price_per_1000`.
    """

    key_id: str | None
    key_name: str | None
    model: str
    requests: int
    errors: int
    instances: int
    price_per_1000: decimal.Decimal
    amount: decimal.Decimal

    def to_json(self) -> dict[str, Any]:
        """JSON-ready (money as strings, to keep every digit)."""
        data = dataclasses.asdict(self)
        data["price_per_1000"] = str(self.price_per_1000)
        data["amount"] = str(self.amount)
        return data


@dataclasses.dataclass(frozen=True)
class Bill:
    """Charges over a period.

    Attributes:
        currency: str. E.g. "USD".
        lines: tuple of BillLine. One per key and model.
        total: Decimal. The sum of the line amounts.
    """

    currency: str
    lines: tuple[BillLine, ...]
    total: decimal.Decimal

    def to_json(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "currency": self.currency,
            "lines": [line.to_json() for line in self.lines],
            "total": str(self.total),
        }


class PriceList:
    """Prices per 1,000 instances per model.

    Args:
        prices: dict of model -> price per 1,000 instances; the key `"*"`
            prices every other model (otherwise they are free).
        currency: str. Shown on bills.

    Example:
    ```python
    prices = PriceList({"mnist": 0.40, "*": 0.10}, currency="USD")
    prices.charge("mnist", 2500)  # Decimal("1.000000")
    ```
    """

    def __init__(
        self, prices: dict[str, Any] | None = None, currency: str = "USD"
    ) -> None:
        if prices is not None and not isinstance(prices, dict):
            raise TypeError(
                "`prices` must be a dict of model name -> price per 1,000 "
                f"instances. Received: prices={prices!r}"
            )
        self.prices = {
            str(model): _price(model, value)
            for model, value in (prices or {}).items()
        }
        self.currency = str(currency)

    def price_per_1000(self, model: str) -> decimal.Decimal:
        """The price of 1,000 instances of `model`."""
        if model in self.prices:
            return self.prices[model]
        return self.prices.get("*", decimal.Decimal(0))

    def charge(self, model: str, instances: int) -> decimal.Decimal:
        """What `instances` instances of `model` cost."""
        amount = self.price_per_1000(model) * instances / 1000
        return amount.quantize(_CENTS, rounding=decimal.ROUND_HALF_UP)

    def bill(self, usage: Iterable[UsageSummary]) -> Bill:
        """Turns usage summaries into a bill."""
        lines = tuple(
            BillLine(
                row.key_id,
                row.key_name,
                row.model,
                row.requests,
                row.errors,
                row.instances,
                self.price_per_1000(row.model),
                self.charge(row.model, row.instances),
            )
            for row in usage
        )
        total = sum((line.amount for line in lines), decimal.Decimal(0))
        return Bill(self.currency, lines, total.quantize(_CENTS))


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    """Everything the config file sets.

    Attributes:
        prices: PriceList. Prices per model.
        plans: dict of name -> Plan.
        models: dict of name -> ModelConfig (may be empty).
    """

    prices: PriceList = dataclasses.field(default_factory=PriceList)
    plans: dict[str, Plan] = dataclasses.field(
        default_factory=lambda: dict(DEFAULT_PLANS)
    )
    models: dict[str, ModelConfig] = dataclasses.field(default_factory=dict)


_PLAN_FIELDS = ("requests_per_second", "burst", "monthly_instances")
_MODEL_FIELDS = (
    "base_path",
    "max_batch_size",
    "max_wait_ms",
    "keep_versions",
    "version_labels",
)


def _table(data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValueError(f"`{where}` in the config must be a table/object.")
    return data


def parse_config(
    data: dict[str, Any], root: Path | None = None
) -> ServerConfig:
    """Builds a ServerConfig from the parsed config file.

    Args:
        data: dict. The parsed TOML/JSON.
        root: Path or None. Relative model paths are resolved from here.

    Raises:
        ValueError: naming the entry that is wrong.
    """
    data = _table(data, "config")
    unknown = set(data) - {"currency", "prices", "plans", "models"}
    if unknown:
        raise ValueError(
            "The config may only have the keys currency, prices, plans, "
            f"models. Received unknown keys: {sorted(unknown)}"
        )
    prices = PriceList(
        _table(data.get("prices", {}), "prices"),
        currency=data.get("currency", "USD"),
    )
    plans = dict(DEFAULT_PLANS)
    if "plans" in data:
        plans = {}
        for name, fields in _table(data["plans"], "plans").items():
            fields = _table(fields, f"plans.{name}")
            extra = set(fields) - set(_PLAN_FIELDS)
            if extra:
                raise ValueError(
                    f"`plans.{name}` accepts {', '.join(_PLAN_FIELDS)}. "
                    f"Received unknown keys: {sorted(extra)}"
                )
            plans[name] = Plan(name, **fields)
    models = {}
    for name, fields in _table(data.get("models", {}), "models").items():
        fields = _table(fields, f"models.{name}")
        extra = set(fields) - set(_MODEL_FIELDS)
        if extra or "base_path" not in fields:
            raise ValueError(
                f"`models.{name}` needs base_path and accepts "
                f"{', '.join(_MODEL_FIELDS)}. Received: {sorted(fields)}"
            )
        base_path = Path(fields["base_path"])
        if root is not None and not base_path.is_absolute():
            base_path = root / base_path
        batching = BatchingConfig(
            max_batch_size=fields.get("max_batch_size", 64),
            max_wait_ms=fields.get("max_wait_ms", 0.0),
        )
        try:
            models[name] = ModelConfig(
                base_path,
                batching,
                fields.get("keep_versions", 2),
                fields.get("version_labels", {}),
            )
        except (TypeError, ValueError) as error:
            raise ValueError(f"`models.{name}`: {error}") from None
    return ServerConfig(prices=prices, plans=plans, models=models)


def load_config(path: str | Path | None) -> ServerConfig:
    """Reads a TOML (`.toml`) or JSON config file; None gives the defaults.

    Raises:
        ValueError: for a missing file or a wrong entry.
    """
    if path is None:
        return ServerConfig()
    path = Path(path)
    if not path.is_file():
        raise ValueError(
            f"`config` must be an existing TOML or JSON file. "
            f"Received: config={str(path)!r}"
        )
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except ValueError as error:  # TOMLDecodeError and JSONDecodeError
        raise ValueError(f"Cannot parse config file {path}: {error}") from None
    return parse_config(data, root=path.parent)
