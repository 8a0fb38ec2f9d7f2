"""The package's public surface, its import behaviour and its metadata."""

import inspect
import os
import subprocess
import sys
import types

import aiservice_kit


def test_all_lists_exactly_the_public_names():
    public = {
        name
        for name, value in vars(aiservice_kit).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }

    assert set(aiservice_kit.__all__) - {"__version__"} == public
    assert sorted(aiservice_kit.__all__) == list(aiservice_kit.__all__)


def test_every_public_name_is_documented_and_typed():
    for name in aiservice_kit.__all__:
        if name == "__version__":
            continue
        value = getattr(aiservice_kit, name)
        assert inspect.getdoc(value), f"{name} has no docstring"
        if inspect.isfunction(value):
            hints = value.__annotations__
            assert "return" in hints, f"{name} has no return annotation"


def test_version_is_a_release_string():
    parts = aiservice_kit.__version__.split(".")
    assert len(parts) == 3 and all(part.isdigit() for part in parts)


def _run_python(code, **env):
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("TF_CPP_MIN_LOG_LEVEL", "KERAS_BACKEND")
    }
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
    )


def test_import_is_quiet_and_light():
    result = _run_python(
        "import sys, aiservice_kit; "
        "print('fastapi' in sys.modules, 'uvicorn' in sys.modules)"
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]
    assert result.stderr == ""


def test_child_processes_stay_quiet():
    # A server started from a quiet process must not take our level for the
    # user's and print TensorFlow's start-up notices.
    result = _run_python(
        "import subprocess, sys, aiservice_kit; "
        "subprocess.run([sys.executable, '-c', 'import aiservice_kit'])"
    )

    assert result.returncode == 0
    assert result.stderr == ""


def test_a_users_quiet_level_also_hides_the_start_up_notices():
    result = _run_python("import aiservice_kit", TF_CPP_MIN_LOG_LEVEL="2")

    assert result.returncode == 0
    assert result.stderr == ""


def test_a_users_own_log_level_is_respected():
    result = _run_python(
        "import os, aiservice_kit; print(os.environ['TF_CPP_MIN_LOG_LEVEL'])",
        TF_CPP_MIN_LOG_LEVEL="0",
    )

    assert result.stdout.strip() == "0"


def test_another_keras_backend_fails_on_import_naming_the_fix():
    result = _run_python("import aiservice_kit", KERAS_BACKEND="numpy")

    assert result.returncode != 0
    assert "backend='numpy'" in result.stderr
    assert "KERAS_BACKEND=tensorflow" in result.stderr
