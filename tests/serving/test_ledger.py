"""The shared ledger on both backends: schema migration, exact quota
reservations and rate buckets under concurrent threads, settling."""

import sqlite3
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from aiservice_kit.serving import DatabaseMeter
from aiservice_kit.serving import KeyStore
from aiservice_kit.serving import UsageRecord
from aiservice_kit.serving._db import open_database
from aiservice_kit.serving._ledger import Ledger
from aiservice_kit.serving._ledger import Refusal
from aiservice_kit.serving._ledger import Reservation
from aiservice_kit.serving._ledger import ReserveAsk
from aiservice_kit.serving._ledger import TokenAsk
from aiservice_kit.serving._schema import SCHEMA_VERSION
from aiservice_kit.serving.auth import ApiKey
from aiservice_kit.serving.ratelimit import Plan
from aiservice_kit.serving.ratelimit import RateLimiter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from postgres_server import postgres_server  # noqa: E402


@pytest.fixture(scope="module")
def postgres():
    try:
        with postgres_server() as url:
            yield url
    except RuntimeError as error:
        print(f"PostgreSQL tests skipped: {error}")
        pytest.skip(f"no PostgreSQL server: {error}")


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "ledger.db")
    import psycopg

    server = request.getfixturevalue("postgres")
    name = "t" + uuid.uuid4().hex[:12]
    with psycopg.connect(server, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return server.rsplit("/", 1)[0] + "/" + name


def _record(key_id, instances, status=200):
    return UsageRecord(
        uuid.uuid4().hex, time.time(), key_id, "acme", "m", 1, instances,
        10, 10, 1.0, status,
    )  # fmt: skip


def test_concurrent_reservations_never_exceed_the_quota(db):
    meter = DatabaseMeter(db)
    meter.record(_record("k1", 30))  # used before: counted from the ledger
    ledger = Ledger(meter.database)
    with ThreadPoolExecutor(8) as pool:
        results = list(
            pool.map(lambda _: ledger.reserve("k1", 10, 100), range(20))
        )
    granted = [r for r in results if isinstance(r, Reservation)]
    meter.settle_many(
        [
            (_record("k1", 10), granted[0].id),
            (_record("k1", 0, 400), granted[1].id),
        ]
    )
    after = ledger.usage("k1")
    for reservation in granted[2:]:
        ledger.release(reservation.id)
    final = ledger.usage("k1")
    ledger.close()
    meter.close()

    assert len(granted) == 7  # 30 + 7 x 10 = 100
    assert all(isinstance(r, Refusal) for r in results if r not in granted)
    assert after == (40, 50)  # one settled 200, one failed call released
    assert final == (40, 0)


def test_a_reservation_does_not_rescan_the_keys_month(tmp_path):
    """A key's ledger is summed once per month, when its counter is made:
    after 20,000 calls a reservation does the work it did after one (SQLite
    virtual-machine steps, counted with a progress handler)."""
    meter = DatabaseMeter(str(tmp_path / "ledger.db"))
    ledger = Ledger(meter.database)
    connection = meter.database._db  # the SQLite connection

    def steps_of_one_call():
        steps = 0

        def count():
            nonlocal steps
            steps += 1
            return 0  # go on

        connection.set_progress_handler(count, 100)
        try:
            reservation = ledger.reserve("k1", 1, 10**9)
        finally:
            connection.set_progress_handler(None, 100)
        meter.settle_many([(_record("k1", 1), reservation.id)])
        return steps

    steps_of_one_call()  # registers the server and makes the counter
    early = steps_of_one_call()
    meter.record_many([_record("k1", 1) for _ in range(20_000)])
    late = steps_of_one_call()
    usage = ledger.usage("k1")
    ledger.close()
    meter.close()

    assert usage == (20_003, 0)
    assert late <= 2 * early + 10, (early, late)


def test_one_admission_group_answers_each_ask_as_if_alone(db):
    # Concurrent calls' asks share a transaction (Ledger.admit_many): per
    # key, tokens then reservations in arrival order, exact at the edges.
    meter = DatabaseMeter(db)
    ledger = Ledger(meter.database)
    asks = [
        *[ReserveAsk("b", 10, 100) for _ in range(12)],  # 10 fit
        *[TokenAsk("a", 0.01, 3) for _ in range(5)],  # burst 3
        *[ReserveAsk("c", 4, 10, 0.01, 2) for _ in range(4)],
    ]
    answers = ledger.admit_many(asks)
    later = ledger.admit_many([ReserveAsk("b", 1, 100)])
    usage_b, usage_c = ledger.usage("b"), ledger.usage("c")
    ledger.close()
    meter.close()

    held = [isinstance(a, Reservation) for a in answers[:12]]
    assert held == [True] * 10 + [False] * 2
    assert all(isinstance(a, Refusal) for a in answers[10:12])
    assert answers[12:17][:3] == [0.0, 0.0, 0.0]
    assert all(wait > 0 for wait in answers[15:17])
    # "c": two tokens (burst 2), each reserving 4 of 10; then no token,
    # so nothing reserved: the answer is the wait.
    c = answers[17:]
    assert [type(a).__name__ for a in c[:2]] == ["Reservation"] * 2
    assert all(isinstance(a, float) and a > 0 for a in c[2:])
    assert usage_b == (0, 100) and isinstance(later[0], Refusal)
    assert usage_c == (0, 8)


def test_the_shared_bucket_gives_burst_tokens_to_all_threads(db):
    meter = DatabaseMeter(db)
    ledger = Ledger(meter.database)
    with ThreadPoolExecutor(8) as pool:
        waits = list(
            pool.map(lambda _: ledger.take_token("k", 0.01, 5), range(20))
        )
    ledger.close()
    meter.close()

    assert waits.count(0.0) == 5
    assert all(w > 0 for w in waits if w)


def test_dead_servers_reservations_are_released(db, monkeypatch):
    meter = DatabaseMeter(db)
    dead = Ledger(meter.database)
    dead.reserve("k", 5, 100)
    with meter.database.transaction() as tx:  # its heartbeat stopped long ago
        tx.execute("UPDATE servers SET heartbeat = heartbeat - 3600")
    alive = Ledger(meter.database)

    released = alive.start()
    usage = alive.usage("k")
    alive.close()
    meter.close()

    assert released == 1
    assert usage == (0, 0)


def test_the_server_limiter_uses_the_database(db):
    store = KeyStore(db)
    _, key = store.create("acme", "tiny")
    store.close()
    meter = DatabaseMeter(db)
    meter.record(_record(key.id, 2))
    limiter = RateLimiter({"tiny": Plan("tiny", monthly_instances=3)}, meter)

    used = limiter.used_this_month(key)
    limiter.close()
    meter.close()

    assert used == 2


def test_an_old_sqlite_ledger_is_migrated_and_keeps_its_usage(tmp_path):
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript(
        """
        CREATE TABLE usage (seq INTEGER PRIMARY KEY AUTOINCREMENT,
            request_id TEXT NOT NULL, time REAL NOT NULL, key_id TEXT,
            key_name TEXT, model TEXT NOT NULL, version INTEGER,
            instances INTEGER NOT NULL, request_bytes INTEGER NOT NULL,
            response_bytes INTEGER NOT NULL, latency_ms REAL NOT NULL,
            status INTEGER NOT NULL);
        """
    )
    old.execute(
        "INSERT INTO usage (request_id, time, key_id, key_name, model, "
        "version, instances, request_bytes, response_bytes, latency_ms, "
        "status) VALUES ('r1', ?, 'k', 'acme', 'm', 1, 7, 1, 1, 1.0, 200)",
        (time.time(),),
    )
    old.commit()
    old.close()

    meter = DatabaseMeter(path)
    with meter.database.transaction() as tx:
        versions = [
            row[0] for row in tx.execute("SELECT version FROM schema_version")
        ]
    limiter = RateLimiter({"p": Plan("p", monthly_instances=10)}, meter)
    key = ApiKey("k", "acme", "p", None, "2026-01-01")
    used = limiter.used_this_month(key)
    meter.close()

    assert versions == list(range(1, SCHEMA_VERSION + 1))
    assert used == 7


def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "new.db"
    open_database(path).close()
    db = sqlite3.connect(path)
    db.execute("INSERT INTO schema_version VALUES (99)")
    db.commit()
    db.close()

    with pytest.raises(RuntimeError, match="schema version 99"):
        open_database(path)
