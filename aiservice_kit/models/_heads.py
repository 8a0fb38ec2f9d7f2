"""Task heads and the compile defaults that fit each task.

Every builder ends in one of these heads, so a classifier built by any
builder has the same output name, dtype and loss conventions.
"""

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from aiservice_kit._validation import check_choice
from aiservice_kit._validation import check_fraction
from aiservice_kit._validation import check_positive_int
from aiservice_kit.models._contract import PREDICTIONS
from aiservice_kit.models._contract import PROBABILITIES

#: Accepted label encodings for classifiers.
LABEL_MODES = ("int", "categorical")
#: Batches per compiled training call chosen at compile time on one
#: device. Results are identical to 1 (same batches, same updates); plain
#: `fit` skips the per-batch Python round trip: 1.9x the textbook CNN's
#: samples/s at batch 32 on the 2-core CPU (PERF-NOTES.md), and more on
#: accelerators, where each call costs a launch.
STEPS_PER_EXECUTION = 32


def default_steps_per_execution() -> int:
    """Batches per compiled call that fit the current hardware.

    `STEPS_PER_EXECUTION` on one device; 1 under a strategy with several
    replicas, where Keras 3.15's multi-step loop fails (a graph
    placeholder error), as `training.train` also knows.

    Returns:
        An int >= 1.
    """
    strategy = tf.distribute.get_strategy()
    if strategy.num_replicas_in_sync > 1:
        return 1
    return STEPS_PER_EXECUTION


def _steps_per_execution(value: Any) -> int:
    if value is None:
        return default_steps_per_execution()
    return check_positive_int("steps_per_execution", value)


def check_num_classes(num_classes: Any) -> int:
    """Checks a classifier's `num_classes` (an integer >= 2)."""
    return check_positive_int("num_classes", num_classes, minimum=2)


def check_class_names(
    num_classes: Any, class_names: Any
) -> tuple[int, list[str] | None]:
    """Checks `num_classes` and `class_names`; returns (count, names).

    One of them is required; given both, they must agree. Names are
    stored as str.
    """
    if class_names is None:
        if num_classes is None:
            raise ValueError(
                "Give `num_classes` (an integer >= 2) or `class_names` (a "
                "list of at least 2 distinct labels). Received: "
                "num_classes=None, class_names=None"
            )
        return check_num_classes(num_classes), None
    if isinstance(class_names, str) or not isinstance(
        class_names, (Sequence, np.ndarray)
    ):
        raise TypeError(
            "`class_names` must be a list of str, one per class in the "
            f"order of the integer labels. Received: class_names="
            f"{class_names!r}"
        )
    names = [str(label) for label in class_names]
    if len(names) < 2 or len(set(names)) != len(names):
        raise ValueError(
            "`class_names` must hold at least 2 distinct labels. "
            f"Received: class_names={class_names!r}"
        )
    if num_classes is not None and check_num_classes(num_classes) != len(names):
        raise ValueError(
            f"`num_classes` ({num_classes}) disagrees with the "
            f"{len(names)} `class_names`. Give one of them. Received: "
            f"num_classes={num_classes!r}, class_names={class_names!r}"
        )
    return len(names), names


def _optimizer_names() -> list[str]:
    """The optimizer names `keras.optimizers.get` accepts, sorted."""
    names = []
    for name, value in vars(keras.optimizers).items():
        if not (
            isinstance(value, type)
            and issubclass(value, keras.optimizers.Optimizer)
        ):
            continue
        try:
            keras.optimizers.get(name.lower())
        except Exception:  # noqa: BLE001  (the base class, wrappers)
            continue
        names.append(name.lower())
    return sorted(names)


def check_optimizer(optimizer: Any) -> Any:
    """Checks that `optimizer` is a Keras optimizer name or instance.

    Raises:
        TypeError: if it is neither a str nor an optimizer.
        ValueError: for a name Keras does not know, listing those it does.
    """
    if isinstance(optimizer, keras.optimizers.Optimizer):
        return optimizer
    if isinstance(optimizer, str):
        try:
            keras.optimizers.get(optimizer)
        except ValueError:
            raise ValueError(
                "`optimizer` must be a Keras optimizer name, one of "
                f"{', '.join(repr(n) for n in _optimizer_names())}, or a "
                "keras.optimizers.Optimizer instance. "
                f"Received: optimizer={optimizer!r}"
            ) from None
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
    model: keras.Model,
    *,
    optimizer: Any = "adam",
    label_mode: str = "int",
    steps_per_execution: int | None = None,
) -> keras.Model:
    """Compiles a softmax classifier with the loss its labels need.

    Args:
        model: keras.Model. A model whose output is class probabilities.
        optimizer: str or keras.optimizers.Optimizer. Defaults to Adam.
        label_mode: str. `"int"` for integer labels (sparse categorical
            cross-entropy) or `"categorical"` for one-hot labels.
        steps_per_execution: int or None. Batches per compiled call; None
            picks for the hardware (`default_steps_per_execution`).

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
        optimizer=check_optimizer(optimizer),
        loss=loss,
        metrics=["accuracy"],
        steps_per_execution=_steps_per_execution(steps_per_execution),
    )
    return model


def compile_regressor(
    model: keras.Model,
    *,
    optimizer: Any = "adam",
    steps_per_execution: int | None = None,
) -> Any:
    """Compiles a regressor with mean squared error and mean absolute error.

    `steps_per_execution` as in `compile_classifier`.
    """
    model.compile(
        optimizer=check_optimizer(optimizer),
        loss="mse",
        metrics=[keras.metrics.MeanAbsoluteError(name="mae")],
        steps_per_execution=_steps_per_execution(steps_per_execution),
    )
    return model
