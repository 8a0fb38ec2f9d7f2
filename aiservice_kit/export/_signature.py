"""The serving signature of a Keras model, planned once per export.

`plan` reads a model once and decides what every format serves: the
inputs (name, dtype and shape of each, raw pixels and strings included),
the task (told by the output layer's name, `models._contract`), and the
outputs. Every exporter plans once and hands the `Plan` on to its
preflight and to `verify`; `serving_fn` turns a plan into the function
each format exports: the model called with `training=False`, raw inputs
cast inside, and named outputs.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

from aiservice_kit._layout import SERVING_SIGNATURE
from aiservice_kit._validation import check_choice
from aiservice_kit.exceptions import ExportError
from aiservice_kit.models._contract import PREDICTED_CLASS
from aiservice_kit.models._contract import PREDICTIONS
from aiservice_kit.models._contract import PROBABILITIES
from aiservice_kit.models._contract import get_class_names

#: Input names Keras invents for unnamed inputs; replaced by stable ones.
_UNSTABLE_INPUT_PREFIXES = ("keras_tensor", "input_layer")
#: The task each contract output name tells.
_TASK_OF_OUTPUT = {PROBABILITIES: "classification", PREDICTIONS: "regression"}


@dataclasses.dataclass(frozen=True)
class Input:
    """One model input: its signature name/dtype/shape and the model's."""

    name: str
    key: Any  # how the model's call structure refers to it (index or key)
    dtype: str  # signature dtype: "uint8", "float32", "string", "int64"...
    shape: tuple[int | None, ...]  # signature shape, batch axis included
    model_dtype: str
    model_shape: tuple[int | None, ...]


@dataclasses.dataclass(frozen=True)
class Plan:
    """What the serving function takes and returns."""

    task: str
    inputs: tuple[Input, ...]
    input_structure: str  # "single", "list" or "dict"
    output_name: str
    num_outputs: int | None


def check_model(model: Any) -> keras.Model:
    """Returns `model` if it is a Keras model with symbolic inputs."""
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


def is_string(dtype: Any) -> bool:
    """Tells whether a dtype (in any of its spellings) is a string dtype."""
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


def _task(output_name: str, task: str | None, require_task: bool) -> str:
    if task is not None:
        return task
    found = _TASK_OF_OUTPUT.get(output_name)
    if found is not None:
        return found
    if not require_task:
        # A preflight needs the inputs only; any task serves it.
        return "classification"
    raise ValueError(
        f"Cannot tell the model's task from its output layer "
        f"{output_name!r}. Name the output layer {PROBABILITIES!r} "
        f"(classifier, softmax) or {PREDICTIONS!r} (regressor), as the "
        "aiservice_kit builders do, or pass task='classification' or "
        "task='regression'. Received: task=None"
    )


def plan(
    model: keras.Model,
    task: str | None = None,
    input_dtypes: Mapping[str, str] | None = None,
    *,
    require_task: bool = True,
) -> Plan:
    """Decides the signature of the serving function for `model`.

    Args:
        model: keras.Model. A Functional or Sequential model, one output.
        task: str or None. `"classification"` or `"regression"`; None
            tells it from the output layer's name.
        input_dtypes: dict or None. Signature dtype per input name.
        require_task: bool. With False, a model whose output name tells
            no task is planned as a classifier instead of refused (the
            preflights look at its inputs only).

    Returns:
        The `Plan`.

    Raises:
        TypeError: if `model` is not a Keras model.
        ValueError: if the task cannot be told or `input_dtypes` names
            unknown inputs.
        ExportError: if the model has several outputs or input names
            that are not unique.
    """
    model = check_model(model)
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
        if is_string(model_dtype):
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
        inputs.append(Input(name, key, dtype, shape, model_dtype, model_shape))
    out_names = _output_layer_names(model)
    if len(model.outputs) != 1:
        raise ExportError(
            f"The model has {len(model.outputs)} outputs ({out_names}); "
            "export serves models with one output (a classifier's "
            f"{PROBABILITIES!r} or a regressor's {PREDICTIONS!r})."
        )
    output_name = out_names[0]
    task = _task(output_name, task, require_task)
    out_shape = tuple(model.outputs[0].shape)
    num_outputs = out_shape[-1] if len(out_shape) > 1 else None
    return Plan(task, tuple(inputs), structure, output_name, num_outputs)


def signature_specs(plan: Plan) -> list[tf.TensorSpec]:
    """The serving function's input signature."""
    return [
        tf.TensorSpec(spec.shape, tf.as_dtype(spec.dtype), name=spec.name)
        for spec in plan.inputs
    ]


def serving_fn(model: keras.Model, plan: Plan) -> Callable[..., dict]:
    """The function every format exports: raw inputs in, named outputs out."""

    @tf.autograph.experimental.do_not_convert
    def serve(*args: tf.Tensor) -> dict[str, tf.Tensor]:
        values = []
        for spec, value in zip(plan.inputs, args, strict=True):
            if spec.dtype != spec.model_dtype and not is_string(spec.dtype):
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


def io_metadata(plan: Plan) -> tuple[dict, dict]:
    """The `inputs` and `outputs` entries of the metadata file."""
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


def class_names_of(
    model: keras.Model, plan: Plan, class_names: Sequence[str] | None
) -> list[str] | None:
    """The class names to record: given, stored in the model, or None."""
    if plan.task != "classification":
        if class_names is not None:
            raise ValueError(
                "`class_names` applies to classifiers only; this model is a "
                f"{plan.task} model. Received: class_names={class_names!r}"
            )
        return None
    if class_names is None:
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


def write_saved_model(
    model: keras.Model,
    plan: Plan,
    directory: str | os.PathLike,
    *,
    explain: bool = False,
) -> None:
    """Writes the serving function as a SavedModel (no version, no check).

    With `explain` (and a model `explain.supports`), the `explain`
    signature is written beside `serving_default` (`export/explain.py`).
    """
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        SERVING_SIGNATURE,
        serving_fn(model, plan),
        input_signature=signature_specs(plan),
    )
    if explain:
        # explain.py builds on this module: imported here, not on top.
        from aiservice_kit.export import explain as explain_signature

        if explain_signature.supports(plan):
            explain_signature.add_endpoint(archive, model, plan)
    archive.write_out(str(directory), verbose=False)
