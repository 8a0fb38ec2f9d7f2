"""The one database connection factory of the key store and the ledger.

`open_database(url_or_path)` opens the database that `KeyStore`, the
ledger and the shared quota and rate state use, and brings its schema up
to date (`_schema.migrate`). Two backends sit behind the same small
`Database` interface (a transaction yielding `execute`):

- SQLite, the embedded default: a plain path or a `sqlite:///path` URL,
  opened in WAL mode with a busy timeout (`connect`); a new file is
  created readable by its owner only (it holds key hashes and the billing
  ledger). Write transactions are `BEGIN IMMEDIATE`, so they are
  serialized across every process on the file; the processes take turns
  through an `flock` on `<file>-writer.lock` first (SQLite's lock waits
  by sleeping), and a server's WAL checkpoints run on a thread of their
  own, off the commits that answers wait for.
- PostgreSQL: a `postgresql://` URL, through psycopg 3 and its connection
  pool (`pip install aiservice_kit[postgres]`), at READ COMMITTED with
  explicit row locks (`SELECT ... FOR UPDATE`) where state is shared.

SQL is written once with `?` placeholders; `FOR UPDATE` is dropped for
SQLite (its write transactions already hold the database lock) and `?`
becomes `%s` for psycopg. Every other scheme is refused with a clear
error.
"""

import contextlib
import functools
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aiservice_kit.serving.config import DB_BUSY_TIMEOUT_S
from aiservice_kit.serving.config import PG_CONNECT_TIMEOUT_S
from aiservice_kit.serving.config import PG_POOL_SIZE
from aiservice_kit.serving.config import WAL_CHECKPOINT_S
from aiservice_kit.serving.config import WAL_RESTART_FRAMES
from aiservice_kit.serving.config import WAL_RESTART_WAIT_MS

try:
    import fcntl
except ImportError:  # Windows: SQLite's own lock only
    fcntl = None

logger = logging.getLogger("aiservice_kit.serving")

#: SQLite names that open a database private to one connection (no file
#: is created for them, and no other process can share them).
SQLITE_PRIVATE_NAMES = (":memory:",)
#: SQLite's "the database is locked" result codes.
_BUSY_CODES = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)

#: URL schemes `connect` accepts.
SCHEMES = ("sqlite",)
#: URL schemes `open_database` accepts.
DATABASE_SCHEMES = ("sqlite", "postgresql", "postgres")
#: SQLite `synchronous` levels `connect` accepts.
SYNCHRONOUS = ("NORMAL", "FULL")
#: Permission bits of a database file this module creates.
FILE_MODE = 0o600


def sqlite_path(url_or_path: str | os.PathLike) -> Path:
    """The SQLite file a path or a `sqlite:///...` URL names.

    Args:
        url_or_path: str or PathLike. A file path, `sqlite:///relative.db`
            or `sqlite:////absolute.db`.

    Returns:
        The file path.

    Raises:
        ValueError: for a URL of another scheme (e.g. `postgresql://`),
            naming the schemes accepted.
        TypeError: for something that is neither a str nor a path.

    Example:
    ```python
    sqlite_path("sqlite:///service.db")  # PosixPath('service.db')
    ```
    """
    if isinstance(url_or_path, os.PathLike):
        return Path(url_or_path)
    if not isinstance(url_or_path, str):
        raise TypeError(
            "`db` must be a file path or a database URL such as "
            f"'sqlite:///service.db'. Received: db={url_or_path!r}"
        )
    scheme, sep, rest = url_or_path.partition("://")
    if not sep or os.sep in scheme or "/" in scheme:
        return Path(url_or_path)  # a plain path
    if scheme.lower() != "sqlite":
        raise ValueError(
            "`db` must be a file path or a URL with one of the schemes "
            f"{', '.join(s + '://' for s in SCHEMES)} here (a PostgreSQL "
            "URL is accepted by the server and the key store only). "
            f"Received: db={url_or_path!r}"
        )
    if not rest.startswith("/") or rest == "/":
        raise ValueError(
            "A SQLite URL is 'sqlite:///relative/path.db' or "
            f"'sqlite:////absolute/path.db'. Received: db={url_or_path!r}"
        )
    return Path(rest[1:])


def _create_private(path: Path) -> None:
    """Creates an empty database file with mode 0600 if there is none."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return
    os.close(fd)


def connect(
    url_or_path: str | os.PathLike, synchronous: str = "NORMAL"
) -> sqlite3.Connection:
    """Opens the shared database (autocommit; transactions are explicit).

    Args:
        url_or_path: str or PathLike. A SQLite file path or a
            `sqlite:///...` URL. The file is created (mode 0600) if
            missing; its directory must exist.
        synchronous: str. SQLite's `synchronous` level: NORMAL (a commit
            survives a crash of the process) or FULL (and a power loss).

    Returns:
        A connection usable from several threads (callers serialize
        their use with a lock), in WAL mode, with a busy timeout.

    Raises:
        ValueError: for an unsupported URL scheme, a missing directory or
            an unknown `synchronous` level.

    Example:
    ```python
    from aiservice_kit.serving._db import connect
    db = connect("sqlite:///service.db")
    db.execute("SELECT 1").fetchone()
    ```
    """
    path = sqlite_path(url_or_path)
    if synchronous not in SYNCHRONOUS:
        raise ValueError(
            f"`synchronous` must be one of {', '.join(SYNCHRONOUS)}. "
            f"Received: synchronous={synchronous!r}"
        )
    if not path.parent.is_dir():
        raise ValueError(
            "`db` must be a file path in an existing directory. "
            f"Received: db={str(url_or_path)!r}"
        )
    if str(path) not in SQLITE_PRIVATE_NAMES:
        _create_private(path)
    connection = sqlite3.connect(
        str(path),
        check_same_thread=False,
        timeout=DB_BUSY_TIMEOUT_S,
        isolation_level=None,
    )
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute(f"PRAGMA synchronous={synchronous}")
    connection.execute(f"PRAGMA busy_timeout={int(DB_BUSY_TIMEOUT_S * 1000)}")
    return connection


def is_postgres(url_or_path: Any) -> bool:
    """Whether `url_or_path` is a `postgresql://` (or `postgres://`) URL.

    Args:
        url_or_path: anything `db` may be.

    Returns:
        True for a PostgreSQL URL.

    Example:
    ```python
    is_postgres("postgresql://app@db/aiservice")  # True
    ```
    """
    if not isinstance(url_or_path, str):
        return False
    scheme, sep, _ = url_or_path.partition("://")
    return bool(sep) and scheme.lower() in ("postgresql", "postgres")


def database_url(url_or_path: str | os.PathLike) -> str | Path:
    """A PostgreSQL URL unchanged, else the SQLite file it names.

    Args:
        url_or_path: str or PathLike. A file path, a `sqlite:///` URL or a
            `postgresql://` URL.

    Returns:
        The URL (str) or the SQLite path (Path).

    Raises:
        ValueError: for another scheme, naming those accepted.

    Example:
    ```python
    database_url("sqlite:///service.db")  # PosixPath('service.db')
    ```
    """
    if is_postgres(url_or_path):
        return url_or_path
    try:
        return sqlite_path(url_or_path)
    except ValueError:
        raise ValueError(
            "`db` must be a file path or a URL with one of the schemes "
            f"{', '.join(s + '://' for s in DATABASE_SCHEMES)}. "
            f"Received: db={url_or_path!r}"
        ) from None


@functools.lru_cache(maxsize=256)
def _dialect_sql(dialect: str, sql: str) -> str:
    if dialect == "sqlite":
        return sql.replace(" FOR UPDATE", "")
    return sql.replace("?", "%s")


class Transaction:
    """One open transaction: `execute` runs a statement, returns its rows."""

    def __init__(self, cursor: Any, dialect: str) -> None:
        self._cursor = cursor
        self.dialect = dialect

    def execute(self, sql: str, params: tuple | list = ()) -> list[tuple]:
        """Runs one statement (`?` placeholders); returns its rows."""
        cursor = self._cursor.execute(_dialect_sql(self.dialect, sql), params)
        return cursor.fetchall() if cursor.description is not None else []

    def executemany(self, sql: str, rows: list) -> None:
        """Runs one statement for each row of parameters."""
        if rows:
            self._cursor.executemany(_dialect_sql(self.dialect, sql), rows)

    def now(self) -> float:
        """Unix time from the database's clock (shared by replicas)."""
        if self.dialect == "sqlite":
            return time.time()  # every process on the file shares a host
        return float(
            self.execute("SELECT EXTRACT(EPOCH FROM clock_timestamp())")[0][0]
        )


class Database:
    """A database the serving parts share: transactions and a dialect.

    Attributes:
        dialect: str. "sqlite" or "postgresql".
        url: str or Path. What was opened (a SQLite path, or the URL).
    """

    dialect = ""
    url: str | Path

    def transaction(self) -> contextlib.AbstractContextManager[Transaction]:
        """A write transaction, committed on exit, rolled back on error."""
        raise NotImplementedError

    def ping(self) -> None:
        """Raises when the database cannot be reached."""
        with self.transaction() as tx:
            tx.execute("SELECT 1")

    def run_if_free(
        self, work: Callable[[Transaction], Any]
    ) -> tuple[bool, Any]:
        """Runs `work(tx)` in a write transaction only if one can start
        without waiting (see `SQLiteDatabase.run_if_free`).

        Returns:
            `(True, what work returned)`, or `(False, None)` when it would
            have waited (always, on a database over the network).
        """
        return False, None

    def checkpoint_in_background(self) -> None:
        """Moves the database's own upkeep off the commits (SQLite's WAL
        checkpoints; nothing to do for PostgreSQL). Call it once, for a
        server's long-lived database."""

    def close(self) -> None:
        """Releases the connections."""


def _open_turns(path: Path) -> int | None:
    """The file whose lock gives the processes on `path` turns to write.

    SQLite's own lock is taken with sleeps between tries (1, 2, 5, 10,
    15, 20, 25 ms...), so a process that found it held keeps sleeping
    while another one, never sleeping, takes it again: with two server
    processes on one file, some calls waited 50-100 ms for the ledger.
    Every writer here first takes an `flock` on `<file>-writer.lock`
    (mode 0600), which the kernel hands to the next waiter the moment it
    is released; SQLite's lock is then almost always free. Other programs
    writing the file are still serialized by SQLite's lock.

    Returns:
        The lock file's descriptor, or None where `flock` is missing
        (Windows) or the file cannot be opened (SQLite's lock only).
    """
    if fcntl is None or str(path) in SQLITE_PRIVATE_NAMES:
        return None
    try:
        return os.open(f"{path}-writer.lock", os.O_RDWR | os.O_CREAT, FILE_MODE)
    except OSError as error:
        logger.debug("no writers' lock file beside %s: %s", path, error)
        return None


def _passive_checkpoint(connection: sqlite3.Connection) -> int:
    """Checkpoints what it can without waiting; the WAL's pages."""
    # fetchall: a statement left unfinished would keep a read snapshot,
    # and the WAL could never start over.
    [(_, frames, _)] = connection.execute(
        "PRAGMA wal_checkpoint(PASSIVE)"
    ).fetchall()
    return frames


class SQLiteDatabase(Database):
    """One WAL-mode SQLite connection per object, used under a lock.

    Args:
        path: str or PathLike. The file or `sqlite:///` URL.
        synchronous: str. NORMAL or FULL (see `connect`).
    """

    dialect = "sqlite"

    def __init__(
        self, path: str | os.PathLike, synchronous: str = "NORMAL"
    ) -> None:
        self.url = self.path = sqlite_path(path)
        self._synchronous = synchronous
        self._db = connect(path, synchronous=synchronous)
        self._lock = threading.Lock()
        self._checkpoints_stop = threading.Event()
        self._checkpointer: threading.Thread | None = None
        self._turns = _open_turns(self.path)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """`BEGIN IMMEDIATE`: the write lock is taken at the start, in
        this process's turn among the file's writers (`_open_turns`)."""
        with self._lock, self._writers_turn():
            self._db.execute("BEGIN IMMEDIATE")
            with self._committed() as tx:
                yield tx

    @contextlib.contextmanager
    def _committed(self) -> Iterator[Transaction]:
        """The body of a begun transaction: committed on exit, rolled
        back on error."""
        try:
            yield Transaction(self._db, self.dialect)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    @contextlib.contextmanager
    def _writers_turn(self, wait: bool = True) -> Iterator[bool]:
        """This process's turn to write (see `_open_turns`); yields
        whether it was taken (always, when `wait`)."""
        if self._turns is None:
            yield True
            return
        mode = fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB
        try:
            fcntl.flock(self._turns, mode)  # the GIL is released meanwhile
        except BlockingIOError:
            taken = False
        else:
            taken = True
        if not taken:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(self._turns, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def _busy_timeout(self, milliseconds: int) -> Iterator[None]:
        """SQLite's busy timeout set to `milliseconds` for a moment (the
        connection's lock held), then back to `DB_BUSY_TIMEOUT_S`."""
        self._db.execute(f"PRAGMA busy_timeout={milliseconds}")
        try:
            yield
        finally:
            self._db.execute(
                f"PRAGMA busy_timeout={int(DB_BUSY_TIMEOUT_S * 1000)}"
            )

    def run_if_free(
        self, work: Callable[[Transaction], Any]
    ) -> tuple[bool, Any]:
        """Runs `work(tx)` in a write transaction now, or not at all.

        For a caller that must not block (the event loop, for a call
        alone on the server): the transaction runs only if this
        connection, the writers' turn and SQLite's lock are all free this
        instant; otherwise nothing runs and the caller takes the waiting
        path (a database thread).

        Args:
            work: callable. `work(tx) -> result`, the transaction's body.

        Returns:
            `(True, result)` once committed, or `(False, None)`.

        Raises:
            Exception: the error of `work` or of the database; the
                transaction is rolled back then.

        Example:
        ```python
        ran, rows = database.run_if_free(lambda tx: tx.execute("SELECT 1"))
        ```
        """
        if not self._lock.acquire(blocking=False):
            return False, None
        try:
            with self._writers_turn(wait=False) as taken:
                if not taken:
                    return False, None
                # Another program may hold SQLite's lock without taking
                # turns: BEGIN must not wait for it.
                try:
                    with self._busy_timeout(0):
                        self._db.execute("BEGIN IMMEDIATE")
                except sqlite3.OperationalError as error:
                    if error.sqlite_errorcode & 0xFF in _BUSY_CODES:
                        return False, None
                    raise
                with self._committed() as tx:
                    return True, work(tx)
        finally:
            self._lock.release()

    @contextlib.contextmanager
    def read(self) -> Iterator[Transaction]:
        """A read (no write lock: WAL readers never wait for a writer)."""
        with self._lock:
            yield Transaction(self._db, self.dialect)

    def checkpoint_in_background(self) -> None:
        """Runs the WAL checkpoints on a thread, off the commits.

        SQLite checkpoints the WAL inside the commit that fills it past
        1,000 pages, and the checkpoint's fsync of those 4 MB stalled
        that commit, and every call waiting on this connection, for
        5-15 ms (0.7% of the ledger's commits here; the copy alone takes
        0.5 ms). With this, this connection never checkpoints on a
        commit; every `WAL_CHECKPOINT_S` a thread

        1. checkpoints with a connection of its own (PASSIVE: it waits for
           nobody, so commits go on during its fsync), then, once the WAL
           holds `WAL_RESTART_FRAMES` pages,
        2. checkpoints the few pages committed meanwhile and starts the
           WAL over (RESTART), with this process's commits held: a short
           fsync, 1-2 ms. (A PASSIVE checkpoint never starts the WAL over
           under steady load: it grew past 1 GB in a minute.)

        Runs until `close`.

        Example:
        ```python
        database = SQLiteDatabase("service.db")
        database.checkpoint_in_background()
        ```
        """
        if self._checkpointer is not None:
            return
        # Opened here, so a file that cannot be opened fails the caller.
        connection = connect(self.path, synchronous=self._synchronous)
        with self._lock:
            self._db.execute("PRAGMA wal_autocheckpoint=0")
        self._checkpointer = threading.Thread(
            target=self._checkpoint,
            args=(connection,),
            name="aiservice-wal-checkpoint",
            daemon=True,
        )
        self._checkpointer.start()

    def _checkpoint(self, connection: sqlite3.Connection) -> None:
        try:
            while not self._checkpoints_stop.wait(WAL_CHECKPOINT_S):
                try:
                    if _passive_checkpoint(connection) >= WAL_RESTART_FRAMES:
                        # The pages committed during that one's fsync, so
                        # that few are left for the restart to copy.
                        _passive_checkpoint(connection)
                        self._restart_wal()
                except sqlite3.Error as error:  # the next one catches up
                    logger.debug("WAL checkpoint failed: %s", error)
        finally:
            connection.close()

    def _restart_wal(self) -> None:
        """Checkpoints the pages committed since the PASSIVE checkpoint
        and starts the WAL over, with this process's commits held (1-2 ms
        here). It waits `WAL_RESTART_WAIT_MS` at most for other
        processes' readers and writers; if they are busy, the next round
        tries again."""
        with (
            self._lock,
            self._writers_turn(),
            self._busy_timeout(WAL_RESTART_WAIT_MS),
        ):
            self._db.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()

    def close(self) -> None:
        """Stops the checkpoints and closes the connection (the last
        connection to the file checkpoints what is left)."""
        self._checkpoints_stop.set()
        if self._checkpointer is not None:
            self._checkpointer.join()
        with self._lock:
            self._db.close()
            if self._turns is not None:
                os.close(self._turns)
                self._turns = None


class PostgresDatabase(Database):
    """A psycopg 3 connection pool on a PostgreSQL database.

    Args:
        url: str. A `postgresql://user:password@host:port/database` URL.
        pool_size: int. Connections kept at most.

    Raises:
        ValueError: when psycopg is not installed.
        RuntimeError: when the database cannot be reached in time.
    """

    dialect = "postgresql"

    def __init__(self, url: str, pool_size: int = PG_POOL_SIZE) -> None:
        try:
            import psycopg
            import psycopg_pool
        except ImportError:
            raise ValueError(
                "A PostgreSQL `db` needs psycopg 3 and its pool: "
                "pip install 'aiservice_kit[postgres]'. "
                f"Received: db={url!r}"
            ) from None
        self.url = url
        try:  # fail fast, with the reason, when the server is not there
            psycopg.connect(url, connect_timeout=PG_CONNECT_TIMEOUT_S).close()
        except psycopg.Error as error:
            raise RuntimeError(
                f"Cannot reach the PostgreSQL database {_redact(url)}: "
                f"{str(error).strip()}"
            ) from None
        self.pool = psycopg_pool.ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            # a lock held elsewhere fails a statement after the same wait
            # as SQLite's busy timeout, rather than hanging it
            kwargs={
                "autocommit": True,
                "options": f"-c lock_timeout={int(DB_BUSY_TIMEOUT_S * 1000)}",
            },
            timeout=DB_BUSY_TIMEOUT_S,
            open=False,
        )
        self.pool.open(wait=False)
        try:
            self.pool.wait(timeout=DB_BUSY_TIMEOUT_S)
        except Exception as error:
            self.pool.close()
            raise RuntimeError(
                f"Cannot reach the PostgreSQL database {_redact(url)}: {error}"
            ) from None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """A READ COMMITTED transaction on a pooled connection."""
        with self.pool.connection() as connection:
            with connection.transaction():
                yield Transaction(connection.cursor(), self.dialect)

    read = transaction

    def close(self) -> None:
        """Closes the pool."""
        self.pool.close()


def _redact(url: str) -> str:
    scheme, _, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at:
        return url
    user = credentials.partition(":")[0]
    return f"{scheme}://{user}@{host}"


def open_database(
    url_or_path: str | os.PathLike, synchronous: str = "NORMAL"
) -> Database:
    """Opens the shared database and brings its schema up to date.

    Args:
        url_or_path: str or PathLike. A SQLite path or `sqlite:///` URL, or
            a `postgresql://` URL.
        synchronous: str. SQLite's `synchronous` level (ignored for
            PostgreSQL, whose commits are durable).

    Returns:
        The Database, migrated to the current schema version.

    Raises:
        ValueError: for an unsupported URL or a missing directory.
        RuntimeError: for a PostgreSQL server that cannot be reached, or
            a schema newer than this server knows.

    Example:
    ```python
    from aiservice_kit.serving._db import open_database
    db = open_database("postgresql://app@db.internal/aiservice")
    ```
    """
    from aiservice_kit.serving._schema import migrate

    target = database_url(url_or_path)
    if isinstance(target, str):
        database: Database = PostgresDatabase(target)
    else:
        database = SQLiteDatabase(target, synchronous)
    try:
        migrate(database)
    except BaseException:
        database.close()
        raise
    return database
