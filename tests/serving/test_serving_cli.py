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
