"""verify_export: run an artifact in its own runtime, compare with Keras.

A SavedModel runs in TensorFlow, a `.tflite` file in the LiteRT
interpreter, an `.onnx` file in onnxruntime (`load_artifact` gives the same
runners to users). The exporters call `verify_planned` with the plan they
already made; `verify_export` plans the model itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import numbers
import os
import warnings
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from aiservice_kit._backend import quiet_native_logs
from aiservice_kit._layout import CLASSES_OUTPUT
from aiservice_kit._layout import CLASSIFY_SIGNATURE
from aiservice_kit._layout import PREDICT_SIGNATURE
from aiservice_kit._layout import REGRESS_OUTPUT
from aiservice_kit._layout import SCORES_OUTPUT
from aiservice_kit._layout import SERVING_SIGNATURE
from aiservice_kit._layout import list_versions
from aiservice_kit._validation import check_bool
from aiservice_kit._validation import check_choice
from aiservice_kit.exceptions import ExportError
from aiservice_kit.exceptions import ExportMismatchError
from aiservice_kit.export import _examples
from aiservice_kit.export import _signature
from aiservice_kit.export._signature import Plan
from aiservice_kit.export._signature import iter_layers
from aiservice_kit.models._contract import PREDICTED_CLASS
from aiservice_kit.models._contract import PREDICTIONS
from aiservice_kit.models._contract import PROBABILITIES

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
    model: keras.Model, plan: Plan, num_samples: int
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


def _numeric(spec: Any, array: np.ndarray) -> np.ndarray:
    """`array` if it holds numbers (bool, int, float) for a numeric input.

    An object array of numbers (a pandas column) becomes float64.
    """
    if array.dtype.kind == "O" and all(
        isinstance(value, (numbers.Real, np.bool_))
        for value in array.reshape(-1).tolist()
    ):
        array = array.astype(np.float64)
    if array.dtype.kind not in "biuf":
        raise ValueError(
            f"`sample_inputs[{spec.name!r}]` must be numeric (bool, int or "
            f"float): input {spec.name!r} takes {spec.dtype}. Received an "
            f"array of dtype {array.dtype}"
        )
    return array


def as_samples(plan: Plan, sample_inputs: Any) -> dict[str, np.ndarray]:
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
            array = _numeric(spec, np.asarray(value))
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
    model: keras.Model, plan: Plan, samples: dict[str, np.ndarray]
) -> np.ndarray:
    serve = _signature.serving_fn(model, plan)
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
    outputs: Mapping[str, Any], plan: Plan
) -> tuple[np.ndarray, np.ndarray | None]:
    if plan.task == "classification":
        probabilities = np.asarray(outputs[PROBABILITIES], dtype=np.float32)
        predicted = outputs.get(PREDICTED_CLASS)
        return probabilities, (
            None if predicted is None else np.asarray(predicted).reshape(-1)
        )
    if plan.task == "regression":
        return np.asarray(outputs[PREDICTIONS], dtype=np.float32), None
    # A tensor model: every output, each row flattened, side by side.
    values = [np.asarray(outputs[output.name]) for output in plan.outputs]
    rows = len(values[0])
    return (
        np.concatenate(
            [value.reshape(rows, -1).astype(np.float64) for value in values],
            axis=1,
        ),
        None,
    )


def _classes_of(probabilities: np.ndarray, plan: Plan) -> np.ndarray:
    """The predicted class of each row (a binary classifier's p >= 0.5)."""
    if plan.binary:
        return (probabilities.reshape(-1) >= 0.5).astype(np.int64)
    return np.argmax(probabilities, axis=-1)


def _run_example_signature(
    runner: Any, plan: Plan, samples: dict[str, np.ndarray]
) -> np.ndarray | None:
    """Scores (classify) or outputs (regress) of the rows as tf.Examples."""
    which = _examples.example_signature(plan)
    if which is None or which not in runner.signatures:
        return None
    fn = runner.signatures[which]
    serialized = _examples.serialize_examples(plan, samples)
    chunks = []
    for start in range(0, len(serialized), 256):
        outputs = fn(inputs=tf.constant(serialized[start : start + 256]))
        if which == CLASSIFY_SIGNATURE:
            classes = outputs[CLASSES_OUTPUT].numpy()
            scores = outputs[SCORES_OUTPUT].numpy()
            if classes.shape != scores.shape or classes.dtype != object:
                raise ExportMismatchError(
                    f"The classify signature returns classes of shape "
                    f"{list(classes.shape)} and scores of shape "
                    f"{list(scores.shape)}; TF Serving needs string classes "
                    "and float scores, both [batch, num_classes]."
                )
            chunks.append(scores)
        else:
            chunks.append(outputs[REGRESS_OUTPUT].numpy())
    return np.concatenate(chunks).astype(np.float32)


class _SavedModelRunner:
    def __init__(self, path: Path) -> None:
        self.signatures = tf.saved_model.load(str(path)).signatures
        # `predict` has every named output whatever `serving_default`
        # returns; exports made before it existed have `serving_default`.
        key = (
            PREDICT_SIGNATURE
            if PREDICT_SIGNATURE in self.signatures
            else SERVING_SIGNATURE
        )
        self._fn = self.signatures[key]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self._fn(
            **{name: tf.constant(value) for name, value in batch.items()}
        )
        return {name: value.numpy() for name, value in outputs.items()}


@contextlib.contextmanager
def quiet_interpreter_deprecation() -> Iterator[None]:
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


def tflite_interpreter(path: Path) -> Any:
    """The LiteRT interpreter of a `.tflite` file (XNNPACK on CPU)."""
    try:  # the standalone LiteRT runtime, when installed
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        Interpreter = None  # noqa: N806
    if Interpreter is not None:
        return Interpreter(model_path=str(path))
    with quiet_interpreter_deprecation():
        return tf.lite.Interpreter(model_path=str(path))


class _TFLiteRunner:
    def __init__(self, path: Path) -> None:
        self.interpreter = tflite_interpreter(path)
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


ONNX_INSTALL = (
    "pip install 'aiservice_kit[onnx]' (onnx, onnxruntime and tf2onnx)"
)


def import_onnxruntime() -> Any:
    """Imports onnxruntime, or raises ImportError with the install line."""
    try:
        import onnxruntime
    except ImportError as error:
        raise ImportError(
            f"Running ONNX artifacts needs onnxruntime: {ONNX_INSTALL}."
        ) from error
    return onnxruntime


class _OnnxRunner:
    def __init__(self, path: Path) -> None:
        ort = import_onnxruntime()
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

    A SavedModel runs its `predict` signature (every named output;
    `serving_default` in exports made before it) in TensorFlow, a
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

    A SavedModel runs in TensorFlow (its `predict` signature, and its
    `classification` or `regression` signature on the same rows as
    serialized `tf.Example`s), a `.tflite` file in the LiteRT interpreter,
    an `.onnx` file in onnxruntime. Both sides get the same raw inputs; the
    Keras model runs with `training=False`. A tensor model's outputs are
    compared all together.

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
    return verify_planned(
        model,
        artifact,
        sample_inputs,
        _signature.plan(model, task, input_dtypes),
        format=format,
        tolerance=tolerance,
        min_class_agreement=min_class_agreement,
        strict=strict,
    )


def verify_planned(
    model: keras.Model,
    artifact: str | os.PathLike,
    sample_inputs: Any,
    plan: Plan,
    *,
    format: str | None = None,
    tolerance: float | None = None,
    min_class_agreement: float | None = None,
    strict: bool = True,
) -> ExportReport:
    """`verify_export` for a model already planned (the exporters' path)."""
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
        samples = as_samples(plan, sample_inputs)
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
        if found == "saved_model":
            got_examples = _run_example_signature(runner, plan, samples)
        else:
            got_examples = None
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
    if got_examples is not None:
        # The classify/regress signature must tell the same: its scores are
        # the probabilities (a binary classifier's [1 - p, p]).
        if plan.binary:
            positive = expected.reshape(-1, 1)
            want = np.concatenate([1.0 - positive, positive], axis=1)
        elif plan.task == "regression":
            want = expected.reshape(-1)
        else:
            want = expected
        if got_examples.shape != want.shape:
            raise ExportMismatchError(
                f"The {found} artifact {artifact}'s classify/regress "
                f"signature returns shape {list(got_examples.shape)}; "
                f"expected {list(want.shape)}."
            )
        example_diff = float(np.max(np.abs(got_examples - want)))
        if not np.isfinite(got_examples).all():
            example_diff = float("inf")
        max_diff = max(max_diff, example_diff)
    agreement = None
    if plan.task == "classification":
        mine = (
            np.concatenate(got_classes)
            if got_classes
            else _classes_of(got_values, plan)
        )
        want_classes = _classes_of(expected, plan).reshape(-1)
        agreement = float(np.mean(mine.reshape(-1) == want_classes))
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


# --------------------------------------------------------------------------
# Runtime proofs: a converted signature against the SavedModel's own


def compare_outputs(
    expected: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray]
) -> str | None:
    """Tells why `got` differs from `expected`, or None when they agree.

    Both must have the same output names, dtypes and shapes; float values
    must match within `FLOAT_TOLERANCE * max(1, max |expected|)`, the
    tolerance `verify_export` uses (NaN only where the reference has NaN);
    integer, boolean and string values exactly.

    Args:
        expected: dict of name -> array. The reference outputs.
        got: dict of name -> array. The candidate's outputs.

    Returns:
        None when every expected output agrees, else one sentence naming
        the output and the difference.

    Example:
    ```python
    import numpy as np
    from aiservice_kit.export.verify import compare_outputs
    compare_outputs({"y": np.ones(2)}, {"y": np.ones(2) + 1e-7})  # None
    ```
    """
    if set(got) != set(expected):
        return (
            f"it returns the outputs {sorted(got)}, the SavedModel "
            f"{sorted(expected)}"
        )
    for name in sorted(expected):
        want, have = np.asarray(expected[name]), np.asarray(got[name])
        if have.dtype != want.dtype:
            return (
                f"output {name!r} is {have.dtype}, the SavedModel's "
                f"{want.dtype}"
            )
        if have.shape != want.shape:
            return (
                f"output {name!r} has shape {list(have.shape)}, the "
                f"SavedModel's {list(want.shape)}"
            )
        if want.size == 0:
            continue
        if want.dtype.kind in "fc":
            both_nan = np.isnan(want) & np.isnan(have)
            diff = np.where(both_nan, 0.0, np.abs(have - want))
            largest = float(np.max(diff))
            finite = want[np.isfinite(want)]
            scale = (
                max(1.0, float(np.max(np.abs(finite)))) if finite.size else 1
            )
            tolerance = FLOAT_TOLERANCE * scale
            if not largest <= tolerance:  # NaN fails too
                return (
                    f"output {name!r} differs by up to {largest:.3g} "
                    f"(tolerance {tolerance:.3g})"
                )
        elif not np.array_equal(have, want):
            wrong = int(np.sum(have != want))
            return (
                f"output {name!r} ({want.dtype}) differs in {wrong} of "
                f"{want.size} values (integer and string outputs must be "
                "equal)"
            )
    return None


def prove_runtime(
    reference: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
    candidate: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
    inputs: Mapping[str, np.ndarray],
) -> str | None:
    """Runs both on one row and on all rows; why they differ, or None.

    Args:
        reference: callable. The SavedModel signature (dict in, dict out).
        candidate: callable. The converted signature in its runtime.
        inputs: dict of name -> array. Rows to compare on (batch axis
            first); the first row alone is run too, so batch sizes 1 and
            `len(rows)` are both proven.

    Returns:
        None when the candidate agrees (`compare_outputs`) on both, else
        why not, with the batch size (an error of the candidate counts as
        a difference, and inputs the reference refuses prove nothing).

    Example:
    ```python
    why = prove_runtime(savedmodel_fn, litert_fn, {"image": images})
    ```
    """
    rows = len(next(iter(inputs.values())))
    for size in sorted({1, rows}):
        batch = {name: value[:size] for name, value in inputs.items()}
        try:
            want = reference(batch)
        except Exception as error:  # e.g. ids out of a generated range
            return (
                "it cannot be proven: the proof inputs fail on the "
                f"SavedModel itself on a batch of {size} "
                f"({type(error).__name__}: {str(error)[:300]})"
            )
        try:
            got = candidate(batch)
        except Exception as error:  # each runtime raises its own kinds
            return (
                f"it failed on a batch of {size}: {type(error).__name__}: "
                f"{str(error)[:300]}"
            )
        why = compare_outputs(want, got)
        if why is not None:
            return f"{why} on a batch of {size}"
    return None
