"""The serving commands' one error policy, as a user runs them."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("module", "argv", "message"),
    [
        (
            "aiservice_kit.cli",
            ["serve"],
            "aiservice-kit serve: error: --model NAME=BASE_PATH is required",
        ),
        (
            "aiservice_kit.serving.cli",
            ["serve"],
            "aiservice-kit serve: error: --model NAME=BASE_PATH is required",
        ),
        (
            "aiservice_kit.cli",
            ["keys", "list", "--db", "mysql://host/db"],
            "aiservice-kit keys: error: --db: `db` must be a file path or a "
            "URL with one of the schemes sqlite://, postgresql://, "
            "postgres://.",
        ),
        (
            "aiservice_kit.cli",
            ["keys", "list", "--db", "postgresql://app:pw@127.0.0.1:1/db"],
            "aiservice-kit keys: error: --db: Cannot reach the PostgreSQL "
            "database postgresql://app@127.0.0.1:1/db",
        ),
    ],
)
def test_usage_errors_exit_2_with_one_line(module, argv, message, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", module, *argv],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
    )

    assert result.returncode == 2
    assert result.stderr.startswith(message)
    assert "Traceback" not in result.stderr


def test_a_sqlite_url_names_the_database(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    create = [sys.executable, "-m", "aiservice_kit.cli", "keys", "create"]
    created = subprocess.run(
        [*create, "--name", "acme", "--plan", "free", "--db", "sqlite:///k.db"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
    )
    listed = subprocess.run(
        [sys.executable, "-m", "aiservice_kit.cli", "keys", "list"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=dict(env, AISERVICE_KIT_DB=str(tmp_path / "k.db")),
    )

    assert created.returncode == 0, created.stderr
    assert listed.returncode == 0, listed.stderr
    assert "acme" in listed.stdout


def test_a_version_directory_is_refused_naming_the_base_path(tmp_path, capsys):
    from aiservice_kit import cli

    version = tmp_path / "exports" / "digits" / "1"
    version.mkdir(parents=True)
    (version / "saved_model.pb").write_bytes(b"")  # the layout, not a model

    status = cli.main(["serve", "--model", f"digits={version}"])

    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith(
        f"aiservice-kit serve: error: --model digits={version}"
    )
    assert "is a version directory" in err
    assert f"--model digits={version.parent}\n" in err


@pytest.mark.parametrize("value", ["0", "-1", "abc", "1.5"])
def test_a_bad_workers_value_names_the_argument(value, tmp_path, capsys):
    from aiservice_kit.cli import main

    code = main(["serve", "--model", f"m={tmp_path}", "--workers", value])

    assert code == 2
    assert (
        f"argument --workers: must be a positive integer, got {value!r}"
        in capsys.readouterr().err
    )


def test_workers_refuse_a_database_they_cannot_share(tmp_path, capsys):
    from aiservice_kit.cli import main

    argv = ["serve", "--model", f"m={tmp_path}", "--db", ":memory:"]
    code = main([*argv, "--workers", "2"])

    assert code == 2
    error = capsys.readouterr().err
    assert error.startswith("aiservice-kit serve: error: --workers 2 needs")
    assert "Received: --db ':memory:'" in error


def _main(argv, capsys):
    from aiservice_kit.cli import main

    code = main([str(arg) for arg in argv])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["keys", "create", "--name", "bob", "--plan", "free"],
        ["keys", "list"],
        ["keys", "revoke", "bob"],
        ["usage"],
    ],
)
def test_a_db_that_is_a_directory_or_not_sqlite_is_one_line(
    argv, tmp_path, capsys
):
    not_db = tmp_path / "notes.txt"
    not_db.write_text("not a database\n")
    for db, says in (
        (tmp_path, "is a directory"),
        (not_db, "is not a usable SQLite database"),
    ):
        code, err = _main([*argv, "--db", db], capsys)

        assert code == 2, err
        assert err.startswith(f"aiservice-kit {argv[0]}: error: --db: "), err
        assert says in err and str(db) in err
        assert len(err.strip().splitlines()) == 1, err


def test_an_unreachable_postgres_is_one_line(capsys):
    code, err = _main(
        ["keys", "list", "--db", "postgresql://app@127.0.0.1:1/db"], capsys
    )

    assert code == 2
    assert "--db: Cannot reach the PostgreSQL database" in err
    assert len(err.strip().splitlines()) == 1, err


def test_serve_refuses_a_database_it_cannot_open_before_starting(tmp_path):
    not_db = tmp_path / "notes.txt"
    not_db.write_text("not a database\n")
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from aiservice_kit.cli import main; sys.exit(main())",
            "serve",
            "--model",
            f"m={tmp_path}",
            "--db",
            str(not_db),
            "--port",
            "1",  # never reached: the database is refused first
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
    )

    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(
        f"aiservice-kit serve: error: --db: {str(not_db)!r} is not a usable "
        "SQLite database"
    )
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_model_name_given_twice_is_refused(tmp_path, capsys, monkeypatch):
    import uvicorn

    def never(*args, **kwargs):
        raise AssertionError("serve started a server")

    monkeypatch.setattr(uvicorn, "run", never)
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()

    code, err = _main(
        ["serve", "--model", f"m={first}", "--model", f"m={second}"]
        + ["--db", tmp_path / "k.db"],
        capsys,
    )

    assert code == 2
    assert err.startswith("aiservice-kit serve: error: --model: the name 'm'")
    assert f"--model m={first}" in err and f"--model m={second}" in err


@pytest.mark.parametrize(
    ("since", "until"),
    [("2025-01-02", "2025-01-01"), ("2025-01-01", "2025-01-01")],
)
def test_usage_refuses_an_empty_period(since, until, tmp_path, capsys):
    db = tmp_path / "k.db"
    created, err = _main(
        ["keys", "create", "--name", "a", "--plan", "free", "--db", db], capsys
    )
    assert created == 0, err

    code, err = _main(
        ["usage", "--since", since, "--until", until, "--db", db], capsys
    )

    assert code == 2
    assert err.startswith(
        "aiservice-kit usage: error: --since must be before --until"
    )
    assert f"--since {since}T00:00:00+00:00" in err
    assert f"--until {until}T00:00:00+00:00" in err
