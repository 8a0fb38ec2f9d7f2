"""Sequence models: `build_lstm` for sequence classification and regression.

Sequences are float32 arrays of shape (timesteps, features): sensor
readings, time series, event features. Variable-length sequences are padded
with `mask_value` (0.0 by default) and masked, so padding never changes a
prediction.
"""

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from aiservice_kit._validation import check_bool
from aiservice_kit._validation import check_choice
from aiservice_kit._validation import check_fraction
from aiservice_kit._validation import check_input_shape
from aiservice_kit._validation import check_int_sequence
from aiservice_kit._validation import check_optional_positive_int
from aiservice_kit._validation import check_positive_int
from aiservice_kit.models._checks import CheckedModel
from aiservice_kit.models._heads import check_class_names
from aiservice_kit.models._heads import check_num_classes
from aiservice_kit.models._heads import check_optimizer
from aiservice_kit.models._heads import classification_head
from aiservice_kit.models._heads import compile_classifier
from aiservice_kit.models._heads import compile_regressor
from aiservice_kit.models._heads import regression_head
from aiservice_kit.models.layers import RNN_CELLS
from aiservice_kit.models.layers import ClassNames
from aiservice_kit.models.layers import MaskedConv1D
from aiservice_kit.models.layers import MaskedGlobalAveragePooling1D
from aiservice_kit.models.layers import RandomConvolutionFeatures
from aiservice_kit.models.layers import recurrent_layer
from aiservice_kit.models.layers import rocket_dilations

#: Name of the input of every model built by `build_lstm`.
SEQUENCE_INPUT = "sequence"
#: Accepted values of `pooling`: the last state, or the mean of all steps.
POOLINGS = ("last", "avg")
#: Accepted front ends. `"auto"`: `"random_conv"` for classifiers unless
#: the recurrent stack is configured, `"recurrent"` for regressors.
FRONTENDS = ("auto", "random_conv", "recurrent")
#: Features of the random-convolution front end (MiniRocket's ~10k).
RANDOM_CONV_FEATURES = 10_000


def _check_number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"`{name}` must be a number. Received: {name}={value!r}"
        )
    if not np.isfinite(value):
        raise ValueError(
            f"`{name}` must be a finite number. Received: {name}={value!r}"
        )
    return float(value)


def _normalization_stats(
    data: Any, features: int, mask_value: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and variance over the real (unpadded) steps."""
    if isinstance(data, np.ndarray) and data.dtype != object:
        arrays = [np.asarray(data, dtype=np.float64)]
    elif isinstance(data, (list, tuple)) or (
        isinstance(data, np.ndarray) and data.dtype == object
    ):
        try:
            arrays = [np.asarray(item, dtype=np.float64) for item in data]
        except (TypeError, ValueError) as error:
            raise TypeError(
                "`normalization_data` must be a float array of shape "
                "(samples, timesteps, features) or a list of "
                "(timesteps, features) arrays. Received an object that does "
                f"not convert to floats: {error}"
            ) from error
    else:
        raise TypeError(
            "`normalization_data` must be a numpy array of shape (samples, "
            "timesteps, features), a list of (timesteps, features) arrays, "
            f"or None. Received: normalization_data of type "
            f"{type(data).__name__}"
        )
    steps = []
    for array in arrays:
        if array.ndim < 1 or array.shape[-1] != features:
            raise ValueError(
                "`normalization_data` must have the model's "
                f"{features} features on its last axis. Received an array "
                f"of shape {array.shape}"
            )
        steps.append(array.reshape(-1, features))
    steps = np.concatenate(steps) if steps else np.zeros((0, features))
    if mask_value is not None:
        steps = steps[np.any(steps != mask_value, axis=-1)]
    if len(steps) == 0:
        raise ValueError(
            "`normalization_data` holds no unpadded time step to compute "
            "the mean and variance from."
        )
    if not np.all(np.isfinite(steps)):
        raise ValueError(
            "`normalization_data` contains NaN or infinite values; fill or "
            "drop missing values first."
        )
    return steps.mean(axis=0), steps.var(axis=0)


def build_lstm(
    input_shape: Sequence[int | None],
    num_classes: int | None = None,
    *,
    class_names: Sequence[str] | None = None,
    output_size: int = 1,
    cell: str | None = None,
    units: int | Sequence[int] | None = None,
    bidirectional: bool = False,
    dropout: float = 0.2,
    conv_filters: Sequence[int] = (),
    conv_kernel_size: int = 5,
    conv_pool_size: int = 1,
    dense_units: int | None = None,
    pooling: str | None = None,
    normalization_data: Any = None,
    masking: bool | None = None,
    mask_value: float = 0.0,
    unroll: bool = False,
    label_mode: str = "int",
    optimizer: str | keras.optimizers.Optimizer = "adam",
    compile: bool = True,
    name: str = "lstm",
    frontend: str = "auto",
) -> keras.Model:
    """Builds a sequence classifier or regressor (recurrent or random-conv).

    Classifiers get, by default, a random-convolution front end
    (`frontend="random_conv"`, MiniRocket style): fixed convolutions at
    several dilations summarized as proportions of positive values
    (`RandomConvolutionFeatures`), standardized, then the softmax. Nothing
    but the softmax is trained. On GunPoint, ItalyPowerDemand, ArrowHead
    and BasicMotions it beats 1-nearest-neighbour DTW and the recurrent
    stack (see docs/sequence-classification.md); give `normalization_data`
    (the training sequences): its thresholds and scales come from it.

    The recurrent stack (`frontend="recurrent"`, the default for
    regressors and whenever `units`, `cell`, `bidirectional`,
    `conv_filters`, `pooling`, `dense_units` or `unroll` is given) is:
    optional masking of padded steps, optional per-feature
    normalization (its mean and variance computed from `normalization_data`
    and stored in the model), an optional convolutional front end (`"same"`
    convolutions that respect the mask, useful on long or noisy signals),
    one or more LSTM/GRU layers, an optional dense layer, and the head.

    With `num_classes`, the head is a softmax named `probabilities`
    (binary tasks use `num_classes=2`) compiled with sparse categorical
    cross-entropy and accuracy. Without it, the model is a regressor with a
    linear output `predictions` of `output_size` values, compiled with MSE
    and MAE.

    Variable-length sequences: use `input_shape=(None, features)` and pad
    each batch with `mask_value` (for example with
    `keras.utils.pad_sequences(seqs, dtype="float32", padding="post")`). A
    step whose features all equal `mask_value` is skipped, so padding never
    changes a prediction. Masking is on by default for variable lengths.

    Args:
        input_shape: tuple. `(timesteps, features)`; `timesteps` may be
            None for variable-length sequences.
        num_classes: int or None. Number of classes (>= 2); None (and no
            `class_names`) builds a regressor.
        class_names: list of str or None. The label of each class, in the
            order of the integer labels (implies `num_classes`). Stored in
            the model (`get_class_names`), so `fit` and `evaluate` also
            take these string labels, as the text classifier does.
        output_size: int. Number of regression outputs (regressor only).
        cell: str or None. `"lstm"` or `"gru"` (GRU trains ~15% faster);
            None: `"lstm"`.
        units: int, tuple of int or None. Units of each recurrent layer; a
            tuple stacks one layer per entry; None: 64.
        bidirectional: bool. Run each recurrent layer in both directions.
        dropout: float. Dropout rate in [0, 1) on the recurrent layers'
            inputs and before the head.
        conv_filters: tuple of int. Filters of each convolution of the
            front end; empty for none.
        conv_kernel_size: int. Width of the front-end convolutions.
        conv_pool_size: int. Max-pool the front end's output by this
            factor after each convolution (1: none). Shorter sequences
            train the recurrent layers faster and more reliably on long
            signals. Fixed lengths without masking only: pooling would
            mix padded and real steps.
        pooling: str or None. How the last recurrent layer summarizes a
            sequence: `"last"` (its final state, the default) or `"avg"`
            (the mean of its outputs over the unpadded steps).
        dense_units: int or None. Width of a ReLU dense layer before the
            head; None for none.
        normalization_data: array-like or None. Training sequences, shape
            (samples, timesteps, features) or a list of (timesteps,
            features) arrays. When given, the model standardizes each
            feature with their mean and variance (padded steps excluded),
            so it takes raw readings.
        masking: bool or None. Skip steps whose features all equal
            `mask_value`. None: on for variable lengths, off for fixed
            lengths (where a genuine all-zero step would be skipped too).
        mask_value: float. The padding value.
        unroll: bool. Unroll the recurrent loop. Needs a fixed
            `timesteps`; an unrolled model converts to TFLite with builtin
            ops only (no Flex delegate). Memory grows with `timesteps`.
        label_mode: str. `"int"` or `"categorical"` labels (classifier).
        optimizer: str or keras.optimizers.Optimizer. Used when compiling.
        compile: bool. Whether to compile the model.
        name: str. The model's name.
        frontend: str. `"auto"`, `"random_conv"` or `"recurrent"` (see
            above). `"random_conv"` is for classifiers only.

    Returns:
        A Functional `keras.Model` with one float32 input named `sequence`
        of shape (batch, timesteps, features) and one output:
        `probabilities` (batch, num_classes) or `predictions`
        (batch, output_size). Its `fit`, `evaluate` and `predict` check
        numpy data first (`CheckedModel`): sequences of another shape,
        NaN or infinite values (pad with `mask_value` instead), labels
        out of range or in another format than `label_mode` are refused
        with an error naming the fix.

    Raises:
        ValueError: if an argument has a bad value (for example
            `num_classes=1`, `unroll=True` with variable lengths, or
            `normalization_data` with the wrong number of features).
        TypeError: if an argument has a bad type.

    Example:
    ```python
    from aiservice_kit import build_lstm
    from aiservice_kit.datasets import load_ts
    x_train, y_train = load_ts("BasicMotions_TRAIN.ts")
    names, y_train = np.unique(y_train, return_inverse=True)
    model = build_lstm(
        x_train.shape[1:], num_classes=len(names),
        normalization_data=x_train,
    )
    model.fit(x_train, y_train, epochs=50)
    ```
    """
    timesteps, features = check_input_shape(
        "input_shape", input_shape, ranks=(2,), allow_none=True
    )
    if features is None:
        raise ValueError(
            "`input_shape` must give the number of features: (timesteps, "
            "features) with only timesteps allowed to be None. "
            f"Received: input_shape={input_shape!r}"
        )
    names = None
    if class_names is not None:
        num_classes, names = check_class_names(num_classes, class_names)
    elif num_classes is not None:
        num_classes = check_num_classes(num_classes)
    output_size = check_positive_int("output_size", output_size)
    check_choice("frontend", frontend, FRONTENDS)
    recurrent_options = (
        cell is not None
        or units is not None
        or pooling is not None
        or bidirectional is not False
        or bool(conv_filters)
        or dense_units is not None
        or unroll is not False
    )
    if frontend == "auto":
        frontend = (
            "random_conv"
            if num_classes is not None and not recurrent_options
            else "recurrent"
        )
    if frontend == "random_conv" and num_classes is None:
        raise ValueError(
            "`frontend='random_conv'` builds classifiers only: give "
            "`num_classes`, or use frontend='recurrent' for regression. "
            f"Received: frontend={frontend!r}, num_classes=None"
        )
    cell = "lstm" if cell is None else cell
    units = 64 if units is None else units
    pooling = "last" if pooling is None else pooling
    check_choice("cell", cell, RNN_CELLS)
    if isinstance(units, bool) or not isinstance(units, (int, Sequence)):
        raise TypeError(
            "`units` must be an integer >= 1 or a list of them (one per "
            f"stacked layer). Received: units={units!r}"
        )
    units = (
        (check_positive_int("units", units),)
        if isinstance(units, int)
        else check_int_sequence("units", units)
    )
    check_bool("bidirectional", bidirectional)
    dropout = check_fraction("dropout", dropout)
    conv_filters = check_int_sequence(
        "conv_filters", conv_filters, allow_empty=True
    )
    conv_kernel_size = check_positive_int("conv_kernel_size", conv_kernel_size)
    conv_pool_size = check_positive_int("conv_pool_size", conv_pool_size)
    dense_units = check_optional_positive_int("dense_units", dense_units)
    check_choice("pooling", pooling, POOLINGS)
    if masking is not None:
        check_bool("masking", masking)
    mask_value = _check_number("mask_value", mask_value)
    check_bool("unroll", unroll)
    if unroll and timesteps is None:
        raise ValueError(
            "`unroll=True` needs a fixed number of timesteps: give "
            "input_shape=(timesteps, features) with an integer timesteps, "
            f"or keep unroll=False. Received: input_shape={input_shape!r}"
        )
    check_choice("label_mode", label_mode, ("int", "categorical"))
    check_optimizer(optimizer)
    check_bool("compile", compile)
    if not isinstance(name, str):
        raise TypeError(f"`name` must be a str. Received: name={name!r}")
    if masking is None:
        masking = timesteps is None
    if conv_pool_size > 1 and masking:
        raise ValueError(
            "`conv_pool_size` > 1 needs unmasked, fixed-length sequences "
            "(pooling would mix padded and real steps): give a fixed "
            "timesteps and masking=False, or conv_pool_size=1. Received: "
            f"conv_pool_size={conv_pool_size}, input_shape={input_shape!r}"
        )
    stats = None
    if normalization_data is not None:
        stats = _normalization_stats(
            normalization_data, features, mask_value if masking else None
        )

    inputs = keras.Input(
        shape=(timesteps, features), dtype="float32", name=SEQUENCE_INPUT
    )
    x = inputs
    if masking:
        x = keras.layers.Masking(mask_value, name="mask_padding")(x)
    if stats is not None:
        mean, variance = stats
        x = keras.layers.Normalization(
            axis=-1,
            mean=mean.astype("float32"),
            variance=variance.astype("float32"),
            name="normalize",
        )(x)
    if frontend == "random_conv":
        outputs = _random_conv_head(
            x,
            normalization_data,
            stats,
            timesteps,
            features,
            num_classes,
            dropout=dropout,
            mask_value=mask_value if masking else None,
            class_names=names,
        )
        model = CheckedModel(inputs, outputs, name=name)
        if compile:
            compile_classifier(
                model, optimizer=optimizer, label_mode=label_mode
            )
        return model
    for index, filters in enumerate(conv_filters):
        x = MaskedConv1D(
            filters,
            conv_kernel_size,
            activation="relu",
            name=f"conv{index + 1}",
        )(x)
        if conv_pool_size > 1:
            x = keras.layers.MaxPooling1D(
                conv_pool_size, padding="same", name=f"pool{index + 1}"
            )(x)
    for index, layer_units in enumerate(units):
        x = recurrent_layer(
            cell,
            layer_units,
            return_sequences=index < len(units) - 1 or pooling != "last",
            bidirectional=bidirectional,
            dropout=dropout,
            unroll=unroll,
            name=f"{cell}{index + 1}",
        )(x)
    if pooling == "avg":
        x = MaskedGlobalAveragePooling1D(name="avg_pool")(x)
    if dense_units:
        x = keras.layers.Dense(dense_units, activation="relu", name="dense")(x)
    if num_classes is None:
        if dropout:
            x = keras.layers.Dropout(dropout, name="head_dropout")(x)
        outputs = regression_head(x, output_size)
        model = CheckedModel(inputs, outputs, name=name)
        if compile:
            compile_regressor(model, optimizer=optimizer)
        return model
    if names is not None:
        x = ClassNames(names, name="class_names")(x)
    outputs = classification_head(x, num_classes, dropout=dropout)
    model = CheckedModel(inputs, outputs, name=name)
    if compile:
        compile_classifier(model, optimizer=optimizer, label_mode=label_mode)
    return model


def _padded(data: Any, features: int, mask_value: float | None):
    """(samples, steps, features) float32 array and its step mask."""
    if isinstance(data, np.ndarray) and data.dtype != object:
        array = np.asarray(data, dtype=np.float32)
    else:
        array = keras.utils.pad_sequences(
            [np.asarray(item, np.float32) for item in data],
            dtype="float32",
            padding="post",
            value=0.0 if mask_value is None else mask_value,
        )
    array = array.reshape(len(array), -1, features)
    if mask_value is None:
        return array, None
    return array, np.any(array != mask_value, axis=-1)


def _random_conv_head(
    x: Any,
    data: Any,
    stats: tuple[np.ndarray, np.ndarray] | None,
    timesteps: int | None,
    features: int,
    num_classes: int,
    *,
    dropout: float,
    mask_value: float | None,
    class_names: list[str] | None = None,
) -> Any:
    """Random-convolution features, standardized, then the softmax."""
    if data is not None:
        train, mask = _padded(data, features, mask_value)
        longest = train.shape[1]
        if stats is not None:
            mean, variance = stats
            train = (train - mean) / np.sqrt(np.maximum(variance, 1e-7))
            if mask is not None:
                train = train * mask[..., None]
        train = train.astype(np.float32)
    else:
        # No data: thresholds from white noise, the scale normalized
        # inputs have. Give `normalization_data` for real thresholds.
        longest = timesteps or 256
        train = (
            np.random.default_rng(0)
            .normal(size=(32, longest, features))
            .astype(np.float32)
        )
        mask = None
    dilations = rocket_dilations(timesteps or longest)
    per_kernel = max(
        1, int(np.ceil(RANDOM_CONV_FEATURES / (84 * len(dilations))))
    )
    layer = RandomConvolutionFeatures(dilations, per_kernel, name="random_conv")
    x = layer(x)
    layer.adapt(train, mask)
    if data is not None:
        chunks = range(0, len(train), 64)
        values = np.concatenate(
            [
                np.asarray(
                    layer(
                        train[start : start + 64],
                        mask=None if mask is None else mask[start : start + 64],
                    )
                )
                for start in chunks
            ]
        )
        # The variance floor keeps near-constant features from exploding.
        x = keras.layers.Normalization(
            axis=-1,
            mean=values.mean(axis=0),
            variance=values.var(axis=0) + 1e-2,
            name="feature_scale",
        )(x)
    if class_names is not None:
        x = ClassNames(class_names, name="class_names")(x)
    return classification_head(x, num_classes, dropout=dropout)
