"""Quotas, rates and the ledger hold across processes, on SQLite and
PostgreSQL; a locked database never freezes the event loop.

Every test runs real `aiservice-kit serve` processes on loopback. The
PostgreSQL variants use a throwaway server (`tests/postgres_server.py`) and
skip, with the reason, only when none can be started.
"""

import hashlib
import json
import math
import signal
import socket
import sqlite3
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from serving_helpers import Server

from aiservice_kit.cli import main as cli_main
from aiservice_kit.serving import DatabaseMeter
from aiservice_kit.serving import KeyStore
from aiservice_kit.serving._db import PostgresDatabase
from aiservice_kit.serving._db import SQLiteDatabase
from aiservice_kit.serving._db import open_database
from aiservice_kit.serving._schema import _TYPES
from aiservice_kit.serving._schema import MIGRATIONS
from aiservice_kit.serving.config import DB_WAIT_S
from aiservice_kit.serving.config import HEARTBEAT_S
from aiservice_kit.serving.config import KEY_CACHE_TTL_S
from aiservice_kit.serving.config import SERVER_TTL_S

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from postgres_server import postgres_server  # noqa: E402

PLANS = {
    "quota100": {"monthly_instances": 100},
    "burst10": {"requests_per_second": 1, "burst": 10},
    "big": {"monthly_instances": 10**9},
}
PREDICT = "/v1/models/half_plus_three:predict"


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server for the session (skipped if none can start)."""
    try:
        with postgres_server() as url:
            yield url
    except RuntimeError as error:
        print(f"PostgreSQL tests skipped: {error}")
        pytest.skip(f"no PostgreSQL server: {error}")


def _fresh_database(server_url: str) -> str:
    import psycopg

    name = "t" + uuid.uuid4().hex[:12]
    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return server_url.rsplit("/", 1)[0] + "/" + name


def _servers(model_root, folder, db, count):
    config = folder / "plans.json"
    config.write_text(json.dumps({"plans": PLANS}))
    args = ["--model", f"half_plus_three={model_root / 'half_plus_three'}"]
    args += ["--db", db, "--config", str(config), "--auth", "on"]
    servers = [
        Server(args, folder / f"server-{uuid.uuid4().hex[:6]}.log")
        for _ in range(count)
    ]
    with ThreadPoolExecutor(count) as pool:  # start them together
        return list(pool.map(Server.start, servers))


@pytest.fixture(scope="module")
def cluster(request, model_root, tmp_path_factory):
    """`cluster(backend)`: (database, two servers on it), started once.

    The servers are shared by the tests of this module (each test uses
    its own API key), since starting a server costs seconds.
    """
    started: dict[str, tuple[str, list[Server]]] = {}

    def get(backend: str) -> tuple[str, list[Server]]:
        if backend not in started:
            folder = tmp_path_factory.mktemp(backend)
            if backend == "sqlite":
                db = str(folder / "service.db")
            else:
                db = _fresh_database(request.getfixturevalue("postgres"))
            started[backend] = (db, _servers(model_root, folder, db, 2))
        return started[backend]

    yield get
    for _, servers in started.values():
        for server in servers:
            server.stop()


def _key(db, plan):
    store = KeyStore(db)
    secret, record = store.create(f"{plan}-{uuid.uuid4().hex[:6]}", plan)
    store.close()
    return secret, record


def _burst(servers, secret, calls, instances):
    """`calls` concurrent predicts spread over the servers; statuses."""
    barrier = threading.Barrier(calls)
    body = {"instances": [1.0] * instances}

    def one(index):
        server = servers[index % len(servers)]
        with httpx.Client(base_url=server.url, timeout=60) as client:
            barrier.wait()
            response = client.post(
                PREDICT, json=body, headers={"X-API-Key": secret}
            )
            return response.status_code

    with ThreadPoolExecutor(calls) as pool:
        return list(pool.map(one, range(calls)))


def _rows(db, sql, params=()):
    database = open_database(db)
    try:
        with database.transaction() as tx:
            return tx.execute(sql, params)
    finally:
        database.close()


@pytest.mark.large
@pytest.mark.parametrize(
    ("backend", "processes"),
    [("sqlite", 1), ("sqlite", 2), ("postgresql", 2)],
)
def test_concurrent_calls_never_exceed_the_quota(cluster, backend, processes):
    database, servers = cluster(backend)
    secret, key = _key(database, "quota100")
    statuses = _burst(servers[:processes], secret, calls=40, instances=10)
    meter = DatabaseMeter(database)
    (line,) = meter.summarize(key_id=key.id)
    meter.close()
    left = _rows(
        database,
        "SELECT COUNT(*) FROM reservations WHERE key_id = ?",
        (key.id,),
    )[0][0]

    print(f"{processes} x {backend}: {statuses.count(200)} x 200")
    assert statuses.count(200) == 10  # 10 calls x 10 instances = the quota
    assert statuses.count(429) == 30
    assert line.instances == 100
    assert left == 0  # every reservation settled


@pytest.mark.large
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_burst_limit_holds_across_two_processes(cluster, backend):
    database, servers = cluster(backend)
    secret, _ = _key(database, "burst10")
    started = time.monotonic()
    statuses = _burst(servers, secret, calls=40, instances=1)
    elapsed = time.monotonic() - started
    refill = math.ceil(elapsed * PLANS["burst10"]["requests_per_second"])

    print(f"accepted {statuses.count(200)} of 40 in {elapsed:.2f} s")
    assert 10 <= statuses.count(200) <= 10 + refill
    assert statuses.count(200) + statuses.count(429) == 40


@pytest.mark.large
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_sigkill_under_load_settles_every_acknowledged_call_once(
    cluster, model_root, tmp_path, backend
):
    database, _ = cluster(backend)  # its two servers keep running
    (server,) = _servers(model_root, tmp_path, database, 1)
    secret, key = _key(database, "big")
    acknowledged, lock = [], threading.Lock()
    stop = threading.Event()

    def load():
        with httpx.Client(base_url=server.url, timeout=30) as client:
            while not stop.is_set():
                try:
                    response = client.post(
                        PREDICT,
                        json={"instances": [1.0, 2.0]},
                        headers={"X-API-Key": secret},
                    )
                except httpx.TransportError:
                    return
                if response.status_code == 200:
                    with lock:
                        acknowledged.append(response.headers["x-request-id"])

    workers = [threading.Thread(target=load) for _ in range(8)]
    for worker in workers:
        worker.start()
    deadline = time.monotonic() + 30
    while len(acknowledged) < 80 and time.monotonic() < deadline:
        time.sleep(0.01)
    server.kill()
    stop.set()
    for worker in workers:
        worker.join()
    mine = "SELECT COUNT(*) FROM reservations WHERE key_id = ?"
    in_flight = _rows(database, mine, (key.id,))[0][0]

    (restarted,) = _servers(model_root, tmp_path, database, 1)
    try:
        deadline = time.monotonic() + SERVER_TTL_S + 3 * HEARTBEAT_S
        left = in_flight
        while left and time.monotonic() < deadline:
            time.sleep(0.5)
            left = _rows(database, mine, (key.id,))[0][0]
        after = httpx.post(
            restarted.url + PREDICT,
            json={"instances": [1.0]},
            headers={"X-API-Key": secret},
        )
    finally:
        restarted.stop()
    meter = DatabaseMeter(database)
    ledger = [r for r in meter.records(key_id=key.id) if r.status == 200]
    meter.close()
    ok_ids = [r.request_id for r in ledger]
    used = _rows(
        database, "SELECT SUM(used) FROM key_usage WHERE key_id = ?", (key.id,)
    )[0][0]

    print(
        f"200s: {len(acknowledged)}, ledger: {len(ok_ids)}, reservations "
        f"at the kill: {in_flight}, left after restart: {left}"
    )
    assert len(acknowledged) >= 80
    assert len(set(ok_ids)) == len(ok_ids)  # one record per call
    assert set(acknowledged) <= set(ok_ids)  # nothing acknowledged is lost
    assert len(ok_ids) - len(acknowledged) <= 8  # in flight at the kill
    assert left == 0  # the killed calls' reservations were released
    assert after.status_code == 200
    assert used == sum(r.instances for r in ledger)  # counter == ledger


@pytest.mark.large
def test_a_locked_database_answers_503_and_never_slows_healthz(cluster):
    # The scenario: another connection holds the write lock for
    # 30 s. /healthz is probed throughout; predicts sent at the start and
    # again late in the hold get 503 after DB_WAIT_S; /readyz reports the
    # database once the heartbeat has failed.
    hold_s, late_s = 30.0, 20.0
    db, (server, _) = cluster("sqlite")
    secret, _ = _key(db, "burst10")
    headers = {"X-API-Key": secret}
    assert httpx.post(server.url + PREDICT, json={"instances": [1.0]},
                      headers=headers).status_code == 200  # fmt: skip
    locked = threading.Event()

    def hold():
        writer = sqlite3.connect(db, isolation_level=None)
        writer.execute("BEGIN IMMEDIATE")
        locked.set()
        time.sleep(hold_s)
        writer.execute("ROLLBACK")
        writer.close()

    def call():
        return httpx.post(
            server.url + PREDICT,
            json={"instances": [1.0]},
            headers=headers,
            timeout=60,
        )

    holder = threading.Thread(target=hold)
    holder.start()
    locked.wait()
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        calls = [pool.submit(call) for _ in range(4)]
        latencies, ready = [], []
        with httpx.Client(base_url=server.url, timeout=5) as client:
            while time.monotonic() - started < hold_s - 0.5:
                tick = time.perf_counter()
                assert client.get("/healthz").status_code == 200
                latencies.append(time.perf_counter() - tick)
                held = time.monotonic() - started
                if held > 7.0 and not ready:
                    ready.append(client.get("/readyz"))
                if held > late_s and len(calls) == 4:
                    calls += [pool.submit(call) for _ in range(4)]
                time.sleep(0.05)
        replies = [future.result() for future in calls]
    covered = time.monotonic() - started
    holder.join()
    recovered = call()

    print(
        f"healthz under a lock held {hold_s:g} s: max "
        f"{max(latencies) * 1000:.1f} ms over {len(latencies)} probes in "
        f"{covered:.1f} s"
    )
    assert covered >= hold_s - 0.5  # probed for the whole hold
    assert max(latencies) < 0.1
    assert [r.status_code for r in replies] == [503] * 8
    assert all(r.headers["retry-after"] == "1" for r in replies)
    assert all(f"{DB_WAIT_S:g} s" in r.json()["error"] for r in replies)
    assert ready[0].status_code == 503
    assert "database" in ready[0].json()["error"]
    assert recovered.status_code == 200


def _v3_database(db: str) -> str:
    """A database as a schema-3 server left it, with one key; its secret.

    The statements are the first three of `MIGRATIONS` (migrations are
    only ever appended), run without the newer ones.
    """
    database = (
        PostgresDatabase(db)
        if db.startswith("postgresql")
        else SQLiteDatabase(db)
    )
    key_id, secret = "0123456789ab", "s3cret-" + uuid.uuid4().hex
    try:
        with database.transaction() as tx:
            tx.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
            for version, statements in MIGRATIONS[:3]:
                for statement in statements:
                    tx.execute(statement.format(**_TYPES[database.dialect]))
                tx.execute(
                    "INSERT INTO schema_version (version) VALUES (?)",
                    (version,),
                )
            tx.execute(
                "INSERT INTO api_keys (id, name, plan, models, secret_sha256, "
                "created_at, revoked_at) VALUES (?, 'legacy', 'big', NULL, ?, "
                "'2026-01-01T00:00:00+00:00', NULL)",
                (key_id, hashlib.sha256(secret.encode()).hexdigest()),
            )
    finally:
        database.close()
    return f"ask_{key_id}_{secret}"


@pytest.mark.large
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_schema_3_database_migrates_and_only_admin_keys_read_metrics(
    request, model_root, tmp_path, backend, capsys
):
    if backend == "sqlite":
        db = str(tmp_path / "v3.db")
    else:
        db = _fresh_database(request.getfixturevalue("postgres"))
    legacy = _v3_database(db)
    (server,) = _servers(model_root, tmp_path, db, 1)  # migrates to 4
    try:
        predict = httpx.post(
            server.url + PREDICT,
            json={"instances": [1.0]},
            headers={"X-API-Key": legacy},
        )
        no_key = httpx.get(server.url + "/metrics")
        before = httpx.get(
            server.url + "/metrics", headers={"X-API-Key": legacy}
        )
        assert cli_main(["keys", "list", "--db", db, "--json"]) == 0
        listed = json.loads(capsys.readouterr().out)
        create = ["keys", "create", "--name", "prometheus", "--plan", "big"]
        create += ["--config", str(tmp_path / "plans.json"), "--db", db]
        assert cli_main([*create, "--admin", "--json"]) == 0
        admin = json.loads(capsys.readouterr().out)
        scraped = httpx.get(
            server.url + "/metrics",
            headers={"Authorization": f"Bearer {admin['key']}"},
        )
        # The upgrade path: the operator grants the old key the scope.
        assert cli_main(["keys", "grant", "legacy", "admin", "--db", db]) == 0
        time.sleep(KEY_CACHE_TTL_S + 0.2)  # the server's key cache expires
        after = httpx.get(
            server.url + "/metrics", headers={"X-API-Key": legacy}
        )
    finally:
        server.stop()
    version = _rows(db, "SELECT MAX(version) FROM schema_version")[0][0]

    assert version == MIGRATIONS[-1][0]
    assert predict.status_code == 200  # the old key still works
    assert [(k["name"], k["scopes"]) for k in listed] == [("legacy", [])]
    assert no_key.status_code == 401
    assert before.status_code == 403  # allowed every model, but no admin
    assert "'admin' scope" in before.json()["error"]
    assert admin["scopes"] == ["admin"]
    assert scraped.status_code == 200
    assert "aiservice_kit_predict_requests_total" in scraped.text
    assert after.status_code == 200


# -- `serve --workers N`: N processes on one host, one port, one ledger -------

WORKERS = 2


def _worker_processes(server):
    """The worker processes of a `serve --workers` supervisor."""
    import psutil

    workers = []
    for child in psutil.Process(server.process.pid).children():
        try:
            if any("spawn_main" in part for part in child.cmdline()):
                workers.append(child)
        except psutil.Error:  # exited (a zombie until reaped) meanwhile
            pass
    return workers


def _wait_workers_ready(server, count, timeout=120):
    marker = "Application startup complete."
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.log().count(marker) >= count:
            return
        if server.process.poll() is not None:
            break
        time.sleep(0.2)
    raise AssertionError(f"{count} workers not ready:\n" + server.log())


@pytest.fixture(scope="module")
def workers_server(model_root, tmp_path_factory):
    """(database, one `serve --workers 2` on a SQLite file), started once."""
    folder = tmp_path_factory.mktemp("workers")
    config = folder / "plans.json"
    config.write_text(json.dumps({"plans": PLANS}))
    db = str(folder / "service.db")
    args = ["--model", f"half_plus_three={model_root / 'half_plus_three'}"]
    args += ["--db", db, "--config", str(config), "--auth", "on"]
    args += ["--workers", str(WORKERS)]
    server = Server(args, folder / "workers.log").start()
    _wait_workers_ready(server, WORKERS)
    yield db, server
    server.stop()


def _open_call(server, secret):
    """One predict on a new connection, left open; (socket, status line)."""
    body = b'{"instances": [1.0]}'
    head = (
        f"POST {PREDICT} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"X-API-Key: {secret}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    connection = socket.create_connection(("127.0.0.1", server.port), 30)
    connection.sendall(head.encode() + body)
    status = connection.recv(65536).split(b"\r\n", 1)[0]
    return connection, status


def _workers_holding(server, connections):
    """The pids of the workers at the other end of these connections."""
    ports = {connection.getsockname()[1] for connection in connections}
    return {
        worker.pid
        for worker in _worker_processes(server)
        for held in worker.net_connections(kind="tcp")
        if held.laddr.port == server.port
        and held.raddr
        and held.raddr.port in ports
    }


def test_workers_share_one_port_and_each_answers(workers_server):
    database, server = workers_server
    secret, _ = _key(database, "big")
    workers = _worker_processes(server)
    barrier = threading.Barrier(16)

    def call(_):
        barrier.wait()  # connect together, so both workers accept some
        return _open_call(server, secret)

    with ThreadPoolExecutor(16) as pool:
        calls = list(pool.map(call, range(16)))
    try:
        pids = _workers_holding(server, [c for c, _ in calls])
    finally:
        for connection, _ in calls:
            connection.close()

    print(f"16 connections answered by workers {sorted(pids)}")
    assert len(workers) == WORKERS
    assert [status for _, status in calls] == [b"HTTP/1.1 200 OK"] * 16
    assert pids == {worker.pid for worker in workers}


def test_workers_never_exceed_a_quota_together(workers_server):
    database, server = workers_server
    secret, key = _key(database, "quota100")
    statuses = _burst([server], secret, calls=40, instances=10)
    meter = DatabaseMeter(database)
    (line,) = meter.summarize(key_id=key.id)
    meter.close()
    left = _rows(
        database,
        "SELECT COUNT(*) FROM reservations WHERE key_id = ?",
        (key.id,),
    )[0][0]

    assert statuses.count(200) == 10  # 10 calls x 10 instances = the quota
    assert statuses.count(429) == 30
    assert line.instances == 100
    assert left == 0


def test_a_dead_worker_is_restarted_and_sigterm_stops_all(workers_server):
    import psutil

    _, server = workers_server
    before = _worker_processes(server)
    before[0].kill()  # SIGKILL: the supervisor must notice and replace it
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = _worker_processes(server)
        if len(now) == WORKERS and before[0].pid not in {p.pid for p in now}:
            break
        time.sleep(0.2)
    _wait_workers_ready(server, WORKERS + 1)
    after = _worker_processes(server)
    ready = httpx.get(server.url + "/readyz", timeout=10)
    server.process.send_signal(signal.SIGTERM)
    code = server.process.wait(timeout=60)
    _, alive = psutil.wait_procs(after, timeout=30)

    assert len(after) == WORKERS
    assert before[0].pid not in {p.pid for p in after}
    assert before[1].pid in {p.pid for p in after}
    assert ready.status_code == 200
    assert code == 0
    assert alive == []  # no worker outlives the supervisor
