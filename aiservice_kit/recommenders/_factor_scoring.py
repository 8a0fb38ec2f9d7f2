"""Scores of a factor model, from plain numpy arrays (no TensorFlow).

Everything a fitted `MatrixFactorization` answers is computed here from
its arrays (user and item factors, biases, global mean), so the same
functions serve `predict`, `recommend`, fold-in of unknown users and, later,
a trivial export graph: a rating is `mean + b_u + b_i + p_u . q_i`, a
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


def als_solve(
    matrix: sp.csr_matrix,
    fixed: np.ndarray,
    regularization: float,
    alpha: float,
) -> np.ndarray:
    """One weighted-least-squares half step of implicit ALS.

    For each row `u` of `matrix` (weights `r_ui`, confidence
    `c_ui = 1 + alpha * r_ui`, preference 1 where `r_ui > 0`), solves
    `(Y^T Y + Y_u^T (C_u - I) Y_u + reg I) x_u = Y_u^T C_u p_u`, exactly
    (Hu, Koren and Volinsky 2008), rows in stacked batches.

    Args:
        matrix: CSR (n_rows, n_fixed) of non-negative weights.
        fixed: float array (n_fixed, k): the other side's factors.
        regularization: float > 0.
        alpha: float > 0.

    Returns:
        float32 (n_rows, k): the solved factors.
    """
    n_rows = matrix.shape[0]
    k = fixed.shape[1]
    y = fixed.astype(np.float64)
    base = y.T @ y + regularization * np.eye(k)
    out = np.zeros((n_rows, k), dtype=np.float32)
    # Rows per batch: the stacked (rows, k, k) systems stay near 32 MB.
    step = max(1, (1 << 22) // (k * k))
    for start in range(0, n_rows, step):
        stop = min(n_rows, start + step)
        grams = np.broadcast_to(base, (stop - start, k, k)).copy()
        rhs = np.zeros((stop - start, k))
        for r in range(start, stop):
            lo, hi = matrix.indptr[r], matrix.indptr[r + 1]
            if hi == lo:
                continue
            yu = y[matrix.indices[lo:hi]]
            conf = alpha * matrix.data[lo:hi].astype(np.float64)
            grams[r - start] += (yu.T * conf) @ yu
            rhs[r - start] = yu.T @ (1.0 + conf)
        out[start:stop] = np.linalg.solve(grams, rhs[:, :, None])[:, :, 0]
    return out


def als_solve_cg(
    matrix: sp.csr_matrix,
    fixed: np.ndarray,
    start: np.ndarray,
    regularization: float,
    alpha: float,
    steps: int = 3,
) -> np.ndarray:
    """The `als_solve` systems, by a few conjugate-gradient steps.

    All rows at once and warm-started from `start` (the previous sweep's
    factors), as implicit's `AlternatingLeastSquares` does: each step is
    two sparse-times-dense products, O(nnz * k), with no (k, k) system
    per row. Three steps per sweep are what implicit uses.

    Args:
        matrix: CSR (n_rows, n_fixed) of non-negative weights.
        fixed: float array (n_fixed, k): the other side's factors.
        start: float array (n_rows, k): the initial guess.
        regularization: float > 0.
        alpha: float > 0.
        steps: int >= 1. Conjugate-gradient steps.

    Returns:
        float32 (n_rows, k): the updated factors.
    """
    y = fixed.astype(np.float32)
    gram = (y.T @ y + regularization * np.eye(y.shape[1])).astype(np.float32)
    coo = matrix.tocoo()
    rows, cols = coo.row, coo.col
    extra = (alpha * coo.data).astype(np.float32)
    weights = sp.csr_matrix((1.0 + extra, (rows, cols)), shape=matrix.shape)
    rhs = weights @ y

    def times_a(v: np.ndarray) -> np.ndarray:
        dots = np.einsum("ij,ij->i", y[cols], v[rows]) * extra
        scattered = sp.csr_matrix((dots, (rows, cols)), shape=matrix.shape)
        return v @ gram + scattered @ y

    x = start.astype(np.float32)
    residual = rhs - times_a(x)
    direction = residual.copy()
    rs_old = np.einsum("ij,ij->i", residual, residual)
    for _ in range(steps):
        a_dir = times_a(direction)
        denom = np.einsum("ij,ij->i", direction, a_dir)
        step = np.divide(
            rs_old, denom, out=np.zeros_like(rs_old), where=denom > 0
        )
        x += step[:, None] * direction
        residual -= step[:, None] * a_dir
        rs_new = np.einsum("ij,ij->i", residual, residual)
        ratio = np.divide(
            rs_new, rs_old, out=np.zeros_like(rs_new), where=rs_old > 0
        )
        direction = residual + ratio[:, None] * direction
        rs_old = rs_new
    return x.astype(np.float32)
