"""The one database connection factory of the key store and the ledger.

`connect(url_or_path)` opens the database that `KeyStore` and
`SQLiteMeter` share. Today it speaks SQLite: a plain path or a
`sqlite:///path` URL, opened in WAL mode with a busy timeout, and a new
file is created readable by its owner only (it holds key hashes and the
billing ledger). Another backend (PostgreSQL) is added here, behind the
same function, by its URL scheme; every other scheme is refused with a
clear error.
"""

import os
import sqlite3
from pathlib import Path

from aiservice_kit.serving.config import DB_BUSY_TIMEOUT_S

#: URL schemes `connect` accepts.
SCHEMES = ("sqlite",)
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
            f"{', '.join(s + '://' for s in SCHEMES)}. "
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
