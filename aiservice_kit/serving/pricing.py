"""Prices per 1,000 instances per model, and bills.

The price list is read from the server config file (see
`aiservice_kit.serving.config`); this module turns usage into money.
"""

import dataclasses
import decimal
from collections.abc import Iterable
from typing import Any

from aiservice_kit.serving.config import DEFAULT_CURRENCY
from aiservice_kit.serving.metering import UsageSummary

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
