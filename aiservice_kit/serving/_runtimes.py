"""Runtimes other than TensorFlow for a loaded version, chosen by proof.

A version exported with `export_saved_model(..., runtimes=...)` carries
its `serving_default` and `predict` signatures converted for LiteRT
(`runtimes/<signature>.tflite`, run by the TFLite interpreter with
XNNPACK) and ONNX Runtime (`runtimes/<signature>.onnx`). When it loads,
`choose_runtime` picks what runs them, by the model's `runtime` setting:

- `"tensorflow"`: the SavedModel, always.
- `"auto"` (the default): LiteRT, then ONNX, the first whose artifacts
  the version carries and that *proves* equal to the SavedModel's own
  signatures; else TensorFlow. A version without artifacts serves on
  TensorFlow, as before: nothing is converted at load time.
- `"litert"` / `"onnx"`: that runtime once proven. A version that cannot
  run on it at all (a raw-string input, no artifact: it was exported
  without `runtimes=`, or the exporter skipped it) fails to load with a
  message naming why, and the previous version keeps serving.

The proof runs each converted signature and the SavedModel's on the
version's proof inputs (`runtimes/proof_inputs.npz`, the rows the exporter
verified on) or, without them, on rows generated from the input specs,
as one row and as a batch, and compares them as `export/verify.py` does
(floats within its tolerance, integers and strings exactly). A candidate
that disagrees or fails leaves the version on TensorFlow: the version
serves, its status row says why (`error_message`, with `runtime`) and a
WARNING is logged. Other signatures (classify, regress, explain) always
run on TensorFlow.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from aiservice_kit._layout import ARTIFACT_RUNTIMES
from aiservice_kit._layout import PROOF_INPUTS_FILE
from aiservice_kit._layout import PROOF_INPUTS_KEY
from aiservice_kit._layout import RUNTIME_SIGNATURES
from aiservice_kit._layout import RUNTIMES_DIR
from aiservice_kit._layout import RUNTIMES_KEY
from aiservice_kit._layout import RUNTIMES_SKIPPED_KEY
from aiservice_kit._layout import runtime_artifact
from aiservice_kit.serving.config import PROOF_ROWS

logger = logging.getLogger("aiservice_kit.serving")
#: What runs a signature that no converted artifact replaced.
TENSORFLOW = "tensorflow"
#: Length given to variable (None) axes of generated proof inputs.
_VARIABLE_LENGTH = 8


class LiteRTRuntime:
    """A `.tflite` signature in the LiteRT interpreter (XNNPACK on CPU).

    The interpreter is not thread-safe: calls are serialized by a lock
    (the batcher calls from its one worker thread; the load-time proof
    from the loader's). The signature runner resizes the inputs to each
    call's batch size.

    Args:
        path: Path. The `.tflite` file (one signature).

    Example:
    ```python
    run = LiteRTRuntime(Path("models/mnist/1/runtimes/predict.tflite"))
    run({"image": images})["predicted_class"]
    ```
    """

    name = "litert"

    def __init__(self, path: Path) -> None:
        from aiservice_kit._backend import quiet_native_logs
        from aiservice_kit.export.verify import tflite_interpreter

        self._interpreter = tflite_interpreter(path)
        keys = list(self._interpreter.get_signature_list())
        if len(keys) != 1:
            raise ValueError(
                f"{path} must hold one signature; it holds {keys}."
            )
        with quiet_native_logs():  # the XNNPACK delegate's info line
            self._runner = self._interpreter.get_signature_runner(keys[0])
        self._lock = threading.Lock()

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs one batch; the outputs by name (copies, safe to keep)."""
        with self._lock:
            return dict(self._runner(**inputs))


class OnnxRuntime:
    """An `.onnx` signature in ONNX Runtime (CPU execution provider).

    `InferenceSession.run` is thread-safe; the batch axis is dynamic.

    Args:
        path: Path. The `.onnx` file.

    Example:
    ```python
    run = OnnxRuntime(Path("models/mnist/1/runtimes/predict.onnx"))
    run({"image": images})["probabilities"]
    ```
    """

    name = "onnx"

    def __init__(self, path: Path) -> None:
        from aiservice_kit.export.verify import import_onnxruntime

        ort = import_onnxruntime()
        self._session = ort.InferenceSession(
            str(path), providers=["CPUExecutionProvider"]
        )
        self._outputs = [output.name for output in self._session.get_outputs()]

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs one batch; the outputs by name."""
        values = self._session.run(None, inputs)
        return dict(zip(self._outputs, values, strict=True))


RUNTIMES = {LiteRTRuntime.name: LiteRTRuntime, OnnxRuntime.name: OnnxRuntime}


def proof_inputs(
    version_dir: Path, metadata: Mapping[str, Any] | None, specs: Mapping
) -> dict[str, np.ndarray]:
    """The rows a runtime is proven on: the exporter's, else generated.

    Args:
        version_dir: Path. The version directory.
        metadata: dict or None. Its metadata.
        specs: dict of name -> TensorInfo. The signature's inputs.

    Returns:
        dict of input name -> array (`PROOF_ROWS` generated rows when the
        version holds no proof inputs for these names).
    """
    relative = (metadata or {}).get(PROOF_INPUTS_KEY)
    if relative == f"{RUNTIMES_DIR}/{PROOF_INPUTS_FILE}":
        try:
            with np.load(version_dir / relative, allow_pickle=False) as saved:
                if set(saved.files) == set(specs):
                    return {
                        name: saved[name].astype(specs[name].dtype)
                        for name in specs
                    }
        except (OSError, ValueError) as error:
            logger.warning(
                "unreadable proof inputs in %s: %s", version_dir, error
            )
    rng = np.random.default_rng(0)
    rows = {}
    for name, info in specs.items():
        shape = [PROOF_ROWS] + [
            _VARIABLE_LENGTH if axis is None else axis
            for axis in (info.shape or (None,))[1:]
        ]
        kind = np.dtype(info.dtype).kind
        if info.dtype == "uint8":
            rows[name] = rng.integers(0, 256, shape).astype(np.uint8)
        elif kind in "iu":
            rows[name] = rng.integers(0, 10, shape).astype(info.dtype)
        elif kind == "b":
            rows[name] = rng.integers(0, 2, shape).astype(bool)
        else:
            rows[name] = rng.standard_normal(shape).astype(info.dtype)
    return rows


def _refusal(
    runtime: str,
    model_name: str,
    version: int,
    signatures: Mapping[str, Any],
    skipped: Mapping[str, str],
) -> str:
    strings = sorted(
        f"{key}.{name}"
        for key in RUNTIME_SIGNATURES
        if key in signatures
        for name, info in signatures[key].inputs.items()
        if info.dtype == "string"
    )
    head = (
        f"runtime={runtime!r} cannot serve model {model_name!r} version "
        f"{version}: "
    )
    if strings:
        why = (
            f"its input {', '.join(strings)} takes raw strings, which "
            f"{runtime} cannot run (string processing needs TensorFlow). "
            f"Serve it with runtime='{TENSORFLOW}' or 'auto', or export the "
            "integer-input model (aiservice_kit.models.split_text_model)."
        )
    else:
        file = runtime_artifact(runtime, RUNTIME_SIGNATURES[0])
        why = (
            f"the version has no {runtime} artifact ({file}). Re-export it "
            f"with export_saved_model(..., runtimes=[{runtime!r}]), or "
            "serve it with runtime='auto' (TensorFlow when none is there)."
        )
    if runtime in skipped:
        why += f" The exporter skipped {runtime}: {skipped[runtime]}"
    return head + why


def _prove(
    runtime: str,
    version_dir: Path,
    metadata: Mapping[str, Any] | None,
    signatures: Mapping[str, Any],
    keys: list[str],
) -> tuple[dict[str, Any], str | None]:
    """Loads and proves `runtime` for `keys`: (runners, why not or None)."""
    from aiservice_kit.export.verify import prove_runtime

    runners = {}
    for key in keys:
        try:
            runner = RUNTIMES[runtime](
                version_dir / runtime_artifact(runtime, key)
            )
        except Exception as error:  # each runtime raises its own kinds
            return {}, (
                f"signature {key!r} could not be loaded: "
                f"{type(error).__name__}: {str(error)[:300]}"
            )
        signature = signatures[key]
        inputs = proof_inputs(version_dir, metadata, signature.inputs)
        why = prove_runtime(signature.run, runner, inputs)
        if why is not None:
            return {}, f"signature {key!r}: {why}"
        runners[key] = runner
    return runners, None


def choose_runtime(
    model_name: str,
    version: int,
    version_dir: Path,
    metadata: Mapping[str, Any] | None,
    signatures: Mapping[str, Any],
    requested: str,
) -> tuple[str, str]:
    """Proves the candidates and switches the signatures to the winner.

    Args:
        model_name: str. The served model's name (for messages).
        version: int. The version number.
        version_dir: Path. The version directory.
        metadata: dict or None. Its metadata (`RUNTIMES_KEY` lists the
            artifacts).
        signatures: dict of name -> `_servable.Signature`, still running
            on TensorFlow.
        requested: str. The model's `runtime` setting.

    Returns:
        (the runtime now running `serving_default`/`predict`, why a
        candidate tried before it was refused: empty when none was).

    Raises:
        ValueError: for `"litert"`/`"onnx"` on a version that cannot run
            on it at all (raw-string inputs, no artifact): the version
            does not load.

    Example:
    ```python
    runtime, note = choose_runtime("mnist", 1, path, meta, sigs, "auto")
    ```
    """
    if requested == TENSORFLOW:
        return TENSORFLOW, ""
    recorded = (metadata or {}).get(RUNTIMES_KEY) or {}
    skipped = (metadata or {}).get(RUNTIMES_SKIPPED_KEY) or {}
    candidates = ARTIFACT_RUNTIMES if requested == "auto" else (requested,)
    refused = []
    for runtime in candidates:
        listed = recorded.get(runtime) or {}
        keys = [
            key
            for key in RUNTIME_SIGNATURES
            if key in signatures
            and listed.get(key) == runtime_artifact(runtime, key)
        ]
        if not keys:
            if requested != "auto":
                raise ValueError(
                    _refusal(runtime, model_name, version, signatures, skipped)
                )
            continue
        runners, why = _prove(runtime, version_dir, metadata, signatures, keys)
        if why is None:
            for key, runner in runners.items():
                signatures[key].use(runtime, runner)
            logger.info(
                "model %s: version %d runs %s on %s (proven equal to "
                "TensorFlow)",
                model_name,
                version,
                ", ".join(keys),
                runtime,
            )
            if not refused:
                return runtime, ""
            note = "; ".join(refused) + f"; serving on {runtime}"
            logger.warning("model %s: version %d %s", model_name, version, note)
            return runtime, note
        refused.append(f"{runtime} disagrees with TensorFlow: {why}")
    if not refused:
        return TENSORFLOW, ""
    note = f"serving on {TENSORFLOW}; " + "; ".join(refused)
    logger.warning("model %s: version %d %s", model_name, version, note)
    return TENSORFLOW, note
