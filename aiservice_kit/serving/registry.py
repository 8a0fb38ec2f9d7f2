"""The model registry: which versions are served, and when they change.

Each served model is a base directory of version directories (the layout
TF Serving reads, `aiservice_kit._layout`). Three parts, none of which
knows TensorFlow:

- the version source (`VersionSource`) lists the versions on disk and
  removes writers' abandoned `.tmp-*` directories;
- the manager (`ModelRegistry`, `Registry`) decides what to load and
  unload: a new version is loaded (by the loader it is given, e.g.
  `_servable.load_version`) and then swapped in atomically, so requests
  never see a half-loaded model; a version that fails to load is reported
  in the model status and the previous one keeps serving (it is retried
  when its files change); old versions retire after a grace period;
- the request side (`ModelSpec`): which model and version a call names.
"""

import dataclasses
import logging
import os
import re
import threading
import time
import types
from collections.abc import Callable
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from typing import Protocol

from aiservice_kit._layout import list_versions
from aiservice_kit._layout import remove_stale_temporaries
from aiservice_kit.serving._admission import Admission
from aiservice_kit.serving._admission import AdmissionLimits
from aiservice_kit.serving._errors import ServingError
from aiservice_kit.serving.batching import BatchingConfig
from aiservice_kit.serving.config import DEFAULT_KEEP_VERSIONS
from aiservice_kit.serving.config import DEFAULT_POLL_INTERVAL_S
from aiservice_kit.serving.config import DEFAULT_RUNTIME
from aiservice_kit.serving.config import RETIRE_GRACE_S
from aiservice_kit.serving.config import RUNTIME_CHOICES
from aiservice_kit.serving.config import STALE_TMP_S

logger = logging.getLogger("aiservice_kit.serving")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """How one model is served.

    Attributes:
        base_path: str or Path. Directory holding `<N>/` version dirs.
        batching: BatchingConfig. Dynamic batching settings.
        keep_versions: int or None. How many of the newest loadable versions
            stay loaded (callable by `/versions/N`); None keeps all.
        version_labels: dict of str -> int. Names for version numbers, as
            in TF Serving's `version_labels` (`{"stable": 1, "canary":
            2}`), callable by `/labels/NAME`. Moving a label is a config
            change; clients keep their URL.
        limits: AdmissionLimits. Instances per request, and bytes and
            instances in flight (`_admission`).
        runtime: str. What runs the `serving_default` and `predict`
            signatures: `"auto"` (a converted artifact proven equal to
            TensorFlow at load, LiteRT first, else TensorFlow),
            `"tensorflow"`, `"litert"` or `"onnx"` (see
            `aiservice_kit.serving._runtimes`).
    """

    base_path: str | Path
    batching: BatchingConfig = dataclasses.field(default_factory=BatchingConfig)
    keep_versions: int | None = DEFAULT_KEEP_VERSIONS
    version_labels: Mapping[str, int] = dataclasses.field(
        default_factory=dict, hash=False
    )
    limits: AdmissionLimits = dataclasses.field(default_factory=AdmissionLimits)
    runtime: str = DEFAULT_RUNTIME

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIME_CHOICES:
            raise ValueError(
                "`runtime` must be one of "
                f"{', '.join(repr(c) for c in RUNTIME_CHOICES)}. "
                f"Received: runtime={self.runtime!r}"
            )
        if not isinstance(self.base_path, (str, os.PathLike)):
            raise TypeError(
                "`base_path` must be a path to a directory of versions. "
                f"Received: base_path={self.base_path!r}"
            )
        if self.keep_versions is not None and (
            isinstance(self.keep_versions, bool)
            or not isinstance(self.keep_versions, int)
            or self.keep_versions < 1
        ):
            raise ValueError(
                "`keep_versions` must be an integer >= 1 or None. "
                f"Received: keep_versions={self.keep_versions!r}"
            )
        labels = self.version_labels
        if not isinstance(labels, Mapping) or not all(
            isinstance(label, str)
            and label
            and "/" not in label
            and ":" not in label
            and not isinstance(version, bool)
            and isinstance(version, int)
            and version >= 1
            for label, version in labels.items()
        ):
            raise ValueError(
                "`version_labels` must map label names (non-empty, without "
                "'/' or ':') to version numbers >= 1, e.g. {'stable': 1}. "
                f"Received: version_labels={labels!r}"
            )
        # A read-only copy: the config stays what it was when checked.
        object.__setattr__(
            self, "version_labels", types.MappingProxyType(dict(labels))
        )

    def version_of(self, label: str) -> int:
        """The version a label names.

        Raises:
            ServingError: 400 in TF Serving's words for an unknown label.
        """
        try:
            return self.version_labels[label]
        except KeyError:
            raise ServingError(
                f"Unrecognized servable version label: {label}", 400
            ) from None


@dataclasses.dataclass
class VersionStatus:
    """One row of TF Serving's `model_version_status`."""

    version: int
    state: str
    error_code: str = "OK"
    error_message: str = ""
    runtime: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON form TF Serving returns (plus `runtime` when set).

        `runtime` (`"litert"`, `"onnx"`, or `"tensorflow"` after a
        fallback) is an extra key TF Serving clients ignore, present for
        a version that runs on another runtime or fell back from one;
        after a fallback `error_message` says why (`error_code` stays OK:
        the version serves).
        """
        row = {
            "version": str(self.version),
            "state": self.state,
            "status": {
                "error_code": self.error_code,
                "error_message": self.error_message,
            },
        }
        if self.runtime is not None:
            row["runtime"] = self.runtime
        return row


class Servable(Protocol):
    """What the manager needs of a loaded version (see `_servable`)."""

    version: int

    def close(self) -> None:
        """Releases the version once no request holds it."""


#: `loader(model_name, version, path, batching, on_batch, runtime=...)
#: -> Servable`; raises when the version cannot be loaded.
Loader = Callable[..., Servable]


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Which model and version a call names, as TF Serving's ModelSpec.

    At most one of `version` and `label` is set; neither means the latest.
    `version` is kept as the text of the URL so that a malformed one is
    reported (and metered) where the call is answered.

    Attributes:
        name: str. The model name.
        version: str or None. The version number, as sent.
        label: str or None. A version label from the model's config.
    """

    name: str
    version: str | None = None
    label: str | None = None

    def version_number(self) -> int | None:
        """The version asked for as a number (None for latest or a label).

        Raises:
            ServingError: 400 in TF Serving's words for a malformed one.
        """
        text = self.version
        if text is None:
            return None
        # ASCII digits only: `str.isdigit` also accepts "²" and "٩".
        if not re.fullmatch(r"[0-9]{1,18}", text):
            raise ServingError(
                f"Failed to convert version: {text} to numeric.", 400
            )
        return int(text)

    def resolve(
        self, registry: "Registry"
    ) -> tuple["ModelRegistry", int | None]:
        """The model's registry and the version number (None: the latest).

        Raises:
            ServingError: 400 for a malformed version or unknown label,
                404 for an unknown model.
        """
        version = self.version_number()
        model = registry.get_model(self.name, version)
        if self.label is not None:
            version = model.config.version_of(self.label)
        return model, version


class VersionSource:
    """The versions published under one base path.

    Args:
        base_path: str or Path. Directory holding `<N>/` version dirs.
        stale_tmp_s: float or None. `.tmp-*` directories older than this
            (seconds) are removed on each poll; None keeps them.
    """

    def __init__(
        self, base_path: str | os.PathLike, stale_tmp_s: float | None
    ) -> None:
        self.base_path = Path(base_path)
        self.stale_tmp_s = stale_tmp_s
        #: Why the last poll saw no directory (None when it did).
        self.problem: str | None = None

    def poll(self) -> dict[int, Path] | None:
        """Version number -> directory, for what is published now.

        Only names of ASCII digits count (`²` or `٩` do not), as in
        `aiservice_kit._layout.list_versions`.

        Returns:
            The versions, or None when the base directory is missing or
            unreadable: that says nothing about the versions (a `mv` swap
            of the directory, a lost mount), so the caller keeps what it
            has. `problem` then says why.
        """
        self.problem = None
        if not self.base_path.is_dir():
            self.problem = f"base path {self.base_path} is missing"
            return None
        try:
            if self.stale_tmp_s is not None:
                for path in remove_stale_temporaries(
                    self.base_path, older_than=self.stale_tmp_s
                ):
                    logger.warning("removed abandoned export %s", path)
            versions = list_versions(self.base_path)
        except OSError as error:
            self.problem = f"base path {self.base_path} is unreadable: {error}"
            return None
        return {number: self.base_path / str(number) for number in versions}


def _fingerprint(path: Path) -> tuple:
    entries = []
    for root, _, files in os.walk(path):
        for file in files:
            try:
                stat = os.stat(os.path.join(root, file))
            except OSError:
                continue
            entries.append((root, file, stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(entries))


class ModelRegistry:
    """The loaded versions of one model and their status (the manager).

    Args:
        name: str. The model name in URLs.
        config: ModelConfig. Where and how to serve it.
        loader: callable. `loader(name, version, path, batching,
            on_batch)` loads one version (see `Loader`).
        on_batch: callable or None. `on_batch(size)` for metrics.
        stale_tmp_s: float or None. Age after which `.tmp-*` directories
            in the base path are removed; None keeps them.
    """

    def __init__(
        self,
        name: str,
        config: ModelConfig,
        loader: Loader,
        on_batch: Callable[[int], None] | None = None,
        stale_tmp_s: float | None = STALE_TMP_S,
    ) -> None:
        self.name = name
        self.config = config
        self.base_path = Path(config.base_path)
        self.source = VersionSource(self.base_path, stale_tmp_s)
        self.admission = Admission(name, config.limits)
        self._loader = loader
        self._on_batch = on_batch
        self._versions: dict[int, Servable] = {}
        self._status: dict[int, VersionStatus] = {}
        self._failed: dict[int, tuple] = {}
        self._retiring: list[tuple[float, Servable]] = []
        self._reported = False  # a base path problem was logged
        self._lock = threading.Lock()

    @property
    def ready(self) -> bool:
        """Whether at least one version is loaded."""
        return bool(self._versions)

    @property
    def versions(self) -> list[int]:
        """The loaded version numbers, newest first."""
        return sorted(self._versions, reverse=True)

    def get(self, version: int | None = None) -> Any:
        """The latest version, or the given one.

        Raises:
            ServingError: 404 as TF Serving words it.
        """
        versions = self._versions
        if version is None:
            if not versions:
                raise ServingError(
                    f"Servable not found for request: Latest({self.name})", 404
                )
            return versions[max(versions)]
        try:
            return versions[version]
        except KeyError:
            raise ServingError(
                "Servable not found for request: "
                f"Specific({self.name}, {version})",
                404,
            ) from None

    def status(self, version: int | None = None) -> list[VersionStatus]:
        """TF Serving's version status rows (newest first).

        Raises:
            ServingError: 404 when the model or version is unknown.
        """
        rows = dict(self._status)
        if version is not None:
            if version not in rows:
                raise ServingError(
                    f"Could not find version {version} of model {self.name}",
                    404,
                )
            return [rows[version]]
        if not rows:
            raise ServingError(
                f"Could not find any versions of model {self.name}", 404
            )
        return [rows[key] for key in sorted(rows, reverse=True)]

    def scan(self) -> None:
        """Loads new versions, drops removed or surplus ones (thread-safe)."""
        with self._lock:
            self._scan()

    @property
    def problem(self) -> str | None:
        """Why the base path could not be read on the last scan, or None."""
        return self.source.problem

    def _scan(self) -> None:
        on_disk = self.source.poll()
        if on_disk is None:
            if not self._reported:
                logger.warning(
                    "model %s: %s; keeping the loaded versions %s",
                    self.name,
                    self.source.problem,
                    self.versions or "(none)",
                )
            self._reported = True
            return
        if self._reported:
            logger.warning("model %s: base path readable again", self.name)
            self._reported = False
        keep = self.config.keep_versions
        versions = dict(self._versions)
        kept: list[int] = []
        for number in sorted(on_disk, reverse=True):
            if keep is not None and len(kept) >= keep:
                break
            if number in versions:
                kept.append(number)
                continue
            path = on_disk[number]
            if number in self._failed:
                if self._failed[number] == _fingerprint(path):
                    continue
            loaded = self._load(number, path)
            if loaded is not None:
                versions[number] = loaded
                kept.append(number)
        dropped = [number for number in versions if number not in kept]
        for number in dropped:
            self._retiring.append((time.monotonic(), versions.pop(number)))
            self._status.pop(number, None)
            logger.info("model %s: version %d unloaded", self.name, number)
        for number in list(self._failed):
            if number not in on_disk:
                del self._failed[number]
                self._status.pop(number, None)
        self._versions = versions  # one atomic swap for readers
        self._close_retired()

    def _load(self, number: int, path: Path) -> Servable | None:
        self._status[number] = VersionStatus(number, "LOADING")
        started = time.monotonic()
        try:
            version = self._loader(
                self.name,
                number,
                path,
                self.config.batching,
                self._on_batch,
                runtime=self.config.runtime,
            )
        except Exception as error:
            self._failed[number] = _fingerprint(path)
            message = str(error).strip().splitlines()
            text = f"{type(error).__name__}: {message[0] if message else ''}"
            self._status[number] = VersionStatus(
                number, "END", "UNKNOWN", f"Failed to load: {text}"
            )
            logger.error(
                "model %s: version %d failed to load (%s); still serving %s",
                self.name,
                number,
                text,
                self.versions or "nothing",
            )
            return None
        self._failed.pop(number, None)
        self._status[number] = VersionStatus(
            number,
            "AVAILABLE",
            error_message=getattr(version, "runtime_note", ""),
            runtime=getattr(version, "reported_runtime", None),
        )
        logger.info(
            "model %s: version %d loaded in %.2f s",
            self.name,
            number,
            time.monotonic() - started,
        )
        return version

    def _close_retired(self, force: bool = False) -> None:
        now = time.monotonic()
        still = []
        for since, version in self._retiring:
            if force or now - since >= RETIRE_GRACE_S:
                version.close()
            else:
                still.append((since, version))
        self._retiring = still

    def close(self) -> None:
        """Unloads every version."""
        with self._lock:
            for version in self._versions.values():
                version.close()
            self._versions = {}
            self._close_retired(force=True)


class Registry:
    """Every served model, plus the thread that watches for new versions.

    Args:
        models: dict of name -> ModelConfig.
        loader: callable. Loads one version (see `Loader`);
            `_servable.load_version` in the server.
        poll_interval_s: float. Seconds between scans of the base paths.
        on_batch: callable or None. `on_batch(model, size)` for metrics.
        stale_tmp_s: float or None. Age after which `.tmp-*` directories
            in the base paths are removed; None keeps them.
    """

    def __init__(
        self,
        models: dict[str, ModelConfig],
        loader: Loader,
        poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
        on_batch: Callable[[str, int], None] | None = None,
        stale_tmp_s: float | None = STALE_TMP_S,
    ) -> None:
        self.models = {
            name: ModelRegistry(
                name,
                config,
                loader,
                stale_tmp_s=stale_tmp_s,
                on_batch=None
                if on_batch is None
                else (lambda size, _name=name: on_batch(_name, size)),
            )
            for name, config in models.items()
        }
        self.poll_interval_s = poll_interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def get_model(self, name: str, version: int | None = None) -> ModelRegistry:
        """The registry of one model; 404 in TF Serving's words if unknown."""
        try:
            return self.models[name]
        except KeyError:
            request = (
                f"Latest({name})"
                if version is None
                else f"Specific({name}, {version})"
            )
            raise ServingError(
                f"Servable not found for request: {request}", 404
            ) from None

    @property
    def ready(self) -> bool:
        """Whether every model has a loaded version."""
        return all(model.ready for model in self.models.values())

    def start(self) -> None:
        """Loads what is on disk now, then watches in a background thread."""
        for model in self.models.values():
            model.scan()
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._watch, name="model-registry", daemon=True
        )
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_interval_s):
            for model in self.models.values():
                try:
                    model.scan()
                except Exception:  # never let one bad scan stop the watcher
                    logger.exception("model %s: scan failed", model.name)

    def stop(self) -> None:
        """Stops watching and unloads everything."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        for model in self.models.values():
            model.close()
