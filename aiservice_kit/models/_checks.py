"""Checks of `fit`/`evaluate`/`predict` data that name the fix.

Keras reports data that does not fit a model from deep inside the graph
("Matrix size-incompatible", "Invalid dtype: str32", "Unrecognized data
type"). `CheckedModel`, the class `build_cnn` and `build_lstm` return,
checks numpy inputs and labels first and says what was received and what
to do; everything it does not recognize goes to Keras unchanged.
"""

from typing import Any

import keras
import numpy as np

from aiservice_kit.models._contract import PROBABILITIES
from aiservice_kit.models._contract import get_class_names
from aiservice_kit.pipelines import arrays_as_fit_dataset

_SPARSE = "sparse_categorical_crossentropy"
_ONE_HOT = "categorical_crossentropy"


def _shape_text(shape: Any) -> str:
    dims = ["batch"] + ["any" if d is None else str(d) for d in shape[1:]]
    return f"({', '.join(dims)})"


def _fits(shape: tuple[int, ...], expected: tuple[Any, ...]) -> bool:
    return len(shape) == len(expected) and all(
        want is None or have == want
        for have, want in zip(shape, expected, strict=True)
    )


def check_inputs(model: keras.Model, x: Any) -> Any:
    """Checks a numpy `x` against a one-input model's input shape.

    Args:
        model: keras.Model. The model about to be called.
        x: the data given to `fit`, `evaluate` or `predict`.

    Returns:
        `x`, unchanged.

    Raises:
        ValueError: for one sample where a batch is expected, or a shape
            that is not the model's (naming both and the fix).
    """
    if len(model.inputs) != 1 or not isinstance(x, np.ndarray):
        return x
    expected = tuple(model.inputs[0].shape)
    if x.dtype.kind in "USO" or len(expected) < 2:
        return x
    if _fits(x.shape, expected[1:]):
        raise ValueError(
            f"`x` is one sample of shape {x.shape}, but model "
            f"'{model.name}' takes a batch of shape "
            f"{_shape_text(expected)}. Wrap it in a batch of one: x[None] "
            "(or np.expand_dims(x, 0)); the result is a batch of one too. "
            f"Received: x of shape {x.shape}"
        )
    if not _fits(x.shape, expected):
        hint = ""
        if (
            len(x.shape) == len(expected)
            and expected[-1] is not None
            and x.shape[-1] != expected[-1]
        ):
            hint = (
                f" Its last axis holds {x.shape[-1]} features (or "
                f"channels), the model was built for {expected[-1]}."
            )
        raise ValueError(
            f"`x` must have shape {_shape_text(expected)} for model "
            f"'{model.name}'.{hint} Build the model for this data "
            f"(input_shape=x.shape[1:], here {tuple(x.shape[1:])}) or "
            f"reshape the data. Received: x of shape {x.shape}"
        )
    return x


def _loss_name(model: keras.Model) -> str | None:
    loss = getattr(model, "loss", None)
    name = loss if isinstance(loss, str) else getattr(loss, "name", None)
    return name if name in (_SPARSE, _ONE_HOT) else None


def _is_string_list(y: Any) -> bool:
    return (
        isinstance(y, (list, tuple))
        and bool(y)
        and all(isinstance(item, str) for item in y)
    )


def check_labels(model: keras.Model, y: Any) -> Any:
    """Checks (and encodes string) labels against a classifier.

    String labels become class indices when the model stores class names
    (`class_names=` at build time). One-hot labels for a model compiled
    for integers, integers for one compiled for one-hot labels, and class
    indices out of range are refused with the fix.

    Args:
        model: keras.Model. The model about to be trained or evaluated.
        y: the labels given to `fit` or `evaluate`.

    Returns:
        The labels, string labels encoded as int64 class indices.

    Raises:
        TypeError: for string labels on a model without class names.
        ValueError: for labels in another format than the model's loss
            expects.
    """
    if y is None or len(model.outputs) != 1:
        return y
    if not (
        _is_string_list(y)
        or (isinstance(y, np.ndarray) and y.dtype.kind in "USOiuf")
    ):
        return y
    array = np.asarray(y) if not isinstance(y, np.ndarray) else y
    if array.dtype.kind in "USO":
        if array.dtype.kind == "O" and not all(
            isinstance(item, str) for item in array.ravel()[:100]
        ):
            return y
        if get_class_names(model) is None:
            sample = [str(item) for item in array.ravel()[:3]]
            raise TypeError(
                f"`y` holds string labels (such as {sample}) but model "
                f"'{model.name}' stores no class names. Build it with "
                "class_names=[...] (every label, in order, e.g. "
                "list(np.unique(y))), or pass integer labels: "
                "names, y = np.unique(y, return_inverse=True). "
                f"Received: y of dtype {array.dtype}"
            )
        from aiservice_kit.models.text import encode_labels

        return encode_labels(model, array.ravel())
    if list(getattr(model, "output_names", None) or []) != [PROBABILITIES]:
        return y
    num_classes = model.outputs[0].shape[-1]
    loss = _loss_name(model)
    if loss == _SPARSE:
        if array.ndim == 2 and array.shape[1] == num_classes > 1:
            raise ValueError(
                f"`y` looks one-hot (shape {array.shape}), but model "
                f"'{model.name}' was compiled for integer class indices "
                "(label_mode='int'). Pass y.argmax(axis=-1), or build the "
                "model with label_mode='categorical'. "
                f"Received: y of shape {array.shape}"
            )
        if array.size and array.dtype.kind in "iu":
            low, high = array.min(), array.max()
            if low < 0 or high >= num_classes:
                raise ValueError(
                    f"`y` must hold class indices in [0, {num_classes}) "
                    f"for model '{model.name}' ({num_classes} classes). "
                    "Build it with num_classes=y.max() + 1, or map the "
                    "labels: names, y = np.unique(y, return_inverse=True). "
                    f"Received: y with values from {low} to {high}"
                )
    elif loss == _ONE_HOT:
        if array.ndim == 1 or (array.ndim == 2 and array.shape[1] == 1):
            raise ValueError(
                f"`y` holds class indices (shape {array.shape}), but model "
                f"'{model.name}' was compiled for one-hot labels "
                "(label_mode='categorical'). Pass "
                f"keras.utils.to_categorical(y, {num_classes}), or build "
                "the model with label_mode='int'. "
                f"Received: y of shape {array.shape}"
            )
    return y


def check_validation(model: keras.Model, kwargs: dict[str, Any]) -> dict:
    """Runs the same checks on `fit`'s `validation_data=(x, y, ...)`."""
    data = kwargs.get("validation_data")
    if isinstance(data, tuple) and len(data) >= 2:
        kwargs = dict(kwargs)
        kwargs["validation_data"] = (
            check_inputs(model, data[0]),
            check_labels(model, data[1]),
            *data[2:],
        )
    return kwargs


@keras.saving.register_keras_serializable(package="aiservice_kit")
class CheckedModel(keras.Model):
    """The Functional model `build_cnn` and `build_lstm` return.

    A plain Functional Keras model (same graph, saving and export) whose
    `fit`, `evaluate` and `predict` first check numpy data: one sample
    where a batch is expected, a shape the model was not built for, labels
    in another format than its loss expects. The errors name the argument,
    what was received and the fix. String labels are encoded when the
    model stores class names (`class_names=` at build time). Anything else
    (datasets, dicts, tensors) goes to Keras unchanged.

    Example:
    ```python
    from aiservice_kit import build_lstm
    model = build_lstm((100, 3), class_names=["walk", "run"])
    model.fit(x, ["run", "walk", ...], epochs=5)
    ```
    """

    def fit(self, x: Any = None, y: Any = None, *args: Any, **kwargs: Any):
        """Keras `fit`, after checking numpy `x`, `y` and validation data.

        Numeric numpy arrays are fed through Keras' array pipeline without
        its autotuner (`pipelines.arrays_as_fit_dataset`): the same
        batches and weights, without the idle epoch starts.
        """
        x = check_inputs(self, x)
        y = check_labels(self, y)
        kwargs = check_validation(self, kwargs)
        fast = None if args else arrays_as_fit_dataset(x, y, kwargs)
        if fast is not None:
            dataset, kwargs = fast
            return super().fit(dataset, **kwargs)
        return super().fit(x, y, *args, **kwargs)

    def evaluate(self, x: Any = None, y: Any = None, *args: Any, **kwargs: Any):
        """Keras `evaluate`, after checking numpy `x` and `y`."""
        x = check_inputs(self, x)
        y = check_labels(self, y)
        return super().evaluate(x, y, *args, **kwargs)

    def predict(self, x: Any, *args: Any, **kwargs: Any):
        """Keras `predict`, after checking a numpy `x`'s shape."""
        return super().predict(check_inputs(self, x), *args, **kwargs)
