"""Prices per 1,000 instances per model and API, and bills.

The price list is read from the server config file (see
`aiservice_kit.serving.config`); this module turns usage into money. A
price key is a model name, `"*"` (any other model), or either followed by
`:API` to price one API apart, e.g. `"mnist:explain"` or `"*:explain"`
(model names never hold a `:`). Usage of an API without its own price is
charged at the model's plain price.
"""

import dataclasses
import decimal
from collections.abc import Iterable
from typing import Any

from aiservice_kit.serving.config import DEFAULT_CURRENCY
from aiservice_kit.serving.metering import DEFAULT_API
from aiservice_kit.serving.metering import UsageSummary

_CENTS = decimal.Decimal("0.000001")

#: The APIs a price key may name after `:` (see the module docstring).
APIS = (DEFAULT_API, "explain")


def _check_key(key: Any) -> str:
    key = str(key)
    model, sep, api = key.partition(":")
    if sep and (not model or api not in APIS):
        raise ValueError(
            f"A price key is a model name, '*', or either followed by ':' "
            f"and one of the APIs {', '.join(APIS)} (e.g. 'mnist:explain'). "
            f"Received: {key!r}"
        )
    return key


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
        api: str. The API called (`"predict"`, `"explain"`): each API
            used is a line of its own.
    """

    key_id: str | None
    key_name: str | None
    model: str
    requests: int
    errors: int
    instances: int
    price_per_1000: decimal.Decimal
    amount: decimal.Decimal
    api: str = DEFAULT_API

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
        lines: tuple of BillLine. One per key, model and API.
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
    """Prices per 1,000 instances per model and API.

    Args:
        prices: dict of model -> price per 1,000 instances; the key `"*"`
            prices every other model (otherwise they are free). A key
            `"MODEL:API"` or `"*:API"` prices one API (`explain`) apart;
            without one, the API costs the model's plain price.
        currency: str. Shown on bills.

    Raises:
        ValueError: for a negative or non-numeric price, or a key naming
            an unknown API.

    Example:
    ```python
    prices = PriceList(
        {"mnist": 0.40, "*": 0.10, "*:explain": 5.0}, currency="USD"
    )
    prices.charge("mnist", 2500)  # Decimal("1.000000")
    prices.charge("mnist", 1000, api="explain")  # Decimal("5.000000")
    ```
    """

    def __init__(
        self,
        prices: dict[str, Any] | None = None,
        currency: str = DEFAULT_CURRENCY,
    ) -> None:
        if prices is not None and not isinstance(prices, dict):
            raise TypeError(
                "`prices` must be a dict of model name -> price per 1,000 "
                f"instances. Received: prices={prices!r}"
            )
        self.prices = {
            _check_key(model): _price(model, value)
            for model, value in (prices or {}).items()
        }
        self.currency = str(currency)

    def price_per_1000(
        self, model: str, api: str = DEFAULT_API
    ) -> decimal.Decimal:
        """The price of 1,000 instances of `model` called through `api`.

        The first price found of `MODEL:API`, `*:API`, `MODEL`, `*`;
        free when none is set.
        """
        for key in (f"{model}:{api}", f"*:{api}", model, "*"):
            if key in self.prices:
                return self.prices[key]
        return decimal.Decimal(0)

    def charge(
        self, model: str, instances: int, api: str = DEFAULT_API
    ) -> decimal.Decimal:
        """What `instances` instances of `model` through `api` cost."""
        amount = self.price_per_1000(model, api) * instances / 1000
        return amount.quantize(_CENTS, rounding=decimal.ROUND_HALF_UP)

    def bill(self, usage: Iterable[UsageSummary]) -> Bill:
        """Turns usage summaries into a bill (a line per key, model, API)."""
        lines = []
        for row in usage:
            api = getattr(row, "api", DEFAULT_API)
            lines.append(
                BillLine(
                    row.key_id,
                    row.key_name,
                    row.model,
                    row.requests,
                    row.errors,
                    row.instances,
                    self.price_per_1000(row.model, api),
                    self.charge(row.model, row.instances, api),
                    api,
                )
            )
        total = sum((line.amount for line in lines), decimal.Decimal(0))
        return Bill(self.currency, tuple(lines), total.quantize(_CENTS))


#: Names that lived here before `aiservice_kit.serving.config`.
_MOVED = ("ServerConfig", "load_config", "parse_config")


def __getattr__(name: str) -> Any:
    # `aiservice_kit.serving.pricing.ServerConfig` was the documented path;
    # it stays importable (lazily: config imports this module).
    if name in _MOVED:
        from aiservice_kit.serving import config

        return getattr(config, name)
    raise AttributeError(
        f"module 'aiservice_kit.serving.pricing' has no attribute {name!r}"
    )
