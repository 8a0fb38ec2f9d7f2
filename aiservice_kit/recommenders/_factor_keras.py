"""The Keras side of `MatrixFactorization` (imported by `fit` only).

It trains BPR, and the explicit objective inside a `tf.distribute`
scope; outside one the explicit training runs in a compiled kernel that
takes the same steps (`_factor_adam`).

The model is four `Embedding` tables (user and item factors and biases)
and one layer that scores a (user, item) pair; it outputs the score and
the pair's L2 penalty side by side so that a plain Keras loss adds them,
which keeps the regularisation per rating (surprise's SGD objective)
without `add_loss` and works unchanged under any `tf.distribute`
strategy. The input is a `tf.data` pipeline that shuffles positions, not
triples: each epoch draws one permutation (explicit: positions sorted
by the keyed hash the kernel uses) and gathers batches from the three
columns, which costs a few ms where an element-wise `shuffle` of 100k
triples costs most of a second. The explicit model starts from the
kernel's initial tables (`_factor_adam.initial_tables`); BPR keeps the
Keras initialisers.
"""

import keras
import numpy as np
import tensorflow as tf

from aiservice_kit.recommenders import _factor_adam


@keras.saving.register_keras_serializable(package="aiservice_kit")
class FactorScore(keras.layers.Layer):
    """`mean + b_u + b_i + p_u . q_i` and the pair's L2 penalty.

    Args:
        global_mean: float. The constant term.
        regularization: float. L2 weight per pair.
    """

    def __init__(self, global_mean=0.0, regularization=0.0, **kwargs):
        super().__init__(**kwargs)
        self.global_mean = float(global_mean)
        self.regularization = float(regularization)

    def call(self, p, q, bu, bi):
        score = self.global_mean + bu[:, 0] + bi[:, 0]
        score = score + keras.ops.sum(p * q, axis=-1)
        penalty = self.regularization * (
            keras.ops.sum(p * p, axis=-1)
            + keras.ops.sum(q * q, axis=-1)
            + bu[:, 0] ** 2
            + bi[:, 0] ** 2
        )
        return score, penalty

    def get_config(self):
        config = super().get_config()
        config.update(
            global_mean=self.global_mean, regularization=self.regularization
        )
        return config


def _squared_error(y_true, y_pred):
    return keras.ops.square(y_true - y_pred[:, 0]) + y_pred[:, 1]


def _bpr_loss(y_true, y_pred):
    # y_true is unused: the pair is (liked, sampled) by construction.
    return keras.ops.softplus(-y_pred[:, 0]) + y_pred[:, 1] + 0.0 * y_true


def build_model(
    objective: str,
    n_users: int,
    n_items: int,
    n_factors: int,
    *,
    global_mean: float,
    regularization: float,
    init_std: float,
    seed: int,
) -> keras.Model:
    """The uncompiled scoring model; see the module docstring."""
    init = keras.initializers.RandomNormal(stddev=init_std, seed=seed)
    user = keras.Input((), dtype="int32", name="user")
    item = keras.Input((), dtype="int32", name="item")
    user_factors = keras.layers.Embedding(
        n_users, n_factors, embeddings_initializer=init, name="user_factors"
    )
    item_factors = keras.layers.Embedding(
        n_items,
        n_factors,
        embeddings_initializer=keras.initializers.RandomNormal(
            stddev=init_std, seed=seed + 1
        ),
        name="item_factors",
    )
    user_bias = keras.layers.Embedding(
        n_users, 1, embeddings_initializer="zeros", name="user_bias"
    )
    item_bias = keras.layers.Embedding(
        n_items, 1, embeddings_initializer="zeros", name="item_bias"
    )
    score = FactorScore(global_mean, regularization, name="score")
    if objective == "explicit":
        pred, penalty = score(
            user_factors(user),
            item_factors(item),
            user_bias(user),
            item_bias(item),
        )
        inputs = [user, item]
    else:
        other = keras.Input((), dtype="int32", name="sampled_item")
        p = user_factors(user)
        # No user bias: it cancels in the difference of two scores.
        zero_bias = keras.ops.zeros_like(item_bias(item))
        liked, pen_liked = score(
            p, item_factors(item), zero_bias, item_bias(item)
        )
        sampled, pen_sampled = score(
            p, item_factors(other), zero_bias, item_bias(other)
        )
        pred, penalty = liked - sampled, pen_liked + pen_sampled
        inputs = [user, item, other]
    output = keras.ops.stack([pred, penalty], axis=-1)
    return keras.Model(inputs, output, name=f"matrix_factorization_{objective}")


def _epoch_order(n: int, epoch: tf.Tensor, seed: int) -> tf.Tensor:
    """`argsort(_factor_adam.epoch_keys(n, epoch, seed))` in TensorFlow."""
    mask = tf.constant(0xFFFFFFFF, tf.int64)
    key = (
        tf.constant((seed & 0xFFFFFFFF) * _factor_adam.SEED_MIX, tf.int64)
        + (epoch + 1) * _factor_adam.EPOCH_MIX
    ) & mask

    def xorshift(x):
        return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))

    x = tf.bitwise.bitwise_xor(tf.range(n, dtype=tf.int64), key)
    x = (xorshift(x) * _factor_adam.HASH_MIX) & mask
    x = (xorshift(x) * _factor_adam.HASH_MIX) & mask
    x = xorshift(x)
    # The keys are distinct 32-bit integers: exact in float64, no ties.
    return tf.argsort(tf.cast(x, tf.float64), stable=True)


def _dataset(
    objective: str,
    users: np.ndarray,
    items: np.ndarray,
    ratings: np.ndarray,
    n_items: int,
    batch_size: int,
    epochs: int,
    seed: int,
) -> tf.data.Dataset:
    n = len(users)
    u = tf.constant(users.astype(np.int32))
    i = tf.constant(items.astype(np.int32))
    r = tf.constant(ratings.astype(np.float32))

    def permutation(epoch):
        if objective == "explicit":
            order = _epoch_order(n, epoch, seed)
        else:
            order = tf.random.shuffle(tf.range(n), seed=seed)
        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size)

    def gather(index):
        user, item = tf.gather(u, index), tf.gather(i, index)
        if objective == "explicit":
            return (user, item), tf.gather(r, index)
        sampled = tf.random.uniform(
            tf.shape(index), 0, n_items, dtype=tf.int32, seed=seed + 2
        )
        return (user, item, sampled), tf.zeros(tf.shape(index))

    # One permutation per epoch (explicit: the compiled fit's), all
    # epochs in one iterator: Keras keeps a single iterator over the
    # epochs when `steps_per_epoch` is given.
    dataset = tf.data.Dataset.range(epochs).flat_map(permutation)
    dataset = dataset.map(gather)
    options = tf.data.Options()
    # The autotuner idles both cores at each epoch start (PERF-NOTES).
    options.autotune.enabled = False
    return dataset.with_options(options)


def fit(
    objective: str,
    users: np.ndarray,
    items: np.ndarray,
    ratings: np.ndarray,
    n_users: int,
    n_items: int,
    *,
    n_factors: int,
    epochs: int,
    learning_rate: float,
    regularization: float,
    batch_size: int,
    init_std: float,
    seed: int,
    global_mean: float,
    verbose: int,
) -> tuple[tuple[np.ndarray, ...], list[float]]:
    """Builds, compiles and fits the model; returns its tables as numpy.

    Built in the current `tf.distribute` scope, if any: call it inside
    `strategy.scope()` to train on several replicas.
    """
    keras.utils.set_random_seed(seed)
    model = build_model(
        objective,
        n_users,
        n_items,
        n_factors,
        global_mean=global_mean,
        regularization=regularization,
        init_std=init_std,
        seed=seed,
    )
    if objective == "explicit":
        # The compiled one-device fit's initial tables (`_factor_adam`).
        user_table, item_table = _factor_adam.initial_tables(
            n_users, n_items, n_factors, init_std, seed
        )
        for name, table in (
            ("user_factors", user_table),
            ("item_factors", item_table),
        ):
            model.get_layer(name).embeddings.assign(table[:, :n_factors])
    steps = -(-len(users) // batch_size)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=_squared_error if objective == "explicit" else _bpr_loss,
        # One step per call: a multi-step loop over a distributed iterator
        # fails on the last partial batch ("must feed a value for
        # placeholder") under MirroredStrategy; measured no faster here.
        steps_per_execution=1,
    )
    dataset = _dataset(
        objective, users, items, ratings, n_items, batch_size, epochs, seed
    )
    history = model.fit(
        dataset,
        epochs=epochs,
        steps_per_epoch=steps,
        shuffle=False,
        verbose=verbose,
    )
    tables = {
        layer.name: keras.ops.convert_to_numpy(layer.embeddings)
        for layer in model.layers
        if isinstance(layer, keras.layers.Embedding)
    }
    arrays = (
        tables["user_factors"].astype(np.float32),
        tables["item_factors"].astype(np.float32),
        tables.get("user_bias", np.zeros((n_users, 1)))[:, 0].astype(
            np.float32
        ),
        tables["item_bias"][:, 0].astype(np.float32),
    )
    return arrays, history.history["loss"]
