"""The model registry: versioned SavedModels under `base_path/<N>/`, hot reload.

Each served model is a base directory of integer-named version directories
(the layout TF Serving reads). A background thread polls it: a new version
is loaded, warmed up and then swapped in atomically, so requests never see
a half-loaded model; a version that fails to load is reported in the model
status and the previous one keeps serving (it is retried when its files
change). Requests run through the SavedModel's signatures, never through
`model.predict`.
"""

import asyncio
import dataclasses
import json
import logging
import os
import threading
import time
import types
from collections.abc import Callable
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from aiservice_kit.serving._codec import TensorInfo
from aiservice_kit.serving._errors import ServingError
from aiservice_kit.serving.batching import Batcher
from aiservice_kit.serving.batching import BatchingConfig

logger = logging.getLogger("aiservice_kit.serving")

DEFAULT_SIGNATURE = "serving_default"
METADATA_FILE = Path("assets.extra") / "aiservice_kit.json"
#: Seconds an old version stays loaded after it stops being served, so the
#: requests that already hold it finish normally.
RETIRE_GRACE_S = 30.0


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
    """

    base_path: str | Path
    batching: BatchingConfig = dataclasses.field(default_factory=BatchingConfig)
    keep_versions: int | None = 2
    version_labels: Mapping[str, int] = dataclasses.field(
        default_factory=dict, hash=False
    )

    def __post_init__(self) -> None:
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

    def to_json(self) -> dict[str, Any]:
        """The JSON form TF Serving returns."""
        return {
            "version": str(self.version),
            "state": self.state,
            "status": {
                "error_code": self.error_code,
                "error_message": self.error_message,
            },
        }


def _tensor_info(name: str, spec: Any) -> TensorInfo:
    import tensorflow as tf

    dtype = "string" if spec.dtype == tf.string else spec.dtype.name
    shape = spec.shape
    dims = None if shape.rank is None else tuple(shape.as_list())
    return TensorInfo(name=name, dtype=dtype, shape=dims)


def _tf_error(error: Exception) -> ServingError:
    import tensorflow as tf

    message = getattr(error, "message", str(error)).strip().splitlines()
    text = message[0] if message else type(error).__name__
    bad_input = (
        tf.errors.InvalidArgumentError,
        tf.errors.OutOfRangeError,
        tf.errors.FailedPreconditionError,
    )
    if isinstance(error, bad_input):
        return ServingError(text, 400)
    if isinstance(error, tf.errors.ResourceExhaustedError):
        return ServingError(text, 503)
    return ServingError(f"Model error: {text}", 500)


class Signature:
    """A callable signature of a loaded version, behind a batcher.

    Attributes:
        name: str. The signature key (e.g. `serving_default`).
        inputs: dict of TensorInfo. The inputs by name.
        outputs: dict of TensorInfo. The outputs by name.
    """

    def __init__(
        self,
        name: str,
        fn: Any,
        batching: BatchingConfig,
        label: str,
        on_batch: Callable[[int], None] | None,
    ) -> None:
        self.name = name
        self._fn = fn
        self.inputs = {
            key: _tensor_info(key, spec)
            for key, spec in fn.structured_input_signature[1].items()
        }
        self.outputs = {
            key: _tensor_info(key, spec)
            for key, spec in fn.structured_outputs.items()
        }
        self._batcher = Batcher(
            self.run, batching, name=f"{label}-{name}", on_batch=on_batch
        )

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs the signature once (no batching) on numpy inputs."""
        import tensorflow as tf

        try:
            result = self._fn(
                **{name: tf.convert_to_tensor(v) for name, v in inputs.items()}
            )
        except tf.errors.OpError as error:
            raise _tf_error(error) from None
        except (TypeError, ValueError) as error:
            raise ServingError(f"Invalid input: {error}", 400) from None
        return {name: tensor.numpy() for name, tensor in result.items()}

    async def predict(
        self, inputs: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """Runs the inputs in the next batch and waits for their outputs."""
        return await asyncio.wrap_future(self._batcher.submit(inputs))

    def warm_up(self) -> None:
        """Runs one dummy instance so the first request is not slow."""
        dummy = {}
        for name, info in self.inputs.items():
            if info.shape is None:
                return
            shape = [1 if dim is None else dim for dim in info.shape]
            if shape:
                shape[0] = 1
            dtype = object if info.dtype == "string" else info.dtype
            fill = b"" if info.dtype == "string" else 0
            dummy[name] = np.full(shape, fill, dtype=dtype)
        try:
            self.run(dummy)
        except Exception:  # a model may refuse zeros; serving still works
            logger.debug("warm-up of %s failed", self.name, exc_info=True)

    def close(self) -> None:
        """Stops the batcher after the queued requests."""
        self._batcher.close()


def _signature_defs(path: Path) -> dict[str, Any]:
    """The SignatureDefs as TF Serving's metadata API prints them."""
    from google.protobuf import json_format
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((path / "saved_model.pb").read_bytes())
    defs = saved.meta_graphs[0].signature_def
    return {
        name: json_format.MessageToDict(
            defs[name],
            always_print_fields_with_no_presence=True,
            preserving_proto_field_name=True,
        )
        for name in sorted(defs)
    }


class ServableVersion:
    """One loaded version of a model: its signatures and metadata.

    Args:
        model_name: str. The served model's name.
        version: int. The version number (the directory name).
        path: Path. The version directory.
        batching: BatchingConfig. Applied to every signature.
        on_batch: callable or None. Receives each batch's size.

    Raises:
        Exception: whatever TensorFlow raises for a SavedModel it cannot
            load (the registry reports it).
    """

    def __init__(
        self,
        model_name: str,
        version: int,
        path: Path,
        batching: BatchingConfig,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        import tensorflow as tf

        self.model_name = model_name
        self.version = version
        self.path = path
        self._loaded = tf.saved_model.load(str(path))
        signatures = dict(self._loaded.signatures)
        if not signatures:
            raise ValueError(f"SavedModel at {path} has no signatures.")
        self.signature_defs = _signature_defs(path)
        self.signatures = {
            name: Signature(
                name, fn, batching, f"{model_name}-{version}", on_batch
            )
            for name, fn in signatures.items()
        }
        self.metadata = self._read_metadata()
        for signature in self.signatures.values():
            signature.warm_up()

    def _read_metadata(self) -> dict[str, Any] | None:
        file = self.path / METADATA_FILE
        if not file.is_file():
            return None
        try:
            return json.loads(file.read_text())
        except (OSError, ValueError):
            logger.warning("unreadable metadata file %s", file)
            return None

    def signature(self, name: str) -> Signature:
        """The signature by name; 400 in TF Serving's words when missing."""
        try:
            return self.signatures[name]
        except KeyError:
            raise ServingError(
                f'Serving signature name: "{name}" not found in signature '
                f"def (available: {', '.join(sorted(self.signatures))})",
                400,
            ) from None

    def close(self) -> None:
        """Stops the batchers (queued requests still finish)."""
        for signature in self.signatures.values():
            signature.close()


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
    """The loaded versions of one model and their status.

    Args:
        name: str. The model name in URLs.
        config: ModelConfig. Where and how to serve it.
        on_batch: callable or None. `on_batch(size)` for metrics.
    """

    def __init__(
        self,
        name: str,
        config: ModelConfig,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.base_path = Path(config.base_path)
        self._on_batch = on_batch
        self._versions: dict[int, ServableVersion] = {}
        self._status: dict[int, VersionStatus] = {}
        self._failed: dict[int, tuple] = {}
        self._retiring: list[tuple[float, ServableVersion]] = []
        self._lock = threading.Lock()

    @property
    def ready(self) -> bool:
        """Whether at least one version is loaded."""
        return bool(self._versions)

    @property
    def versions(self) -> list[int]:
        """The loaded version numbers, newest first."""
        return sorted(self._versions, reverse=True)

    def get(self, version: int | None = None) -> ServableVersion:
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

    def _on_disk(self) -> dict[int, Path]:
        found = {}
        try:
            entries = list(self.base_path.iterdir())
        except OSError:
            return found
        for entry in entries:
            if entry.name.isdigit() and entry.is_dir():
                found[int(entry.name)] = entry
        return found

    def scan(self) -> None:
        """Loads new versions, drops removed or surplus ones (thread-safe)."""
        with self._lock:
            self._scan()

    def _scan(self) -> None:
        on_disk = self._on_disk()
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

    def _load(self, number: int, path: Path) -> ServableVersion | None:
        self._status[number] = VersionStatus(number, "LOADING")
        started = time.monotonic()
        try:
            version = ServableVersion(
                self.name,
                number,
                path,
                self.config.batching,
                on_batch=self._on_batch,
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
        self._status[number] = VersionStatus(number, "AVAILABLE")
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
        poll_interval_s: float. Seconds between scans of the base paths.
        on_batch: callable or None. `on_batch(model, size)` for metrics.
    """

    def __init__(
        self,
        models: dict[str, ModelConfig],
        poll_interval_s: float = 1.0,
        on_batch: Callable[[str, int], None] | None = None,
    ) -> None:
        self.models = {
            name: ModelRegistry(
                name,
                config,
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
