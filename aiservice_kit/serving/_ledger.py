"""Quotas and rate limits shared by every server on one database.

A call is admitted in two steps and settled in a third:

1. a rate token (`TokenAsk`): the key's token bucket (`rate_buckets`) is
   read with a row lock, refilled from the database clock and decremented.
2. a reservation (`ReserveAsk`): the key's month row (`key_usage`) is
   locked, and the instances used (settled) plus those reserved by calls in
   flight (`reservations`) plus this call's are checked against the quota;
   if they fit, a reservation for this call is inserted in the same
   transaction. N concurrent calls on any number of servers therefore
   never reserve more than the quota.
3. `settle` (the ledger writer, many calls per transaction): the ledger
   rows are inserted, the month counters are increased by the instances
   of successful calls, and the calls' reservations are deleted, all in
   one transaction: a settled call is counted exactly once, and a call
   whose settle did not commit is not counted.

Every server registers in `servers` and refreshes its heartbeat every
`HEARTBEAT_S`; each heartbeat also deletes the reservations of servers
silent for `SERVER_TTL_S` (killed in the middle of calls) and those
servers' rows. SQLite runs these at the file's write lock (`BEGIN
IMMEDIATE`); PostgreSQL at READ COMMITTED with `SELECT ... FOR UPDATE` on
the one row that is shared (the bucket or the month counter), counters
locked in key order so that concurrent settles cannot deadlock.

The asks of concurrent calls share transactions (`Ledger.admit_many`, fed
by one admission thread, as the ledger writer groups settles): in one
transaction each key's bucket and counter are read and written once for
all its asks, keys taken in sorted order so that groups on several
replicas cannot deadlock. A call's answer is exactly what it would be
alone, in arrival order.

The `Ledger` runs all of this on its own threads, never on the event
loop: `admit` waits at most `DB_WAIT_S` and then answer 503 with
`Retry-After`.
"""

import collections
import concurrent.futures
import dataclasses
import datetime
import functools
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

from aiservice_kit.serving._db import Database
from aiservice_kit.serving._db import Transaction
from aiservice_kit.serving._errors import ServingError
from aiservice_kit.serving._handoff import Reply
from aiservice_kit.serving.config import DB_RETRY_AFTER_S
from aiservice_kit.serving.config import DB_THREADS
from aiservice_kit.serving.config import DB_WAIT_S
from aiservice_kit.serving.config import HEARTBEAT_S
from aiservice_kit.serving.config import LEDGER_MAX_GROUP
from aiservice_kit.serving.config import SERVER_TTL_S

logger = logging.getLogger("aiservice_kit.serving")

_INSERT_USAGE = (
    "INSERT INTO usage (request_id, time, key_id, key_name, model, version, "
    "instances, request_bytes, response_bytes, latency_ms, status, api) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


class DatabaseBusy(ServingError):
    """503 with Retry-After: the database did not answer an admission check
    in time (the call was not accepted, so it is not metered)."""


@dataclasses.dataclass(frozen=True)
class Reservation:
    """Instances held for one call in flight.

    Attributes:
        id: str. The reservation id.
        key_id: str. The calling key.
        month: str. The month (UTC, `YYYY-MM`) the instances count in.
        instances: int. Instances reserved.
        shared: bool. Held in the database (False: in this process only).
    """

    id: str
    key_id: str
    month: str
    instances: int
    shared: bool = True


@dataclasses.dataclass(frozen=True)
class Refusal:
    """A quota check that failed: what is used and reserved already."""

    used: int
    reserved: int


@dataclasses.dataclass(frozen=True)
class TokenAsk:
    """A call's ask for a rate token from its key's shared bucket.

    Attributes:
        key_id: str. The calling key.
        rate: float. Tokens refilled per second (the plan's rate).
        capacity: float. The bucket's size (the plan's burst).
    """

    key_id: str
    rate: float
    capacity: float


@dataclasses.dataclass(frozen=True)
class ReserveAsk:
    """A call's ask to hold `instances` of its key's monthly quota, after
    taking a rate token when `rate` is set (one ask for both checks).

    Attributes:
        key_id: str. The calling key.
        instances: int. Instances the call will predict.
        quota: int. What used + reserved + these may reach at most.
        rate: float or None. Take a token first (the plan's rate); without
            one, nothing is reserved.
        capacity: float. The bucket's size when `rate` is set.
    """

    key_id: str
    instances: int
    quota: int
    rate: float | None = None
    capacity: float = 0.0


Ask = TokenAsk | ReserveAsk
#: What an ask gets: seconds to wait for a token (0.0: taken; a ReserveAsk
#: whose token was refused gets this too), or the reservation, or the
#: refusal.
Answer = float | Reservation | Refusal


def month_of(epoch: float) -> str:
    """The calendar month (UTC) of a Unix time, as `YYYY-MM`."""
    when = datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc)
    return f"{when.year:04d}-{when.month:02d}"


def _month_bounds(month: str) -> tuple[float, float]:
    year, number = int(month[:4]), int(month[5:])
    start = datetime.datetime(year, number, 1, tzinfo=datetime.timezone.utc)
    year, number = (year + 1, 1) if number == 12 else (year, number + 1)
    end = datetime.datetime(year, number, 1, tzinfo=datetime.timezone.utc)
    return start.timestamp(), end.timestamp()


def _ensure_month(tx: Transaction, key_id: str, month: str) -> None:
    """Creates the key's month counter from the ledger if it is missing.

    Run before the transaction inserts ledger rows, so the sum never holds
    a row the caller is about to add to the counter itself. The ledger is
    summed only when the counter is missing (once per key and month): a
    sum on every call would cost each call a scan of the key's month.
    """
    if tx.execute(
        "SELECT 1 FROM key_usage WHERE key_id = ? AND month = ?",
        (key_id, month),
    ):
        return
    start, end = _month_bounds(month)
    tx.execute(
        "INSERT INTO key_usage (key_id, month, used) "
        "SELECT ?, ?, COALESCE(SUM(instances), 0) FROM usage "
        "WHERE key_id = ? AND status = 200 AND time >= ? AND time < ? "
        "ON CONFLICT (key_id, month) DO NOTHING",
        (key_id, month, key_id, start, end),
    )


def _usage_of(tx: Transaction, key_id: str, month: str) -> tuple[int, int]:
    """(used, reserved) of the key's month; locks the counter row."""
    _ensure_month(tx, key_id, month)
    used = tx.execute(
        "SELECT used FROM key_usage WHERE key_id = ? AND month = ? FOR UPDATE",
        (key_id, month),
    )[0][0]
    reserved = tx.execute(
        "SELECT COALESCE(SUM(instances), 0) FROM reservations "
        "WHERE key_id = ? AND month = ?",
        (key_id, month),
    )[0][0]
    return int(used), int(reserved)


def _register(tx: Transaction, server_id: str, now: float) -> None:
    tx.execute(
        "INSERT INTO servers (server_id, started, heartbeat) "
        "VALUES (?, ?, ?) ON CONFLICT (server_id) "
        "DO UPDATE SET heartbeat = excluded.heartbeat",
        (server_id, now, now),
    )


def settle(database: Database, items: Sequence[tuple[Any, str | None]]) -> None:
    """Commits ledger records and settles their reservations, atomically.

    Args:
        database: Database. The shared database.
        items: sequence of (UsageRecord, reservation id or None).

    Raises:
        Exception: the database's error; nothing is committed then.
    """
    if items:
        with database.transaction() as tx:
            settle_in(tx, items)


def settle_in(tx: Transaction, items: Sequence[tuple[Any, str | None]]) -> None:
    """`settle`'s work, in the open transaction `tx`."""
    totals: dict[tuple[str, str], int] = collections.defaultdict(int)
    for record, _ in items:
        if record.key_id is not None and record.status == 200:
            totals[record.key_id, month_of(record.time)] += record.instances
    counters = sorted(key for key, total in totals.items() if total)
    # `dataclasses.astuple` deep-copies every field: 20 us a record on the
    # settle that every answer waits for; the fields are scalars.
    rows = [
        tuple(
            getattr(record, field.name) for field in dataclasses.fields(record)
        )
        for record, _ in items
    ]
    released = [(rid,) for _, rid in items if rid is not None]
    for key_id, month in counters:
        _ensure_month(tx, key_id, month)
    tx.executemany(_INSERT_USAGE, rows)
    for key_id, month in counters:
        tx.execute(
            "UPDATE key_usage SET used = used + ? "
            "WHERE key_id = ? AND month = ?",
            (totals[key_id, month], key_id, month),
        )
    tx.executemany("DELETE FROM reservations WHERE id = ?", released)


def _takes_token(ask: Ask) -> bool:
    return isinstance(ask, TokenAsk) or ask.rate is not None


def _take_tokens(
    tx: Transaction, now: float, asks: Sequence[Ask]
) -> list[float]:
    """Takes one token per ask from one key's bucket (row-locked).

    Returns:
        Per ask, 0.0 when a token was taken, else the seconds until one
        is back.
    """
    key_id = asks[0].key_id
    tx.execute(
        "INSERT INTO rate_buckets (key_id, tokens, updated) "
        "VALUES (?, ?, ?) ON CONFLICT (key_id) DO NOTHING",
        (key_id, asks[0].capacity, now),
    )
    tokens, updated = tx.execute(
        "SELECT tokens, updated FROM rate_buckets WHERE key_id = ? FOR UPDATE",
        (key_id,),
    )[0]
    now = max(now, updated)
    waits = []
    for ask in asks:
        tokens = min(ask.capacity, tokens + (now - updated) * ask.rate)
        updated = now
        if tokens >= 1.0:
            tokens -= 1.0
            waits.append(0.0)
        else:
            waits.append((1.0 - tokens) / ask.rate)
    tx.execute(
        "UPDATE rate_buckets SET tokens = ?, updated = ? WHERE key_id = ?",
        (tokens, now, key_id),
    )
    return waits


class Ledger:
    """The shared quota and rate state of one server, off the event loop.

    Args:
        database: Database. The database the key store and meter use.
        server_id: str or None. This server's id (default: a new one).

    Example:
    ```python
    ledger = Ledger(open_database("service.db"))
    reservation = ledger.reserve("3f2a9c0d1b2e", 10, quota=100)
    ```
    """

    def __init__(self, database: Database, server_id: str | None = None):
        self.database = database
        self.server_id = server_id or uuid.uuid4().hex
        self._executor = concurrent.futures.ThreadPoolExecutor(
            DB_THREADS, thread_name_prefix="aiservice-db"
        )
        self._stop = threading.Event()
        self._heart: threading.Thread | None = None
        self._asks: queue.SimpleQueue = queue.SimpleQueue()
        self._admitter: threading.Thread | None = None
        self._lock = threading.Lock()
        self._registered = False
        self._last_beat = 0.0
        self._beat_error: str | None = None

    # -- Transactions (blocking; run them on the ledger's threads) -------

    def _ensure_registered(self, tx: Transaction, now: float) -> None:
        if not self._registered:
            _register(tx, self.server_id, now)
            self._registered = True

    def take_token(self, key_id: str, rate: float, capacity: float) -> float:
        """Takes a token from the key's shared bucket.

        Returns:
            0.0 when a token was taken, else the seconds until one is back.
        """
        return self.admit_many([TokenAsk(key_id, rate, capacity)])[0]

    def reserve(
        self, key_id: str, instances: int, quota: int
    ) -> Reservation | Refusal:
        """Reserves `instances` if used + reserved + them fit in `quota`."""
        return self.admit_many([ReserveAsk(key_id, instances, quota)])[0]

    def admit_many(self, asks: Sequence[Ask]) -> list[Answer]:
        """Answers rate and quota asks in one transaction.

        Each key's bucket and month counter are locked once, in key order,
        and the key's asks are answered in their order, as if each had run
        alone.

        Args:
            asks: sequence of TokenAsk and ReserveAsk.

        Returns:
            One answer per ask, in order: for a TokenAsk 0.0 (taken) or the
            seconds until a token is back; for a ReserveAsk a Reservation or
            a Refusal, or the seconds until a token is back when it asked
            for one and none was left (nothing reserved then).

        Raises:
            Exception: the database's error; nothing is committed then.
        """
        with self.database.transaction() as tx:
            return self._answer(tx, asks)

    def _answer(self, tx: Transaction, asks: Sequence[Ask]) -> list[Answer]:
        """`admit_many`'s work, in the open transaction `tx`."""
        answers: list[Answer] = [0.0] * len(asks)
        by_key: dict[str, list[int]] = collections.defaultdict(list)
        for index, ask in enumerate(asks):
            by_key[ask.key_id].append(index)
        now = tx.now()
        self._ensure_registered(tx, now)
        month = month_of(now)
        rows = []
        for key_id in sorted(by_key):
            indices = by_key[key_id]
            tokens = [i for i in indices if _takes_token(asks[i])]
            if tokens:
                waits = _take_tokens(tx, now, [asks[i] for i in tokens])
                for index, wait in zip(tokens, waits, strict=True):
                    answers[index] = wait
            holds = [
                i
                for i in indices
                if isinstance(asks[i], ReserveAsk) and answers[i] == 0.0
            ]
            if holds:
                used, reserved = _usage_of(tx, key_id, month)
                for index in holds:
                    ask = asks[index]
                    if used + reserved + ask.instances > ask.quota:
                        answers[index] = Refusal(used, reserved)
                        continue
                    reservation = Reservation(
                        uuid.uuid4().hex, key_id, month, ask.instances
                    )
                    reserved += ask.instances
                    answers[index] = reservation
                    rows.append(
                        (
                            reservation.id,
                            key_id,
                            month,
                            ask.instances,
                            self.server_id,
                            now,
                        )
                    )
        if rows:
            tx.executemany(
                "INSERT INTO reservations (id, key_id, month, "
                "instances, server_id, created) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
        return answers

    def release(self, reservation_id: str) -> None:
        """Deletes one reservation (a call that ended without settling)."""
        with self.database.transaction() as tx:
            tx.execute(
                "DELETE FROM reservations WHERE id = ?", (reservation_id,)
            )

    def usage(self, key_id: str, when: float | None = None) -> tuple[int, int]:
        """(used, reserved) instances of the key in the month of `when`."""
        with self.database.transaction() as tx:
            month = month_of(tx.now() if when is None else when)
            return _usage_of(tx, key_id, month)

    def release_dead(self) -> int:
        """Releases the reservations of servers silent for SERVER_TTL_S.

        Returns:
            The number of reservations released.
        """
        with self.database.transaction() as tx:
            now = tx.now()
            _register(tx, self.server_id, now)
            self._registered = True
            live = "SELECT server_id FROM servers WHERE heartbeat >= ?"
            count = tx.execute(
                "SELECT COUNT(*) FROM reservations "
                f"WHERE server_id NOT IN ({live})",
                (now - SERVER_TTL_S,),
            )[0][0]
            if count:
                tx.execute(
                    f"DELETE FROM reservations WHERE server_id NOT IN ({live})",
                    (now - SERVER_TTL_S,),
                )
            tx.execute(
                "DELETE FROM servers WHERE heartbeat < ?",
                (now - SERVER_TTL_S,),
            )
        if count:
            logger.warning(
                "released %d reservations of calls cut short by a server "
                "that stopped",
                count,
            )
        return int(count)

    # -- Lifecycle -----------------------------------------------------------

    def start(self) -> int:
        """Registers the server, releases dead servers' reservations and
        starts the heartbeat; returns the reservations released. The
        database's upkeep (SQLite's WAL checkpoints) moves off the
        commits that calls wait for."""
        released = self.release_dead()
        self.database.checkpoint_in_background()
        self._last_beat = time.monotonic()
        with self._lock:
            if self._heart is None:
                self._heart = threading.Thread(
                    target=self._beat, name="aiservice-heartbeat", daemon=True
                )
                self._heart.start()
        return released

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self.release_dead()
            except Exception as error:  # reported by /readyz
                self._beat_error = f"{type(error).__name__}: {error}"
                logger.warning("database heartbeat failed: %s", error)
            else:
                self._beat_error = None
                self._last_beat = time.monotonic()

    def problem(self) -> str | None:
        """Why the database looks unreachable, or None (for /readyz).

        Never touches the database: it reads what the heartbeat saw.
        """
        if self._heart is None:
            return None
        if self._beat_error is not None:
            return f"the database is unreachable ({self._beat_error})"
        silent = time.monotonic() - self._last_beat
        if silent > 3 * HEARTBEAT_S:
            return (
                f"the database has not answered for {silent:.0f} s "
                "(locked or unreachable)"
            )
        return None

    def close(self) -> None:
        """Stops the heartbeat and releases this server's reservations."""
        self._stop.set()
        if self._heart is not None:
            self._heart.join(timeout=HEARTBEAT_S + 1)
        with self._lock:
            admitter, self._admitter = self._admitter, None
        if admitter is not None:
            self._asks.put(None)
            admitter.join(timeout=DB_WAIT_S + 1)
        self._executor.shutdown(wait=True, cancel_futures=True)
        try:
            with self.database.transaction() as tx:
                tx.execute(
                    "DELETE FROM reservations WHERE server_id = ?",
                    (self.server_id,),
                )
                tx.execute(
                    "DELETE FROM servers WHERE server_id = ?",
                    (self.server_id,),
                )
        except Exception as error:  # the heartbeat expiry releases them
            logger.warning("could not release reservations: %s", error)

    # -- From the event loop -------------------------------------------------

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Runs `fn(*args)` on a database thread; errors are logged."""

        def run() -> None:
            try:
                fn(*args)
            except Exception:
                logger.exception("database call %s failed", fn.__name__)

        try:
            self._executor.submit(run)
        except RuntimeError:  # shutting down: the expiry releases it
            pass

    async def admit(
        self,
        ask: Ask,
        on_late: Callable[[Answer], None] | None = None,
        *,
        now_if_free: bool = False,
    ) -> Answer:
        """Answers one ask in a transaction shared with concurrent calls.

        Args:
            ask: TokenAsk or ReserveAsk.
            on_late: callable or None. Run on a database thread with the
                answer if it comes after the caller stopped waiting (to
                undo it).
            now_if_free: bool. For a call alone on the server: answer it
                on the event loop, without the two thread hand-offs, if
                the database is free this instant (`run_if_free`; else as
                usual).

        Returns:
            The ask's answer (see `admit_many`).

        Raises:
            ServingError: 503 with Retry-After when the database is busy
                beyond DB_WAIT_S or fails.
        """
        if now_if_free:
            try:
                ran, answers = self.database.run_if_free(
                    lambda tx: self._answer(tx, [ask])
                )
            except Exception as error:
                raise _failed(error) from None
            if ran:
                return answers[0]
        undo = None
        if on_late is not None:
            undo = functools.partial(self.submit, on_late)
        reply = Reply(on_late=undo)
        with self._lock:
            if self._admitter is None and not self._stop.is_set():
                self._admitter = threading.Thread(
                    target=self._admit_asks,
                    name="aiservice-admission",
                    daemon=True,
                )
                self._admitter.start()
            running = self._admitter is not None
        if not running:
            raise _busy("the ledger is closed")
        self._asks.put((ask, reply))
        try:
            return await reply.wait(DB_WAIT_S)
        except TimeoutError:
            message = f"the database did not answer in {DB_WAIT_S:g} s"
        except Exception as error:
            raise _failed(error) from None
        raise _busy(message)

    def _admit_asks(self) -> None:
        """The admission thread: answers the queued asks, a group at a time."""
        while True:
            item = self._asks.get()
            stop = item is None
            group = []
            while item is not None:
                # an ask whose caller stopped waiting before it ran is dropped
                if item[1].wanted():
                    group.append(item)
                if len(group) >= LEDGER_MAX_GROUP:
                    break
                try:
                    item = self._asks.get_nowait()
                except queue.Empty:
                    break
                stop = stop or item is None
            if group:
                try:
                    answers = self.admit_many([ask for ask, _ in group])
                except BaseException as error:
                    for _, reply in group:
                        reply.set_exception(error)
                else:
                    for (_, reply), answer in zip(group, answers, strict=True):
                        reply.set_result(answer)
            if stop:
                return


def _failed(error: Exception) -> DatabaseBusy:
    """The 503 of an admission whose transaction failed (logged)."""
    logger.warning("database call admission failed: %s", error)
    return _busy(f"the database failed ({type(error).__name__})")


def _busy(message: str) -> DatabaseBusy:
    """The 503 of a call the ledger could not answer in time."""
    return DatabaseBusy(
        f"The call could not be admitted: {message}; retry later.",
        503,
        {"Retry-After": str(DB_RETRY_AFTER_S)},
    )
