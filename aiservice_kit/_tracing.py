"""A compiled model's training state, made before `fit` traces its step.

Keras 3 on TensorFlow, with no distribution strategy set, creates a
compiled model's metric and loss variables (and the optimizer's, when not
built yet) while it traces the first training step. Because that trace
created variables, `tf.function` then traces the whole step a second
time: about 1.1 s of the first epoch of `build_cnn`'s default network on
two cores, and again for `evaluate`'s step on a fresh model. Under a
strategy Keras avoids this with a symbolic build before tracing;
`build_before_tracing` runs the same build when there is none, so each
step is traced once. Nothing is computed, and the weights a seeded `fit`
reaches are bit-identical.
"""

import logging
from typing import Any

import keras
import numpy as np
import tensorflow as tf

logger = logging.getLogger(__name__)


def _spec_of_array(value: Any) -> tf.TensorSpec | None:
    if not isinstance(value, np.ndarray) or value.ndim == 0:
        return None
    if value.dtype.kind in "OSU":
        dtype = tf.string
    elif value.dtype.kind in "biuf":
        dtype = tf.as_dtype(value.dtype)
    else:
        return None
    return tf.TensorSpec((None, *value.shape[1:]), dtype)


def _batch_spec(x: Any, y: Any) -> Any:
    """The spec of one batch of `fit(x, y)`'s data, or None if unknown."""
    if isinstance(x, tf.data.Dataset):
        spec = x.element_spec
        leaves = tf.nest.flatten(spec)
        if leaves and all(type(leaf) is tf.TensorSpec for leaf in leaves):
            return spec
        return None
    if isinstance(x, dict):
        x_spec = {key: _spec_of_array(value) for key, value in x.items()}
        x_leaves = list(x_spec.values())
    else:
        x_spec = _spec_of_array(x)
        x_leaves = [x_spec]
    if not x_leaves or any(leaf is None for leaf in x_leaves):
        return None
    if y is None:
        return (x_spec,)
    y_spec = _spec_of_array(y)
    return None if y_spec is None else (x_spec, y_spec)


def build_before_tracing(model: keras.Model, x: Any, y: Any = None) -> None:
    """Makes `model`'s metric, loss and optimizer variables before `fit`.

    A no-op when they exist, when the data's batch spec cannot be read
    from `x` (anything but a dataset of dense tensors or numpy arrays), or
    when the symbolic build fails: Keras then builds them in the trace, as
    it would have, and raises its own error there if the data is wrong.

    Args:
        model: keras.Model. A compiled model about to `fit` or `evaluate`.
        x: the `x` given to `fit`: a batched `tf.data.Dataset` of `(x, y)`
            pairs, a numpy array or a dict of numpy arrays.
        y: the `y` given to `fit` (numpy array), or None.

    Example:
    ```python
    model = build_cnn((28, 28), 10)
    build_before_tracing(model, x_train, y_train)
    model.fit(x_train, y_train)  # the training step is traced once
    ```
    """
    symbolic_build = getattr(model, "_symbolic_build", None)
    if symbolic_build is None or getattr(model, "optimizer", None) is None:
        return
    batch = _batch_spec(x, y)
    if batch is None:
        return
    try:
        with model.distribute_strategy.scope():
            symbolic_build(data_batch=batch)
    except Exception as error:  # Keras raises its own error in the trace
        logger.debug("Left the training state to Keras' trace: %s", error)
