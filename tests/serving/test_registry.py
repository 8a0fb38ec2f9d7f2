"""The reload policy of the registry, run with a loader that is not TF.

The registry decides which versions are loaded, kept, retried and retired;
the TensorFlow runtime is a loader it is handed. These tests hand it a
loader that records what it is asked and fails where a directory says so,
so the policy is tested on its own (the real TF path is covered by
test_reload.py and test_protocol.py).
"""

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aiservice_kit.serving import ModelConfig
from aiservice_kit.serving._errors import ServingError
from aiservice_kit.serving.config import STALE_TMP_S
from aiservice_kit.serving.registry import ModelRegistry
from aiservice_kit.serving.registry import ModelSpec
from aiservice_kit.serving.registry import Registry

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclasses.dataclass
class Loaded:
    version: int
    path: Path
    closed: bool = False

    def close(self) -> None:
        self.closed = True


class Loader:
    """Loads every version dir unless it holds a file named `broken`."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.loaded: dict[int, Loaded] = {}

    def __call__(self, name, version, path, batching, on_batch, runtime):
        self.calls.append(version)
        if (path / "broken").exists():
            raise ValueError(f"cannot load {path}\nsecond line")
        self.loaded[version] = Loaded(version, path)
        return self.loaded[version]


def publish(base: Path, name: str, broken: bool = False) -> Path:
    path = base / name
    path.mkdir(parents=True)
    (path / "saved_model.pb").write_bytes(b"x")
    if broken:
        (path / "broken").write_text("yes")
    return path


def registry_of(base: Path, keep=2, **kwargs) -> tuple[ModelRegistry, Loader]:
    loader = Loader()
    config = ModelConfig(base, keep_versions=keep)
    return ModelRegistry("m", config, loader, **kwargs), loader


def test_loads_the_newest_versions_and_retires_the_surplus(tmp_path):
    for name in ("1", "2", "3"):
        publish(tmp_path, name)
    model, loader = registry_of(tmp_path, keep=2)

    model.scan()
    first = (model.versions, sorted(loader.calls), model.get().version)
    publish(tmp_path, "4")
    model.scan()
    retired = loader.loaded[2]

    assert first == ([3, 2], [2, 3], 3)
    assert model.versions == [4, 3] and model.get().version == 4
    assert sorted(loader.calls) == [2, 3, 4]  # loaded versions stay loaded
    assert not retired.closed  # requests holding it still finish
    with pytest.raises(ServingError, match=r"Specific\(m, 2\)") as missing:
        model.get(2)
    assert missing.value.status_code == 404
    assert [row.version for row in model.status()] == [4, 3]
    model.close()
    assert retired.closed and loader.loaded[4].closed


def test_a_failed_version_keeps_the_previous_one_and_retries_on_change(
    tmp_path,
):
    publish(tmp_path, "1")
    model, loader = registry_of(tmp_path, keep=1)
    model.scan()
    broken = publish(tmp_path, "2", broken=True)

    model.scan()
    model.scan()  # same files: not retried
    status = model.status(2)[0]
    calls_while_broken = list(loader.calls)
    (broken / "broken").unlink()  # the files change: retried
    model.scan()

    assert calls_while_broken == [1, 2]
    assert status.state == "END"
    assert (
        status.error_message
        == "Failed to load: ValueError: cannot load " + (f"{broken}")
    )
    assert model.versions == [2] and loader.calls == [1, 2, 2]
    assert model.status(2)[0].state == "AVAILABLE"


def test_a_removed_version_is_unloaded(tmp_path):
    publish(tmp_path, "1")
    publish(tmp_path, "2")
    model, _ = registry_of(tmp_path, keep=None)
    model.scan()
    (tmp_path / "2" / "saved_model.pb").unlink()
    (tmp_path / "2").rmdir()

    model.scan()

    assert model.versions == [1]


def test_only_ascii_digit_directories_are_versions(tmp_path):
    for name in ("1", "²", "٩", "0", "07x", ".tmp-5"):
        publish(tmp_path, name)
    (tmp_path / "3").write_text("a file, not a version directory")
    model, loader = registry_of(tmp_path, keep=None)

    model.scan()

    assert model.versions == [1] and loader.calls == [1]


def test_stale_temporary_directories_are_removed_on_poll(tmp_path):
    publish(tmp_path, "1")
    stale = publish(tmp_path, ".tmp-old")
    fresh = publish(tmp_path, ".tmp-new")
    long_ago = time.time() - STALE_TMP_S - 60
    os.utime(stale, (long_ago, long_ago))
    model, _ = registry_of(tmp_path)

    model.scan()

    assert not stale.exists() and fresh.exists()
    assert model.versions == [1]


def test_stale_temporaries_are_kept_when_the_threshold_is_none(tmp_path):
    stale = publish(tmp_path, ".tmp-old")
    os.utime(stale, (0, 0))
    model, _ = registry_of(tmp_path, stale_tmp_s=None)

    model.scan()

    assert stale.exists()


def test_model_spec_resolves_numbers_labels_and_latest(tmp_path):
    publish(tmp_path, "1")
    publish(tmp_path, "2")
    loader = Loader()
    config = ModelConfig(tmp_path, keep_versions=None, version_labels={"s": 1})
    registry = Registry({"m": config}, loader, poll_interval_s=60)
    registry.start()
    try:
        latest = ModelSpec("m").resolve(registry)[1]
        numbered = ModelSpec("m", version="2").resolve(registry)[1]
        labelled = ModelSpec("m", label="s").resolve(registry)[1]
        errors = {}
        for spec in (
            ModelSpec("m", version="²"),
            ModelSpec("m", version="٩"),
            ModelSpec("m", version="x"),
            ModelSpec("m", label="nope"),
            ModelSpec("other"),
        ):
            with pytest.raises(ServingError) as error:
                spec.resolve(registry)
            errors[spec] = (error.value.status_code, error.value.message)
    finally:
        registry.stop()

    assert (latest, numbered, labelled) == (None, 2, 1)
    assert list(errors.values()) == [
        (400, "Failed to convert version: ² to numeric."),
        (400, "Failed to convert version: ٩ to numeric."),
        (400, "Failed to convert version: x to numeric."),
        (400, "Unrecognized servable version label: nope"),
        (404, "Servable not found for request: Latest(other)"),
    ]
    assert all(loaded.closed for loaded in loader.loaded.values())


def test_the_registry_and_the_app_do_not_import_tensorflow_or_keras():
    code = (
        "import sys\n"
        "import aiservice_kit.serving.app\n"
        "import aiservice_kit.serving.registry\n"
        "import aiservice_kit.serving.routes\n"
        "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
