"""ONNX: the serving function converted with tf2onnx (the `onnx` extra)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from aiservice_kit._validation import check_bool
from aiservice_kit._validation import check_optional_positive_int
from aiservice_kit.exceptions import ExportError
from aiservice_kit.export import _signature
from aiservice_kit.export._files import check_output_path
from aiservice_kit.export._files import publish_file
from aiservice_kit.export._preflight import onnx_problems
from aiservice_kit.export._preflight import raise_problems
from aiservice_kit.export.verify import ONNX_INSTALL
from aiservice_kit.export.verify import as_samples
from aiservice_kit.export.verify import verify_planned


def _import_tf2onnx() -> Any:
    try:
        import onnx  # noqa: F401
        import tf2onnx
    except ImportError as error:
        raise ImportError(
            "ONNX export on Keras' TensorFlow backend converts the graph with "
            f"tf2onnx, which is not installed: {ONNX_INSTALL}."
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
    outputs as `export_saved_model`'s `predict` signature; the batch axis
    is named `batch`.

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
    plan = _signature.plan(model, task, input_dtypes)
    path = check_output_path(path, (".onnx",))
    check_optional_positive_int("opset", opset, minimum=7)
    check_bool("verify", verify)
    if sample_inputs is not None:
        as_samples(plan, sample_inputs)  # refused now, not after converting
    raise_problems(onnx_problems(model, plan), "ONNX")
    tf2onnx = _import_tf2onnx()
    specs = _signature.signature_specs(plan)
    function = tf.function(
        _signature.serving_fn(model, plan), input_signature=specs
    )
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
            verify_planned(model, tmp_file, sample_inputs, plan, format="onnx")

    return publish_file(path, model_proto.SerializeToString(), check)
