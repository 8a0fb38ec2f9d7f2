"""Checks of `fit`/`evaluate`/`predict` data that name the fix.

Keras reports data that does not fit a model from deep inside the graph
("Matrix size-incompatible", "Invalid dtype: str32", "Unrecognized data
type"). `CheckedModel`, the class `build_cnn` and `build_lstm` return,
checks numpy inputs and labels first (lists and pandas Series of labels
are converted) and says what was received and what to do; everything it
does not recognize (datasets, dicts, tensors) goes to Keras unchanged.
`checked_data` is the one entry point: the models' `fit`, `evaluate` and
`predict`, and `aiservice_kit.train`, all call it.
"""

import numbers
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from aiservice_kit._tracing import build_before_tracing
from aiservice_kit._validation import check_optional_positive_int
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


def is_pandas(value: Any) -> bool:
    """Whether `value` is a pandas object (told without importing pandas)."""
    return type(value).__module__.partition(".")[0] == "pandas"


def _position(array: np.ndarray, flat_index: int) -> Any:
    """A flat index as the user would index `array`: i, or (i, j, ...)."""
    if array.ndim <= 1:
        return int(flat_index)
    return tuple(int(i) for i in np.unravel_index(flat_index, array.shape))


def check_finite(name: str, array: np.ndarray, *, what: str) -> None:
    """Refuses NaN and infinite values in a float array, naming the first.

    Args:
        name: str. The argument's name (`x`, `y`).
        array: numpy array. Checked only when its dtype is a float.
        what: str. What the values are, for the message ("inputs").

    Raises:
        ValueError: naming how many values are not finite and where.
    """
    if array.dtype.kind != "f" or array.size == 0:
        return
    # One pass without a temporary array: NaN and inf survive a sum; a
    # float64 overflow (values near 1e308) falls through to the full check.
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(array.sum(dtype=np.float64)):
            return
    bad = np.flatnonzero(~np.isfinite(array))
    if not bad.size:
        return
    first = int(bad[0])
    raise ValueError(
        f"`{name}` holds {bad.size} NaN or infinite {what} (the first at "
        f"index {_position(array, first)}: {array.flat[first]}); the model "
        "would learn or predict NaN or meaningless values from them. Drop "
        "or fill them first (e.g. with np.nan_to_num or pandas' fillna). "
        f"Received: {name} of shape {array.shape}"
    )


def _refuse_empty(name: str, value: Any) -> None:
    if len(value) == 0:
        shape = getattr(value, "shape", (0,))
        raise ValueError(
            f"`{name}` holds no samples; give at least one. Received: "
            f"{name} of shape {tuple(shape)}"
        )


def check_inputs(model: keras.Model, x: Any) -> Any:
    """Checks a numpy `x` against a one-input model's input.

    Args:
        model: keras.Model. The model about to be called.
        x: the data given to `fit`, `evaluate` or `predict`.

    Returns:
        `x`, unchanged.

    Raises:
        TypeError: for strings or Python objects given to a model of
            numbers.
        ValueError: for one sample where a batch is expected, a shape
            that is not the model's (naming both and the fix), no samples,
            or NaN or infinite values.
    """
    if len(model.inputs) != 1 or not isinstance(x, np.ndarray):
        return x
    expected = tuple(model.inputs[0].shape)
    takes_strings = "string" in str(model.inputs[0].dtype)
    if x.dtype.kind in "USO" and not takes_strings:
        raise TypeError(
            f"`x` must hold numbers for model '{model.name}' (its input "
            f"takes {model.inputs[0].dtype}), not {x.dtype} values. Convert "
            "the data: x.astype('float32') for numbers stored as Python "
            f"objects. Received: x of dtype {x.dtype} and shape {x.shape}"
        )
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
    _refuse_empty("x", x)
    check_finite("x", x, what="inputs")
    return x


def _loss_name(model: keras.Model) -> str | None:
    loss = getattr(model, "loss", None)
    name = loss if isinstance(loss, str) else getattr(loss, "name", None)
    return name if name in (_SPARSE, _ONE_HOT) else None


def _is_missing(item: Any) -> bool:
    if item is None or type(item).__name__ in ("NAType", "NaTType"):
        return True
    return isinstance(item, (float, np.floating)) and bool(np.isnan(item))


def _object_labels(array: np.ndarray, name: str) -> np.ndarray:
    """An object array of labels as strings or numbers, or refused."""
    flat = array.ravel()
    strings = numbers_seen = None
    for index, item in enumerate(flat):
        if _is_missing(item):
            raise ValueError(
                f"`{name}` has a missing label ({item!r}) at index "
                f"{_position(array, index)}: every sample needs a label. "
                "Drop those samples, or fill them with a class."
            )
        if isinstance(item, (str, bytes)):
            strings = index if strings is None else strings
        elif isinstance(item, (numbers.Real, np.bool_)):
            numbers_seen = index if numbers_seen is None else numbers_seen
        else:
            raise TypeError(
                f"`{name}` must hold class names (str) or numbers; item "
                f"{_position(array, index)} is a {type(item).__name__}: "
                f"{item!r:.80}"
            )
        if strings is not None and numbers_seen is not None:
            number = flat[numbers_seen]
            raise TypeError(
                f"`{name}` mixes class names (str) and numbers (item "
                f"{_position(array, numbers_seen)} is {number!r}): give "
                "every label as a class name, or every label as a class "
                "index."
            )
    if strings is not None:
        return np.asarray(
            [
                item.decode("utf-8", errors="replace")
                if isinstance(item, bytes)
                else str(item)
                for item in flat
            ],
            dtype=object,
        ).reshape(array.shape)
    return np.asarray(flat.tolist()).reshape(array.shape)


def label_array(y: Any, *, name: str = "y") -> np.ndarray | None:
    """Labels as a numpy array of strings (dtype object) or numbers.

    Lists, tuples and pandas objects are converted; an object array is
    read item by item (missing labels and mixed kinds are refused).

    Args:
        y: the labels.
        name: str. The argument's name used in error messages.

    Returns:
        The numpy array, or None when `y` is none of those (a tensor, a
        dict, ...) and is left to Keras.

    Raises:
        ValueError: for ragged labels or a missing label.
        TypeError: for labels that are neither class names nor numbers.
    """
    if isinstance(y, (list, tuple)) or is_pandas(y):
        try:
            array = np.asarray(y)
            if array.dtype.kind in "US" and isinstance(y, (list, tuple)):
                # numpy turns ["a", None, 1.5] into strings ('None',
                # '1.5'): read such a list item by item instead.
                array = np.asarray(y, dtype=object)
        except ValueError as error:
            raise ValueError(
                f"`{name}` must hold one label (or one one-hot row of equal "
                f"length) per sample. Received: {name} that numpy cannot "
                f"make an array of ({error})"
            ) from error
    elif isinstance(y, np.ndarray):
        array = y
    else:
        return None
    if array.dtype.kind == "O":
        array = _object_labels(array, name)
    return array


def class_indices(
    model: keras.Model, labels: np.ndarray, *, name: str = "y"
) -> np.ndarray:
    """One-dimensional labels (class names or indices) as int64 indices.

    Args:
        model: keras.Model. The classifier; its stored class names map
            string labels.
        labels: numpy array from `label_array`, of shape (n,).
        name: str. The argument's name used in error messages.

    Returns:
        An int64 numpy array of class indices in [0, num_classes).

    Raises:
        TypeError: for string labels on a model without class names, or
            labels that are not numbers.
        ValueError: for unknown class names, fractional or non-finite
            numbers, or indices out of range.
    """
    num_classes = model.outputs[0].shape[-1]
    if labels.dtype.kind in "USO":
        names = get_class_names(model)
        if names is None:
            sample = [str(item) for item in labels.ravel()[:3]]
            raise TypeError(
                f"`{name}` holds string labels (such as {sample}) but model "
                f"'{model.name}' stores no class names. Build it with "
                "class_names=[...] (every label, in order, e.g. "
                f"list(np.unique({name}))), or pass integer labels: "
                f"names, {name} = np.unique({name}, return_inverse=True). "
                f"Received: {name} of dtype {labels.dtype}"
            )
        index = {label: position for position, label in enumerate(names)}
        unknown = sorted({str(label) for label in labels} - set(index))
        if unknown:
            raise ValueError(
                f"`{name}` contains {unknown[:10]} which are not among the "
                f"model's classes {names}."
            )
        return np.asarray([index[str(label)] for label in labels], np.int64)
    if labels.dtype.kind not in "biuf":
        raise TypeError(
            f"`{name}` must hold class indices (integers) or class names "
            f"(str). Received: {name} of dtype {labels.dtype}"
        )
    check_finite(name, labels, what="labels")
    if labels.dtype.kind == "f":
        fractional = np.flatnonzero(labels != np.floor(labels))
        if fractional.size:
            first = int(fractional[0])
            raise ValueError(
                f"`{name}` must hold whole class indices for model "
                f"'{model.name}'; {labels[first].item()!r} at index "
                f"{first} is not one (Keras would truncate it to a class "
                "silently). Map "
                f"the values to classes: names, {name} = "
                f"np.unique({name}, return_inverse=True). Received: {name} "
                f"of dtype {labels.dtype}"
            )
    if labels.size:
        low, high = labels.min(), labels.max()
        if low < 0 or high >= num_classes:
            if labels.dtype.kind == "f":
                low, high = int(low), int(high)
            raise ValueError(
                f"`{name}` must hold class indices in [0, {num_classes}) "
                f"for model '{model.name}' ({num_classes} classes). "
                f"Build it with num_classes={name}.max() + 1, or map the "
                f"labels: names, {name} = np.unique({name}, "
                f"return_inverse=True). Received: {name} with values from "
                f"{low} to {high}"
            )
    return labels.astype(np.int64, copy=False)


def check_labels(model: keras.Model, y: Any) -> Any:
    """Checks (and converts) labels against a one-output model.

    Lists, tuples and pandas Series become numpy arrays. String labels
    become class indices when the model stores class names
    (`class_names=` at build time). Whole-number float labels (1.0)
    become integers; fractional, NaN or infinite labels are refused, as
    are one-hot labels for a model compiled for integers (or the
    reverse), one-hot rows of another width than the model's classes and
    class indices out of range. A regressor's targets are only converted
    and checked to be finite numbers.

    Args:
        model: keras.Model. The model about to be trained or evaluated.
        y: the labels given to `fit` or `evaluate`.

    Returns:
        The labels, as a numpy array when they were array-like (class
        indices as integers), else unchanged.

    Raises:
        TypeError: for string labels on a model without class names, or
            labels that are neither class names nor numbers.
        ValueError: for labels in another format than the model's loss
            expects, missing, fractional or out-of-range labels.
    """
    if y is None or len(model.outputs) != 1:
        return y
    array = label_array(y, name="y")
    if array is None:
        return y
    is_classifier = list(getattr(model, "output_names", None) or []) == [
        PROBABILITIES
    ]
    if array.dtype.kind in "USO":
        if array.ndim == 2 and array.shape[1] == 1:
            array = array[:, 0]
        return class_indices(model, array.ravel(), name="y")
    if array.dtype.kind not in "biuf":
        raise TypeError(
            "`y` must hold numbers (class indices, one-hot rows or "
            f"targets). Received: y of dtype {array.dtype}"
        )
    check_finite("y", array, what="labels")
    if not is_classifier:
        return array
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
        if array.ndim == 2 and array.shape[1] == 1:
            array = array[:, 0]
        if array.ndim != 1:
            raise ValueError(
                f"`y` must hold one class index per sample, shape (n,), "
                f"for model '{model.name}' ({num_classes} classes, compiled "
                f"for integer labels: label_mode='int'); one-hot rows would "
                f"need {num_classes} columns and label_mode='categorical'. "
                f"Received: y of shape {array.shape}"
            )
        return class_indices(model, array, name="y")
    if loss == _ONE_HOT:
        if array.ndim == 1 or (array.ndim == 2 and array.shape[1] == 1):
            raise ValueError(
                f"`y` holds class indices (shape {array.shape}), but model "
                f"'{model.name}' was compiled for one-hot labels "
                "(label_mode='categorical'). Pass "
                f"keras.utils.to_categorical(y, {num_classes}), or build "
                "the model with label_mode='int'. "
                f"Received: y of shape {array.shape}"
            )
        if array.ndim != 2 or array.shape[1] != num_classes:
            raise ValueError(
                f"`y` must be one-hot rows of {num_classes} columns, shape "
                f"(n, {num_classes}), for model '{model.name}' "
                f"({num_classes} classes). Received: y of shape "
                f"{array.shape}"
            )
    return array


def check_batch_sizes(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Checks `batch_size` (and `validation_batch_size`) of a Keras call.

    Args:
        args: tuple. The call's positional arguments after `x` and `y`
            (the first is `batch_size` in `fit`, `evaluate`); for
            `predict`, after `x` (the first is `batch_size` too).
        kwargs: dict. The call's keyword arguments.

    Raises:
        TypeError: if one is not an integer.
        ValueError: if one is smaller than 1.
    """
    if args:
        check_optional_positive_int("batch_size", args[0])
    for name in ("batch_size", "validation_batch_size"):
        check_optional_positive_int(name, kwargs.get(name))


def checked_data(
    model: keras.Model,
    x: Any,
    y: Any = None,
    *,
    with_labels: bool = True,
    check_x: Callable[[keras.Model, Any], Any] = check_inputs,
) -> tuple[Any, Any]:
    """Checks and converts `(x, y)` the way the model's `fit` takes them.

    Args:
        model: keras.Model. The model about to be called.
        x: its inputs.
        y: its labels (ignored when `with_labels` is False).
        with_labels: bool. True for `fit` and `evaluate` (array inputs
            then need labels of the same length), False for `predict`.
        check_x: callable. Checks and converts `x` for this model.

    Returns:
        `(x, y)`, checked and converted.

    Raises:
        TypeError: for a missing `x` or data of the wrong kind.
        ValueError: for data of the wrong shape or values, no samples, or
            inputs and labels of different lengths.
    """
    if x is None:
        raise TypeError(
            "`x` must be the model's inputs (a numpy array, a list, a "
            "tf.data.Dataset, ...). Received: x=None"
        )
    x = check_x(model, x)
    if not with_labels:
        return x, y
    if y is None:
        if isinstance(x, np.ndarray):
            raise ValueError(
                f"`y` must be given with array inputs: model '{model.name}' "
                "trains and evaluates on (x, y) pairs (a tf.data.Dataset "
                "of pairs needs no `y`). Received: y=None"
            )
        return x, y
    y = check_labels(model, y)
    if (
        isinstance(x, np.ndarray)
        and isinstance(y, np.ndarray)
        and y.ndim
        and len(x) != len(y)
    ):
        raise ValueError(
            "`x` and `y` must hold the same number of samples. Received: "
            f"x with {len(x)} samples, y with {len(y)}"
        )
    return x, y


def model_checked_data(model: keras.Model, x: Any, y: Any) -> tuple[Any, Any]:
    """`(x, y)` after the model's own `fit` checks (`check_data`), if any.

    The builders' models check and convert array data in `fit` (shapes,
    labels, string labels, texts). `aiservice_kit.train` and `evaluate`
    feed the model a dataset, which those checks leave alone, so they run
    them on the arrays first. Datasets and models without `check_data`
    (a user's own) are left as they are.
    """
    check = getattr(model, "check_data", None)
    if not callable(check) or isinstance(x, tf.data.Dataset):
        return x, y
    return check(x, y)


def check_validation(
    model: keras.Model,
    kwargs: dict[str, Any],
    check_x: Callable[[keras.Model, Any], Any] = check_inputs,
) -> dict:
    """Runs the same checks on `fit`'s `validation_data=(x, y, ...)`."""
    data = kwargs.get("validation_data")
    if isinstance(data, tuple) and len(data) >= 2:
        kwargs = dict(kwargs)
        kwargs["validation_data"] = (
            *checked_data(model, data[0], data[1], check_x=check_x),
            *data[2:],
        )
    return kwargs


@keras.saving.register_keras_serializable(package="aiservice_kit")
class CheckedModel(keras.Model):
    """The Functional model `build_cnn` and `build_lstm` return.

    A plain Functional Keras model (same graph, saving and export) whose
    `fit`, `evaluate` and `predict` first check numpy data: one sample
    where a batch is expected, a shape the model was not built for, no
    samples, NaN or infinite inputs, labels in another format than its
    loss expects (fractional, missing or out-of-range class indices,
    one-hot rows of the wrong width), inputs and labels of different
    lengths, and a `batch_size` that is not a positive integer. The
    errors name the argument, what was received and the fix. Lists and
    pandas Series of labels are converted, and string labels encoded when
    the model stores class names (`class_names=` at build time). Anything
    else (datasets, dicts, tensors) goes to Keras unchanged.

    Example:
    ```python
    from aiservice_kit import build_lstm
    model = build_lstm((100, 3), class_names=["walk", "run"])
    model.fit(x, ["run", "walk", ...], epochs=5)
    ```
    """

    def check_data(
        self, x: Any, y: Any = None, *, with_labels: bool = True
    ) -> tuple[Any, Any]:
        """Checks and converts `(x, y)` as `fit` does, before training.

        `aiservice_kit.train` calls it too, so both paths refuse the same
        data with the same messages.

        Args:
            x: the inputs (numpy arrays are checked).
            y: the labels (lists, pandas Series and numpy arrays are
                checked and converted).
            with_labels: bool. False for inputs alone (`predict`).

        Returns:
            `(x, y)`, checked and converted.

        Raises:
            TypeError: for data of the wrong kind (see `checked_data`).
            ValueError: for data of the wrong shape or values.
        """
        return checked_data(self, x, y, with_labels=with_labels)

    def fit(self, x: Any = None, y: Any = None, *args: Any, **kwargs: Any):
        """Keras `fit`, after checking numpy `x`, `y` and validation data.

        Numeric numpy arrays are fed through Keras' array pipeline without
        its autotuner (`pipelines.arrays_as_fit_dataset`): the same
        batches and weights, without the idle epoch starts.

        Raises:
            TypeError, ValueError: for data `check_data` refuses, or a
                `batch_size` that is not a positive integer.
        """
        check_batch_sizes(args, kwargs)
        x, y = self.check_data(x, y)
        kwargs = check_validation(self, kwargs)
        fast = None if args else arrays_as_fit_dataset(x, y, kwargs)
        if fast is not None:
            dataset, kwargs = fast
            build_before_tracing(self, dataset)
            return super().fit(dataset, **kwargs)
        build_before_tracing(self, x, y)
        return super().fit(x, y, *args, **kwargs)

    def evaluate(self, x: Any = None, y: Any = None, *args: Any, **kwargs: Any):
        """Keras `evaluate`, after checking numpy `x` and `y`."""
        check_batch_sizes(args, kwargs)
        x, y = self.check_data(x, y)
        build_before_tracing(self, x, y)
        return super().evaluate(x, y, *args, **kwargs)

    def predict(self, x: Any, *args: Any, **kwargs: Any):
        """Keras `predict`, after checking a numpy `x`.

        Raises:
            TypeError, ValueError: for a missing `x`, one of the wrong
                shape or dtype, no samples, NaN or infinite values, or a
                `batch_size` that is not a positive integer.
        """
        check_batch_sizes(args, kwargs)
        x, _ = self.check_data(x, with_labels=False)
        return super().predict(x, *args, **kwargs)
