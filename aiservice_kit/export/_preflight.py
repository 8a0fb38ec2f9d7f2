"""Preflights: refuse what a format cannot express, before writing anything.

Each check works on a `Plan` (`_signature.plan`): the exporters pass the
plan they already made, so a model is planned once per export; the public
`preflight_tflite` and `preflight_onnx` plan it themselves.
"""

from __future__ import annotations

from collections.abc import Iterator

import keras

from aiservice_kit.exceptions import ExportError
from aiservice_kit.export import _signature
from aiservice_kit.export._signature import Plan
from aiservice_kit.export._signature import iter_layers

_TEXT_FIX = (
    "Export the integer-input model instead: "
    "`vectorizer, int_model = aiservice_kit.models.split_text_model("
    "model)` gives the vectorizer and a model on token ids that shares the "
    "weights; ship `vectorizer.get_vocabulary()` beside the artifact and "
    "tokenize in the client. The SavedModel export keeps raw strings."
)
_TFLITE_STRINGS = (
    "needs TensorFlow string ops that LiteRT's builtin ops lack (the "
    "file would need the Flex delegate)"
)
_ONNX_STRINGS = (
    "needs TensorFlow string ops, which ONNX cannot express (the "
    "converter would write a graph onnxruntime rejects as INVALID_GRAPH)"
)


def _string_problems(model: keras.Model, plan: Plan, why: str) -> list[str]:
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


def tflite_problems(model: keras.Model, plan: Plan) -> list[str]:
    """`preflight_tflite` for a model already planned."""
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
    return problems + _string_problems(model, plan, _TFLITE_STRINGS)


def onnx_problems(model: keras.Model, plan: Plan) -> list[str]:
    """`preflight_onnx` for a model already planned."""
    return _string_problems(model, plan, _ONNX_STRINGS)


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

    Raises:
        TypeError: if `model` is not a Keras model.

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
    plan = _signature.plan(model)
    return tflite_problems(model, plan)


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

    Raises:
        TypeError: if `model` is not a Keras model.

    Example:
    ```python
    import keras
    from aiservice_kit.export import preflight_onnx
    inputs = keras.Input((4,), name="features")
    outputs = keras.layers.Dense(1, name="predictions")(inputs)
    assert preflight_onnx(keras.Model(inputs, outputs)) == []
    ```
    """
    plan = _signature.plan(model)
    return onnx_problems(model, plan)


def raise_problems(problems: list[str], target: str) -> None:
    """Raises `ExportError` listing `problems`, if any."""
    if problems:
        raise ExportError(
            f"The model cannot be exported to {target} faithfully:\n- "
            + "\n- ".join(problems)
        )
