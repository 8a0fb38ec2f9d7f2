"""The neighbour arithmetic of `CosineRecommender`: norms and top-k graphs.

L2 normalisation (float64 and a division, as implicit does, so every
similarity is bit-identical to its) and the blocked, threaded top-k over
the compiled kernels. The estimator (`cosine.py`) calls these on sparse
matrices it has validated.
"""

import importlib
from typing import Any

import numpy as np
import scipy.sparse as sp

from aiservice_kit.recommenders import _blocks

#: Rows of the queries per block of `topk_neighbours`.
_FIT_BLOCK = 256


def load_kernels(module: str = "_kernels"):
    """A compiled kernel module (a Cython extension built at install).

    Args:
        module: str. `"_kernels"` (cosine neighbours) or
            `"_factor_kernels"` (matrix factorisation).

    Raises:
        ImportError: the extension was not built, e.g. a source checkout
            used without `pip install -e .`.
    """
    try:
        return importlib.import_module(f"aiservice_kit.recommenders.{module}")
    except ImportError as error:
        raise ImportError(
            "The recommenders' compiled kernels "
            f"(aiservice_kit.recommenders.{module}) are not built. Install "
            "a wheel, or build from source with `pip install -e .` (needs "
            "a C++ compiler and the Python headers)."
        ) from error


def kernel_csr(
    matrix: sp.csr_matrix, dtype: type = np.float32
) -> tuple[np.ndarray, ...]:
    """(indptr int64, indices int32, data) for the kernels."""
    return (
        matrix.indptr.astype(np.int64, copy=False),
        matrix.indices.astype(np.int32, copy=False),
        matrix.data.astype(dtype, copy=False),
    )


#: Entries divided per step when normalising: bounds the temporaries.
_CHUNK = 1 << 20


def normalised_values(
    data: np.ndarray, norms: np.ndarray, owner: np.ndarray
) -> np.ndarray:
    """`data / norms[owner]` in float64, a chunk at a time.

    Float64 and a division (not a product with the inverse), as implicit
    does, so the vectors and every similarity are bit-identical to its;
    chunks keep the temporaries small on large matrices.
    """
    out = np.empty(len(data), dtype=np.float64)
    for start in range(0, len(data), _CHUNK):
        part = slice(start, start + _CHUNK)
        np.divide(data[part], norms[owner[part]], out=out[part])
    return out


def row_norms(matrix: sp.csr_matrix) -> np.ndarray:
    squares = sp.csr_matrix(
        (matrix.data**2, matrix.indices, matrix.indptr), shape=matrix.shape
    ).sum(axis=1)
    return np.sqrt(np.asarray(squares, dtype=np.float64).ravel())


def row_of_entries(matrix: sp.csr_matrix) -> np.ndarray:
    counts = np.diff(matrix.indptr)
    return np.repeat(np.arange(matrix.shape[0], dtype=np.int32), counts)


def scaled_rows(matrix: sp.csr_matrix, norms: np.ndarray) -> sp.csr_matrix:
    """Each row divided by its norm (float64), sharing the index arrays."""
    values = normalised_values(matrix.data, norms, row_of_entries(matrix))
    return sp.csr_matrix(
        (values, matrix.indices, matrix.indptr), shape=matrix.shape
    )


def normalise_rows(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """Each row scaled to unit L2 norm (float64), sharing the indices."""
    return scaled_rows(matrix, row_norms(matrix))


def normalised_space(
    user_items: sp.csr_matrix, kind: str
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """L2-normalised (queries, targets) for item or user similarity.

    Item kind: queries are items x users, targets users x items, both
    holding the item-normalised values; the targets reuse the index arrays
    of `user_items`, so only new values are allocated. User kind: queries
    are the user-normalised users x items, targets their transpose.
    """
    if kind == "user":
        queries = normalise_rows(user_items)
        return queries, queries.T.tocsr()
    item_users = user_items.T.tocsr()
    norms = row_norms(item_users)
    queries = scaled_rows(item_users, norms)
    del item_users  # its float32 values; the indices live on in queries
    targets = sp.csr_matrix(
        (
            normalised_values(user_items.data, norms, user_items.indices),
            user_items.indices,
            user_items.indptr,
        ),
        shape=user_items.shape,
    )
    return queries, targets


def binary_space(
    user_items: sp.csr_matrix, kind: str
) -> tuple[sp.csr_matrix, sp.csr_matrix, np.ndarray] | None:
    """`normalised_space` without the normalised copies, for binary data.

    When every stored weight is the same value v, every value of a
    normalised query row r is `v / norm[r]`, and every value of a target
    column t is `v / norm[t]` (the same vector: queries and targets are
    the same objects, items or users). The kernels then take those
    per-row weights instead of float64 copies of the matrices, computing
    the same products (the same float64 division, then the same
    multiplication), so the similarities are bit-identical.

    Args:
        user_items: users x items CSR with sorted indices.
        kind: "item" or "user".

    Returns:
        (queries, targets, weights): the structures of the queries and
        targets (their values are not read; the queries' are the input's
        own) and the float64 weight of each query row (= target column),
        or None when the weights are not all equal.
    """
    data = user_items.data
    if len(data) == 0 or not np.all(data == data[0]):
        return None
    if kind == "user":
        queries = user_items
        targets = user_items.T.tocsr()
    else:
        queries = user_items.T.tocsr()
        targets = user_items
    norms = row_norms(queries)
    # Rows without entries (norm 0) have no values to weigh.
    weights = np.zeros(len(norms), dtype=np.float64)
    np.divide(
        np.full(len(norms), data[0], dtype=data.dtype),
        norms,
        out=weights,
        where=norms > 0,
    )
    return queries, targets, weights


def topk_neighbours(
    queries: sp.csr_matrix,
    rows: np.ndarray,
    targets: sp.csr_matrix,
    k: int,
    exclude: np.ndarray | None,
    num_threads: int,
    progress: Any = None,
    ordered: bool = True,
    weights: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs `topk_products` over blocks of `rows` on a thread pool.

    With `weights` (from `binary_space`), the values of `queries` and
    `targets` are not read: query row r's are all `weights[r]`, target
    column t's all `weights[t]`.
    """
    n = len(rows)
    out_idx = np.empty((n, k), dtype=np.int32)
    out_val = np.empty((n, k), dtype=np.float32)
    out_count = np.empty(n, dtype=np.int32)
    exclude = np.full(n, -1, np.int64) if exclude is None else exclude
    if weights is None:
        q = kernel_csr(queries, np.float64)
        b = kernel_csr(targets, np.float64)
        extra: tuple = ()
    else:
        unused = np.zeros(1, dtype=np.float64)
        q = (
            queries.indptr.astype(np.int64, copy=False),
            queries.indices.astype(np.int32, copy=False),
            unused,
        )
        b = (
            targets.indptr.astype(np.int64, copy=False),
            targets.indices.astype(np.int32, copy=False),
            unused,
        )
        weights = np.ascontiguousarray(weights, dtype=np.float64)
        extra = (weights, weights)
    rows = rows.astype(np.int64)
    n_targets = targets.shape[1]

    def block(start: int, stop: int) -> None:
        load_kernels().topk_products(
            *q,
            rows[start:stop],
            *b,
            n_targets,
            k,
            exclude[start:stop],
            out_idx[start:stop],
            out_val[start:stop],
            out_count[start:stop],
            ordered,
            *extra,
        )

    _blocks.run_blocks(n, _FIT_BLOCK, block, num_threads, progress)
    return out_idx, out_val, out_count


def dense_to_csr(
    idx: np.ndarray,
    val: np.ndarray,
    count: np.ndarray,
    n_cols: int,
    sorted_rows: bool = False,
) -> sp.csr_matrix:
    """The CSR matrix of `topk_neighbours`' output.

    `sorted_rows`: each row's entries are already by index (`ordered=
    False`), so they are neither re-sorted nor, when every row is full,
    copied.
    """
    n, k = idx.shape
    if sorted_rows and bool(np.all(count == k)):
        indptr = np.arange(0, n * k + 1, k, dtype=np.int64)
        data, indices = val.reshape(-1), idx.reshape(-1)
    else:
        keep = np.arange(k)[None, :] < count[:, None]
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(count, out=indptr[1:])
        data, indices = val[keep], idx[keep]
    matrix = sp.csr_matrix((data, indices, indptr), shape=(n, n_cols))
    if sorted_rows:
        matrix.has_sorted_indices = True
    else:
        matrix.sort_indices()
    return matrix
