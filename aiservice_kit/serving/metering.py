"""Metering: every accepted call becomes a ledger record before its reply.

`Meter` is the small interface the server talks to (record calls, read
usage), so another store can replace the ledger without touching the
routes. `DatabaseMeter` keeps the ledger in the shared database, SQLite
(`SQLiteMeter`, a WAL-mode file) or PostgreSQL, and settles each call's
quota reservation in the transaction that inserts its record.
`GroupCommitter` lets many concurrent requests share one transaction, on
its own thread: each request waits until its record is committed, and only
then is its response sent, so a crash can never lose a call that a client
saw succeed.
"""

import abc
import asyncio
import dataclasses
import datetime
import os
import queue
import threading
from collections.abc import Sequence

from aiservice_kit.serving import _ledger
from aiservice_kit.serving._db import SYNCHRONOUS
from aiservice_kit.serving._db import Database
from aiservice_kit.serving._db import open_database
from aiservice_kit.serving._db import sqlite_path
from aiservice_kit.serving._handoff import Reply
from aiservice_kit.serving.config import LEDGER_MAX_GROUP

#: The API a call used when a record does not say (ledgers written before
#: the `api` column, other `Meter` implementations).
DEFAULT_API = "predict"


@dataclasses.dataclass(frozen=True)
class UsageRecord:
    """One metered call.

    Attributes:
        request_id: str. Unique id (also sent as `X-Request-ID`).
        time: float. Unix time (UTC seconds) when the call arrived.
        key_id: str or None. The calling key (None when anonymous).
        key_name: str or None. The key's owner.
        model: str. Model name.
        version: int or None. Version that answered (None if none did).
        instances: int. Instances predicted (0 for refused calls).
        request_bytes: int. Request body size.
        response_bytes: int. Response body size.
        latency_ms: float. Time spent in the server.
        status: int. HTTP status returned.
        api: str. The API called: `"predict"` or `"explain"` (priced
            separately, see `PriceList`).
    """

    request_id: str
    time: float
    key_id: str | None
    key_name: str | None
    model: str
    version: int | None
    instances: int
    request_bytes: int
    response_bytes: int
    latency_ms: float
    status: int
    api: str = DEFAULT_API


@dataclasses.dataclass(frozen=True)
class UsageSummary:
    """Usage of one key on one model over a period.

    Attributes:
        key_id: str or None. The key (None: anonymous calls).
        key_name: str or None. Its owner.
        model: str. Model name.
        requests: int. Calls recorded (any status).
        instances: int. Instances in successful (200) calls: what is billed.
        errors: int. Calls that did not return 200.
        request_bytes: int. Bytes received.
        response_bytes: int. Bytes sent.
        api: str. The API called (one summary per key, model and API).
    """

    key_id: str | None
    key_name: str | None
    model: str
    requests: int
    instances: int
    errors: int
    request_bytes: int
    response_bytes: int
    api: str = DEFAULT_API


def _epoch(value: datetime.datetime | float | None) -> float | None:
    if value is None or isinstance(value, (int, float)):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.timezone.utc)
    return value.timestamp()


class Meter(abc.ABC):
    """Where usage records go. Implement this to use another database."""

    @abc.abstractmethod
    def record_many(self, records: Sequence[UsageRecord]) -> None:
        """Stores records durably; returns only once they are committed."""

    @abc.abstractmethod
    def summarize(
        self,
        key_id: str | None = None,
        since: datetime.datetime | float | None = None,
        until: datetime.datetime | float | None = None,
    ) -> list[UsageSummary]:
        """Usage per key and model in `[since, until)` (all keys if None)."""

    @abc.abstractmethod
    def records(
        self,
        key_id: str | None = None,
        since: datetime.datetime | float | None = None,
        until: datetime.datetime | float | None = None,
    ) -> list[UsageRecord]:
        """The raw records in `[since, until)`, oldest first."""

    def record(self, record: UsageRecord) -> None:
        """Stores one record durably."""
        self.record_many([record])

    def settle_many(
        self, items: Sequence[tuple[UsageRecord, str | None]]
    ) -> None:
        """Stores records and settles their quota reservations (by id).

        A Meter without shared reservations just stores the records.
        """
        self.record_many([record for record, _ in items])

    def settle_now_if_free(
        self, items: Sequence[tuple[UsageRecord, str | None]]
    ) -> bool:
        """`settle_many` only if it need not wait (for the event loop);
        False when nothing was done. A Meter may always say False."""
        return False

    def close(self) -> None:  # noqa: B027 - optional hook
        """Releases resources."""


class DatabaseMeter(Meter):
    """The ledger in the shared database: SQLite or PostgreSQL.

    Args:
        url_or_path: str or Path. A SQLite file or `sqlite:///` URL (the key
            store may share it), or a `postgresql://` URL; see
            `_db.open_database`. The schema is created or migrated.
        synchronous: str. SQLite's `synchronous` setting, NORMAL or FULL.

    Example:
    ```python
    meter = DatabaseMeter("postgresql://app@db.internal/aiservice")
    meter.summarize(key_id="3f2a9c0d1b2e")
    ```
    """

    def __init__(
        self, url_or_path: str | os.PathLike, synchronous: str = "NORMAL"
    ) -> None:
        if synchronous not in SYNCHRONOUS:
            raise ValueError(
                "`synchronous` must be 'NORMAL' or 'FULL'. "
                f"Received: synchronous={synchronous!r}"
            )
        self.database: Database = open_database(url_or_path, synchronous)
        self.path = self.database.url

    def record_many(self, records: Sequence[UsageRecord]) -> None:
        """Inserts the records in one committed transaction."""
        _ledger.settle(self.database, [(record, None) for record in records])

    def settle_many(
        self, items: Sequence[tuple[UsageRecord, str | None]]
    ) -> None:
        """Inserts the records and deletes their reservations, atomically."""
        _ledger.settle(self.database, items)

    def settle_now_if_free(
        self, items: Sequence[tuple[UsageRecord, str | None]]
    ) -> bool:
        """`settle_many` in a transaction that starts now or not at all
        (`Database.run_if_free`)."""
        ran, _ = self.database.run_if_free(
            lambda tx: _ledger.settle_in(tx, items)
        )
        return ran

    @staticmethod
    def _where(key_id, since, until) -> tuple[str, list]:
        clauses, params = [], []
        if key_id is not None:
            clauses.append("key_id = ?")
            params.append(key_id)
        if since is not None:
            clauses.append("time >= ?")
            params.append(_epoch(since))
        if until is not None:
            clauses.append("time < ?")
            params.append(_epoch(until))
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        return where, params

    def summarize(self, key_id=None, since=None, until=None):
        """Usage per key, model and API in `[since, until)`."""
        where, params = self._where(key_id, since, until)
        with self.database.read() as tx:
            rows = tx.execute(
                "SELECT key_id, MAX(key_name), model, COUNT(*), "
                "COALESCE(SUM(CASE WHEN status = 200 THEN instances END), 0), "
                "SUM(CASE WHEN status != 200 THEN 1 ELSE 0 END), "
                "SUM(request_bytes), SUM(response_bytes), api "
                f"FROM usage {where} GROUP BY key_id, model, api "
                "ORDER BY key_id, model, api",
                params,
            )
        return [UsageSummary(*row) for row in rows]

    def records(self, key_id=None, since=None, until=None):
        """The raw records in `[since, until)`, oldest first."""
        where, params = self._where(key_id, since, until)
        with self.database.read() as tx:
            rows = tx.execute(
                "SELECT request_id, time, key_id, key_name, model, version, "
                "instances, request_bytes, response_bytes, latency_ms, status, "
                f"api FROM usage {where} ORDER BY seq",
                params,
            )
        return [UsageRecord(*row) for row in rows]

    def close(self) -> None:
        """Closes the database connections."""
        self.database.close()


class SQLiteMeter(DatabaseMeter):
    """The embedded ledger: one SQLite file in WAL mode.

    Commits survive a crash of the server process (a SIGKILL included);
    pass `synchronous="FULL"` to survive power loss too, at the cost of an
    fsync per transaction.

    Args:
        path: str or Path. The SQLite file (the key store may share it)
            or a `sqlite:///...` URL; see `_db.connect`.
        synchronous: str. SQLite's `synchronous` setting, NORMAL or FULL.

    Example:
    ```python
    meter = SQLiteMeter("service.db")
    meter.summarize(key_id="3f2a9c0d1b2e")
    ```
    """

    def __init__(
        self, path: str | os.PathLike, synchronous: str = "NORMAL"
    ) -> None:
        super().__init__(sqlite_path(path), synchronous)


#: The status of a call whose client left before its answer (nginx's 499):
#: recorded, not billed.
CLIENT_CLOSED_STATUS = 499


@dataclasses.dataclass
class _Queued:
    """A record waiting for `GroupCommitter`'s writer."""

    record: UsageRecord
    reservation: str | None
    reply: Reply
    taken: bool = False  # by the writer, under `GroupCommitter._lock`


class _Taken(Sequence):
    """A writer's group as `Meter.settle_many`'s items, read on first use:
    inside the transaction, once it holds the database, so a call
    cancelled while the writer waited for a lock is still withdrawn."""

    def __init__(self, group: list[_Queued], lock: threading.Lock) -> None:
        self._group = group
        self._lock = lock
        self._items: list[tuple[UsageRecord, str | None]] | None = None

    def _taken(self) -> list[tuple[UsageRecord, str | None]]:
        if self._items is None:
            with self._lock:
                for queued in self._group:
                    queued.taken = True
                self._items = [(q.record, q.reservation) for q in self._group]
        return self._items

    def __len__(self) -> int:
        return len(self._group)

    def __getitem__(self, index):
        return self._taken()[index]

    def __iter__(self):
        return iter(self._taken())


class GroupCommitter:
    """Batches concurrent records into shared transactions in one thread.

    Args:
        meter: Meter. Where records are committed.

    Example:
    ```python
    committer = GroupCommitter(SQLiteMeter("service.db"))
    await committer.record(record)  # returns once committed
    ```
    """

    def __init__(self, meter: Meter, max_group: int = LEDGER_MAX_GROUP) -> None:
        self.meter = meter
        self._max_group = max_group
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._work, name="ledger-writer", daemon=True
        )
        self._thread.start()

    async def record(
        self,
        record: UsageRecord,
        reservation: str | None = None,
        *,
        now_if_free: bool = False,
    ) -> None:
        """Waits until `record` is committed (raises if it could not be).

        The commit always runs on the writer thread, never on the event
        loop, so a database that is locked or slow delays only the calls
        waiting for it; concurrent records share one transaction.

        Args:
            record: UsageRecord. The call's ledger record.
            reservation: str or None. The id of the call's quota
                reservation, deleted in the same transaction.
            now_if_free: bool. For a call alone on the server: commit on
                the event loop, without the writer's two hand-offs, when
                no record waits for the writer and the database is free
                this instant (`Meter.settle_now_if_free`).
        """
        if (
            now_if_free
            and self._queue.empty()
            and self.meter.settle_now_if_free([(record, reservation)])
        ):
            return
        # One hand-off back to the loop (`_handoff.Reply`) on the commit
        # every answer waits for.
        queued = _Queued(record, reservation, Reply())
        self._queue.put(queued)
        try:
            await queued.reply.wait()
        except asyncio.CancelledError:
            self._withdraw(queued)
            raise

    def _withdraw(self, queued: "_Queued") -> None:
        """A call cancelled while its record waits (a gRPC client's cancel
        or deadline): its answer is never sent, so unless the writer has
        taken the record already it is committed as 499, not billed."""
        with self._lock:
            if not queued.taken:
                queued.record = dataclasses.replace(
                    queued.record, status=CLIENT_CLOSED_STATUS
                )

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            group = [item]
            stop = False
            while len(group) < self._max_group:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                group.append(item)
            try:
                self.meter.settle_many(_Taken(group, self._lock))
            except BaseException as error:
                for queued in group:
                    queued.reply.set_exception(error)
            else:
                for queued in group:
                    queued.reply.set_result(None)
            if stop:
                return

    def close(self) -> None:
        """Commits what is queued, then stops the writer thread."""
        self._queue.put(None)
        self._thread.join(timeout=30)
