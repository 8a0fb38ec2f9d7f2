"""Scores of a factor model, from plain numpy arrays (no TensorFlow).

Everything a fitted `MatrixFactorization` answers is computed here from
its arrays (user and item factors, biases, global mean), so the same
functions serve `predict`, `recommend` and explicit fold-in of unknown
users (the export graph, `aiservice_kit.export.factorization`, computes
the same in TensorFlow ops): a rating is `mean + b_u + b_i + p_u . q_i`, a
ranking score the same without the constant terms.
"""

import numpy as np
import scipy.sparse as sp

#: Users scored per step in `top_k_items`: bounds the (users x items)
#: score block to a few tens of MB.
_SCORE_BLOCK_CELLS = 1 << 22


def predict_ratings(
    user_factors: np.ndarray,
    item_factors: np.ndarray,
    user_bias: np.ndarray,
    item_bias: np.ndarray,
    global_mean: float,
    users: np.ndarray,
    items: np.ndarray,
    rating_range: tuple[float, float] | None = None,
) -> np.ndarray:
    """`mean + b_u + b_i + p_u . q_i` per (user, item) pair.

    A position of -1 (an unknown user or item) contributes nothing: zero
    factors and zero bias, as surprise's `SVD` answers unknown ids.

    Args:
        user_factors: float array (n_users, k).
        item_factors: float array (n_items, k).
        user_bias: float array (n_users,).
        item_bias: float array (n_items,).
        global_mean: float.
        users: int array of user positions, -1 for unknown.
        items: int array of item positions, -1 for unknown.
        rating_range: (low, high) or None. Clips the predictions.

    Returns:
        float32 predictions, one per pair.
    """
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    known_u = users >= 0
    known_i = items >= 0
    u = np.where(known_u, users, 0)
    i = np.where(known_i, items, 0)
    dots = np.einsum(
        "ij,ij->i", user_factors[u], item_factors[i], dtype=np.float64
    )
    out = (
        global_mean
        + np.where(known_u, user_bias[u], 0.0)
        + np.where(known_i, item_bias[i], 0.0)
        + np.where(known_u & known_i, dots, 0.0)
    )
    if rating_range is not None:
        out = np.clip(out, rating_range[0], rating_range[1])
    return out.astype(np.float32)


def top_k_items(
    user_vectors: np.ndarray,
    item_factors: np.ndarray,
    item_bias: np.ndarray | None,
    top_k: int,
    exclude: sp.csr_matrix | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The `top_k` items of largest `u . q_i + b_i` for each row `u`.

    Args:
        user_vectors: float array (n, k): one factor vector per query.
        item_factors: float array (n_items, k).
        item_bias: float array (n_items,) or None.
        top_k: int >= 1.
        exclude: CSR (n, n_items) or None: items never returned per row.

    Returns:
        `(positions, scores)`, both (n, top_k), best first, ties to the
        lower item position; positions are int64 and -1 (score NaN) where
        fewer than `top_k` items are left after the exclusions.
    """
    n = user_vectors.shape[0]
    n_items = item_factors.shape[0]
    k = min(top_k, n_items)
    out_idx = np.full((n, top_k), -1, dtype=np.int64)
    out_val = np.full((n, top_k), np.nan, dtype=np.float32)
    step = max(1, _SCORE_BLOCK_CELLS // max(1, n_items))
    items_t = np.ascontiguousarray(item_factors.T, dtype=np.float32)
    bias = None if item_bias is None else item_bias.astype(np.float32)
    for start in range(0, n, step):
        stop = min(n, start + step)
        scores = user_vectors[start:stop].astype(np.float32) @ items_t
        if bias is not None:
            scores += bias
        if exclude is not None:
            block = exclude[start:stop]
            rows = np.repeat(np.arange(stop - start), np.diff(block.indptr))
            scores[rows, block.indices] = -np.inf
        if k < n_items:
            part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        else:
            part = np.broadcast_to(np.arange(n_items), (stop - start, k))
        top = np.take_along_axis(scores, part, axis=1)
        # Best first, ties to the lower position.
        order = np.lexsort((part, -top), axis=1)
        idx = np.take_along_axis(part, order, axis=1)
        val = np.take_along_axis(top, order, axis=1)
        excluded = ~np.isfinite(val)
        idx = np.where(excluded, -1, idx)
        val = np.where(excluded, np.nan, val)
        out_idx[start:stop, :k] = idx
        out_val[start:stop, :k] = val
    return out_idx, out_val


def fold_in_explicit(
    item_factors: np.ndarray,
    item_bias: np.ndarray,
    global_mean: float,
    items: np.ndarray,
    ratings: np.ndarray,
    regularization: float,
) -> tuple[np.ndarray, float]:
    """Solves one new user's factors and bias from their ratings.

    Ridge regression of `r - mean - b_i` on `[q_i, 1]` with the penalty
    `regularization * n_ratings` (the per-rating L2 weight of training,
    summed over the user's ratings).

    Args:
        item_factors: float array (n_items, k).
        item_bias: float array (n_items,).
        global_mean: float.
        items: int array of the rated item positions.
        ratings: float array of the ratings.
        regularization: float >= 0.

    Returns:
        `(factors, bias)`: a (k,) float32 array and a float.
    """
    q = item_factors[items].astype(np.float64)
    design = np.hstack([q, np.ones((len(items), 1))])
    target = ratings.astype(np.float64) - global_mean - item_bias[items]
    penalty = max(regularization, 1e-6) * max(len(items), 1)
    gram = design.T @ design + penalty * np.eye(design.shape[1])
    solution = np.linalg.solve(gram, design.T @ target)
    return solution[:-1].astype(np.float32), float(solution[-1])
