"""The on-disk contract between export and serving: one home, stdlib only.

An exported model lives in a *base path* that holds one directory per
version, as TensorFlow Serving expects:

```
base_path/
  1/  saved_model.pb  variables/  assets.extra/aiservice_kit.json
  2/  ...
  .tmp-3-1f2e.../     (a version being written: ignored by readers)
```

- A version directory is named by ASCII digits only and is > 0
  (`is_version_name`); anything else in the base path is ignored, so a
  stray `²` or `٩` never becomes a version.
- Every version is published atomically (`publish_version`): written into a
  `.tmp-` directory, completed with its metadata file, then renamed.
- The metadata file (`assets.extra/aiservice_kit.json`, a folder TF Serving
  ignores) records the task, class names, inputs and outputs, the
  signatures, and its `format_version`; `read_metadata` refuses a newer
  format by name.
- Signature names (`SERVING_SIGNATURE`, `PREDICT_SIGNATURE`,
  `CLASSIFY_SIGNATURE`, `REGRESS_SIGNATURE`, `RATING_SIGNATURE`,
  `FOLD_IN_SIGNATURE`) and TF Serving's tensor keys for classify/regress
  live here only.

Export, the recommender export and the server all import these names; no
other module spells them.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiservice_kit._validation import check_choice
from aiservice_kit._validation import check_optional_positive_int
from aiservice_kit._version import __version__
from aiservice_kit.exceptions import ExportError

#: The signature every exported SavedModel serves by default (TF Serving's
#: `kDefaultServingSignatureDefKey`).
SERVING_SIGNATURE = "serving_default"
#: The signature with every named output of a classifier (`probabilities`,
#: `predicted_class`), a regressor (`predictions`) or a tensor model (its
#: own output names), whatever `serving_default` returns. TF Estimators'
#: key for their all-outputs signature.
PREDICT_SIGNATURE = "predict"
#: A classifier's signature for TF Serving's Classify API (gRPC `Classify`,
#: REST `:classify`): serialized `tf.Example`s in, `classes` + `scores` out.
CLASSIFY_SIGNATURE = "classification"
#: A regressor's signature for TF Serving's Regress API (gRPC `Regress`,
#: REST `:regress`): serialized `tf.Example`s in, `outputs` out.
REGRESS_SIGNATURE = "regression"
#: A rating model's signature (`MatrixFactorization.export`): user and item
#: ids in, one predicted rating per pair out.
RATING_SIGNATURE = "rating"
#: An implicit factor model's signature that recommends for a user given
#: only by their item ids (their factors solved at serving time).
FOLD_IN_SIGNATURE = "fold_in"
#: The TF Serving API each signature serves, as the metadata records it
#: (TF2 SavedModels record every SignatureDef with the predict method
#: name; TF Serving's `--enable_signature_method_name_check`, off by
#: default, is what lets Classify and Regress use them).
SIGNATURE_APIS = ("predict", "classify", "regress")
#: The input key of classify/regress signatures: a [batch] string vector of
#: serialized `tf.Example`s (`CLASSIFY_INPUTS`, `REGRESS_INPUTS`).
EXAMPLES_INPUT = "inputs"
#: Classify outputs: string labels and float scores, [batch, num_classes].
CLASSES_OUTPUT = "classes"
SCORES_OUTPUT = "scores"
#: Regress output: one float per example, [batch] (`REGRESS_OUTPUTS`).
REGRESS_OUTPUT = "outputs"
#: The signature that returns integrated-gradients attributions beside the
#: predictions (image and numeric-sequence SavedModel exports).
EXPLAIN_SIGNATURE = "explain"
#: Output of `EXPLAIN_SIGNATURE`: attributions shaped like the input.
ATTRIBUTIONS = "attributions"
#: Runtimes other than TensorFlow that a version may carry converted
#: signatures for, fastest first: the order the server's `runtime="auto"`
#: tries them in (`aiservice_kit.serving._runtimes`).
ARTIFACT_RUNTIMES = ("litert", "onnx")
#: File suffix of each runtime's converted signature.
RUNTIME_SUFFIXES = {"litert": ".tflite", "onnx": ".onnx"}
#: Signatures converted for those runtimes (the others, which parse
#: `tf.Example`s or take gradients, always run on TensorFlow).
RUNTIME_SIGNATURES = (SERVING_SIGNATURE, PREDICT_SIGNATURE)
#: Folder of a version directory holding the converted signatures
#: (`runtimes/serving_default.tflite`, ...); TF Serving ignores it.
RUNTIMES_DIR = "runtimes"
#: File in `RUNTIMES_DIR`: the inputs the artifacts were proven on at
#: export (numeric arrays by input name, `.npz` read without pickle).
PROOF_INPUTS_FILE = "proof_inputs.npz"
#: Metadata keys: runtime -> {signature: artifact path relative to the
#: version directory}; runtime -> why it was not written; the proof inputs'
#: relative path.
RUNTIMES_KEY = "runtimes"
RUNTIMES_SKIPPED_KEY = "runtimes_skipped"
PROOF_INPUTS_KEY = "proof_inputs"
#: Version of the metadata file's layout.
FORMAT_VERSION = 1
#: Folder of a version directory that holds the metadata (TF Serving's
#: convention for extra files it ignores).
METADATA_DIR = "assets.extra"
#: Name of the metadata file inside `METADATA_DIR`.
METADATA_FILE = "aiservice_kit.json"
#: Tasks a metadata file may record. A `tensor` model is any other Keras
#: model: it serves its outputs under their own names.
TASKS = ("classification", "regression", "tensor", "recommendation")
#: Prefix of the temporary directory a version is written into.
TMP_PREFIX = ".tmp-"
#: Age after which a temporary directory is taken as left by a killed
#: writer and may be removed (`remove_stale_temporaries`).
STALE_TMP_SECONDS = 3600.0

_ASCII_DIGITS = frozenset("0123456789")


def is_version_name(name: str) -> bool:
    """Tells whether a directory name is a version: ASCII digits, > 0.

    `str.isdigit` also accepts `²` and `٩`; TF Serving's rule (and ours) is
    ASCII digits only.

    Args:
        name: str. A directory name.

    Returns:
        True when `name` names a version.

    Example:
    ```python
    from aiservice_kit._layout import is_version_name
    is_version_name("3"), is_version_name("0"), is_version_name("²")
    # (True, False, False)
    ```
    """
    return (
        isinstance(name, str)
        and bool(name)
        and set(name) <= _ASCII_DIGITS
        and int(name) > 0
    )


def runtime_artifact(runtime: str, signature: str) -> str:
    """The path, relative to a version directory, of a converted signature.

    Args:
        runtime: str. One of `ARTIFACT_RUNTIMES`.
        signature: str. A signature key, e.g. `SERVING_SIGNATURE`.

    Returns:
        A POSIX relative path, e.g. `runtimes/serving_default.tflite`.

    Raises:
        ValueError: for a runtime not in `ARTIFACT_RUNTIMES`.

    Example:
    ```python
    from aiservice_kit._layout import runtime_artifact
    runtime_artifact("onnx", "predict")  # 'runtimes/predict.onnx'
    ```
    """
    check_choice("runtime", runtime, ARTIFACT_RUNTIMES)
    return f"{RUNTIMES_DIR}/{signature}{RUNTIME_SUFFIXES[runtime]}"


def metadata_path(version_dir: str | os.PathLike) -> Path:
    """Returns the path of a version directory's metadata file."""
    return Path(version_dir) / METADATA_DIR / METADATA_FILE


def list_versions(base_path: str | os.PathLike) -> list[int]:
    """Lists the published versions under `base_path`, in ascending order.

    Only directories named by `is_version_name` count; temporary
    directories and other files are ignored, as TF Serving does.

    Args:
        base_path: str or PathLike. The model's base directory.

    Returns:
        The version numbers, ascending (empty when the directory is
        missing).

    Raises:
        OSError: if the directory exists but cannot be read.

    Example:
    ```python
    from aiservice_kit.export import list_versions
    print(list_versions("models/mnist"))  # e.g. [1, 2, 3]
    ```
    """
    base = Path(base_path)
    if not base.is_dir():
        return []
    return sorted(
        int(entry.name)
        for entry in base.iterdir()
        if is_version_name(entry.name) and entry.is_dir()
    )


def check_base_path(base_path: Any, name: str = "base_path") -> Path:
    """Returns `base_path` as a Path if it can be a model's base directory.

    It may be missing (it is created), or an existing directory; neither
    it nor a parent may be an existing file.

    Args:
        base_path: Any. What the caller passed.
        name: str. The argument's name, used in the error message.

    Returns:
        The base path as a `pathlib.Path`.

    Raises:
        TypeError: if `base_path` is not a str or PathLike.
        ValueError: if it, or one of its parents, is an existing file.
    """
    expected = (
        f"`{name}` must be a directory path: the model's base directory, "
        "holding one <version>/ directory per version (created if missing)"
    )
    if not isinstance(base_path, (str, os.PathLike)):
        raise TypeError(f"{expected}. Received: {name}={base_path!r}")
    base = Path(base_path)
    for path in (base, *base.parents):
        if path.exists() and not path.is_dir():
            what = "is" if path == base else f"is under {str(path)!r},"
            raise ValueError(
                f"{expected}; {str(base)!r} {what} an existing file. "
                f"Received: {name}={str(base)!r}"
            )
    return base


def publish_version(
    base_path: str | os.PathLike,
    version: int | None,
    write_fn: Callable[[Path], Any],
    metadata: Mapping[str, Any],
) -> Path:
    """Publishes a SavedModel as `base_path/<version>/`, atomically.

    `write_fn(tmp_dir)` writes the SavedModel into a fresh temporary
    directory inside `base_path` whose name starts with `.tmp-` (servers and
    `list_versions` ignore it). This function then adds the metadata file
    and renames the directory to `<version>` in one `os.rename`, so a
    server polling `base_path` sees either no version or a complete one. On
    any error the temporary directory is removed and nothing is published.

    Args:
        base_path: str or PathLike. The model's base directory (created if
            missing).
        version: int or None. The version to publish (a positive integer);
            None takes the next one (latest + 1, or 1).
        write_fn: callable. `write_fn(tmp_dir: pathlib.Path)` writes a
            SavedModel (with a `serving_default` signature) into `tmp_dir`.
            It may also check the artifact before it is published.
        metadata: mapping. The metadata to record: at least `task` (one of
            `TASKS`), and `class_names`, `inputs`, `outputs` when known.
            `format_version`, `library_version` and `created_at` are filled
            in when absent.

    Returns:
        The published version directory.

    Raises:
        FileExistsError: if `base_path/<version>` already exists.
        ValueError: if `version` is not positive, `metadata` lacks a
            valid `task`, or `base_path` is an existing file.
        TypeError: if `write_fn` is not callable or `metadata` not a
            mapping.
        ExportError: if `write_fn` wrote no `saved_model.pb`.

    Example:
    ```python
    import tensorflow as tf
    from aiservice_kit.export import write_versioned_saved_model

    module = tf.Module()
    module.f = tf.function(
        lambda x: {"predictions": 2 * x},
        input_signature=[tf.TensorSpec([None], tf.float32, name="x")],
    )
    write_versioned_saved_model(
        "models/double",
        None,
        lambda tmp: tf.saved_model.save(
            module, str(tmp), signatures={"serving_default": module.f}
        ),
        {"task": "regression"},
    )
    ```
    """
    version = check_optional_positive_int("version", version)
    if not callable(write_fn):
        raise TypeError(
            "`write_fn` must be a callable write_fn(tmp_dir) that writes a "
            f"SavedModel. Received: write_fn={write_fn!r}"
        )
    if not isinstance(metadata, Mapping):
        raise TypeError(
            "`metadata` must be a mapping (a dict with at least 'task'). "
            f"Received: metadata={metadata!r}"
        )
    check_choice("metadata['task']", metadata.get("task"), TASKS)
    base = check_base_path(base_path)
    base.mkdir(parents=True, exist_ok=True)
    if version is None:
        existing = list_versions(base)
        version = existing[-1] + 1 if existing else 1
    final = base / str(version)
    if final.exists():
        raise FileExistsError(
            f"Version {version} already exists at {final}. Pass another "
            "`version` (or None for the next one); published versions are "
            "never overwritten."
        )
    # os.mkdir honours the umask, unlike mkdtemp's 0o700: a server running
    # as another user can read the published version.
    tmp = base / f"{TMP_PREFIX}{version}-{uuid.uuid4().hex[:12]}"
    os.mkdir(tmp)
    try:
        write_fn(tmp)
        if not (tmp / "saved_model.pb").is_file():
            raise ExportError(
                f"`write_fn` wrote no saved_model.pb into {tmp}. It must "
                "write a TensorFlow SavedModel into the directory it is given."
            )
        _write_metadata(tmp, metadata)
        try:
            os.rename(tmp, final)
        except OSError as error:
            if final.exists():
                raise FileExistsError(
                    f"Version {version} was published at {final} by another "
                    "writer while this one was writing. Pass another "
                    "`version` (or None for the next one)."
                ) from error
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _write_metadata(version_dir: Path, metadata: Mapping[str, Any]) -> None:
    record = dict(metadata)
    record.setdefault("format_version", FORMAT_VERSION)
    record.setdefault("library_version", __version__)
    record.setdefault("class_names", None)
    record.setdefault(
        "created_at",
        datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        ),
    )
    path = metadata_path(version_dir)
    path.parent.mkdir(exist_ok=True)
    with open(path, "w") as file:
        json.dump(record, file, indent=2, sort_keys=True)
        file.flush()
        os.fsync(file.fileno())


def read_metadata(version_dir: str | os.PathLike) -> dict[str, Any]:
    """Reads the metadata written beside an exported SavedModel.

    Args:
        version_dir: str or PathLike. A version directory `base_path/<N>/`.

    Returns:
        The metadata dict: `format_version`, `library_version`, `task`,
        `class_names`, `inputs`, `outputs`, `created_at`.

    Raises:
        FileNotFoundError: if the directory has no metadata file (not
            written by aiservice_kit).
        ValueError: if the file is not valid JSON or has a newer
            `format_version` than this library reads.

    Example:
    ```python
    from aiservice_kit.export import read_export_metadata
    meta = read_export_metadata("models/mnist/1")
    print(meta["task"], meta["inputs"])
    ```
    """
    path = metadata_path(version_dir)
    if not path.is_file():
        raise FileNotFoundError(
            f"No aiservice_kit metadata at {path}. `version_dir` must be a "
            "version directory written by aiservice_kit (base_path/<N>/)."
        )
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"The metadata file {path} is not valid JSON.") from (
            error
        )
    found = record.get("format_version") if isinstance(record, dict) else None
    if not isinstance(found, int) or found > FORMAT_VERSION:
        raise ValueError(
            f"The metadata file {path} has format_version={found!r}; this "
            f"aiservice_kit reads format_version <= {FORMAT_VERSION}. "
            "Upgrade aiservice_kit to read it."
        )
    return record


def remove_stale_temporaries(
    base_path: str | os.PathLike,
    *,
    older_than: float = STALE_TMP_SECONDS,
    now: float | None = None,
) -> list[Path]:
    """Removes `.tmp-` directories left in a base path by killed writers.

    A writer that is still running keeps touching its directory; one whose
    directory has not changed for `older_than` seconds was killed.

    Args:
        base_path: str or PathLike. The model's base directory.
        older_than: float. Minimum age in seconds (by modification time).
        now: float or None. The current time (`time.time()` when None).

    Returns:
        The directories removed.

    Example:
    ```python
    from aiservice_kit._layout import remove_stale_temporaries
    remove_stale_temporaries("models/mnist", older_than=3600)
    ```
    """
    base = Path(base_path)
    if not base.is_dir():
        return []
    now = time.time() if now is None else now
    removed = []
    for entry in base.iterdir():
        if not entry.name.startswith(TMP_PREFIX):
            continue
        try:
            age = now - entry.stat().st_mtime
        except OSError:
            continue
        if age >= older_than and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed
