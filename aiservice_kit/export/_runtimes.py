"""The SavedModel's own signatures converted for LiteRT and ONNX Runtime.

`export_saved_model(..., runtimes=...)` calls `write_runtimes` on the
version directory before it is published: each signature of
`RUNTIME_SIGNATURES` (`serving_default`, `predict`) is converted from the
SavedModel just written (LiteRT: `TFLiteConverter.from_saved_model` with
that signature key; ONNX: tf2onnx on the loaded signature function), so
the artifacts keep the signature's input and output names, derived
outputs (`predicted_class`) included. Each artifact is proven equal to
its SavedModel signature on the verification rows (one row, then all),
which are saved beside them (`PROOF_INPUTS_FILE`) for the server to prove
them again when it loads the version.

An explicit request that cannot be honoured raises: `ValueError` naming
the model's problem (raw-string inputs, lookup tables, recurrent loops),
`ExportError` when the converter fails, `ExportMismatchError` when the
artifact disagrees. `runtimes="auto"` skips such a runtime instead and
records why in the metadata (`RUNTIMES_SKIPPED_KEY`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from aiservice_kit._layout import ARTIFACT_RUNTIMES
from aiservice_kit._layout import PROOF_INPUTS_FILE
from aiservice_kit._layout import PROOF_INPUTS_KEY
from aiservice_kit._layout import RUNTIME_SIGNATURES
from aiservice_kit._layout import RUNTIMES_DIR
from aiservice_kit._layout import RUNTIMES_KEY
from aiservice_kit._layout import RUNTIMES_SKIPPED_KEY
from aiservice_kit._layout import runtime_artifact
from aiservice_kit.exceptions import ExportError
from aiservice_kit.exceptions import ExportMismatchError
from aiservice_kit.export._preflight import onnx_problems
from aiservice_kit.export._preflight import tflite_problems
from aiservice_kit.export._signature import Plan
from aiservice_kit.export.verify import prove_runtime
from aiservice_kit.export.verify import quiet_interpreter_deprecation

#: What `runtimes=` accepts besides a runtime name or a list of them.
AUTO = "auto"
#: Rows of the verification sample saved as the proof inputs.
PROOF_ROWS = 16
#: Most rows each artifact is proven on at export (one batch).
MAX_PROOF_ROWS = 256


def check_runtimes(runtimes: Any) -> tuple[tuple[str, ...], bool]:
    """The runtimes asked for, and whether they were named explicitly.

    Args:
        runtimes: None or `()` (none), `"auto"` (every runtime the model
            fits, skipping the others), a runtime name (`"litert"`,
            `"onnx"`) or a list of them (each required).

    Returns:
        (runtime names in `ARTIFACT_RUNTIMES` order, explicit).

    Raises:
        ValueError: for anything else, naming what is accepted.
    """
    if runtimes is None:
        return (), True
    if runtimes == AUTO:
        return ARTIFACT_RUNTIMES, False
    names = (runtimes,) if isinstance(runtimes, str) else runtimes
    try:
        names = tuple(names)
    except TypeError:
        names = (runtimes,)
    if not all(name in ARTIFACT_RUNTIMES for name in names):
        accepted = ", ".join(repr(name) for name in ARTIFACT_RUNTIMES)
        raise ValueError(
            f"`runtimes` must be None, {AUTO!r}, or some of {accepted} (a "
            f"name or a list). Received: runtimes={runtimes!r}"
        )
    return tuple(n for n in ARTIFACT_RUNTIMES if n in names), True


def _signature_call(fn: Any) -> tuple[Callable[..., Any], list[tf.TensorSpec]]:
    """The loaded signature as a positional function, and its specs."""
    signature = fn.structured_input_signature[1]
    names = sorted(signature)
    specs = [
        tf.TensorSpec(signature[n].shape, signature[n].dtype, name=n)
        for n in names
    ]

    def call(*args: tf.Tensor) -> dict[str, tf.Tensor]:
        return fn(**dict(zip(names, args, strict=True)))

    return call, specs


def _to_litert(version_dir: Path, key: str, loaded: Any) -> bytes:
    converter = tf.lite.TFLiteConverter.from_saved_model(
        str(version_dir), signature_keys=[key]
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    with quiet_interpreter_deprecation():
        return converter.convert()


def _to_onnx(version_dir: Path, key: str, loaded: Any) -> bytes:
    from aiservice_kit.export.onnx import _import_tf2onnx

    tf2onnx = _import_tf2onnx()
    call, specs = _signature_call(loaded.signatures[key])
    proto, _ = tf2onnx.convert.from_function(
        tf.function(call, input_signature=specs), input_signature=specs
    )
    for value in (*proto.graph.input, *proto.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = "batch"
    return proto.SerializeToString()


_CONVERTERS = {"litert": _to_litert, "onnx": _to_onnx}
_PROBLEMS = {"litert": tflite_problems, "onnx": onnx_problems}
_TARGETS = {"litert": "LiteRT (builtin ops)", "onnx": "ONNX"}


def _reference(fn: Any) -> Callable[[dict[str, np.ndarray]], dict]:
    def run(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = fn(**{k: tf.constant(v) for k, v in batch.items()})
        return {name: value.numpy() for name, value in outputs.items()}

    return run


def _write_one(
    runtime: str,
    version_dir: Path,
    loaded: Any,
    samples: dict[str, np.ndarray],
) -> dict[str, str]:
    """Converts and proves each signature; their relative paths."""
    from aiservice_kit.export.verify import _RUNNERS

    written = {}
    for key in RUNTIME_SIGNATURES:
        if key not in loaded.signatures:
            continue
        try:
            data = _CONVERTERS[runtime](version_dir, key, loaded)
        except Exception as error:  # each converter raises its own kinds
            raise ExportError(
                f"Converting signature {key!r} for {_TARGETS[runtime]} "
                f"failed: {type(error).__name__}: {str(error)[:500]}"
            ) from error
        relative = runtime_artifact(runtime, key)
        path = version_dir / relative
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        fn = loaded.signatures[key]
        runner = _RUNNERS["tflite" if runtime == "litert" else "onnx"](path)
        why = prove_runtime(_reference(fn), runner, samples)
        if why is not None:
            raise ExportMismatchError(
                f"The {runtime} conversion of signature {key!r} disagrees "
                f"with the SavedModel: {why}."
            )
        written[key] = relative
    return written


def write_runtimes(
    model: Any,
    plan: Plan,
    version_dir: Path,
    runtimes: tuple[str, ...],
    explicit: bool,
    samples: dict[str, np.ndarray],
) -> dict[str, Any]:
    """Writes the converted signatures into a version being published.

    Args:
        model: keras.Model. The exported model (for the preflights).
        plan: Plan. Its plan.
        version_dir: Path. The (temporary) version directory, with its
            SavedModel already written.
        runtimes: tuple of str. From `check_runtimes`.
        explicit: bool. Raise (True) or skip with a reason (False) when a
            runtime cannot be written faithfully.
        samples: dict of name -> array. The verification rows.

    Returns:
        The metadata entries to record (`RUNTIMES_KEY`,
        `RUNTIMES_SKIPPED_KEY`, `PROOF_INPUTS_KEY`); empty when no
        runtime was asked for.

    Raises:
        ValueError: if `explicit` and the model cannot be expressed.
        ExportError: if `explicit` and a converter failed.
        ExportMismatchError: if `explicit` and an artifact disagrees.
    """
    if not runtimes:
        return {}
    samples = {name: value[:MAX_PROOF_ROWS] for name, value in samples.items()}
    written: dict[str, dict[str, str]] = {}
    skipped: dict[str, str] = {}
    loaded = None
    for runtime in runtimes:
        problems = _PROBLEMS[runtime](model, plan)
        if problems:
            reason = " ".join(problems)
            if explicit:
                raise ValueError(
                    f"`runtimes` asks for {runtime!r}, but the model cannot "
                    f"run on {_TARGETS[runtime]} faithfully: {reason} (or "
                    f"pass runtimes={AUTO!r} to skip what does not fit)."
                )
            skipped[runtime] = reason
            continue
        if loaded is None:
            loaded = tf.saved_model.load(str(version_dir))
        try:
            written[runtime] = _write_one(runtime, version_dir, loaded, samples)
        except (ExportError, ImportError) as error:
            for relative in RUNTIME_SIGNATURES:
                path = version_dir / runtime_artifact(runtime, relative)
                path.unlink(missing_ok=True)
            if explicit:
                raise
            skipped[runtime] = str(error)
    entries: dict[str, Any] = {RUNTIMES_KEY: written}
    if skipped:
        entries[RUNTIMES_SKIPPED_KEY] = skipped
    if written:
        relative = f"{RUNTIMES_DIR}/{PROOF_INPUTS_FILE}"
        rows = {name: value[:PROOF_ROWS] for name, value in samples.items()}
        np.savez(version_dir / relative, **rows)
        entries[PROOF_INPUTS_KEY] = relative
    return entries
