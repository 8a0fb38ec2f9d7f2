"""Implicit ALS in numpy: the solver behind `MatrixFactorization("als")`.

Confidence-weighted least squares (Hu, Koren and Volinsky 2008): each half
step solves the users' (or items') factors with the other side held fixed,
by warm-started conjugate gradient during `fit` (`als_solve_cg`, as
implicit's `AlternatingLeastSquares` does) and exactly for fold-in of new
users (`als_solve`).
"""

import numpy as np
import scipy.sparse as sp


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


def fit(
    matrix: sp.csr_matrix, settings: dict, show: bool
) -> tuple[tuple[np.ndarray, ...], list[float]]:
    """Alternating sweeps from seeded random factors.

    Args:
        matrix: CSR (users x items) of positive weights.
        settings: dict. The checked parameters (`n_factors`, `epochs`,
            `regularization`, `alpha`, `init_std`, `seed`).
        show: bool. A tqdm bar per sweep.

    Returns:
        `((user_factors, item_factors, user_bias, item_bias), losses)`,
        zero biases, one loss per sweep.
    """
    rng = np.random.default_rng(settings["seed"])
    k = settings["n_factors"]
    n_users, n_items = matrix.shape
    scale = settings["init_std"] / np.sqrt(k)
    user_f = (rng.standard_normal((n_users, k)) * scale).astype(np.float32)
    item_f = (rng.standard_normal((n_items, k)) * scale).astype(np.float32)
    item_users = matrix.T.tocsr()
    reg, alpha = settings["regularization"], settings["alpha"]
    sweeps = range(settings["epochs"])
    progress = None
    if show:
        from tqdm import tqdm

        progress = sweeps = tqdm(sweeps, desc="MatrixFactorization (als)")
    losses = []
    try:
        for _ in sweeps:
            user_f = als_solve_cg(matrix, item_f, user_f, reg, alpha)
            item_f = als_solve_cg(item_users, user_f, item_f, reg, alpha)
            losses.append(_als_loss(matrix, user_f, item_f, reg, alpha))
    finally:
        if progress is not None:
            progress.close()
    zeros_u = np.zeros(n_users, np.float32)
    zeros_i = np.zeros(n_items, np.float32)
    return (user_f, item_f, zeros_u, zeros_i), losses


def _als_loss(
    matrix: sp.csr_matrix,
    user_f: np.ndarray,
    item_f: np.ndarray,
    reg: float,
    alpha: float,
) -> float:
    """Mean confidence-weighted squared error plus the L2 term.

    Uses the identity sum_{all u,i} (x_u . y_i)^2 = trace(X^T X Y^T Y), so
    no users x items matrix is formed.
    """
    x = user_f.astype(np.float64)
    y = item_f.astype(np.float64)
    coo = matrix.tocoo()
    pred = np.einsum("ij,ij->i", x[coo.row], y[coo.col])
    conf = 1.0 + alpha * coo.data
    observed = (conf * (1.0 - pred) ** 2).sum() - (pred**2).sum()
    everything = float(np.sum((x.T @ x) * (y.T @ y)))
    penalty = reg * (np.sum(x * x) + np.sum(y * y))
    total = observed + everything + penalty
    return total / (matrix.shape[0] * matrix.shape[1])
