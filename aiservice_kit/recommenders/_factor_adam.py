"""The explicit fit on one device: Keras' training, run by a compiled kernel.

`MatrixFactorization("explicit")` is the Keras model of `_factor_keras`
(four embedding tables, squared error plus per-rating L2, Adam). Outside
a `tf.distribute` strategy scope, `fit` runs that same training in
`_factor_kernels.mf_adam_epoch`: the same initial tables, the same batches in
the same order, the same gradients and the same Adam update (Keras' rule
and defaults, every entry's moments decaying each step), in float32. It
skips `keras.Model.fit`'s per-fit tracing and per-step dispatch, which
cost ~4x the arithmetic on MovieLens-sized data, and TensorFlow is not
imported. Inside a strategy scope (several replicas, GPUs, TPUs,
workers) `keras.Model.fit` trains; both paths give the same losses up to
float32 summation order (`tests/recommenders/test_factorization.py`).

Both paths take their initial tables from `initial_tables` and their
batch order from a keyed 32-bit hash of each pair's position
(`epoch_keys` here, `_factor_keras._epoch_order` in TensorFlow): a
bijection, so sorting the keys gives a permutation that numpy and
TensorFlow compute identically.
"""

import sys

import numpy as np

from aiservice_kit.recommenders import _neighbours

_MASK = 0xFFFFFFFF
#: Odd multipliers below 2**30, so int64 products never overflow.
SEED_MIX, EPOCH_MIX, HASH_MIX = 0x2545F491, 0x1B873593, 0x045D9F3B


def strategy_in_scope() -> bool:
    """True inside a `tf.distribute` strategy scope (no TF import)."""
    tf = sys.modules.get("tensorflow")
    return tf is not None and tf.distribute.has_strategy()


def initial_tables(
    n_users: int, n_items: int, n_factors: int, init_std: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Float32 `[factors | bias]` tables: normal factors, zero biases."""
    rng = np.random.default_rng(seed)
    tables = []
    for rows in (n_users, n_items):
        table = np.zeros((rows, n_factors + 1), np.float32)
        table[:, :n_factors] = rng.normal(0.0, init_std, (rows, n_factors))
        tables.append(table)
    return tables[0], tables[1]


def epoch_keys(n: int, epoch: int, seed: int) -> np.ndarray:
    """Distinct int64 sort keys of positions `0..n-1` for one epoch."""
    key = ((seed & _MASK) * SEED_MIX + (epoch + 1) * EPOCH_MIX) & _MASK
    x = np.arange(n, dtype=np.int64) ^ key
    x ^= x >> 16
    x = (x * HASH_MIX) & _MASK
    x ^= x >> 16
    x = (x * HASH_MIX) & _MASK
    x ^= x >> 16
    return x


def fit(
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
    show: bool,
) -> tuple[tuple[np.ndarray, ...], list[float]]:
    """Trains the explicit model; returns its tables and per-epoch losses.

    Returns:
        `((user_factors, item_factors, user_bias, item_bias), losses)`,
        float32 arrays, the loss being the epoch's mean per-rating
        objective as Keras reports it.
    """
    kernels = _neighbours.load_kernels("_factor_kernels")
    user_t, item_t = initial_tables(n_users, n_items, n_factors, init_std, seed)
    state = [np.zeros_like(t) for t in (user_t, user_t, item_t, item_t)]
    grads = [np.zeros_like(t) for t in (user_t, user_t, item_t, item_t)]
    users = np.ascontiguousarray(users, np.int32)
    items = np.ascontiguousarray(items, np.int32)
    ratings = np.ascontiguousarray(ratings, np.float32)
    n = len(users)
    steps_per_epoch = -(-n // batch_size)
    epoch_range = range(epochs)
    progress = None
    if show:
        from tqdm import tqdm

        progress = epoch_range = tqdm(
            epoch_range, desc="MatrixFactorization (explicit)"
        )
    losses = []
    try:
        for epoch in epoch_range:
            order = np.argsort(epoch_keys(n, epoch, seed))
            total = kernels.mf_adam_epoch(
                user_t,
                item_t,
                *state,
                *grads,
                users,
                items,
                ratings,
                order,
                batch_size,
                global_mean,
                regularization,
                learning_rate,
                epoch * steps_per_epoch,
            )
            losses.append(total / n)
            if progress is not None:
                progress.set_postfix(loss=f"{losses[-1]:.4f}")
    finally:
        if progress is not None:
            progress.close()
    arrays = (
        np.ascontiguousarray(user_t[:, :n_factors]),
        np.ascontiguousarray(item_t[:, :n_factors]),
        user_t[:, n_factors].copy(),
        item_t[:, n_factors].copy(),
    )
    return arrays, losses
