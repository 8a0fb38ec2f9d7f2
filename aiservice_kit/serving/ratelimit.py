"""Plans: requests per second (token bucket) and instances per month.

A plan gives each key a bucket of `burst` tokens refilled at
`requests_per_second`; a call takes one token or gets 429 with
`Retry-After` (seconds until a token is back). The monthly quota counts
the instances of successful calls in the current calendar month (UTC); a
call that would go over gets 429 with `Retry-After` set to the start of
next month.

With a `DatabaseMeter` (the server's default) both live in the database
(`_ledger`), shared by every process and replica on it: a call's instances
are reserved in the transaction that checks the quota and settled with its
ledger record, so concurrent calls can never exceed the quota. With another
`Meter` they are kept in this process's memory.
"""

import dataclasses
import datetime
import math
import threading
import time
from typing import Any

from aiservice_kit.serving._errors import ServingError
from aiservice_kit.serving._ledger import Ledger
from aiservice_kit.serving._ledger import Refusal
from aiservice_kit.serving._ledger import Reservation
from aiservice_kit.serving._ledger import ReserveAsk
from aiservice_kit.serving._ledger import TokenAsk
from aiservice_kit.serving.auth import ApiKey
from aiservice_kit.serving.config import DEFAULT_PLAN_FIELDS
from aiservice_kit.serving.metering import DatabaseMeter
from aiservice_kit.serving.metering import Meter


def _optional_number(name: str, value: Any, integer: bool) -> Any:
    if value is None:
        return None
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value <= 0:
        kind = "integer" if integer else "number"
        raise ValueError(
            f"`{name}` must be a positive {kind} or None (no limit). "
            f"Received: {name}={value!r}"
        )
    return value


@dataclasses.dataclass(frozen=True)
class Plan:
    """A rate limit and a monthly quota shared by the keys on a plan.

    Attributes:
        name: str. The plan name keys refer to.
        requests_per_second: float or None. Sustained call rate per key;
            None for no limit.
        burst: int or None. Calls allowed at once before the rate applies
            (defaults to twice the rate, at least 1).
        monthly_instances: int or None. Instances per calendar month (UTC)
            per key; None for no quota.
    """

    name: str
    requests_per_second: float | None = None
    burst: int | None = None
    monthly_instances: int | None = None

    def __post_init__(self) -> None:
        _optional_number("requests_per_second", self.requests_per_second, False)
        _optional_number("burst", self.burst, True)
        _optional_number("monthly_instances", self.monthly_instances, True)

    @property
    def capacity(self) -> float:
        """The bucket size."""
        if self.burst is not None:
            return float(self.burst)
        return max(1.0, 2.0 * (self.requests_per_second or 1.0))

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dataclasses.asdict(self)


#: Plans available when the server config names none.
DEFAULT_PLANS = {
    name: Plan(name, **fields) for name, fields in DEFAULT_PLAN_FIELDS.items()
}


class TokenBucket:
    """A token bucket: `take()` returns 0 or the seconds to wait."""

    def __init__(self, rate: float, capacity: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.updated = time.monotonic()

    def take(self) -> float:
        """Takes a token if one is there; else the seconds until one is."""
        now = time.monotonic()
        self.tokens = min(
            self.capacity, self.tokens + (now - self.updated) * self.rate
        )
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


def month_start(when: datetime.datetime | None = None) -> datetime.datetime:
    """The first instant of the month (UTC) containing `when` (now)."""
    when = when or datetime.datetime.now(datetime.timezone.utc)
    return when.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_month_start(
    when: datetime.datetime | None = None,
) -> datetime.datetime:
    """The first instant of the following month (UTC)."""
    start = month_start(when)
    if start.month == 12:
        return start.replace(year=start.year + 1, month=1)
    return start.replace(month=start.month + 1)


class RateRefusal(ServingError):
    """429: the key's rate is spent (Retry-After: until a token is back)."""


def _rate_error(plan: Plan, wait: float) -> ServingError:
    return RateRefusal(
        f"Rate limit of plan '{plan.name}' exceeded "
        f"({plan.requests_per_second:g} requests per second, burst "
        f"{plan.capacity:g}). Retry after {wait:.2f} s.",
        429,
        {"Retry-After": str(max(1, math.ceil(wait)))},
    )


def _quota_error(plan: Plan, used: int, instances: int) -> ServingError:
    now = datetime.datetime.now(datetime.timezone.utc)
    wait = (next_month_start(now) - now).total_seconds()
    return ServingError(
        f"Monthly quota of plan '{plan.name}' exceeded: "
        f"{used} of {plan.monthly_instances} instances used, this "
        f"call has {instances}. The quota resets at "
        f"{next_month_start(now).isoformat()}.",
        429,
        {"Retry-After": str(max(1, math.ceil(wait)))},
    )


class RateLimiter:
    """Applies each key's plan: 429 with Retry-After when over.

    Args:
        plans: dict of name -> Plan.
        meter: Meter or None. With a `DatabaseMeter`, rates and quotas
            are kept in its database, shared by every server on it;
            otherwise this month's usage is read from `meter` at first
            use and kept in memory.

    Example:
    ```python
    limiter = RateLimiter({"free": Plan("free", 5, 10, 1000)}, meter)
    reservation = await limiter.admit(key, 10)  # or 429
    ```
    """

    def __init__(self, plans: dict[str, Plan], meter: Meter | None) -> None:
        self.plans = plans
        self.meter = meter
        self.ledger = (
            Ledger(meter.database) if isinstance(meter, DatabaseMeter) else None
        )
        self._buckets: dict[str, TokenBucket] = {}
        self._used: dict[str, tuple[datetime.datetime, int]] = {}
        self._added: dict[tuple[str, str], int] = {}
        # key id -> time.monotonic() before which no token is back, from
        # the last rate answer (refuse_early answers 429 without I/O).
        self._blocked: dict[str, float] = {}
        # Key ids whose last ask found their quota spent: their calls wait
        # for the ledger's answer before running the model.
        self._over_quota: set[str] = set()
        self._lock = threading.RLock()

    def start(self) -> None:
        """Registers this server with the shared state and releases the
        reservations of servers that stopped (call at start-up)."""
        if self.ledger is not None:
            self.ledger.start()

    def close(self) -> None:
        """Stops the heartbeat and releases this server's reservations."""
        if self.ledger is not None:
            self.ledger.close()

    def database_problem(self) -> str | None:
        """Why the shared database looks unreachable, or None (no I/O)."""
        return None if self.ledger is None else self.ledger.problem()

    def plan_of(self, key: ApiKey) -> Plan:
        """The key's plan; 403 when the server does not offer it."""
        try:
            return self.plans[key.plan]
        except KeyError:
            raise ServingError(
                f"API key '{key.name}' is on plan '{key.plan}', which this "
                f"server does not offer (plans: {', '.join(self.plans)}).",
                403,
            ) from None

    def _take(self, key: ApiKey, plan: Plan) -> float:
        if self.ledger is not None:
            return self.ledger.take_token(
                key.id, plan.requests_per_second, plan.capacity
            )
        with self._lock:
            bucket = self._buckets.get(key.id)
            if bucket is None or bucket.rate != plan.requests_per_second:
                bucket = TokenBucket(plan.requests_per_second, plan.capacity)
                self._buckets[key.id] = bucket
            return bucket.take()

    def refuse_early(self, key: ApiKey | None) -> None:
        """Raises 429 without any I/O while no token of the key is back.

        A rate answer that found the bucket empty says when a token is
        back; until then every replica's bucket would refuse too (tokens
        only refill with time), so calls are refused before their body is
        read or decoded.

        Raises:
            ServingError: 429 (a `RateRefusal`) with Retry-After.
        """
        if key is None:
            return
        with self._lock:
            until = self._blocked.get(key.id)
            if until is None:
                return
            wait = until - time.monotonic()
            if wait <= 0:
                del self._blocked[key.id]
                return
        raise _rate_error(self.plan_of(key), wait)

    def may_run_ahead(self, key: ApiKey | None) -> bool:
        """Whether the key's call may run its model before it is admitted.

        A call runs beside its ledger ask, and a refused call's outputs
        are dropped. Once a key's quota was found spent, its calls wait
        for the answer instead, so a spent key cannot make the server run
        models for nothing; the next admitted call lifts that.

        Args:
            key: ApiKey or None. The caller.

        Returns:
            False while the key's last ask on this server found its quota
            spent, True otherwise.
        """
        return key is None or key.id not in self._over_quota

    def _refused(self, key: ApiKey, plan: Plan, wait: float) -> ServingError:
        with self._lock:
            self._blocked[key.id] = time.monotonic() + wait
        return _rate_error(plan, wait)

    def check_rate(self, key: ApiKey | None) -> None:
        """Takes a token for this call or raises 429 (blocking)."""
        if key is None:
            return
        plan = self.plan_of(key)
        if plan.requests_per_second is None:
            return
        wait = self._take(key, plan)
        if wait > 0:
            raise self._refused(key, plan, wait)

    async def acheck_rate(
        self, key: ApiKey | None, *, now_if_free: bool = False
    ) -> None:
        """`check_rate` with the database call on a database thread
        (`now_if_free`: see `admit`).

        Raises:
            ServingError: 429 over the rate; 503 (Retry-After) when the
                database does not answer in time.
        """
        if key is None:
            return
        plan = self.plan_of(key)
        if plan.requests_per_second is None:
            return
        if self.ledger is None:
            wait = self._take(key, plan)
        else:
            wait = await self.ledger.admit(
                TokenAsk(key.id, plan.requests_per_second, plan.capacity),
                now_if_free=now_if_free,
            )
        if wait > 0:
            raise self._refused(key, plan, wait)

    def _added_this_month(self, key: ApiKey) -> int:
        with self._lock:
            return self._added.get((key.id, month_start().isoformat()), 0)

    def used_this_month(self, key: ApiKey) -> int:
        """Instances of successful calls this month (UTC)."""
        if self.ledger is not None:
            used, _ = self.ledger.usage(key.id)
            return used + self._added_this_month(key)
        start = month_start()
        with self._lock:
            cached = self._used.get(key.id)
        if cached is not None and cached[0] == start:
            return cached[1]
        used = 0
        if self.meter is not None:
            used = sum(
                row.instances
                for row in self.meter.summarize(key_id=key.id, since=start)
            )
        with self._lock:
            self._used[key.id] = (start, used)
        return used

    def check_quota(self, key: ApiKey | None, instances: int) -> None:
        """Raises 429 when `instances` more would exceed the monthly quota.

        A check only: `reserve` is what the server uses, which checks and
        holds the instances in one step.
        """
        if key is None:
            return
        plan = self.plan_of(key)
        if plan.monthly_instances is None:
            return
        used = self.used_this_month(key)
        if self.ledger is not None:
            used += self.ledger.usage(key.id)[1]  # reserved by calls
        if used + instances > plan.monthly_instances:
            raise _quota_error(plan, used, instances)

    def add_usage(self, key: ApiKey | None, instances: int) -> None:
        """Counts instances used outside the ledger (this process only)."""
        if key is None or instances <= 0:
            return
        start = month_start()
        with self._lock:
            if self.ledger is not None:
                slot = (key.id, start.isoformat())
                self._added[slot] = self._added.get(slot, 0) + instances
                return
            cached = self._used.get(key.id)
            if cached is not None and cached[0] == start:
                self._used[key.id] = (start, cached[1] + instances)

    async def admit(
        self, key: ApiKey | None, instances: int, *, now_if_free: bool = False
    ) -> Reservation | None:
        """Takes the call's rate token and holds its instances, in one step.

        Both checks are one ask to the ledger, answered in a transaction
        shared with concurrent calls (`Ledger.admit`); a call refused by
        the rate reserves nothing.

        Args:
            key: ApiKey or None. The caller (None: anonymous, no limits).
            instances: int. Instances the call will predict.
            now_if_free: bool. For a call alone on the server: the
                ledger's transaction runs on the event loop if the
                database is free this instant (`Ledger.admit`).

        Returns:
            The reservation (settle it with the call's ledger record, or
            `release` it), or None when the key has no quota.

        Raises:
            ServingError: 429 over the rate or when the instances do not
                fit in the quota; 503 (Retry-After) when the database does
                not answer in time.

        Example:
        ```python
        reservation = await limiter.admit(key, 10)
        ```
        """
        if key is None:
            return None
        plan = self.plan_of(key)
        quota = plan.monthly_instances
        if quota is None:
            await self.acheck_rate(key, now_if_free=now_if_free)
            return None
        if self.ledger is None:
            self.check_rate(key)
            with self._lock:  # check and hold in one step
                self.check_quota(key, instances)
                self.add_usage(key, instances)
            return Reservation("", key.id, "", instances, shared=False)
        extra = self._added_this_month(key)
        result = await self.ledger.admit(
            ReserveAsk(
                key.id,
                instances,
                quota - extra,
                plan.requests_per_second,
                plan.capacity,
            ),
            on_late=self._release_late,
            now_if_free=now_if_free,
        )
        if isinstance(result, float):
            raise self._refused(key, plan, result)
        if isinstance(result, Refusal):
            self._over_quota.add(key.id)
            used = result.used + result.reserved + extra
            raise _quota_error(plan, used, instances)
        self._over_quota.discard(key.id)
        return result

    def _release_late(self, result: Any) -> None:
        if isinstance(result, Reservation):
            self.ledger.release(result.id)

    def settled(self, reservation: Reservation | None, instances: int) -> None:
        """After the call's record committed: `instances` were used."""
        if reservation is None or reservation.shared:
            return  # the ledger transaction settled it
        with self._lock:
            start = month_start()
            cached = self._used.get(reservation.key_id)
            if cached is not None and cached[0] == start:
                change = instances - reservation.instances
                self._used[reservation.key_id] = (start, cached[1] + change)

    def release(self, reservation: Reservation | None) -> None:
        """Gives back a reservation whose call did not settle."""
        if reservation is None:
            return
        if reservation.shared:
            self.ledger.submit(self.ledger.release, reservation.id)
        else:
            self.settled(reservation, 0)
