"""The `explain` signature: attributions from the exported model alone.

A SavedModel of an image or numeric-sequence model gets, beside
`serving_default`, a signature named `EXPLAIN_SIGNATURE` (`"explain"`,
`_layout`) that takes the same inputs and returns the same outputs plus
`attributions` (`ATTRIBUTIONS`): integrated gradients, float32, shaped
like the input. The math is `_integrated_gradients`, the one
implementation `aiservice_kit.explain` runs too, with its defaults:

- baseline: all zeros in the signature's input space (a black image for
  uint8 pixels, a flat zero sequence), as `explain(baseline=None)`;
- steps: `DEFAULT_STEPS` (64) trapezoid intervals, as `explain`'s default;
- target: the predicted class of a classifier (`predicted_class`), the
  first output of a regressor.

So `sum(attributions) ~= f(x)[target] - f(zeros)[target]` per example.
Raw-string text models, models with several inputs and tabular models
(one feature vector per example) get no `explain` signature; TFLite and
ONNX exports never do (their runtimes have no gradients).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

from aiservice_kit._integrated_gradients import DEFAULT_STEPS
from aiservice_kit._integrated_gradients import integrated_gradients
from aiservice_kit._layout import ATTRIBUTIONS
from aiservice_kit._layout import EXPLAIN_SIGNATURE
from aiservice_kit.export import _signature
from aiservice_kit.models._contract import PREDICTED_CLASS

#: Forward passes per explained batch: `DEFAULT_STEPS + 1` path points in
#: 5 passes of 13, each running 13 x batch rows through the model.
PASSES = 5


def supports(plan: _signature.Plan) -> bool:
    """Tells whether a planned model gets the `explain` signature.

    Args:
        plan: `_signature.Plan`. The model's serving plan.

    Returns:
        True for one numeric input with at least two axes per example (an
        image or a sequence); False for text, several inputs or tabular
        rows.

    Example:
    ```python
    from aiservice_kit import build_cnn
    from aiservice_kit.export import _signature, explain
    explain.supports(_signature.plan(build_cnn((8, 8), 3)))  # True
    ```
    """
    if len(plan.inputs) != 1:
        return False
    spec = plan.inputs[0]
    if _signature.is_string(spec.dtype) or _signature.is_string(
        spec.model_dtype
    ):
        return False
    numeric = tf.as_dtype(spec.model_dtype)
    return numeric.is_floating and len(spec.model_shape) >= 3


def explain_fn(
    model: keras.Model, plan: _signature.Plan, steps: int = DEFAULT_STEPS
) -> Callable[[tf.Tensor], dict[str, tf.Tensor]]:
    """The `explain` function: serving outputs plus `attributions`.

    Args:
        model: keras.Model. The model being exported.
        plan: `_signature.Plan`. Its plan (`supports(plan)` must hold).
        steps: int. Integration steps (trapezoid intervals).

    Returns:
        A function of the signature's one input tensor that returns the
        serving outputs and `attributions` (float32, the input's shape).

    Raises:
        ValueError: if `supports(plan)` is False.

    Example:
    ```python
    from aiservice_kit.export import _signature, explain
    fn = explain.explain_fn(model, _signature.plan(model))
    fn(images)["attributions"].shape  # images.shape
    ```
    """
    if not supports(plan):
        raise ValueError(
            "The `explain` signature needs one numeric image or sequence "
            f"input. Received a model with inputs {list(plan.inputs)}"
        )
    spec = plan.inputs[0]
    serve = _signature.serving_fn(model, plan)
    points_per_pass = -(-(steps + 1) // PASSES)

    def output(batch: tf.Tensor) -> tf.Tensor:
        values = model(tf.cast(batch, spec.model_dtype), training=False)
        values = tf.cast(values, tf.float32)
        return tf.reshape(values, [tf.shape(values)[0], -1])

    @tf.autograph.experimental.do_not_convert
    def explain(value: tf.Tensor) -> dict[str, tf.Tensor]:
        outputs = serve(value)
        x = tf.cast(value, tf.float32)
        if spec.shape != spec.model_shape:
            x = tf.reshape(x, [-1, *spec.model_shape[1:]])
        if plan.task == "classification":
            targets = outputs[PREDICTED_CLASS]
        else:
            targets = tf.zeros([tf.shape(x)[0]], tf.int32)
        attributions = integrated_gradients(
            output,
            x,
            tf.zeros(tf.shape(x)[1:], tf.float32),
            targets,
            steps=steps,
            points_per_pass=points_per_pass,
        )
        return {
            **outputs,
            ATTRIBUTIONS: tf.reshape(attributions, tf.shape(value)),
        }

    return explain


def metadata(plan: _signature.Plan, steps: int = DEFAULT_STEPS) -> dict:
    """The metadata entry that describes the `explain` signature.

    Args:
        plan: `_signature.Plan`. The exported model's plan.
        steps: int. Integration steps.

    Returns:
        dict: the signature's name, method, baseline, steps, target and
        its extra output.

    Example:
    ```python
    from aiservice_kit.export import _signature, explain
    explain.metadata(_signature.plan(model))["steps"]  # 64
    ```
    """
    spec = plan.inputs[0]
    return {
        "signature": EXPLAIN_SIGNATURE,
        "method": "integrated_gradients",
        "baseline": 0.0,
        "steps": steps,
        "target": (
            PREDICTED_CLASS if plan.task == "classification" else "output 0"
        ),
        "outputs": {
            ATTRIBUTIONS: {"dtype": "float32", "shape": list(spec.shape)}
        },
    }


def add_endpoint(
    archive: Any, model: keras.Model, plan: _signature.Plan
) -> None:
    """Adds the `explain` signature to a `keras.export.ExportArchive`.

    Args:
        archive: keras.export.ExportArchive. The archive being written
            (the model already tracked).
        model: keras.Model. The model.
        plan: `_signature.Plan`. Its plan (`supports(plan)` must hold).

    Example:
    ```python
    archive = keras.export.ExportArchive()
    archive.track(model)
    explain.add_endpoint(archive, model, plan)
    ```
    """
    archive.add_endpoint(
        EXPLAIN_SIGNATURE,
        explain_fn(model, plan),
        input_signature=_signature.signature_specs(plan),
    )
