"""The one database connection factory of the key store and the ledger."""

import os
import sqlite3
import stat
import struct
import time
from pathlib import Path

import pytest

from aiservice_kit.serving import KeyStore
from aiservice_kit.serving import SQLiteMeter
from aiservice_kit.serving import _db
from aiservice_kit.serving._db import SQLiteDatabase
from aiservice_kit.serving._db import connect
from aiservice_kit.serving._db import sqlite_path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None


def test_a_new_database_is_private_and_in_wal_mode(tmp_path):
    db = connect(tmp_path / "service.db")
    mode = stat.S_IMODE((tmp_path / "service.db").stat().st_mode)
    journal = db.execute("PRAGMA journal_mode").fetchone()[0]
    timeout = db.execute("PRAGMA busy_timeout").fetchone()[0]
    db.close()

    assert mode == 0o600
    assert (journal, timeout) == ("wal", 30000)


def test_an_existing_file_keeps_its_mode(tmp_path):
    path = tmp_path / "shared.db"
    path.touch(mode=0o640)
    path.chmod(0o640)

    connect(path).close()

    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_sqlite_urls_and_paths_name_the_same_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    absolute = tmp_path / "abs.db"

    assert sqlite_path("sqlite:///rel.db") == sqlite_path("rel.db")
    assert sqlite_path(f"sqlite:///{absolute}") == absolute
    store = KeyStore("sqlite:///rel.db")
    _, key = store.create("acme", "free")
    store.close()
    meter = SQLiteMeter("rel.db")
    meter.close()
    reopened = KeyStore(tmp_path / "rel.db")
    found = reopened.get(key.id)
    reopened.close()

    assert found.name == "acme"


@pytest.mark.parametrize("url", ["mysql://host/db", "sqlite://rel.db"])
def test_unsupported_urls_are_refused_by_name(url, tmp_path):
    with pytest.raises(ValueError, match="Received: db=") as error:
        KeyStore(url)

    assert url in str(error.value)


def test_a_missing_directory_is_refused(tmp_path):
    with pytest.raises(ValueError, match="existing directory"):
        connect(tmp_path / "missing" / "x.db")


def test_an_unreachable_postgresql_url_is_refused_with_the_reason():
    url = "postgresql://user:secret@127.0.0.1:1/db"

    with pytest.raises(RuntimeError, match="Cannot reach") as error:
        KeyStore(url)

    assert "127.0.0.1:1/db" in str(error.value)
    assert "secret" not in str(error.value)  # the password is not shown


def _turn_is_free(path) -> bool:
    """Whether another open of `<db>-writer.lock` can take the writers'
    turn now (flock locks belong to one open file)."""
    fd = os.open(f"{path}-writer.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # releases a lock it took
    return True


@pytest.mark.skipif(fcntl is None, reason="flock is POSIX only")
def test_writers_take_turns_through_a_private_lock_file(tmp_path):
    # Every write transaction, in any process, holds the turn from its
    # BEGIN to its COMMIT or ROLLBACK, so a waiting process is woken when
    # the writer ends instead of sleeping in SQLite's busy handler.
    path = tmp_path / "service.db"
    database = SQLiteDatabase(path)
    mode = stat.S_IMODE(Path(f"{path}-writer.lock").stat().st_mode)
    with database.transaction() as tx:
        tx.execute("CREATE TABLE t (v INTEGER)")
        held_while_writing = not _turn_is_free(path)
    free_after_commit = _turn_is_free(path)
    with pytest.raises(ZeroDivisionError):
        with database.transaction() as tx:
            tx.execute("INSERT INTO t VALUES (1)")
            raise ZeroDivisionError("the call failed")
    free_after_rollback = _turn_is_free(path)
    with database.read() as tx:
        rows = tx.execute("SELECT COUNT(*) FROM t")
    database.close()

    assert mode == 0o600
    assert held_while_writing and free_after_commit and free_after_rollback
    assert rows == [(0,)]


def _wal_frames(path) -> int:
    """Pages in the WAL since it last started over, read without touching
    the database: `mxFrame`, at byte 16 of the wal-index header in the
    `-shm` file (https://www.sqlite.org/walformat.html)."""
    header = Path(f"{path}-shm").read_bytes()[:48]
    return struct.unpack_from("=I", header, 16)[0]


def test_background_checkpoints_keep_the_wal_short_off_the_commits(
    tmp_path, monkeypatch
):
    # A server's connection never checkpoints inside a commit, and under
    # steady writing (where a checkpoint that waits for nobody never
    # catches up) the checkpoint thread still starts the WAL over, so it
    # does not grow without end.
    monkeypatch.setattr(_db, "WAL_CHECKPOINT_S", 0.02)
    monkeypatch.setattr(_db, "WAL_RESTART_FRAMES", 50)
    path = tmp_path / "service.db"
    database = SQLiteDatabase(path)
    database.checkpoint_in_background()
    with database.read() as tx:
        automatic = tx.execute("PRAGMA wal_autocheckpoint")
    with database.transaction() as tx:
        tx.execute("CREATE TABLE t (v BLOB)")
    commits = 0
    stop = time.monotonic() + 1.0
    while time.monotonic() < stop:
        with database.transaction() as tx:  # 2+ pages each
            tx.execute("INSERT INTO t VALUES (?)", (b"x" * 5000,))
        commits += 1
    frames = _wal_frames(path)
    with database.read() as tx:
        rows = tx.execute("SELECT COUNT(*) FROM t")
    database.close()

    assert automatic == [(0,)]
    assert frames < commits  # it started over (else >= 2 x commits)
    assert rows == [(commits,)]


def test_run_if_free_never_waits_for_a_busy_database(tmp_path):
    # The event loop's path for a call alone on the server: it commits
    # when the database is free and returns at once, doing nothing, when
    # another process holds SQLite's lock or the writers' turn.
    path = tmp_path / "service.db"
    database = SQLiteDatabase(path)
    with database.transaction() as tx:
        tx.execute("CREATE TABLE t (v INTEGER)")

    def insert(tx):
        tx.execute("INSERT INTO t VALUES (1)")
        return "done"

    free = database.run_if_free(insert)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # a program that takes no turns
    started = time.perf_counter()
    locked = database.run_if_free(insert)
    waited = time.perf_counter() - started
    other.execute("ROLLBACK")
    other.close()
    turn = None
    if fcntl is not None:
        fd = os.open(f"{path}-writer.lock", os.O_RDWR)
        fcntl.flock(fd, fcntl.LOCK_EX)  # another process's turn
        turn = database.run_if_free(insert)
        os.close(fd)
    with pytest.raises(ZeroDivisionError):
        database.run_if_free(lambda tx: (insert(tx), 1 / 0))
    with database.read() as tx:
        rows = tx.execute("SELECT COUNT(*) FROM t")
        timeout = tx.execute("PRAGMA busy_timeout")
    database.close()

    assert free == (True, "done")
    assert locked == (False, None) and waited < 1.0
    assert turn in (None, (False, None))
    assert rows == [(1,)]  # the failed one was rolled back
    assert timeout == [(30000,)]  # the threads' path still waits


def test_a_memory_database_leaves_no_file_behind(tmp_path, monkeypatch):
    # `--db :memory:` is private to its connection: no file named after
    # it, no writers' lock file, and the upkeep thread has nothing to do.
    monkeypatch.chdir(tmp_path)
    database = SQLiteDatabase(":memory:")
    database.checkpoint_in_background()
    with database.transaction() as tx:
        tx.execute("CREATE TABLE t (v INTEGER)")
    ran, _ = database.run_if_free(
        lambda tx: tx.execute("INSERT INTO t VALUES (1)")
    )
    with database.read() as tx:
        rows = tx.execute("SELECT COUNT(*) FROM t")
    database.close()

    assert ran and rows == [(1,)]
    assert list(tmp_path.iterdir()) == []
