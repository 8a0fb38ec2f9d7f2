"""LiteRT (TFLite): a flatbuffer with builtin ops, optionally quantized."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from aiservice_kit._layout import SERVING_SIGNATURE
from aiservice_kit._validation import check_bool
from aiservice_kit._validation import check_choice
from aiservice_kit.exceptions import ExportError
from aiservice_kit.exceptions import ExportMismatchError
from aiservice_kit.export import _signature
from aiservice_kit.export._files import check_output_path
from aiservice_kit.export._files import publish_file
from aiservice_kit.export._preflight import raise_problems
from aiservice_kit.export._preflight import tflite_problems
from aiservice_kit.export.verify import as_samples
from aiservice_kit.export.verify import quiet_interpreter_deprecation
from aiservice_kit.export.verify import verify_planned

#: Accepted TFLite quantization modes.
QUANTIZATIONS = (None, "dynamic", "float16", "int8")
#: Rows of `representative_data` used to calibrate int8 quantization.
MAX_CALIBRATION_SAMPLES = 500


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
    and named outputs as `export_saved_model`'s `predict` signature (the
    task inferred from the model the same way). It is written beside `path`,
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
    plan = _signature.plan(model, task, input_dtypes)
    path = check_output_path(path, (".tflite",))
    check_choice("quantization", quantization, QUANTIZATIONS)
    check_bool("allow_flex", allow_flex)
    check_bool("verify", verify)
    if sample_inputs is not None:
        as_samples(plan, sample_inputs)  # refused now, not after converting
    calibration = None
    if quantization == "int8":
        if representative_data is None:
            raise ValueError(
                '`quantization="int8"` needs `representative_data`: a few '
                "hundred real inputs (e.g. x_train[:500]) to calibrate the "
                "activation ranges. Received: representative_data=None"
            )
        calibration = as_samples(plan, representative_data)
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
        raise_problems(tflite_problems(model, plan), "LiteRT with builtin ops")

    with tempfile.TemporaryDirectory(prefix="aiservice_kit-tflite-") as tmp:
        _signature.write_saved_model(model, plan, tmp, serving_only=True)
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
            with quiet_interpreter_deprecation():
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
            verify_planned(
                model, tmp_file, sample_inputs, plan, format="tflite"
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

    return publish_file(path, data, check)


# --------------------------------------------------------------------------
# ONNX
