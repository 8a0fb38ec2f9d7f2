"""A real PostgreSQL server for the tests, on a free loopback port.

`initdb` into a temporary directory, `pg_ctl start` on 127.0.0.1, one
database per test session, stopped and removed at exit. The server comes
from the machine (`pg_config --bindir`, Debian's `postgresql` package, or
`AISERVICE_KIT_PG_BINDIR`); where none can be found the tests that need it
skip with the reason printed. PostgreSQL refuses to run as root, so as root
the server runs as the `postgres` user (created by Debian's package).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


def find_bindir() -> Path | None:
    """Returns the folder holding `initdb` and `pg_ctl`, or None."""
    candidates = []
    if os.environ.get("AISERVICE_KIT_PG_BINDIR"):
        candidates.append(Path(os.environ["AISERVICE_KIT_PG_BINDIR"]))
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout.strip()
            candidates.append(Path(out))
    candidates.extend(sorted(Path("/usr/lib/postgresql").glob("*/bin")))
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_as() -> tuple[list[str], str | None]:
    """The command prefix that runs the server as a non-root user."""
    if os.geteuid() != 0:
        return [], None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return [], "running as root and no `postgres` user exists"
    return ["runuser", "-u", "postgres", "--"], None


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Starts a throwaway PostgreSQL server and yields its URL.

    Yields:
        A `postgresql://postgres@127.0.0.1:PORT/aiservice_kit` URL.

    Raises:
        RuntimeError: with the reason, when no server can be started (the
            caller turns it into a skip).
    """
    bindir = find_bindir()
    if bindir is None:
        raise RuntimeError(
            "no PostgreSQL server found (install Debian's `postgresql` "
            "package, or set AISERVICE_KIT_PG_BINDIR)"
        )
    prefix, problem = _run_as()
    if problem:
        raise RuntimeError(problem)
    root = Path(tempfile.mkdtemp(prefix="aiservice-kit-pg-"))
    data = root / "data"
    data.mkdir()
    if prefix:
        shutil.chown(root, "postgres")
        shutil.chown(data, "postgres")
    port = _free_port()
    pg_ctl = [*prefix, str(bindir / "pg_ctl"), "-D", str(data)]
    try:
        subprocess.run(
            [
                *prefix,
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        options = (
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c max_connections=200"
        )
        subprocess.run(
            [*pg_ctl, "-o", options, "-l", str(root / "log"), "-w", "start"],
            check=True,
            capture_output=True,
            timeout=120,
        )
    except (OSError, subprocess.SubprocessError) as error:
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"PostgreSQL did not start: {error}") from error
    try:
        subprocess.run(
            [
                *prefix,
                str(bindir / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-U",
                "postgres",
                "aiservice_kit",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        yield f"postgresql://postgres@127.0.0.1:{port}/aiservice_kit"
    finally:
        subprocess.run(
            [*pg_ctl, "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
            check=False,
        )
        shutil.rmtree(root, ignore_errors=True)
