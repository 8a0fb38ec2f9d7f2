"""The neighbour arithmetic of `CosineRecommender`: norms and top-k graphs.

L2 normalisation (float64 and a division, as implicit does, so every
similarity is bit-identical to its) and the blocked, threaded top-k over
the compiled kernels. The estimator (`cosine.py`) calls these on sparse
matrices it has validated.
"""

from typing import Any

import numpy as np
import scipy.sparse as sp

from aiservice_kit.recommenders import _blocks

#: Rows of the queries per block of `topk_neighbours`.
_FIT_BLOCK = 256


def load_kernels():
    """The compiled kernels (a Cython extension built at install).

    Raises:
        ImportError: the extension was not built, e.g. a source checkout
            used without `pip install -e .`.
    """
    try:
        from aiservice_kit.recommenders import _kernels as kernels
    except ImportError as error:
        raise ImportError(
            "CosineRecommender's compiled kernels "
            "(aiservice_kit.recommenders._kernels) are not built. Install "
            "a wheel, or build from source with `pip install -e .` (needs "
            "a C++ compiler and the Python headers)."
        ) from error
    return kernels


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


def topk_neighbours(
    queries: sp.csr_matrix,
    rows: np.ndarray,
    targets: sp.csr_matrix,
    k: int,
    exclude: np.ndarray | None,
    num_threads: int,
    progress: Any = None,
    ordered: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs `topk_products` over blocks of `rows` on a thread pool."""
    n = len(rows)
    out_idx = np.empty((n, k), dtype=np.int32)
    out_val = np.empty((n, k), dtype=np.float32)
    out_count = np.empty(n, dtype=np.int32)
    exclude = np.full(n, -1, np.int64) if exclude is None else exclude
    q = kernel_csr(queries, np.float64)
    b = kernel_csr(targets, np.float64)
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
        )

    _blocks.run_blocks(n, _FIT_BLOCK, block, num_threads, progress)
    return out_idx, out_val, out_count


def dense_to_csr(
    idx: np.ndarray, val: np.ndarray, count: np.ndarray, n_cols: int
) -> sp.csr_matrix:
    keep = np.arange(idx.shape[1])[None, :] < count[:, None]
    indptr = np.zeros(len(count) + 1, dtype=np.int64)
    np.cumsum(count, out=indptr[1:])
    matrix = sp.csr_matrix(
        (val[keep], idx[keep], indptr), shape=(len(count), n_cols)
    )
    matrix.sort_indices()
    return matrix
