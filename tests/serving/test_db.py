"""The one database connection factory of the key store and the ledger."""

import stat

import pytest

from aiservice_kit.serving import KeyStore
from aiservice_kit.serving import SQLiteMeter
from aiservice_kit.serving._db import connect
from aiservice_kit.serving._db import sqlite_path


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
