"""The serving signatures of a Keras model, planned once per export.

`plan` reads a model once and decides what every format serves: the
inputs (name, dtype and shape of each, raw pixels and strings included),
the task and the outputs. Every exporter plans once and hands the `Plan`
on to its preflight and to `verify`; `serving_fn` turns a plan into the
function each format exports: the model called with `training=False`, raw
inputs cast inside, and named outputs.

The task, unless `task=` states it:

1. a model with several outputs is a `tensor` model;
2. an output layer named `probabilities` is a classifier's and one named
   `predictions` a regressor's (the builders' contract,
   `models._contract`);
3. a float [batch, n] output made by a softmax or sigmoid is a
   classifier's (one sigmoid column: a binary classifier);
4. a float output of one value per example ([batch] or [batch, 1]) is a
   regressor's;
5. anything else is a `tensor` model, served under its own output names.

A SavedModel carries `serving_default`, `predict` (every named output)
and, for a classifier, `classification` (TF Serving's Classify: serialized
`tf.Example`s in, `classes` + `scores` out) or, for a regressor of one
value per example, `regression` (TF Serving's Regress: `outputs`).
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

from aiservice_kit._layout import CLASSES_OUTPUT
from aiservice_kit._layout import CLASSIFY_SIGNATURE
from aiservice_kit._layout import EXAMPLES_INPUT
from aiservice_kit._layout import PREDICT_SIGNATURE
from aiservice_kit._layout import REGRESS_OUTPUT
from aiservice_kit._layout import REGRESS_SIGNATURE
from aiservice_kit._layout import SCORES_OUTPUT
from aiservice_kit._layout import SERVING_SIGNATURE
from aiservice_kit._validation import check_choice
from aiservice_kit.exceptions import ExportError
from aiservice_kit.models._contract import PREDICTED_CLASS
from aiservice_kit.models._contract import PREDICTIONS
from aiservice_kit.models._contract import PROBABILITIES
from aiservice_kit.models._contract import get_class_names
from aiservice_kit.models._heads import check_class_names

#: Input names Keras invents for unnamed inputs; replaced by stable ones.
_UNSTABLE_INPUT_PREFIXES = ("keras_tensor", "input_layer")
#: The task each contract output name tells.
_TASK_OF_OUTPUT = {PROBABILITIES: "classification", PREDICTIONS: "regression"}
#: Tasks `task=` may state (a recommender is exported by `recommender.py`).
_MODEL_TASKS = ("classification", "regression", "tensor")
#: Output activations that make probabilities.
_PROBABILITY_ACTIVATIONS = ("softmax", "sigmoid")

#: What `serving_default` returns: "all" (the `predict` signature's named
#: outputs: `probabilities` + `predicted_class`, `predictions`, or a tensor
#: model's own names) or "primary" (one output: `probabilities` or
#: `predictions`; a tensor model keeps its own: Keras' `model.export` and
#: TF Serving's tutorials' convention; older "all" exports still serve).
SERVING_DEFAULT_OUTPUTS = "primary"


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
class Output:
    """One model output, by its own name."""

    name: str
    key: Any  # how the model's call result refers to it (index or key)
    dtype: str
    shape: tuple[int | None, ...]  # batch axis included
    activation: str | None  # the output layer's activation, when known


@dataclasses.dataclass(frozen=True)
class Plan:
    """What the serving functions take and return."""

    task: str
    inputs: tuple[Input, ...]
    input_structure: str  # "single", "list" or "dict"
    output_name: str  # the first output's own name
    num_outputs: int | None  # last axis of the first output (rank > 1)
    outputs: tuple[Output, ...] = ()
    output_structure: str = "single"  # "single", "list" or "dict"

    @property
    def one_per_example(self) -> bool:
        """Whether the first output is one value per example."""
        shape = self.outputs[0].shape if self.outputs else ()
        return len(shape) == 1 or (len(shape) == 2 and shape[-1] == 1)

    @property
    def binary(self) -> bool:
        """A classifier with one score per example (a sigmoid column)."""
        return self.task == "classification" and self.one_per_example

    @property
    def num_classes(self) -> int | None:
        """Classes of a classifier (2 for a binary one), else None."""
        if self.task != "classification":
            return None
        return 2 if self.binary else self.num_outputs


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


def _activation_of(tensor: Any) -> str | None:
    """The activation that made `tensor`, through nested models."""
    for _ in range(32):  # nesting depth; a cycle is impossible but bounded
        history = getattr(tensor, "_keras_history", None)
        if history is None:
            return None
        layer = history.operation
        if isinstance(layer, keras.Model) and getattr(layer, "outputs", None):
            tensor = layer.outputs[history.tensor_index]
            continue
        if isinstance(layer, keras.layers.Softmax):
            return "softmax"
        function = getattr(layer, "activation", None)
        name = getattr(function, "__name__", None)
        return name if isinstance(name, str) else None
    return None


def _outputs(model: keras.Model) -> tuple[tuple[Output, ...], str]:
    try:
        structure_of_outputs = model.output
    except AttributeError:  # a Sequential model that was never called
        structure_of_outputs = model.outputs
    if isinstance(structure_of_outputs, dict):
        keys: list[Any] = list(structure_of_outputs)
        tensors = [structure_of_outputs[key] for key in keys]
        names = [str(key) for key in keys]
        structure = "dict"
    else:
        tensors = list(model.outputs)
        keys = list(range(len(tensors)))
        names = _output_layer_names(model)
        structure = "single" if len(tensors) == 1 else "list"
    if len(set(names)) != len(names):
        raise ExportError(
            f"The model's output names {names} are not unique. Name each "
            "output layer: keras.layers.Dense(..., name='...')."
        )
    outputs = tuple(
        Output(
            name,
            key,
            str(tensor.dtype),
            tuple(tensor.shape),
            _activation_of(tensor),
        )
        for name, key, tensor in zip(names, keys, tensors, strict=True)
    )
    return outputs, structure


def is_float(dtype: str) -> bool:
    return dtype.startswith(("float", "bfloat"))


def infer_task(outputs: Sequence[Output]) -> str:
    """The task of a model with these outputs (the module's rule)."""
    if len(outputs) != 1:
        return "tensor"
    output = outputs[0]
    if output.name in _TASK_OF_OUTPUT:
        return _TASK_OF_OUTPUT[output.name]
    if not is_float(output.dtype):
        return "tensor"
    rank = len(output.shape)
    if (
        rank == 2
        and output.shape[-1] is not None
        and output.activation in _PROBABILITY_ACTIVATIONS
    ):
        return "classification"
    if rank == 1 or (rank == 2 and output.shape[-1] == 1):
        return "regression"
    return "tensor"


#: The signature dtypes `input_dtypes` may give a numeric input: the model
#: casts each to its own input dtype.
SIGNATURE_DTYPES = (
    "bool",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "int8",
    "int16",
    "int32",
    "int64",
    "float16",
    "bfloat16",
    "float32",
    "float64",
)


def _signature_dtype(name: str, input_dtypes: Mapping[str, Any]) -> str:
    """`input_dtypes[name]` as a dtype name, if one of SIGNATURE_DTYPES."""
    value = input_dtypes[name]
    try:
        dtype = tf.as_dtype(value).name
    except TypeError:
        dtype = None
    if dtype not in SIGNATURE_DTYPES:
        raise ValueError(
            f"`input_dtypes[{name!r}]` must be a numeric dtype, one of "
            f"{', '.join(SIGNATURE_DTYPES)}. Received: "
            f"input_dtypes={dict(input_dtypes)!r}"
        )
    return dtype


def plan(
    model: keras.Model,
    task: str | None = None,
    input_dtypes: Mapping[str, str] | None = None,
) -> Plan:
    """Decides the signatures of the serving functions for `model`.

    Args:
        model: keras.Model. A Functional or Sequential model.
        task: str or None. `"classification"`, `"regression"` or
            `"tensor"`; None infers it (see the module's rule).
        input_dtypes: dict or None. Signature dtype per input name.

    Returns:
        The `Plan`.

    Raises:
        TypeError: if `model` is not a Keras model.
        ValueError: if `input_dtypes` names unknown inputs or gives a
            dtype outside `SIGNATURE_DTYPES`, or `task` is a classifier's
            or regressor's for a model with several outputs.
        ExportError: if input or output names are not unique.
    """
    model = check_model(model)
    check_choice("task", task, (None, *_MODEL_TASKS))
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
            dtype = _signature_dtype(name, input_dtypes)
        elif name == "image" and rescales and model_dtype.startswith("float"):
            dtype = "uint8"  # raw pixels; the model rescales inside
        else:
            dtype = model_dtype
        inputs.append(Input(name, key, dtype, shape, model_dtype, model_shape))
    outputs, output_structure = _outputs(model)
    if task in ("classification", "regression") and len(outputs) != 1:
        raise ValueError(
            f"`task={task!r}` needs a model with one output; this model has "
            f"{len(outputs)} ({[output.name for output in outputs]}). Pass "
            "task=None (or 'tensor') to serve each output under its own "
            f"name. Received: task={task!r}"
        )
    task = infer_task(outputs) if task is None else task
    first = outputs[0]
    num_outputs = first.shape[-1] if len(first.shape) > 1 else None
    return Plan(
        task,
        tuple(inputs),
        structure,
        first.name,
        num_outputs,
        outputs,
        output_structure,
    )


def signature_specs(plan: Plan) -> list[tf.TensorSpec]:
    """The serving function's input signature."""
    return [
        tf.TensorSpec(spec.shape, tf.as_dtype(spec.dtype), name=spec.name)
        for spec in plan.inputs
    ]


def call(
    model: keras.Model, plan: Plan, args: Sequence[tf.Tensor]
) -> dict[str, tf.Tensor]:
    """Calls the model on signature inputs; its outputs by their own names."""
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
    result = model(call_inputs, training=False)
    if plan.output_structure == "single":
        result = {plan.outputs[0].key: result}
    named = {}
    for output in plan.outputs:
        value = result[output.key]
        if is_float(output.dtype):  # mixed precision serves float32
            value = tf.cast(value, tf.float32)
        named[output.name] = value
    return named


def _predicted_class(probabilities: tf.Tensor, plan: Plan) -> tf.Tensor:
    if plan.binary:
        column = tf.reshape(probabilities, [-1])
        return tf.cast(column >= 0.5, tf.int64)
    return tf.argmax(probabilities, axis=-1, output_type=tf.int64)


def _all_outputs(
    model_outputs: dict[str, tf.Tensor], plan: Plan
) -> dict[str, tf.Tensor]:
    """The `predict` signature's outputs."""
    if plan.task == "tensor":
        return dict(model_outputs)
    value = model_outputs[plan.output_name]
    if plan.task == "classification":
        return {
            PROBABILITIES: value,
            PREDICTED_CLASS: _predicted_class(value, plan),
        }
    return {PREDICTIONS: value}


def _primary_outputs(
    model_outputs: dict[str, tf.Tensor], plan: Plan
) -> dict[str, tf.Tensor]:
    """One output: `probabilities` or `predictions`; a tensor model's own."""
    outputs = _all_outputs(model_outputs, plan)
    if plan.task == "classification":
        return {PROBABILITIES: outputs[PROBABILITIES]}
    return outputs


_OUTPUT_KINDS: dict[str, Callable[..., dict[str, tf.Tensor]]] = {
    "all": _all_outputs,
    "primary": _primary_outputs,
}


def serving_fn(
    model: keras.Model, plan: Plan, outputs: str = "all"
) -> Callable[..., dict]:
    """A function every format exports: raw inputs in, named outputs out.

    Args:
        model: keras.Model. The planned model.
        plan: Plan. Its plan.
        outputs: str. `"all"` (the `predict` signature's outputs) or
            `"primary"` (one output for classifiers and regressors).

    Returns:
        A function of the signature inputs, in `plan.inputs` order.
    """
    select = _OUTPUT_KINDS[check_choice("outputs", outputs, _OUTPUT_KINDS)]

    @tf.autograph.experimental.do_not_convert
    def serve(*args: tf.Tensor) -> dict[str, tf.Tensor]:
        return select(call(model, plan, args), plan)

    return serve


# ----------------------------------------------------------------- metadata


def _spec(dtype: str, shape: Sequence[int | None]) -> dict[str, Any]:
    return {"dtype": dtype, "shape": list(shape)}


def _named_outputs(plan: Plan, kind: str) -> dict[str, dict[str, Any]]:
    if plan.task == "tensor":
        return {
            output.name: _spec(
                "float32" if is_float(output.dtype) else output.dtype,
                output.shape,
            )
            for output in plan.outputs
        }
    first = plan.outputs[0]
    if plan.task == "classification":
        outputs = {PROBABILITIES: _spec("float32", first.shape)}
        if kind == "all":
            shape = [None] if plan.binary else first.shape[:-1]
            outputs[PREDICTED_CLASS] = _spec("int64", shape)
        return outputs
    return {PREDICTIONS: _spec("float32", first.shape)}


def signatures_metadata(plan: Plan) -> dict[str, dict[str, Any]]:
    """The `signatures` entry of the metadata file."""
    inputs = {spec.name: _spec(spec.dtype, spec.shape) for spec in plan.inputs}
    signatures = {
        SERVING_SIGNATURE: {
            "api": "predict",
            "inputs": inputs,
            "outputs": _named_outputs(plan, SERVING_DEFAULT_OUTPUTS),
        },
        PREDICT_SIGNATURE: {
            "api": "predict",
            "inputs": inputs,
            "outputs": _named_outputs(plan, "all"),
        },
    }
    examples = {EXAMPLES_INPUT: _spec("string", [None])}
    from aiservice_kit.export import _examples

    which = _examples.example_signature(plan)
    if which == CLASSIFY_SIGNATURE:
        signatures[CLASSIFY_SIGNATURE] = {
            "api": "classify",
            "inputs": examples,
            "outputs": {
                CLASSES_OUTPUT: _spec("string", [None, plan.num_classes]),
                SCORES_OUTPUT: _spec("float32", [None, plan.num_classes]),
            },
            "features": _examples.example_features(plan),
        }
    elif which == REGRESS_SIGNATURE:
        signatures[REGRESS_SIGNATURE] = {
            "api": "regress",
            "inputs": examples,
            "outputs": {REGRESS_OUTPUT: _spec("float32", [None])},
            "features": _examples.example_features(plan),
        }
    return signatures


def io_metadata(plan: Plan) -> tuple[dict, dict]:
    """The `inputs` and `outputs` entries (`serving_default`'s)."""
    default = signatures_metadata(plan)[SERVING_SIGNATURE]
    return default["inputs"], default["outputs"]


def model_outputs_metadata(plan: Plan) -> dict[str, dict[str, Any]]:
    """The model's own outputs by their own names (the `model_outputs`)."""
    return {
        output.name: dict(
            _spec(output.dtype, output.shape), activation=output.activation
        )
        for output in plan.outputs
    }


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
    if plan.num_classes is not None and len(class_names) != plan.num_classes:
        raise ValueError(
            f"`class_names` must have one name per class "
            f"({plan.num_classes}"
            + (", a binary classifier" if plan.binary else "")
            + f"). Received: class_names={class_names!r}"
        )
    # The builders' rule (one home): at least 2 distinct names, as str.
    return check_class_names(None, class_names)[1]


def write_saved_model(
    model: keras.Model,
    plan: Plan,
    directory: str | os.PathLike,
    class_names: Sequence[str] | None = None,
    *,
    serving_only: bool = False,
    explain: bool = False,
) -> None:
    """Writes the serving functions as a SavedModel (no version, no check).

    Args:
        model: keras.Model. The planned model.
        plan: Plan. Its plan.
        directory: str or PathLike. Where to write.
        class_names: list of str or None. The classify signature's labels.
        serving_only: bool. Write `serving_default` alone, with every
            named output (the LiteRT converter's input).
        explain: bool. Also write the `explain` signature when the model
            supports it (`export/explain.py`).
    """
    # _examples builds on this module: imported here, not on top.
    from aiservice_kit.export import _examples

    archive = keras.export.ExportArchive()
    archive.track(model)
    specs = signature_specs(plan)
    archive.add_endpoint(
        SERVING_SIGNATURE,
        serving_fn(
            model, plan, "all" if serving_only else SERVING_DEFAULT_OUTPUTS
        ),
        input_signature=specs,
    )
    if not serving_only:
        archive.add_endpoint(
            PREDICT_SIGNATURE, serving_fn(model, plan), input_signature=specs
        )
        examples = [tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)]
        which = _examples.example_signature(plan)
        if which == CLASSIFY_SIGNATURE:
            archive.add_endpoint(
                CLASSIFY_SIGNATURE,
                _examples.classify_fn(model, plan, class_names),
                input_signature=examples,
            )
        elif which == REGRESS_SIGNATURE:
            archive.add_endpoint(
                REGRESS_SIGNATURE,
                _examples.regress_fn(model, plan),
                input_signature=examples,
            )
    if explain:
        # explain.py builds on this module: imported here, not on top.
        from aiservice_kit.export import explain as explain_signature

        if explain_signature.supports(plan):
            explain_signature.add_endpoint(archive, model, plan)
    archive.write_out(str(directory), verbose=False)
