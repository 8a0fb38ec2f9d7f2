"""The TensorFlow runtime of the server: one loaded SavedModel version.

`load_version` is the loader the registry is given: it loads
`base_path/<N>/` with `tf.saved_model.load`, wraps each signature in a
batcher and warms it up. Requests run through the SavedModel's
signatures, never through `model.predict`; `serving_default` and
`predict` may run on LiteRT or ONNX Runtime instead, once `_runtimes`
has proven the version's converted artifacts equal to them. With
`_sources`, this is the only serving module that imports TensorFlow
(inside the functions, so importing the app stays light).
"""

import logging
import re
from collections.abc import Callable
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aiservice_kit._layout import EXPLAIN_SIGNATURE
from aiservice_kit._layout import SERVING_SIGNATURE
from aiservice_kit._layout import read_metadata
from aiservice_kit.serving._codec import TensorInfo
from aiservice_kit.serving._errors import ServingError
from aiservice_kit.serving._runtimes import TENSORFLOW
from aiservice_kit.serving._runtimes import choose_runtime
from aiservice_kit.serving.batching import Batcher
from aiservice_kit.serving.batching import BatchingConfig
from aiservice_kit.serving.config import DEFAULT_RUNTIME

logger = logging.getLogger("aiservice_kit.serving")
#: The signatures whose failed warm-up keeps a version from serving.
_DECISIVE_SIGNATURES = (SERVING_SIGNATURE, "predict")
#: Longest model error message returned to a client.
_MAX_ERROR_CHARS = 500


def _tensor_info(name: str, spec: Any) -> TensorInfo:
    import tensorflow as tf

    dtype = "string" if spec.dtype == tf.string else spec.dtype.name
    shape = spec.shape
    dims = None if shape.rank is None else tuple(shape.as_list())
    return TensorInfo(name=name, dtype=dtype, shape=dims)


def _flat_call_order(fn: Any, inputs: dict[str, TensorInfo]) -> Any:
    """The input names in the order of the signature's flat call, or None.

    Calling a loaded signature with keyword arguments binds and checks
    them against its structured signature in Python, about 0.15 ms of a
    0.5 ms MNIST call. `ConcreteFunction._call_flat` skips that step; it
    is used only where `_flat_ready` has checked what that step would
    (names, dtypes, shapes; never for strings or an unknown rank), and
    only while this TensorFlow has it (else None: the keyword call).
    """
    import tensorflow as tf

    if not callable(getattr(fn, "_call_flat", None)):
        return None
    try:
        args, kwargs = fn.structured_input_signature
        flat = tf.nest.flatten(kwargs)
        captured = len(fn.captured_inputs)
        placeholders = len(fn.inputs) - captured
    except (AttributeError, TypeError, ValueError):
        return None
    if args or not isinstance(kwargs, dict) or len(flat) != placeholders:
        return None
    if any(i.dtype == "string" or i.shape is None for i in inputs.values()):
        return None
    return tuple(sorted(kwargs))  # `tf.nest` orders a dict by its keys


def _flat_ready(
    inputs: dict[str, np.ndarray], signature: dict[str, TensorInfo]
) -> bool:
    """Whether `inputs` are what the signature takes, exactly: its names,
    its dtypes, its shapes (else the keyword call raises TF's error)."""
    if len(inputs) != len(signature):
        return False
    for name, info in signature.items():
        value = inputs.get(name)
        if (
            not isinstance(value, np.ndarray)
            or value.dtype.name != info.dtype
            or value.ndim != len(info.shape)
            or any(
                w is not None and w != g
                for w, g in zip(info.shape, value.shape, strict=True)
            )
        ):
            return False
    return True


_NODE = re.compile(r"\{\{node ([^}]+)\}\}")
_SKIPPED = ("Graph execution error:", "Detected at node", "<stack traces")


def _error_text(error: Exception, inputs: Sequence[str]) -> str:
    """TensorFlow's error without its stack: the message, op and inputs.

    `Graph execution error:` is only a heading; the cause is on the lines
    after it, and the failing op in `{{node NAME}}`.
    """
    raw = getattr(error, "message", str(error))
    lines = [
        line.strip()
        for line in raw.splitlines()
        if line.strip()
        and not line.startswith((" ", "\t"))
        and not line.strip().startswith(_SKIPPED)
        and not line.strip().startswith("File ")
    ]
    text = " ".join(lines)[:_MAX_ERROR_CHARS] or type(error).__name__
    nodes = _NODE.findall(raw)
    if nodes:
        text += f" (op: {nodes[-1]})"
    if inputs:
        text += f" (inputs: {', '.join(inputs)})"
    return text


def _tf_error(error: Exception, inputs: Sequence[str] = ()) -> ServingError:
    import tensorflow as tf

    text = _error_text(error, inputs)
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
        runtime: str. What runs it: `"tensorflow"`, or `"litert"` /
            `"onnx"` once `use` switched it to a proven artifact.
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
        self.runtime = TENSORFLOW
        self._runner: Callable[[dict], dict] | None = None
        self.inputs = {
            key: _tensor_info(key, spec)
            for key, spec in fn.structured_input_signature[1].items()
        }
        self.outputs = {
            key: _tensor_info(key, spec)
            for key, spec in fn.structured_outputs.items()
        }
        self._flat_order = _flat_call_order(fn, self.inputs)
        self._max_rows = batching.max_batch_size
        self._sliceable = bool(self.inputs) and all(
            info.shape is not None and len(info.shape) >= 1
            for info in (*self.inputs.values(), *self.outputs.values())
        )
        self._batcher = Batcher(
            self.run, batching, name=f"{label}-{name}", on_batch=on_batch
        )

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs the signature on numpy inputs, `max_batch_size` rows a call.

        A request larger than `max_batch_size` runs alone (the batcher
        does not split it); here it runs in slices of that size, so a
        graph whose memory grows with the batch (the recommender's
        `[batch, items]` scores) never sees more rows than a full batch.
        Signatures whose outputs lack a batch axis run whole.
        """
        rows = {len(v) if np.ndim(v) else -1 for v in inputs.values()}
        size = self._max_rows
        if len(rows) != 1 or not self._sliceable or max(rows) <= size:
            return self._run_once(inputs)
        parts = [
            self._run_once(
                {k: v[start : start + size] for k, v in inputs.items()}
            )
            for start in range(0, max(rows), size)
        ]
        return {
            name: np.concatenate([part[name] for part in parts])
            for name in parts[0]
        }

    def use(self, runtime: str, runner: Callable[[dict], dict]) -> None:
        """Runs the signature on `runner` from now on (a proven artifact).

        Args:
            runtime: str. Its name (`"litert"`, `"onnx"`).
            runner: callable. `runner(inputs) -> outputs`, dicts of numpy
                arrays by tensor name (`_runtimes.LiteRTRuntime`, ...).
        """
        self._runner = runner
        self.runtime = runtime

    def _run_converted(
        self, inputs: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        # The codecs already check names, dtypes and shapes against the
        # signature; checked again here, as TensorFlow would, so a caller
        # that skipped them gets a 400 rather than the runtime's error.
        if set(inputs) != set(self.inputs):
            raise ServingError(
                f"Invalid input: the signature takes {sorted(self.inputs)}; "
                f"received {sorted(inputs)}",
                400,
            )
        feed = {}
        for name, info in self.inputs.items():
            value = np.asarray(inputs[name])
            want = info.shape
            if want is not None and (
                value.ndim != len(want)
                or any(
                    w is not None and w != g
                    for w, g in zip(want, value.shape, strict=True)
                )
            ):
                raise ServingError(
                    f"Invalid input: '{name}' has shape {list(value.shape)}; "
                    f"the signature takes {info.describe()}",
                    400,
                )
            feed[name] = value.astype(info.dtype, copy=False)
        try:
            return self._runner(feed)
        except Exception as error:  # each runtime raises its own kinds
            raise ServingError(
                f"Model error ({self.runtime}): {type(error).__name__}: "
                f"{str(error)[:_MAX_ERROR_CHARS]}",
                500,
            ) from None

    def _run_once(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._runner is not None:
            return self._run_converted(inputs)
        import tensorflow as tf

        order = self._flat_order
        if order is not None and not _flat_ready(inputs, self.inputs):
            order = None
        try:
            if order is None:
                result = self._fn(
                    **{n: tf.convert_to_tensor(v) for n, v in inputs.items()}
                )
            else:
                result = self._fn._call_flat(
                    [tf.convert_to_tensor(inputs[n]) for n in order],
                    self._fn.captured_inputs,
                )
        except tf.errors.OpError as error:
            raise _tf_error(error, sorted(inputs)) from None
        except UnicodeDecodeError:
            # TensorFlow's own message about the bytes, decoded wrongly:
            # its positions would not point into the client's input.
            raise ServingError(
                "Invalid input for "
                f"{', '.join(repr(name) for name in sorted(inputs))}: "
                "TensorFlow could not read its bytes (not valid UTF-8 where "
                "the signature reads text, or not a serialized tf.Example "
                "where it parses examples).",
                400,
            ) from None
        except (TypeError, ValueError) as error:
            raise ServingError(f"Invalid input: {error}", 400) from None
        return {name: tensor.numpy() for name, tensor in result.items()}

    async def predict(
        self, inputs: dict[str, np.ndarray], *, now_if_free: bool = False
    ) -> dict[str, np.ndarray]:
        """Runs the inputs in the next batch and waits for their outputs
        (`now_if_free`: a call alone runs here, see `Batcher.run`)."""
        return await self._batcher.run(inputs, now_if_free=now_if_free)

    def warm_up(self, decisive: bool = False) -> None:
        """Runs one zero instance so the first request is not slow.

        Args:
            decisive: bool. When True (the `serving_default` and `predict`
                signatures), a failed warm-up means the version cannot
                serve: the error is raised and the version is not swapped
                in. Other signatures (`classify`, `regress` parse
                serialized `tf.Example`s that an empty string cannot fill)
                only log it. A refusal of an empty string as input (e.g. an
                image decoder) is inconclusive and only logged too.

        Raises:
            RuntimeError: for a decisive warm-up that failed.
        """
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
        except Exception as error:
            message = getattr(error, "message", None) or repr(error)
            status = getattr(error, "status_code", 500)
            strings = any(i.dtype == "string" for i in self.inputs.values())
            if decisive and not (strings and status == 400):
                raise RuntimeError(
                    f"warm-up inference of signature '{self.name}' on a zero "
                    f"instance failed: {message}"
                ) from None
            # A 400 is the zero instance's fault, not the model's (an
            # empty string is no serialized tf.Example): no warning.
            logger.log(
                logging.INFO if status == 400 else logging.WARNING,
                "warm-up of signature '%s' failed (serving it anyway): %s",
                self.name,
                message,
            )

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
        runtime: str. The model's `runtime` setting (`_runtimes`).

    Attributes:
        runtime: str. What runs `serving_default` and `predict`.
        runtime_note: str. Why a runtime tried before it was refused
            (empty when none was), shown in the version's status.

    Raises:
        Exception: whatever TensorFlow raises for a SavedModel it cannot
            load (the registry reports it).
        ValueError: for `runtime="litert"`/`"onnx"` on a version that
            cannot run on it (raw-string inputs, no artifact).
    """

    def __init__(
        self,
        model_name: str,
        version: int,
        path: Path,
        batching: BatchingConfig,
        on_batch: Callable[[int], None] | None = None,
        runtime: str = DEFAULT_RUNTIME,
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
        try:
            for name, signature in self.signatures.items():
                signature.warm_up(decisive=name in _DECISIVE_SIGNATURES)
            self.runtime, self.runtime_note = choose_runtime(
                model_name,
                version,
                path,
                self.metadata,
                self.signatures,
                runtime,
            )
        except BaseException:
            self.close()
            raise

    @property
    def reported_runtime(self) -> str | None:
        """The runtime its status row shows: None for plain TensorFlow.

        A version on LiteRT or ONNX, or one that fell back to TensorFlow
        (`runtime_note` says why), shows it; a plain TensorFlow version's
        row stays exactly TF Serving's.
        """
        if self.runtime == TENSORFLOW and not self.runtime_note:
            return None
        return self.runtime

    def _read_metadata(self) -> dict[str, Any] | None:
        try:
            return read_metadata(self.path)
        except FileNotFoundError:
            return None  # not exported by aiservice_kit: still served
        except (OSError, ValueError) as error:
            logger.warning("unreadable metadata in %s: %s", self.path, error)
            return None

    def signature(self, name: str) -> Signature:
        """The signature a predict-like call names.

        The `explain` signature is served at `:explain` only, where it is
        metered (and priced) as an explanation.

        Raises:
            ServingError: 400 in TF Serving's words when missing, or for
                `explain`.
        """
        callable_here = sorted(set(self.signatures) - {EXPLAIN_SIGNATURE})
        if name == EXPLAIN_SIGNATURE and name in self.signatures:
            raise ServingError(
                f"The {EXPLAIN_SIGNATURE!r} signature is served at "
                f"POST /v1/models/{self.model_name}:explain only (metered "
                "and priced as an explanation); signatures callable here: "
                f"{', '.join(callable_here)}. Received: "
                f"signature_name={name!r}",
                400,
            )
        try:
            return self.signatures[name]
        except KeyError:
            raise ServingError(
                f'Serving signature name: "{name:.80}" not found in '
                f"signature def (available: {', '.join(callable_here)})",
                400,
            ) from None

    def close(self) -> None:
        """Stops the batchers (queued requests still finish)."""
        for signature in self.signatures.values():
            signature.close()


def load_version(
    model_name: str,
    version: int,
    path: Path,
    batching: BatchingConfig,
    on_batch: Callable[[int], None] | None = None,
    *,
    runtime: str = DEFAULT_RUNTIME,
) -> ServableVersion:
    """The registry's loader: loads and warms up one version.

    Args:
        model_name: str. The served model's name.
        version: int. The version number.
        path: Path. The version directory.
        batching: BatchingConfig. Applied to every signature.
        on_batch: callable or None. Receives each batch's size.
        runtime: str. `"auto"`, `"tensorflow"`, `"litert"` or `"onnx"`:
            what runs `serving_default` and `predict` (`_runtimes`).

    Returns:
        The loaded ServableVersion.

    Raises:
        Exception: whatever TensorFlow raises for a SavedModel it cannot
            load (the registry reports it in the model status).
        ValueError: for a runtime the version cannot run on at all.

    Example:
    ```python
    from aiservice_kit.serving._servable import load_version
    from aiservice_kit.serving.registry import Registry
    registry = Registry({"mnist": config}, loader=load_version)
    ```
    """
    return ServableVersion(
        model_name, version, path, batching, on_batch, runtime
    )
