"""Task heads and the compile defaults that fit each task.

Every builder ends in one of these heads, so a classifier built by any
builder has the same output name, dtype and loss conventions.
"""

from typing import Any

import keras

from aiservice_kit._validation import check_choice
from aiservice_kit._validation import check_fraction
from aiservice_kit._validation import check_positive_int
from aiservice_kit.models._contract import PREDICTIONS
from aiservice_kit.models._contract import PROBABILITIES

#: Accepted label encodings for classifiers.
LABEL_MODES = ("int", "categorical")


def check_num_classes(num_classes: Any) -> int:
    """Checks a classifier's `num_classes` (an integer >= 2)."""
    return check_positive_int("num_classes", num_classes, minimum=2)


def check_optimizer(optimizer: Any) -> Any:
    """Checks that `optimizer` is a Keras optimizer name or instance."""
    if isinstance(optimizer, (str, keras.optimizers.Optimizer)):
        return optimizer
    raise TypeError(
        "`optimizer` must be a Keras optimizer name (such as 'adam') or a "
        "keras.optimizers.Optimizer instance. "
        f"Received: optimizer={optimizer!r}"
    )


def classification_head(
    features: Any, num_classes: int, *, dropout: float = 0.0
) -> Any:
    """Adds dropout and a softmax layer named `probabilities`.

    The softmax always runs in float32, so the head stays numerically safe
    under a mixed-precision policy.

    Args:
        features: KerasTensor. A (batch, features) tensor.
        num_classes: int. Number of classes (>= 2; binary is 2 classes).
        dropout: float. Dropout rate applied before the softmax layer.

    Returns:
        The (batch, num_classes) probabilities tensor.
    """
    check_fraction("dropout", dropout)
    if dropout:
        features = keras.layers.Dropout(dropout, name="head_dropout")(features)
    return keras.layers.Dense(
        num_classes, activation="softmax", dtype="float32", name=PROBABILITIES
    )(features)


def regression_head(features: Any, output_size: int) -> Any:
    """Adds a linear float32 layer named `predictions`."""
    return keras.layers.Dense(output_size, dtype="float32", name=PREDICTIONS)(
        features
    )


def compile_classifier(
    model: keras.Model, *, optimizer: Any = "adam", label_mode: str = "int"
) -> keras.Model:
    """Compiles a softmax classifier with the loss its labels need.

    Args:
        model: keras.Model. A model whose output is class probabilities.
        optimizer: str or keras.optimizers.Optimizer. Defaults to Adam.
        label_mode: str. `"int"` for integer labels (sparse categorical
            cross-entropy) or `"categorical"` for one-hot labels.

    Returns:
        The same model, compiled.
    """
    check_choice("label_mode", label_mode, LABEL_MODES)
    loss = (
        keras.losses.SparseCategoricalCrossentropy()
        if label_mode == "int"
        else keras.losses.CategoricalCrossentropy()
    )
    model.compile(
        optimizer=check_optimizer(optimizer), loss=loss, metrics=["accuracy"]
    )
    return model


def compile_regressor(model: keras.Model, *, optimizer: Any = "adam") -> Any:
    """Compiles a regressor with mean squared error and mean absolute error."""
    model.compile(
        optimizer=check_optimizer(optimizer),
        loss="mse",
        metrics=[keras.metrics.MeanAbsoluteError(name="mae")],
    )
    return model
