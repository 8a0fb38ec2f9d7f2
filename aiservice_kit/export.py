"""Export for the cloud and the edge, each artifact checked against Keras.

Three formats, one contract:

- `export_saved_model` writes the versioned `base_path/<N>/` layout that
  TensorFlow Serving (and `aiservice_kit.serving`) loads, atomically, with a
  `serving_default` signature that takes raw inputs (uint8 pixels, strings)
  and returns named outputs, plus a metadata file beside it.
- `export_tflite` writes a LiteRT (TFLite) flatbuffer with builtin ops only,
  after a preflight that names any layer that would need the Flex delegate.
- `export_onnx` writes an ONNX graph (the `onnx` extra), refusing graphs the
  converter cannot express.

Every exporter calls `verify_export` on a small sample by default: the
artifact runs in its own runtime (TensorFlow, the LiteRT interpreter,
onnxruntime) and its outputs are compared with the Keras model's.

All three share one serving function: the model called with
`training=False` (so `Random*` augmentation layers never act at inference),
raw inputs cast inside, and outputs `probabilities` + `predicted_class` for
classifiers or `predictions` for regressors.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from aiservice_kit._backend import quiet_native_logs
from aiservice_kit._validation import check_bool
from aiservice_kit._validation import check_choice
from aiservice_kit._validation import check_optional_positive_int
from aiservice_kit.exceptions import ExportError
from aiservice_kit.exceptions import ExportMismatchError

#: Version of the metadata file's layout.
FORMAT_VERSION = 1
#: Folder of a version directory that holds the metadata (TF Serving's
#: convention for extra files it ignores).
METADATA_DIR = "assets.extra"
#: Name of the metadata file inside `METADATA_DIR`.
METADATA_FILE = "aiservice_kit.json"
#: The signature every exported SavedModel serves.
SERVING_SIGNATURE = "serving_default"
#: Tasks recorded in the metadata.
TASKS = ("classification", "regression", "recommendation")
#: Output names of classifiers and regressors.
PROBABILITIES = "probabilities"
PREDICTED_CLASS = "predicted_class"
PREDICTIONS = "predictions"
#: Accepted TFLite quantization modes.
QUANTIZATIONS = (None, "dynamic", "float16", "int8")
#: Formats `verify_export` recognises.
FORMATS = ("saved_model", "tflite", "onnx")
#: Largest difference `verify_export` accepts from float32 artifacts
#: (scaled by the largest output when it exceeds 1).
FLOAT_TOLERANCE = 1e-5
#: Smallest class agreement `verify_export` accepts from quantized files.
QUANTIZED_MIN_CLASS_AGREEMENT = 0.9
#: Rows of the synthetic sample each exporter verifies by default.
DEFAULT_VERIFY_SAMPLES = 16
#: Length used for variable (None) axes in synthetic samples.
_SYNTHETIC_LENGTH = 12
#: Input names Keras invents for unnamed inputs; replaced by stable ones.
_UNSTABLE_INPUT_PREFIXES = ("keras_tensor", "input_layer")
#: The temp-dir prefix of the atomic writer (servers skip dot names).
TMP_PREFIX = ".tmp-"


# --------------------------------------------------------------------------
# Versioned layout: the atomic writer and the metadata
# --------------------------------------------------------------------------


def list_versions(base_path: str | os.PathLike) -> list[int]:
    """Lists the published versions under `base_path`, in ascending order.

    Only directories whose name is all digits count; temp dirs (names that
    start with a dot) and other files are ignored, as TF Serving does.

    Args:
        base_path: str or PathLike. The model's base directory.

    Returns:
        The version numbers, ascending (empty when the directory is missing).

    Example:
    ```python
    from aiservice_kit.export import list_versions
    print(list_versions("models/mnist"))  # e.g. [1, 2, 3]
    ```
    """
    base = Path(base_path)
    if not base.is_dir():
        return []
    versions = [
        int(entry.name)
        for entry in base.iterdir()
        if entry.name.isdigit() and entry.is_dir() and int(entry.name) > 0
    ]
    return sorted(versions)


def _library_version() -> str:
    import aiservice_kit

    return getattr(aiservice_kit, "__version__", "unknown")


def write_versioned_saved_model(
    base_path: str | os.PathLike,
    version: int | None,
    write_fn: Callable[[Path], Any],
    metadata: Mapping[str, Any],
) -> Path:
    """Publishes a SavedModel as `base_path/<version>/`, atomically.

    `write_fn(tmp_dir)` writes the SavedModel into a fresh temporary
    directory inside `base_path` whose name starts with `.tmp-` (servers and
    `list_versions` ignore it). This function then adds the metadata file
    `assets.extra/aiservice_kit.json` and renames the directory to
    `<version>` in one `os.rename`, so a server polling `base_path` sees
    either no version or a complete one. On any error the temp directory is
    removed and nothing is published.

    Args:
        base_path: str or PathLike. The model's base directory (created if
            missing).
        version: int or None. The version to publish (a positive integer);
            None takes the next one (latest + 1, or 1).
        write_fn: callable. `write_fn(tmp_dir: pathlib.Path)` writes a
            SavedModel (with a `serving_default` signature) into `tmp_dir`.
            It may also check the artifact before it is published.
        metadata: mapping. The metadata to record: at least `task`
            (one of "classification", "regression", "recommendation"),
            and `class_names`, `inputs`, `outputs` when known.
            `format_version`, `library_version` and `created_at` are filled
            in when absent.

    Returns:
        The published version directory.

    Raises:
        FileExistsError: if `base_path/<version>` already exists.
        ValueError: if `version` is not positive or `metadata` lacks a
            valid `task`.
        TypeError: if `write_fn` is not callable or `metadata` not a mapping.
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
    base = Path(base_path)
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
        record = dict(metadata)
        record.setdefault("format_version", FORMAT_VERSION)
        record.setdefault("library_version", _library_version())
        record.setdefault("class_names", None)
        record.setdefault(
            "created_at",
            datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"
            ),
        )
        (tmp / METADATA_DIR).mkdir(exist_ok=True)
        with open(tmp / METADATA_DIR / METADATA_FILE, "w") as file:
            json.dump(record, file, indent=2, sort_keys=True)
            file.flush()
            os.fsync(file.fileno())
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


def read_export_metadata(version_dir: str | os.PathLike) -> dict[str, Any]:
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
    path = Path(version_dir) / METADATA_DIR / METADATA_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"No aiservice_kit metadata at {path}. `version_dir` must be a "
            "version directory written by aiservice_kit (base_path/<N>/)."
        )
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as error:
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


# --------------------------------------------------------------------------
# The serving function shared by every format
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Input:
    """One model input: its signature name/dtype/shape and the model's."""

    name: str
    key: Any  # how the model's call structure refers to it (index or key)
    dtype: str  # signature dtype: "uint8", "float32", "string", "int64"...
    shape: tuple[int | None, ...]  # signature shape, batch axis included
    model_dtype: str
    model_shape: tuple[int | None, ...]


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What the serving function takes and returns."""

    task: str
    inputs: tuple[_Input, ...]
    input_structure: str  # "single", "list" or "dict"
    output_name: str
    num_outputs: int | None


def _check_model(model: Any) -> keras.Model:
    if not isinstance(model, keras.Model):
        raise TypeError(
            "`model` must be a keras.Model (load a .keras file with "
            "keras.saving.load_model first). "
            f"Received: model={type(model).__name__}"
        )
    if not model.built or not getattr(model, "inputs", None):
        raise ValueError(
            "`model` must be a Functional or Sequential model with known "
            "inputs (built with keras.Input). Received: a model without "
            "symbolic inputs; build it with `keras.Input(...)` first."
        )
    return model


def iter_layers(model: keras.layers.Layer) -> Iterator[keras.layers.Layer]:
    """Yields every layer of `model`, nested models and wrappers included.

    Args:
        model: keras.layers.Layer. A model or layer.

    Returns:
        An iterator over the layers, depth first.

    Example:
    ```python
    from aiservice_kit import build_cnn
    from aiservice_kit.export import iter_layers
    names = [layer.name for layer in iter_layers(build_cnn((28, 28), 10))]
    ```
    """
    seen: set[int] = set()

    def walk(layer: Any) -> Iterator[keras.layers.Layer]:
        for child in getattr(layer, "layers", None) or []:
            if id(child) in seen:
                continue
            seen.add(id(child))
            yield child
            yield from walk(child)
        for attr in ("layer", "forward_layer", "backward_layer", "cell"):
            child = getattr(layer, attr, None)
            if isinstance(child, keras.layers.Layer) and id(child) not in seen:
                seen.add(id(child))
                yield child
                yield from walk(child)

    yield from walk(model)


def _is_string(dtype: Any) -> bool:
    return str(dtype) in ("string", "str", "tf.string", "<dtype: 'string'>")


def _stable_input_names(raw: Sequence[str]) -> list[str]:
    names = []
    for index, name in enumerate(raw):
        if not name or name.startswith(_UNSTABLE_INPUT_PREFIXES):
            name = "inputs" if len(raw) == 1 else f"input_{index}"
        names.append(name)
    if len(set(names)) != len(names):
        raise ExportError(
            f"The model's input names {names} are not unique. Name each "
            "input: keras.Input(..., name='...')."
        )
    return names


def _has_layer(model: keras.Model, layer_type: type) -> bool:
    return any(isinstance(layer, layer_type) for layer in iter_layers(model))


def _output_layer_names(model: keras.Model) -> list[str]:
    names = getattr(model, "output_names", None)
    if names:
        return list(names)
    return [
        tensor._keras_history.operation.name  # noqa: SLF001 (Keras' own link)
        if hasattr(tensor, "_keras_history")
        else f"output_{index}"
        for index, tensor in enumerate(model.outputs)
    ]


def _plan(
    model: keras.Model,
    task: str | None = None,
    input_dtypes: Mapping[str, str] | None = None,
) -> _Plan:
    """Decides the signature of the serving function for `model`."""
    model = _check_model(model)
    check_choice("task", task, (None, "classification", "regression"))
    try:
        structure_of_inputs = model.input
    except AttributeError:  # a Sequential model that was never called
        structure_of_inputs = model.inputs
    if isinstance(structure_of_inputs, dict):
        keys: list[Any] = list(structure_of_inputs.keys())
        tensors = [structure_of_inputs[key] for key in keys]
        structure = "dict"
    else:
        tensors = list(model.inputs)
        keys = list(range(len(tensors)))
        structure = "single" if len(tensors) == 1 else "list"
    raw_names = [
        str(key) if structure == "dict" else tensor.name
        for key, tensor in zip(keys, tensors, strict=True)
    ]
    names = _stable_input_names(raw_names)
    input_dtypes = dict(input_dtypes or {})
    unknown = set(input_dtypes) - set(names)
    if unknown:
        raise ValueError(
            f"`input_dtypes` names inputs the model does not have: "
            f"{sorted(unknown)}. The model's inputs are {names}. "
            f"Received: input_dtypes={input_dtypes!r}"
        )
    rescales = _has_layer(model, keras.layers.Rescaling)
    inputs = []
    for name, key, tensor in zip(names, keys, tensors, strict=True):
        model_dtype = str(tensor.dtype)
        model_shape = tuple(tensor.shape)
        shape = model_shape
        if _is_string(model_dtype):
            dtype = "string"
            # Text models take one string per example: a (batch,) vector in
            # the signature even when the model's input is (batch, 1).
            if len(model_shape) == 2 and model_shape[1] == 1:
                shape = (None,)
        elif name in input_dtypes:
            dtype = str(input_dtypes[name])
        elif name == "image" and rescales and model_dtype.startswith("float"):
            dtype = "uint8"  # raw pixels; the model rescales inside
        else:
            dtype = model_dtype
        inputs.append(_Input(name, key, dtype, shape, model_dtype, model_shape))
    out_names = _output_layer_names(model)
    if len(model.outputs) != 1:
        raise ExportError(
            f"The model has {len(model.outputs)} outputs ({out_names}); "
            "export serves models with one output (a classifier's "
            "'probabilities' or a regressor's 'predictions')."
        )
    output_name = out_names[0]
    if task is None:
        if output_name == PROBABILITIES:
            task = "classification"
        elif output_name == PREDICTIONS:
            task = "regression"
        else:
            raise ValueError(
                f"Cannot tell the model's task from its output layer "
                f"{output_name!r}. Name the output layer 'probabilities' "
                "(classifier, softmax) or 'predictions' (regressor), as the "
                "aiservice_kit builders do, or pass task='classification' or "
                "task='regression'. Received: task=None"
            )
    out_shape = tuple(model.outputs[0].shape)
    num_outputs = out_shape[-1] if len(out_shape) > 1 else None
    return _Plan(task, tuple(inputs), structure, output_name, num_outputs)


def _signature_specs(plan: _Plan) -> list[tf.TensorSpec]:
    return [
        tf.TensorSpec(spec.shape, tf.as_dtype(spec.dtype), name=spec.name)
        for spec in plan.inputs
    ]


def _serving_fn(model: keras.Model, plan: _Plan) -> Callable[..., dict]:
    """The function every format exports: raw inputs in, named outputs out."""

    @tf.autograph.experimental.do_not_convert
    def serve(*args: tf.Tensor) -> dict[str, tf.Tensor]:
        values = []
        for spec, value in zip(plan.inputs, args, strict=True):
            if spec.dtype != spec.model_dtype and not _is_string(spec.dtype):
                value = tf.cast(value, spec.model_dtype)
            if spec.shape != spec.model_shape:
                value = tf.reshape(value, [-1, *spec.model_shape[1:]])
            values.append(value)
        if plan.input_structure == "single":
            call_inputs = values[0]
        elif plan.input_structure == "dict":
            call_inputs = {
                spec.key: value
                for spec, value in zip(plan.inputs, values, strict=True)
            }
        else:
            call_inputs = values
        # training=False explicitly: Random* augmentation layers and dropout
        # must never act in an exported artifact (see KERAS-PITFALLS.md).
        outputs = tf.cast(model(call_inputs, training=False), tf.float32)
        if plan.task == "classification":
            return {
                PROBABILITIES: outputs,
                PREDICTED_CLASS: tf.argmax(
                    outputs, axis=-1, output_type=tf.int64
                ),
            }
        return {PREDICTIONS: outputs}

    return serve


def _io_metadata(plan: _Plan) -> tuple[dict, dict]:
    inputs = {
        spec.name: {"dtype": spec.dtype, "shape": list(spec.shape)}
        for spec in plan.inputs
    }
    if plan.task == "classification":
        outputs = {
            PROBABILITIES: {
                "dtype": "float32",
                "shape": [None, plan.num_outputs],
            },
            PREDICTED_CLASS: {"dtype": "int64", "shape": [None]},
        }
    else:
        outputs = {
            PREDICTIONS: {
                "dtype": "float32",
                "shape": [None]
                + ([plan.num_outputs] if plan.num_outputs is not None else []),
            }
        }
    return inputs, outputs


def _class_names(
    model: keras.Model, plan: _Plan, class_names: Sequence[str] | None
) -> list[str] | None:
    if plan.task != "classification":
        if class_names is not None:
            raise ValueError(
                "`class_names` applies to classifiers only; this model is a "
                f"{plan.task} model. Received: class_names={class_names!r}"
            )
        return None
    if class_names is None:
        try:
            from aiservice_kit.models.text import get_class_names
        except ImportError:
            return None
        found = get_class_names(model)
        return None if found is None else [str(name) for name in found]
    if isinstance(class_names, (str, bytes)) or not isinstance(
        class_names, Sequence
    ):
        raise TypeError(
            "`class_names` must be a list of strings, one per class. "
            f"Received: class_names={class_names!r}"
        )
    if plan.num_outputs is not None and len(class_names) != plan.num_outputs:
        raise ValueError(
            f"`class_names` must have one name per class "
            f"({plan.num_outputs}). Received: class_names={class_names!r}"
        )
    return [str(name) for name in class_names]


def _write_saved_model(
    model: keras.Model, plan: _Plan, directory: str | os.PathLike
) -> None:
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        SERVING_SIGNATURE,
        _serving_fn(model, plan),
        input_signature=_signature_specs(plan),
    )
    archive.write_out(str(directory), verbose=False)


# --------------------------------------------------------------------------
# SavedModel
# --------------------------------------------------------------------------


def export_saved_model(
    model: keras.Model,
    base_path: str | os.PathLike,
    version: int | None = None,
    *,
    verify: bool = True,
    sample_inputs: Any = None,
    class_names: Sequence[str] | None = None,
    task: str | None = None,
    input_dtypes: Mapping[str, str] | None = None,
) -> Path:
    """Exports `model` as `base_path/<version>/`, ready for TF Serving.

    The SavedModel's `serving_default` signature calls the model with
    `training=False` and takes raw inputs named like the model's inputs
    (`image` as uint8 pixels for `build_cnn` models, `text` as strings,
    `sequence` as float32; an unnamed single input becomes `inputs`). A
    classifier returns `probabilities` (float32, batch x classes) and
    `predicted_class` (int64); a regressor returns `predictions`. The
    version appears atomically (see `write_versioned_saved_model`) with the
    metadata `assets.extra/aiservice_kit.json` beside it. With `verify`, the
    artifact is loaded and compared with the Keras model before it is
    published: a mismatch publishes nothing.

    Args:
        model: keras.Model. A Functional or Sequential model whose output
            layer is named `probabilities` (classifier) or `predictions`
            (regressor), as the aiservice_kit builders make them.
        base_path: str or PathLike. The model's base directory.
        version: int or None. Version to publish; None takes the next one.
        verify: bool. Whether to check the artifact against Keras first.
        sample_inputs: array, dict of arrays, or None. Inputs for the
            check (a synthetic sample of 16 rows when None).
        class_names: list of str or None. Class names to record (text
            classifiers record their own when None).
        task: str or None. `"classification"` or `"regression"` when the
            output layer name does not tell.
        input_dtypes: dict or None. Signature dtype per input name, to
            override the defaults (for example `{"image": "float32"}`).

    Returns:
        The published version directory `base_path/<version>`.

    Raises:
        TypeError: if `model` is not a Keras model.
        ValueError: if the task cannot be told or an argument is invalid.
        FileExistsError: if the version already exists.
        ExportMismatchError: if the artifact disagrees with the model.

    Example:
    ```python
    from aiservice_kit import build_cnn, export_saved_model
    model = build_cnn((28, 28), num_classes=10)
    version_dir = export_saved_model(model, "models/mnist")  # models/mnist/1
    ```
    """
    plan = _plan(model, task, input_dtypes)
    check_bool("verify", verify)
    names = _class_names(model, plan, class_names)
    inputs, outputs = _io_metadata(plan)
    metadata = {
        "task": plan.task,
        "class_names": names,
        "inputs": inputs,
        "outputs": outputs,
    }

    def write(tmp_dir: Path) -> None:
        _write_saved_model(model, plan, tmp_dir)
        if verify:
            verify_export(
                model,
                tmp_dir,
                sample_inputs,
                format="saved_model",
                task=plan.task,
                input_dtypes=input_dtypes,
            )

    return write_versioned_saved_model(base_path, version, write, metadata)


# --------------------------------------------------------------------------
# Preflights: refuse what a format cannot express, before writing anything
# --------------------------------------------------------------------------

_TEXT_FIX = (
    "Export the integer-input model instead: "
    "`vectorizer, int_model = aiservice_kit.models.text.split_text_model("
    "model)` gives the vectorizer and a model on token ids that shares the "
    "weights; ship `vectorizer.get_vocabulary()` beside the artifact and "
    "tokenize in the client. The SavedModel export keeps raw strings."
)


def _string_problems(model: keras.Model, plan: _Plan, why: str) -> list[str]:
    problems = []
    string_layers = (
        keras.layers.TextVectorization,
        keras.layers.StringLookup,
    )
    for layer in iter_layers(model):
        if isinstance(layer, string_layers):
            problems.append(
                f"Layer {layer.name!r} ({type(layer).__name__}) {why}. "
                f"Fix: {_TEXT_FIX}"
            )
    if not problems:
        for spec in plan.inputs:
            if spec.dtype == "string":
                problems.append(
                    f"Input {spec.name!r} takes strings, and {why}. Fix: "
                    "turn strings into numbers outside the model and export "
                    "a model whose inputs are numbers."
                )
    return problems


def preflight_tflite(model: keras.Model) -> list[str]:
    """Lists the layers that builtin LiteRT (TFLite) ops cannot express.

    Checked before converting, so nothing is written for a model that would
    need the Flex (SELECT_TF_OPS) delegate at run time: recurrent layers
    that are not unrolled over a fixed length (Keras runs them as a
    TensorList loop), and string processing (`TextVectorization`,
    `StringLookup`, string inputs).

    Args:
        model: keras.Model. The model to check.

    Returns:
        One message per problem, naming the layer and the fix (empty when
        the model converts with builtin ops).

    Example:
    ```python
    import keras
    from aiservice_kit.export import preflight_tflite
    inputs = keras.Input((20, 3), name="sequence")
    hidden = keras.layers.LSTM(8, name="lstm")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1)(hidden))
    print(preflight_tflite(model))  # names 'lstm' and unroll=True
    ```
    """
    model = _check_model(model)
    problems = []
    for layer, rnn in _recurrent_layers(model):
        kind = type(rnn).__name__
        shown = kind if layer is rnn else f"{type(layer).__name__}({kind})"
        try:
            timesteps = layer.input.shape[1]
        except (AttributeError, ValueError, IndexError, TypeError):
            timesteps = None
        if not rnn.unroll:
            problems.append(
                f"Layer {layer.name!r} ({shown}) runs as a TensorList loop, "
                "which LiteRT's builtin ops cannot express (the file would "
                "need the Flex delegate at run time). Fix: rebuild it with "
                f"`{kind}(..., unroll=True)` on a fixed-length input "
                "(keras.Input((timesteps, features))), e.g. "
                "`build_lstm(..., unroll=True)` with a fixed `input_shape`; "
                "or pass allow_flex=True if your runtime links the Flex "
                "delegate."
            )
        elif timesteps is None:
            problems.append(
                f"Layer {layer.name!r} ({shown}) is unrolled but its input "
                "has a variable length. Fix: give the input a fixed number "
                "of timesteps (pad or crop sequences to it)."
            )
    plan = _plan(model, task=_guess_task(model))
    problems += _string_problems(
        model,
        plan,
        "needs TensorFlow string ops that LiteRT's builtin ops lack (the "
        "file would need the Flex delegate)",
    )
    return problems


def preflight_onnx(model: keras.Model) -> list[str]:
    """Lists the layers that an ONNX graph cannot express.

    tf2onnx has no ONNX equivalent for TensorFlow's string ops: a model
    with `TextVectorization` is written as a graph that onnxruntime rejects
    (INVALID_GRAPH). This check refuses it before anything is written.

    Args:
        model: keras.Model. The model to check.

    Returns:
        One message per problem, naming the layer and the fix (empty when
        the model can be converted).

    Example:
    ```python
    import keras
    from aiservice_kit.export import preflight_onnx
    inputs = keras.Input((4,), name="features")
    outputs = keras.layers.Dense(1, name="predictions")(inputs)
    assert preflight_onnx(keras.Model(inputs, outputs)) == []
    ```
    """
    model = _check_model(model)
    plan = _plan(model, task=_guess_task(model))
    return _string_problems(
        model,
        plan,
        "needs TensorFlow string ops, which ONNX cannot express (the "
        "converter would write a graph onnxruntime rejects as INVALID_GRAPH)",
    )


def _recurrent_layers(
    model: keras.Model,
) -> Iterator[tuple[keras.layers.Layer, keras.layers.RNN]]:
    """Yields (layer as the user sees it, recurrent layer inside it)."""
    for layer in iter_layers(model):
        if isinstance(layer, keras.layers.Bidirectional):
            yield layer, layer.forward_layer
        elif isinstance(layer, keras.layers.Wrapper) and isinstance(
            layer.layer, keras.layers.RNN
        ):
            yield layer, layer.layer
        elif isinstance(layer, keras.layers.RNN) and not _is_wrapped(
            model, layer
        ):
            yield layer, layer


def _is_wrapped(model: keras.Model, rnn: keras.layers.Layer) -> bool:
    for layer in iter_layers(model):
        if isinstance(layer, keras.layers.Wrapper) and (
            getattr(layer, "layer", None) is rnn
            or getattr(layer, "forward_layer", None) is rnn
            or getattr(layer, "backward_layer", None) is rnn
        ):
            return True
    return False


def _guess_task(model: keras.Model) -> str:
    names = _output_layer_names(model)
    return (
        "regression"
        if names and names[0] == PREDICTIONS
        else ("classification")
    )


def _raise_problems(problems: list[str], target: str) -> None:
    if problems:
        raise ExportError(
            f"The model cannot be exported to {target} faithfully:\n- "
            + "\n- ".join(problems)
        )


# --------------------------------------------------------------------------
# verify_export: run the artifact in its own runtime, compare with Keras
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ExportReport:
    """How an exported artifact compares with its Keras model.

    Attributes:
        format: str. `"saved_model"`, `"tflite"` or `"onnx"`.
        path: pathlib.Path. The artifact checked.
        num_samples: int. Rows compared.
        max_abs_diff: float. Largest absolute difference between the
            artifact's and the model's outputs (probabilities for
            classifiers, predictions for regressors).
        class_agreement: float or None. Fraction of rows whose predicted
            class matches the model's (None for regressors).
        tolerance: float or None. Largest accepted `max_abs_diff` (None:
            not checked).
        min_class_agreement: float or None. Smallest accepted
            `class_agreement` (None: not checked).
    """

    format: str
    path: Path
    num_samples: int
    max_abs_diff: float
    class_agreement: float | None
    tolerance: float | None
    min_class_agreement: float | None

    @property
    def passed(self) -> bool:
        """Whether the artifact met both tolerances."""
        if self.tolerance is not None and not (
            self.max_abs_diff <= self.tolerance
        ):
            return False
        if (
            self.min_class_agreement is not None
            and self.class_agreement is not None
            and self.class_agreement < self.min_class_agreement
        ):
            return False
        return True

    def __str__(self) -> str:
        agreement = (
            "n/a"
            if self.class_agreement is None
            else f"{self.class_agreement:.2%}"
        )
        return (
            f"{self.format} {self.path}: max_abs_diff={self.max_abs_diff:.3g}"
            f" (tolerance {self.tolerance}), class agreement {agreement} "
            f"(minimum {self.min_class_agreement}) on {self.num_samples} "
            f"samples: {'passed' if self.passed else 'FAILED'}"
        )


def _detect_format(artifact: Path) -> str:
    if artifact.is_dir():
        if (artifact / "saved_model.pb").is_file():
            return "saved_model"
        versions = list_versions(artifact)
        hint = (
            f" It holds versions {versions}: pass a version directory such "
            f"as {artifact / str(versions[-1])}."
            if versions
            else ""
        )
        raise ValueError(
            f"`artifact` is a directory without saved_model.pb.{hint} "
            f"Received: artifact={str(artifact)!r}"
        )
    if not artifact.is_file():
        raise FileNotFoundError(f"No artifact at {artifact}.")
    suffix = artifact.suffix.lower()
    if suffix in (".tflite", ".litert"):
        return "tflite"
    if suffix == ".onnx":
        return "onnx"
    raise ValueError(
        "`artifact` must be a SavedModel directory, a .tflite file or an "
        f".onnx file. Received: artifact={str(artifact)!r}"
    )


def _synthetic_inputs(
    model: keras.Model, plan: _Plan, num_samples: int
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    samples = {}
    for spec in plan.inputs:
        shape = [num_samples] + [
            _SYNTHETIC_LENGTH if axis is None else axis
            for axis in spec.shape[1:]
        ]
        if spec.dtype == "string":
            words = ["the", "a", "good", "bad", "free", "call", "now", "ok"]
            for layer in iter_layers(model):
                if isinstance(layer, keras.layers.TextVectorization):
                    vocab = [w for w in layer.get_vocabulary() if w][:200]
                    words = [str(w) for w in vocab if w != "[UNK]"] or words
                    break
            texts = [
                " ".join(rng.choice(words, size=rng.integers(1, 12)))
                for _ in range(int(np.prod(shape)))
            ]
            samples[spec.name] = np.array(texts, dtype=object).reshape(shape)
        elif spec.dtype == "uint8":
            samples[spec.name] = rng.integers(0, 256, shape).astype(np.uint8)
        elif spec.dtype.startswith("int") or spec.dtype.startswith("uint"):
            samples[spec.name] = rng.integers(0, 10, shape).astype(spec.dtype)
        elif spec.dtype == "bool":
            samples[spec.name] = rng.integers(0, 2, shape).astype(bool)
        else:
            samples[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
    return samples


def _as_samples(plan: _Plan, sample_inputs: Any) -> dict[str, np.ndarray]:
    names = [spec.name for spec in plan.inputs]
    if isinstance(sample_inputs, Mapping):
        keyed = {}
        for spec in plan.inputs:
            for key in (spec.name, spec.key):
                if key in sample_inputs:
                    keyed[spec.name] = sample_inputs[key]
                    break
            else:
                raise ValueError(
                    f"`sample_inputs` has no entry for input {spec.name!r}. "
                    f"The model's inputs are {names}. Received keys: "
                    f"{sorted(map(str, sample_inputs))}"
                )
    elif len(plan.inputs) == 1:
        keyed = {names[0]: sample_inputs}
    elif isinstance(sample_inputs, (list, tuple)) and len(sample_inputs) == len(
        names
    ):
        keyed = dict(zip(names, sample_inputs, strict=True))
    else:
        raise TypeError(
            f"`sample_inputs` must be a dict keyed by input name ({names}) "
            "or a list with one array per input. Received: "
            f"sample_inputs={type(sample_inputs).__name__}"
        )
    samples = {}
    rows = None
    for spec in plan.inputs:
        value = keyed[spec.name]
        if isinstance(value, tf.Tensor):
            value = value.numpy()
        if spec.dtype == "string":
            array = np.asarray(value, dtype=object)
        else:
            array = np.asarray(value)
            if spec.dtype == "uint8" and array.dtype != np.uint8:
                array = np.clip(np.rint(array), 0, 255)
            array = array.astype(spec.dtype)
        if spec.shape != spec.model_shape and array.ndim == 2:
            array = array.reshape(-1)  # (n, 1) strings -> (n,)
        if array.ndim != len(spec.shape) or any(
            want is not None and got != want
            for got, want in zip(array.shape[1:], spec.shape[1:], strict=True)
        ):
            raise ValueError(
                f"`sample_inputs[{spec.name!r}]` must have shape "
                f"{list(spec.shape)} (None: any). Received shape "
                f"{list(array.shape)}."
            )
        if rows is not None and len(array) != rows:
            raise ValueError(
                "Every array of `sample_inputs` must have the same number "
                f"of rows. Received {rows} and {len(array)}."
            )
        rows = len(array)
        samples[spec.name] = array
    if not rows:
        raise ValueError("`sample_inputs` must hold at least one row.")
    return samples


def _keras_outputs(
    model: keras.Model, plan: _Plan, samples: dict[str, np.ndarray]
) -> np.ndarray:
    serve = _serving_fn(model, plan)
    chunks = []
    rows = len(next(iter(samples.values())))
    for start in range(0, rows, 256):
        args = [
            tf.constant(samples[spec.name][start : start + 256])
            for spec in plan.inputs
        ]
        chunks.append(_primary(serve(*args), plan)[0])
    return np.concatenate(chunks)


def _primary(
    outputs: Mapping[str, Any], plan: _Plan
) -> tuple[np.ndarray, np.ndarray | None]:
    if plan.task == "classification":
        probabilities = np.asarray(outputs[PROBABILITIES], dtype=np.float32)
        predicted = outputs.get(PREDICTED_CLASS)
        return probabilities, (
            None if predicted is None else np.asarray(predicted).reshape(-1)
        )
    return np.asarray(outputs[PREDICTIONS], dtype=np.float32), None


class _SavedModelRunner:
    def __init__(self, path: Path) -> None:
        self._fn = tf.saved_model.load(str(path)).signatures[SERVING_SIGNATURE]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self._fn(
            **{name: tf.constant(value) for name, value in batch.items()}
        )
        return {name: value.numpy() for name, value in outputs.items()}


@contextlib.contextmanager
def _quiet_interpreter_deprecation() -> Iterator[None]:
    """Hides TF 2.21's deprecation notice for tf.lite.Interpreter.

    TensorFlow points users to the `ai_edge_litert` package, the same
    runtime packaged alone; the converter's int8 calibration uses the
    bundled one too. We use `ai_edge_litert` when it is installed.
    """
    with warnings.catch_warnings(), quiet_native_logs():
        warnings.filterwarnings(
            "ignore",
            message=r"\s*Warning: tf\.lite\.Interpreter is deprecated",
            category=UserWarning,
        )
        yield


def _tflite_interpreter(path: Path) -> Any:
    try:  # the standalone LiteRT runtime, when installed
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        Interpreter = None  # noqa: N806
    if Interpreter is not None:
        return Interpreter(model_path=str(path))
    with _quiet_interpreter_deprecation():
        return tf.lite.Interpreter(model_path=str(path))


class _TFLiteRunner:
    def __init__(self, path: Path) -> None:
        self.interpreter = _tflite_interpreter(path)
        signatures = self.interpreter.get_signature_list()
        key = (
            SERVING_SIGNATURE
            if SERVING_SIGNATURE in signatures
            else next(iter(signatures), None)
        )
        if key is None:
            raise ExportError(
                f"{path} has no signature; export it with "
                "aiservice_kit.export.export_tflite."
            )
        with quiet_native_logs():  # the delegate's info line, printed once
            self.interpreter.allocate_tensors()
            self._runner = self.interpreter.get_signature_runner(key)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(self._runner(**batch))

    def is_quantized(self) -> bool:
        for detail in self.interpreter.get_tensor_details():
            if detail["dtype"] in (np.int8, np.float16):
                return True
            scales = detail.get("quantization_parameters", {}).get("scales")
            if scales is not None and len(scales):
                return True
        return False


class _OnnxRunner:
    def __init__(self, path: Path) -> None:
        ort = _import_onnxruntime()
        self._session = ort.InferenceSession(
            str(path), providers=["CPUExecutionProvider"]
        )
        self._names = [output.name for output in self._session.get_outputs()]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self._session.run(None, batch)
        return dict(zip(self._names, values, strict=True))


_RUNNERS: dict[str, Any] = {
    "saved_model": _SavedModelRunner,
    "tflite": _TFLiteRunner,
    "onnx": _OnnxRunner,
}


def load_artifact(
    artifact: str | os.PathLike,
) -> Callable[..., dict[str, np.ndarray]]:
    """Loads an exported artifact in its own runtime, as a callable.

    A SavedModel runs its `serving_default` signature in TensorFlow, a
    `.tflite` file runs in the LiteRT interpreter, an `.onnx` file in
    onnxruntime. The callable takes the signature's inputs as keyword
    arguments (numpy arrays) and returns its outputs by name.

    Args:
        artifact: str or PathLike. A SavedModel version directory, a
            `.tflite` file or an `.onnx` file.

    Returns:
        A callable `run(**inputs) -> dict[str, numpy.ndarray]`.

    Raises:
        FileNotFoundError: if `artifact` does not exist.
        ValueError: if it is none of the three formats.
        ImportError: for ONNX without onnxruntime installed.

    Example:
    ```python
    from aiservice_kit.export import load_artifact
    run = load_artifact("mnist.tflite")
    print(run(image=x_test[:4])["predicted_class"])
    ```
    """
    path = Path(artifact)
    runner = _RUNNERS[_detect_format(path)](path)

    def run(**inputs: Any) -> dict[str, np.ndarray]:
        return runner({name: np.asarray(v) for name, v in inputs.items()})

    return run


def verify_export(
    model: keras.Model,
    artifact: str | os.PathLike,
    sample_inputs: Any = None,
    *,
    format: str | None = None,
    tolerance: float | None = None,
    min_class_agreement: float | None = None,
    strict: bool = True,
    task: str | None = None,
    input_dtypes: Mapping[str, str] | None = None,
) -> ExportReport:
    """Runs an exported artifact in its own runtime and compares with Keras.

    A SavedModel runs in TensorFlow (its `serving_default` signature), a
    `.tflite` file in the LiteRT interpreter, an `.onnx` file in
    onnxruntime. Both sides get the same raw inputs; the Keras model runs
    with `training=False`.

    Default checks: float32 artifacts must match within
    `1e-5 * max(1, max |output|)`; quantized TFLite files (dynamic, float16,
    int8) must agree on at least 90% of predicted classes (their largest
    difference is reported, not checked: quantization moves outputs by
    design). Pass real `sample_inputs` and tighter values for your own
    acceptance test.

    Args:
        model: keras.Model. The model that was exported.
        artifact: str or PathLike. A SavedModel version directory, a
            `.tflite` file or an `.onnx` file.
        sample_inputs: array, dict of arrays (keyed by input name), list of
            arrays, or None for a synthetic sample of 16 rows.
        format: str or None. `"saved_model"`, `"tflite"` or `"onnx"`;
            None detects it from the path.
        tolerance: float or None. Largest accepted absolute difference.
        min_class_agreement: float or None. Smallest accepted fraction of
            agreeing predicted classes (classifiers).
        strict: bool. Raise `ExportMismatchError` on a failed check (True)
            or return the failing report (False).
        task: str or None. As for `export_saved_model`.
        input_dtypes: dict or None. As for `export_saved_model`.

    Returns:
        An `ExportReport` with `max_abs_diff`, `class_agreement` and
        `passed`.

    Raises:
        ExportMismatchError: if `strict` and the artifact disagrees.
        ExportError: if the artifact cannot be run.
        FileNotFoundError: if `artifact` does not exist.
        ValueError: if `sample_inputs` do not fit the model.

    Example:
    ```python
    from aiservice_kit.export import export_tflite, verify_export
    path = export_tflite(model, "mnist.tflite", verify=False)
    report = verify_export(model, path, x_test[:100])
    print(report.max_abs_diff, report.class_agreement)
    ```
    """
    plan = _plan(model, task, input_dtypes)
    check_bool("strict", strict)
    artifact = Path(artifact)
    found = _detect_format(artifact)
    if format is not None:
        check_choice("format", format, FORMATS)
        if format != found:
            raise ValueError(
                f"`artifact` looks like a {found} artifact, not {format}. "
                f"Received: format={format!r}"
            )
    if sample_inputs is None:
        samples = _synthetic_inputs(model, plan, DEFAULT_VERIFY_SAMPLES)
    else:
        samples = _as_samples(plan, sample_inputs)
    expected = _keras_outputs(model, plan, samples)
    try:
        runner: Any = _RUNNERS[found](artifact)
        quantized = found == "tflite" and runner.is_quantized()
        got, got_classes = [], []
        rows = len(expected)
        batch_size = 256 if found != "tflite" else 64
        for start in range(0, rows, batch_size):
            batch = {
                name: value[start : start + batch_size]
                for name, value in samples.items()
            }
            values, classes = _primary(runner(batch), plan)
            got.append(values)
            if classes is not None:
                got_classes.append(classes)
    except (ExportError, ImportError):
        raise
    except Exception as error:  # the runtime's own errors vary by format
        raise ExportError(
            f"Could not run the {found} artifact {artifact}: "
            f"{type(error).__name__}: {error}"
        ) from error
    got_values = np.concatenate(got)
    if got_values.shape != expected.shape:
        raise ExportMismatchError(
            f"The {found} artifact {artifact} returns shape "
            f"{list(got_values.shape)}; the model returns "
            f"{list(expected.shape)}."
        )
    max_diff = float(np.max(np.abs(got_values - expected)))
    if not np.isfinite(got_values).all():
        max_diff = float("inf")
    agreement = None
    if plan.task == "classification":
        mine = (
            np.concatenate(got_classes)
            if got_classes
            else np.argmax(got_values, axis=-1)
        )
        agreement = float(np.mean(mine == np.argmax(expected, axis=-1)))
    scale = max(1.0, float(np.max(np.abs(expected))))
    if quantized:
        # Quantization moves probabilities by design and may flip near
        # ties; a broken file shows as classes that disagree.
        if min_class_agreement is None:
            min_class_agreement = QUANTIZED_MIN_CLASS_AGREEMENT
    elif tolerance is None:
        tolerance = FLOAT_TOLERANCE * scale
    report = ExportReport(
        format=found,
        path=artifact,
        num_samples=len(expected),
        max_abs_diff=max_diff,
        class_agreement=agreement,
        tolerance=tolerance,
        min_class_agreement=min_class_agreement,
    )
    if strict and not report.passed:
        raise ExportMismatchError(
            f"The exported artifact disagrees with the Keras model: {report}."
            " Nothing was published if this came from an exporter."
        )
    return report


# --------------------------------------------------------------------------
# TFLite (LiteRT)
# --------------------------------------------------------------------------

#: Rows of `representative_data` used to calibrate int8 quantization.
MAX_CALIBRATION_SAMPLES = 500


def _publish_file(
    path: Path, data: bytes, check: Callable[[Path], Any]
) -> Path:
    """Writes `data` beside `path`, checks it, then renames it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}"
    try:
        tmp.write_bytes(data)
        check(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _check_output_path(path: Any, suffixes: tuple[str, ...]) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"`path` must be a file path ending in {' or '.join(suffixes)}. "
            f"Received: path={path!r}"
        )
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise ValueError(
            f"`path` must end in {' or '.join(suffixes)}. "
            f"Received: path={str(path)!r}"
        )
    if path.is_dir():
        raise ValueError(
            f"`path` is a directory; pass a file path. Received: path={path}"
        )
    return path


def export_tflite(
    model: keras.Model,
    path: str | os.PathLike,
    quantization: str | None = None,
    representative_data: Any = None,
    *,
    allow_flex: bool = False,
    verify: bool = True,
    sample_inputs: Any = None,
    task: str | None = None,
    input_dtypes: Mapping[str, str] | None = None,
) -> Path:
    """Exports `model` as a LiteRT (TFLite) flatbuffer with builtin ops.

    A preflight (`preflight_tflite`) runs first and refuses, naming the
    layer and the fix, a model that would need the Flex delegate
    (non-unrolled LSTM/GRU, string processing), unless `allow_flex=True`.
    The file has one signature, `serving_default`, with the same raw inputs
    and named outputs as `export_saved_model`. It is written beside `path`,
    checked with the LiteRT interpreter (when `verify`), then renamed into
    place.

    Quantization trades accuracy for size and speed:
    `"dynamic"` stores weights as int8 (about 4x smaller), `"float16"` as
    float16 (2x smaller, near-float accuracy, fast on GPUs), `"int8"` makes
    weights and activations int8 (4x smaller, integer-only accelerators),
    calibrated on `representative_data`; inputs and outputs keep their
    types (uint8 pixels in, float32 probabilities out).

    Args:
        model: keras.Model. The model to export.
        path: str or PathLike. The `.tflite` file to write.
        quantization: str or None. None (float32), `"dynamic"`,
            `"float16"` or `"int8"`.
        representative_data: array or dict of arrays. Real inputs (the
            first 500 rows are used) to calibrate `"int8"`; required for
            it. Also the verification sample for `"int8"` when
            `sample_inputs` is None.
        allow_flex: bool. Allow TensorFlow (Flex) ops; the file then needs
            a runtime linked with the Flex delegate.
        verify: bool. Check the file against the model before publishing.
        sample_inputs: array, dict of arrays, or None. Check inputs.
        task: str or None. As for `export_saved_model`.
        input_dtypes: dict or None. As for `export_saved_model`.

    Returns:
        The written path.

    Raises:
        ExportError: if the preflight or the converter fails (the message
            names the layer and the fix).
        ExportMismatchError: if the file disagrees with the model.
        ValueError: for a bad argument (for example `"int8"` without
            `representative_data`).

    Example:
    ```python
    from aiservice_kit.export import export_tflite
    export_tflite(model, "mnist.tflite")
    export_tflite(
        model, "mnist_int8.tflite", "int8", representative_data=x_train[:500]
    )
    ```
    """
    plan = _plan(model, task, input_dtypes)
    path = _check_output_path(path, (".tflite",))
    check_choice("quantization", quantization, QUANTIZATIONS)
    check_bool("allow_flex", allow_flex)
    check_bool("verify", verify)
    calibration = None
    if quantization == "int8":
        if representative_data is None:
            raise ValueError(
                '`quantization="int8"` needs `representative_data`: a few '
                "hundred real inputs (e.g. x_train[:500]) to calibrate the "
                "activation ranges. Received: representative_data=None"
            )
        calibration = _as_samples(plan, representative_data)
        calibration = {
            name: value[:MAX_CALIBRATION_SAMPLES]
            for name, value in calibration.items()
        }
        if sample_inputs is None:
            sample_inputs = calibration
    elif representative_data is not None:
        raise ValueError(
            '`representative_data` is used only with quantization="int8". '
            f"Received: quantization={quantization!r}"
        )
    if not allow_flex:
        _raise_problems(preflight_tflite(model), "LiteRT with builtin ops")

    with tempfile.TemporaryDirectory(prefix="aiservice_kit-tflite-") as tmp:
        _write_saved_model(model, plan, tmp)
        converter = tf.lite.TFLiteConverter.from_saved_model(
            tmp, signature_keys=[SERVING_SIGNATURE]
        )
        ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantization is not None:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantization == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if quantization == "int8":
            ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]

            def representative_dataset() -> Iterator[dict[str, np.ndarray]]:
                rows = len(next(iter(calibration.values())))
                for index in range(rows):
                    yield {
                        name: value[index : index + 1]
                        for name, value in calibration.items()
                    }

            converter.representative_dataset = representative_dataset
        if allow_flex:
            ops.append(tf.lite.OpsSet.SELECT_TF_OPS)
        converter.target_spec.supported_ops = ops
        try:
            with _quiet_interpreter_deprecation():
                data = converter.convert()
        except Exception as error:  # ConverterError, or TF's own errors
            raise ExportError(
                "The LiteRT converter failed"
                + ("" if allow_flex else " with builtin ops only")
                + f": {error}\nIf an op is missing, rebuild the layer that "
                "uses it with builtin-friendly options, or pass "
                "allow_flex=True if your runtime links the Flex delegate."
            ) from error

    def check(tmp_file: Path) -> None:
        if not verify:
            return
        try:
            verify_export(
                model,
                tmp_file,
                sample_inputs,
                format="tflite",
                task=plan.task,
                input_dtypes=input_dtypes,
            )
        except ExportMismatchError:
            raise
        except ExportError as error:
            if allow_flex and "Flex" in str(error):
                raise ExportError(
                    "The converted file uses Flex (SELECT_TF_OPS) ops, which "
                    "this Python LiteRT interpreter cannot run, so it cannot "
                    "be verified here; nothing was written. Pass "
                    "verify=False to write it unverified, and check it on a "
                    "runtime linked with the Flex delegate."
                ) from error
            raise

    return _publish_file(path, data, check)


# --------------------------------------------------------------------------
# ONNX
# --------------------------------------------------------------------------

_ONNX_INSTALL = (
    "pip install 'aiservice_kit[onnx]' (onnx, onnxruntime and tf2onnx)"
)


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as error:
        raise ImportError(
            f"Running ONNX artifacts needs onnxruntime: {_ONNX_INSTALL}."
        ) from error
    return onnxruntime


def _import_tf2onnx() -> Any:
    try:
        import onnx  # noqa: F401
        import tf2onnx
    except ImportError as error:
        raise ImportError(
            "ONNX export on Keras' TensorFlow backend converts the graph with "
            f"tf2onnx, which is not installed: {_ONNX_INSTALL}."
        ) from error
    return tf2onnx


def export_onnx(
    model: keras.Model,
    path: str | os.PathLike,
    *,
    opset: int | None = None,
    verify: bool = True,
    sample_inputs: Any = None,
    task: str | None = None,
    input_dtypes: Mapping[str, str] | None = None,
) -> Path:
    """Exports `model` as an ONNX graph, checked with onnxruntime.

    Needs the `onnx` extra (onnx, onnxruntime, tf2onnx). A preflight
    (`preflight_onnx`) refuses models with string processing
    (`TextVectorization`), which ONNX cannot express, before anything is
    written. The graph takes the same raw inputs and returns the same named
    outputs as `export_saved_model`; the batch axis is named `batch`.

    Args:
        model: keras.Model. The model to export (float32 dtype policy).
        path: str or PathLike. The `.onnx` file to write.
        opset: int or None. ONNX opset; None lets tf2onnx choose.
        verify: bool. Check the file with onnxruntime before publishing.
        sample_inputs: array, dict of arrays, or None. Check inputs.
        task: str or None. As for `export_saved_model`.
        input_dtypes: dict or None. As for `export_saved_model`.

    Returns:
        The written path.

    Raises:
        ImportError: if the `onnx` extra is not installed.
        ExportError: if the preflight or the converter fails.
        ExportMismatchError: if the file disagrees with the model.

    Example:
    ```python
    from aiservice_kit.export import export_onnx
    export_onnx(model, "mnist.onnx")
    ```
    """
    plan = _plan(model, task, input_dtypes)
    path = _check_output_path(path, (".onnx",))
    check_optional_positive_int("opset", opset, minimum=7)
    check_bool("verify", verify)
    _raise_problems(preflight_onnx(model), "ONNX")
    tf2onnx = _import_tf2onnx()
    specs = _signature_specs(plan)
    function = tf.function(_serving_fn(model, plan), input_signature=specs)
    try:
        model_proto, _ = tf2onnx.convert.from_function(
            function, input_signature=specs, opset=opset
        )
    except Exception as error:  # tf2onnx raises many kinds
        raise ExportError(
            f"tf2onnx could not convert the model: {type(error).__name__}: "
            f"{error}"
        ) from error
    for value in (*model_proto.graph.input, *model_proto.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = "batch"
    import onnx

    try:
        onnx.checker.check_model(model_proto)
    except onnx.checker.ValidationError as error:
        raise ExportError(
            f"The converted ONNX graph is invalid: {error}"
        ) from (error)

    def check(tmp_file: Path) -> None:
        if verify:
            verify_export(
                model,
                tmp_file,
                sample_inputs,
                format="onnx",
                task=plan.task,
                input_dtypes=input_dtypes,
            )

    return _publish_file(path, model_proto.SerializeToString(), check)


# --------------------------------------------------------------------------
# .keras files
# --------------------------------------------------------------------------


def save_model(model: keras.Model, path: str | os.PathLike) -> Path:
    """Saves `model` as a `.keras` file, atomically.

    Args:
        model: keras.Model. The model to save.
        path: str or PathLike. A file path ending in `.keras`.

    Returns:
        The written path.

    Raises:
        TypeError: if `model` is not a Keras model.
        ValueError: if `path` does not end in `.keras`.

    Example:
    ```python
    from aiservice_kit.export import save_model, load_model
    save_model(model, "mnist.keras")
    model = load_model("mnist.keras")
    ```
    """
    model = _check_model(model)
    path = _check_output_path(path, (".keras",))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.stem}.{uuid.uuid4().hex[:8]}.tmp.keras"
    try:
        model.save(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def load_model(path: str | os.PathLike, *, compile: bool = True) -> keras.Model:
    """Loads a `.keras` file saved by `save_model` (or `model.save`).

    aiservice_kit's custom layers are registered as serializable, so no
    `custom_objects` are needed.

    Args:
        path: str or PathLike. A `.keras` file.
        compile: bool. Whether to restore the compiled state.

    Returns:
        The model.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if it is not a `.keras` file.

    Example:
    ```python
    from aiservice_kit.export import load_model
    model = load_model("mnist.keras")
    ```
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"`path` must be a path to a .keras file. Received: path={path!r}"
        )
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No model file at {path}.")
    if path.suffix.lower() != ".keras":
        raise ValueError(
            "`path` must be a .keras file (Keras 3's format). "
            f"Received: path={str(path)!r}"
        )
    check_bool("compile", compile)
    import aiservice_kit.models  # noqa: F401  (registers custom layers)

    return keras.saving.load_model(path, compile=compile)
