"""`CosineRecommender`: item- or user-based nearest neighbours on cosine.

Semantics (configured alike, they reproduce implicit 0.7's
`CosineRecommender`):

- Item vectors (columns of the users x items matrix) are L2-normalised;
  the similarity of two items is the dot product of their vectors.
- Each item keeps its `n_neighbors` most similar items (itself included,
  as in implicit, where an item is its own nearest neighbour with
  similarity 1.0); ties go to the lower item index.
- A user's score for an item is the sum over the user's items of
  weight x similarity. The user-based kind swaps the roles: users are
  normalised, each keeps `n_neighbors` neighbours, and the score of an
  item is the sum over neighbours of similarity x their weight for it.

Where it differs from implicit (see docs/recommenders.md): liked items are
never returned; `top_k` slots are back-filled by popularity (score 0.0)
when too few items are scored; unknown users get the popular items.
"""

import os
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from aiservice_kit import _validation
from aiservice_kit.exceptions import ExportError
from aiservice_kit.exceptions import NotFittedError
from aiservice_kit.recommenders import _blocks
from aiservice_kit.recommenders import interactions as _interactions
from aiservice_kit.recommenders._params import ParamsMixin

_SAVE_FORMAT = 1


def _kernels():
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


# Fits whose scatter-add work (sum over users of their item count squared,
# or over items for the user kind) exceeds this show a progress bar when
# `show_progress=None` (a few seconds on one core).
_PROGRESS_WORK = 500_000_000
_FIT_BLOCK = 256
_RECOMMEND_BLOCK = 1024


def _pad_value(ids: np.ndarray) -> Any:
    if ids.dtype.kind in "iu":
        return -1
    if ids.dtype.kind == "U":
        return ""
    return None


def _normalise_ids(ids: np.ndarray) -> np.ndarray:
    """Stores ids as int64 or unicode when they all are, else object."""
    if ids.dtype.kind in "iu":
        return ids.astype(np.int64)
    if ids.dtype.kind in "US":
        return ids.astype(str)
    values = ids.tolist()
    if values and all(isinstance(v, str) for v in values):
        return np.array(values, dtype=str)
    if values and all(_interactions.is_integer_like(v) for v in values):
        return np.array(values, dtype=np.int64)
    return ids


def _check_sparse(name: str, matrix: Any, n_cols: int | None) -> sp.csr_array:
    if not sp.issparse(matrix):
        raise TypeError(
            f"`{name}` must be a scipy sparse matrix (users x items), e.g. "
            "scipy.sparse.csr_matrix(dense), or (user_ids, item_ids[, "
            f"weights]) triples. Received: {name} of type "
            f"{type(matrix).__name__}"
        )
    if matrix.ndim != 2:
        raise ValueError(
            f"`{name}` must be 2-D (users x items). "
            f"Received: {name} with shape {matrix.shape}"
        )
    if matrix.dtype.kind not in "biuf":
        raise TypeError(
            f"`{name}` must hold numbers. Received: dtype {matrix.dtype}"
        )
    if n_cols is not None and matrix.shape[1] != n_cols:
        raise ValueError(
            f"`{name}` must have one column per fitted item ({n_cols}). "
            f"Received: {name} with shape {matrix.shape}"
        )
    # A canonical float32 CSR input is used as is (no copy, as
    # scikit-learn's neighbours estimators keep their training data);
    # anything else is converted into a new matrix, never fixed in place.
    csr = sp.csr_matrix(matrix, dtype=np.float32, copy=False)
    if csr.nnz and not np.isfinite(csr.data).all():
        raise ValueError(f"`{name}` must be finite. Received: NaN or inf")
    if csr.nnz and csr.data.min() < 0:
        raise ValueError(
            f"`{name}` must hold weights >= 0. "
            f"Received: minimum {csr.data.min()}"
        )
    if not csr.has_canonical_format or (csr.nnz and not csr.data.all()):
        csr = csr.copy() if csr.data is getattr(matrix, "data", None) else csr
        csr.sum_duplicates()
        csr.eliminate_zeros()
    return csr


def _kernel_csr(
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


def _normalised_values(
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


def _row_norms(matrix: sp.csr_matrix) -> np.ndarray:
    squares = sp.csr_matrix(
        (matrix.data**2, matrix.indices, matrix.indptr), shape=matrix.shape
    ).sum(axis=1)
    return np.sqrt(np.asarray(squares, dtype=np.float64).ravel())


def _row_of_entries(matrix: sp.csr_matrix) -> np.ndarray:
    counts = np.diff(matrix.indptr)
    return np.repeat(np.arange(matrix.shape[0], dtype=np.int32), counts)


def _scaled_rows(matrix: sp.csr_matrix, norms: np.ndarray) -> sp.csr_matrix:
    """Each row divided by its norm (float64), sharing the index arrays."""
    values = _normalised_values(matrix.data, norms, _row_of_entries(matrix))
    return sp.csr_matrix(
        (values, matrix.indices, matrix.indptr), shape=matrix.shape
    )


def _normalise_rows(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """Each row scaled to unit L2 norm (float64), sharing the indices."""
    return _scaled_rows(matrix, _row_norms(matrix))


def _normalised_space(
    user_items: sp.csr_matrix, kind: str
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """L2-normalised (queries, targets) for item or user similarity.

    Item kind: queries are items x users, targets users x items, both
    holding the item-normalised values; the targets reuse the index arrays
    of `user_items`, so only new values are allocated. User kind: queries
    are the user-normalised users x items, targets their transpose.
    """
    if kind == "user":
        queries = _normalise_rows(user_items)
        return queries, queries.T.tocsr()
    item_users = user_items.T.tocsr()
    norms = _row_norms(item_users)
    queries = _scaled_rows(item_users, norms)
    del item_users  # its float32 values; the indices live on in queries
    targets = sp.csr_matrix(
        (
            _normalised_values(user_items.data, norms, user_items.indices),
            user_items.indices,
            user_items.indptr,
        ),
        shape=user_items.shape,
    )
    return queries, targets


def _topk_neighbours(
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
    q = _kernel_csr(queries, np.float64)
    b = _kernel_csr(targets, np.float64)
    rows = rows.astype(np.int64)
    n_targets = targets.shape[1]

    def block(start: int, stop: int) -> None:
        _kernels().topk_products(
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


def _dense_to_csr(
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


class CosineRecommender(ParamsMixin):
    """Item- or user-based nearest-neighbour recommender on cosine.

    Configured alike (`kind="item"`, `n_neighbors=K`), its scores are those
    of implicit 0.7's `CosineRecommender(K=K)`: item vectors L2-normalised,
    the `n_neighbors` most similar items kept per item (the item itself
    included, as implicit does), and a user's score for an item the sum over
    the user's items of weight x similarity. Unlike implicit, items the
    user already has are never returned, `top_k` slots are always filled
    while unseen items remain (back-filled by popularity with score 0.0,
    which no scored item can have), and unknown users or empty histories
    get the most popular items.

    Args:
        kind: str. `"item"` (item-item neighbours, the default) or `"user"`
            (user-user neighbours).
        n_neighbors: int >= 1. Neighbours kept per item (or user), the
            item itself included. Default 20, implicit's default, so
            results match it out of the box: on MovieLens (ratings >= 4,
            leave-last-5-out) item-based NDCG@10 stays within 0.057-0.059
            from 10 to 200 neighbours, so the smaller graph (less memory,
            faster fit) costs nothing. The user kind gains a little from
            more (100 was best there).
        num_threads: int >= 0. Threads for `fit` and `recommend`; 0 uses
            every core this process may use.
        show_progress: bool or None. Show a tqdm progress bar during `fit`;
            None shows it only for large fits (several seconds of work).

    Attributes:
        user_ids_: np.ndarray. The fitted user ids (row i of the matrix).
        item_ids_: np.ndarray. The fitted item ids (column j).
        user_items_: scipy.sparse.csr_matrix. The fitted users x items
            weights (float32), used as histories by `recommend`. A
            canonical float32 CSR input is kept as is, not copied (as
            scikit-learn's neighbours estimators do): do not modify it
            after `fit`.
        similarity_: scipy.sparse.csr_matrix. The neighbour graph: items x
            items (kind "item") or users x users (kind "user"), float32,
            at most `n_neighbors` entries per row.
        item_popularity_: np.ndarray. Number of users per item.
        popular_items_: np.ndarray. Item indices, most popular first (ties
            to the lower index): the back-fill and cold-start order.

    Example:
    ```python
    import scipy.sparse as sp
    from aiservice_kit import CosineRecommender

    user_items = sp.random(100, 40, density=0.1, format="csr", random_state=0)
    model = CosineRecommender(n_neighbors=10).fit(user_items)
    item_ids, scores = model.recommend([0, 1, 2], top_k=5)
    ```
    """

    def __init__(
        self,
        kind: str = "item",
        n_neighbors: int = 20,
        *,
        num_threads: int = 0,
        show_progress: bool | None = None,
    ) -> None:
        self.kind = kind
        self.n_neighbors = n_neighbors
        self.num_threads = num_threads
        self.show_progress = show_progress

    # ------------------------------------------------------------------ fit

    def _check_params(self) -> None:
        _validation.check_choice("kind", self.kind, ("item", "user"))
        _validation.check_positive_int("n_neighbors", self.n_neighbors)
        _validation.check_positive_int(
            "num_threads", self.num_threads, minimum=0
        )
        if self.show_progress is not None:
            _validation.check_bool("show_progress", self.show_progress)

    def _threads(self) -> int:
        return self.num_threads or _blocks.default_num_threads()

    def fit(self, X: Any, y: None = None) -> "CosineRecommender":
        """Builds the neighbour graph from interactions.

        Args:
            X: the interactions, one of: a scipy sparse users x items
                matrix of non-negative weights (ids are then row and column
                numbers); a `(user_ids, item_ids)` or `(user_ids, item_ids,
                weights)` tuple of 1-D arrays whose ids may be any hashable
                values (strings included); or an `interactions.Ratings`
                (its ratings are the weights; threshold them first with
                `load_movielens_ratings(min_rating=...)`/`to_implicit`).
            y: None. Ignored (scikit-learn convention).

        Returns:
            self.

        Raises:
            TypeError: on a dense array, non-numeric weights or non-hashable
                ids.
            ValueError: on negative or non-finite weights, mismatched
                lengths, an empty matrix, or invalid parameters.

        Example:
        ```python
        model = CosineRecommender().fit(
            (["ann", "ann", "bob"], ["x", "y", "x"])
        )
        ```
        """
        self._check_params()
        if isinstance(X, _interactions.Ratings):
            X = (X.user_ids, X.item_ids, X.ratings)
        if sp.issparse(X):
            matrix = _check_sparse("X", X, None)
            users = np.arange(matrix.shape[0], dtype=np.int64)
            items = np.arange(matrix.shape[1], dtype=np.int64)
        elif isinstance(X, tuple) and len(X) in (2, 3):
            matrix, users, items = _interactions.encode_interactions(*X)
            users = _normalise_ids(users)
            items = _normalise_ids(items)
        else:
            raise TypeError(
                "`X` must be a scipy sparse users x items matrix, a "
                "(user_ids, item_ids[, weights]) tuple or a Ratings. "
                f"Received: X of type {type(X).__name__}"
            )
        if matrix.shape[0] == 0 or matrix.shape[1] == 0 or matrix.nnz == 0:
            raise ValueError(
                "`X` must hold at least one interaction with a positive "
                f"weight. Received: shape {matrix.shape}, nnz {matrix.nnz}"
            )
        matrix.sort_indices()
        k = self.n_neighbors
        queries, targets = _normalised_space(matrix, self.kind)
        per_row = np.diff(targets.indptr).astype(np.float64)
        n = queries.shape[0]
        work = float((per_row**2).sum())
        show = (
            work > _PROGRESS_WORK
            if self.show_progress is None
            else self.show_progress
        )
        progress = None
        if show:
            from tqdm import tqdm

            progress = tqdm(
                total=n, desc=f"CosineRecommender.fit ({self.kind}s)"
            )
        try:
            idx, val, count = _topk_neighbours(
                queries,
                np.arange(n),
                targets,
                min(k, n),
                None,
                self._threads(),
                progress,
                ordered=False,
            )
        finally:
            if progress is not None:
                progress.close()
        del queries, targets  # free the normalised copies first
        self.similarity_ = _dense_to_csr(idx, val, count, n)
        self.user_items_ = matrix
        self.user_ids_ = users
        self.item_ids_ = items
        self._set_popularity()
        self._cache = {}
        return self

    def _set_popularity(self) -> None:
        counts = np.bincount(
            self.user_items_.indices, minlength=self.user_items_.shape[1]
        ).astype(np.int64)
        self.item_popularity_ = counts
        self.popular_items_ = np.argsort(-counts, kind="stable").astype(
            np.int64
        )

    def _check_fitted(self) -> None:
        if not hasattr(self, "similarity_"):
            raise NotFittedError(
                "This CosineRecommender is not fitted yet. Call `fit` with "
                "the interactions first."
            )

    def _space(self, kind: str) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        """Normalised (queries, targets) for item or user similarity."""
        cache = getattr(self, "_cache", None)
        if cache is None:
            cache = self._cache = {}
        if kind not in cache:
            cache[kind] = _normalised_space(self.user_items_, kind)
        return cache[kind]

    # ------------------------------------------------------------ recommend

    def _histories(
        self, user_items: Any, n_users: int | None, unknown_items: str
    ) -> sp.csr_matrix:
        """New histories as a CSR matrix over the fitted items."""
        n_items = len(self.item_ids_)
        if sp.issparse(user_items):
            matrix = _check_sparse("user_items", user_items, n_items)
        elif isinstance(user_items, Sequence) and not isinstance(
            user_items, (str, bytes)
        ):
            lengths = []
            flat: list = []
            for items in user_items:
                if isinstance(items, (str, bytes)) or not hasattr(
                    items, "__len__"
                ):
                    raise TypeError(
                        "`user_items` must be a sequence of item-id "
                        "sequences (one per user). Received an entry of "
                        f"type {type(items).__name__}"
                    )
                lengths.append(len(items))
                flat.extend(items)
            # One vectorised lookup for the whole batch.
            positions = (
                _interactions.lookup(
                    self.item_ids_,
                    flat,
                    name="user_items",
                    unknown=unknown_items,
                )
                if flat
                else np.empty(0, np.int64)
            )
            rows = np.repeat(np.arange(len(lengths)), lengths)
            keep = positions >= 0
            matrix = sp.csr_matrix(
                (
                    np.ones(int(keep.sum()), np.float32),
                    (rows[keep], positions[keep]),
                ),
                shape=(len(user_items), n_items),
            )
            matrix.sum_duplicates()
        else:
            raise TypeError(
                "`user_items` must be a scipy sparse matrix (users x fitted "
                "items) or a sequence of item-id sequences. "
                f"Received: user_items of type {type(user_items).__name__}"
            )
        if n_users is not None and matrix.shape[0] != n_users:
            raise ValueError(
                "`user_items` must have one row per entry of `user_ids`. "
                f"Received: {matrix.shape[0]} rows for {n_users} users"
            )
        return matrix

    def _user_positions(self, user_ids: Any) -> tuple[np.ndarray, bool]:
        scalar = np.ndim(user_ids) == 0 and not isinstance(
            user_ids, (list, tuple)
        )
        if scalar:
            if isinstance(user_ids, (float, np.floating)):
                raise TypeError(
                    "`user_ids` must be a user id or a 1-D array of them. "
                    f"Received: user_ids={user_ids!r}"
                )
            ids = np.empty(1, dtype=object)
            ids[0] = user_ids.item() if hasattr(user_ids, "item") else user_ids
            ids = _normalise_ids(ids)
        else:
            ids = user_ids
        positions = _interactions.lookup(
            self.user_ids_, ids, name="user_ids", unknown="ignore"
        )
        return positions, scalar

    def recommend(
        self,
        user_ids: Any,
        top_k: int = 10,
        *,
        user_items: Any = None,
        exclude_liked: bool = True,
        backfill: bool = True,
        unknown_items: str = "error",
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k items for one user or a batch of users (vectorised).

        Args:
            user_ids: a user id or a 1-D array of them; may be None when
                `user_items` is given. Users unknown to `fit` (cold start)
                with no `user_items` get the most popular items, score 0.0.
            top_k: int >= 1. Items per user.
            user_items: None, a scipy sparse matrix (one row per user, one
                column per fitted item) or a sequence of item-id sequences:
                histories to use instead of the fitted ones.
            exclude_liked: bool. Never return items in the user's history
                (implicit's `filter_already_liked_items`, but the items are
                truly removed rather than given score 0).
            backfill: bool. Fill slots that no neighbour scored with popular
                unseen items (score 0.0); False leaves them padded.
            unknown_items: str. `"error"` or `"ignore"` item ids in
                `user_items` that `fit` never saw.

        Returns:
            `(item_ids, scores)`: arrays of shape `(n_users, top_k)` (1-D
            for a single user id) of item ids (the fitted ids) and float32
            scores, best first, ties to the lower item index. Score 0.0
            marks a back-filled item (every neighbour score is > 0). Slots
            left when no unseen item remains hold -1 (int ids), "" (string
            ids) or None, with score 0.0.

        Raises:
            NotFittedError: before `fit`.
            TypeError: on wrongly typed ids or histories.
            ValueError: on `top_k` < 1, shape mismatches or unknown items.

        Example:
        ```python
        item_ids, scores = model.recommend(["ann", "bob"], top_k=5)
        backfilled = scores == 0.0
        ```
        """
        self._check_fitted()
        top_k = _validation.check_positive_int("top_k", top_k)
        _validation.check_bool("exclude_liked", exclude_liked)
        _validation.check_bool("backfill", backfill)
        _validation.check_choice(
            "unknown_items", unknown_items, ("error", "ignore")
        )
        scalar = False
        if user_ids is None:
            if user_items is None:
                raise ValueError(
                    "`user_ids` may be None only when `user_items` is "
                    "given. Received: user_ids=None, user_items=None"
                )
            positions = None
        else:
            positions, scalar = self._user_positions(user_ids)
        n_users = None if positions is None else len(positions)
        if user_items is None:
            liked = self._rows(self.user_items_, positions)
            if self.kind == "item":
                history = liked
            else:
                history = self._rows(self.similarity_, positions)
        else:
            liked = self._histories(user_items, n_users, unknown_items)
            if self.kind == "item":
                history = liked
            else:
                history = self._neighbours_of(liked)
        graph = self.similarity_ if self.kind == "item" else self.user_items_
        idx, val = self._score(
            history, graph, liked, top_k, exclude_liked, backfill
        )
        item_ids = self._to_ids(self.item_ids_, idx)
        if scalar:
            return item_ids[0], val[0]
        return item_ids, val

    @staticmethod
    def _rows(matrix: sp.csr_matrix, positions: np.ndarray) -> sp.csr_matrix:
        """Rows of `matrix`, empty rows where the position is -1."""
        valid = positions >= 0
        rows = matrix[np.where(valid, positions, 0)]
        if not valid.all():
            rows = sp.csr_matrix(sp.diags(valid.astype(np.float32)) @ rows)
            rows.eliminate_zeros()
        return sp.csr_matrix(rows)

    def _neighbours_of(self, histories: sp.csr_matrix) -> sp.csr_matrix:
        """User-kind: nearest fitted users of new histories."""
        _, targets = self._space("user")  # items x users
        queries = _normalise_rows(histories)
        n_users = len(self.user_ids_)
        k = min(self.n_neighbors, n_users)
        idx, val, count = _topk_neighbours(
            queries,
            np.arange(queries.shape[0]),
            targets,
            k,
            None,
            self._threads(),
        )
        return _dense_to_csr(idx, val, count, n_users)

    def _score(
        self,
        history: sp.csr_matrix,
        graph: sp.csr_matrix,
        liked: sp.csr_matrix,
        top_k: int,
        exclude_liked: bool,
        backfill: bool,
    ) -> tuple[np.ndarray, np.ndarray]:
        n = history.shape[0]
        n_items = len(self.item_ids_)
        out_idx = np.empty((n, top_k), dtype=np.int32)
        out_val = np.empty((n, top_k), dtype=np.float32)
        g = _kernel_csr(graph)
        popular = self.popular_items_

        def block(start: int, stop: int) -> None:
            h = _kernel_csr(history[start:stop])
            x = _kernel_csr(liked[start:stop])
            _kernels().score_and_select(
                *h,
                *g,
                x[0],
                x[1],
                n_items,
                top_k,
                exclude_liked,
                popular,
                backfill,
                out_idx[start:stop],
                out_val[start:stop],
            )

        _blocks.run_blocks(n, _RECOMMEND_BLOCK, block, self._threads())
        return out_idx, out_val

    @staticmethod
    def _to_ids(vocab: np.ndarray, idx: np.ndarray) -> np.ndarray:
        valid = idx >= 0
        if vocab.dtype.kind == "O":
            out = np.empty(idx.shape, dtype=object)
            out[valid] = vocab[idx[valid]]
            out[~valid] = None
            return out
        out = vocab[np.where(valid, idx, 0)]
        if not valid.all():
            out[~valid] = _pad_value(vocab)
        return out

    # -------------------------------------------------------------- similar

    def _similar(
        self, kind: str, ids: Any, top_k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        self._check_fitted()
        top_k = _validation.check_positive_int("top_k", top_k)
        vocab = self.item_ids_ if kind == "item" else self.user_ids_
        name = "item_ids" if kind == "item" else "user_ids"
        scalar = np.ndim(ids) == 0 and not isinstance(ids, (list, tuple))
        if scalar:
            one = np.empty(1, dtype=object)
            one[0] = ids.item() if hasattr(ids, "item") else ids
            ids = _normalise_ids(one)
        positions = _interactions.lookup(vocab, ids, name=name)
        queries, targets = self._space(kind)
        idx, val, count = _topk_neighbours(
            queries, positions, targets, top_k, positions, self._threads()
        )
        filled = np.arange(top_k)[None, :] < count[:, None]
        idx = np.where(filled, idx, -1)
        val = np.where(filled, val, np.float32(0.0))
        out = self._to_ids(vocab, idx)
        if scalar:
            return out[0], val[0]
        return out, val

    def similar_items(
        self, item_ids: Any, top_k: int = 10
    ) -> tuple[np.ndarray, np.ndarray]:
        """The items most similar to each given item (exact cosine).

        Computed over all items, not only the stored `n_neighbors`, and the
        item itself is left out (implicit returns it first).

        Args:
            item_ids: an item id or a 1-D array of them (fitted ids).
            top_k: int >= 1. Items per query.

        Returns:
            `(item_ids, scores)`, shape `(n, top_k)` (1-D for one id), best
            first. Items sharing no user with the query are not returned:
            those slots hold -1 / "" / None with score 0.0.

        Raises:
            NotFittedError: before `fit`.
            ValueError: on unknown ids or `top_k` < 1.

        Example:
        ```python
        neighbours, similarity = model.similar_items("x", top_k=3)
        ```
        """
        return self._similar("item", item_ids, top_k)

    def similar_users(
        self, user_ids: Any, top_k: int = 10
    ) -> tuple[np.ndarray, np.ndarray]:
        """The users most similar to each given user (exact cosine).

        Args:
            user_ids: a user id or a 1-D array of them (fitted ids).
            top_k: int >= 1. Users per query.

        Returns:
            `(user_ids, scores)` as in `similar_items`, the user itself
            left out.

        Raises:
            NotFittedError: before `fit`.
            ValueError: on unknown ids or `top_k` < 1.

        Example:
        ```python
        neighbours, similarity = model.similar_users("ann", top_k=3)
        ```
        """
        return self._similar("user", user_ids, top_k)

    # ----------------------------------------------------------- save/load

    def save(self, path: str | os.PathLike) -> None:
        """Writes the fitted model to a `.npz` file (no pickle).

        Args:
            path: str or path-like. The file; `.npz` is appended when
                missing (as numpy does).

        Raises:
            NotFittedError: before `fit`.
            TypeError: if the ids are neither all integers nor all strings
                (other hashables would need pickle).

        Example:
        ```python
        model.save("model.npz")
        same = CosineRecommender.load("model.npz")
        ```
        """
        self._check_fitted()
        arrays = {}
        named_ids = (("user_ids", self.user_ids_), ("item_ids", self.item_ids_))
        for name, ids in named_ids:
            ids = _normalise_ids(ids)
            if ids.dtype.kind not in "iuU":
                raise TypeError(
                    f"`save` needs {name} that are all integers or all "
                    "strings, to store them without pickle. Received ids "
                    f"of types {sorted({type(v).__name__ for v in ids})}"
                )
            arrays[name] = ids
        for name, matrix in (
            ("user_items", self.user_items_),
            ("similarity", self.similarity_),
        ):
            arrays[f"{name}_indptr"] = matrix.indptr.astype(np.int64)
            arrays[f"{name}_indices"] = matrix.indices.astype(np.int32)
            arrays[f"{name}_data"] = matrix.data.astype(np.float32)
            arrays[f"{name}_shape"] = np.asarray(matrix.shape, np.int64)
        arrays["format_version"] = np.asarray(_SAVE_FORMAT)
        arrays["kind"] = np.asarray(self.kind)
        arrays["n_neighbors"] = np.asarray(self.n_neighbors)
        arrays["num_threads"] = np.asarray(self.num_threads)
        arrays["show_progress"] = np.asarray(
            -1 if self.show_progress is None else int(self.show_progress)
        )
        np.savez(os.fspath(path), **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CosineRecommender":
        """Reads a model written by `save` (with `allow_pickle=False`).

        Args:
            path: str or path-like. The `.npz` file (the suffix may be
                omitted).

        Returns:
            A fitted `CosineRecommender` giving identical results.

        Raises:
            FileNotFoundError: if the file does not exist.
            ValueError: if the file is not a saved CosineRecommender.

        Example:
        ```python
        model = CosineRecommender.load("model.npz")
        ```
        """
        path = os.fspath(path)
        if not os.path.exists(path) and os.path.exists(path + ".npz"):
            path = path + ".npz"
        with np.load(path, allow_pickle=False) as data:
            if "format_version" not in data or "similarity_data" not in data:
                raise ValueError(
                    "`path` must be a file written by CosineRecommender."
                    f"save. Received: path={path!r}"
                )
            progress = int(data["show_progress"])
            model = cls(
                kind=str(data["kind"]),
                n_neighbors=int(data["n_neighbors"]),
                num_threads=int(data["num_threads"]),
                show_progress=None if progress < 0 else bool(progress),
            )
            matrices = {}
            for name in ("user_items", "similarity"):
                matrices[name] = sp.csr_matrix(
                    (
                        data[f"{name}_data"],
                        data[f"{name}_indices"],
                        data[f"{name}_indptr"],
                    ),
                    shape=tuple(int(v) for v in data[f"{name}_shape"]),
                )
            model.user_ids_ = data["user_ids"]
            model.item_ids_ = data["item_ids"]
        model.user_items_ = matrices["user_items"]
        model.similarity_ = matrices["similarity"]
        model._set_popularity()
        model._cache = {}
        return model

    # --------------------------------------------------------------- export

    def _serving_module(self, top_k: int):
        """A tf.Module whose `serve` reproduces `recommend(user_items=...)`."""
        import tensorflow as tf

        if self.kind != "item":
            raise ExportError(
                "`export` supports kind='item' only: a user-based model "
                "needs the whole interaction matrix at serving time. "
                f"Received: kind={self.kind!r}"
            )
        vocab = _normalise_ids(self.item_ids_)
        if vocab.dtype.kind not in "iuU":
            raise ExportError(
                "`export` needs item ids that are all integers or all "
                "strings. Received ids of types "
                f"{sorted({type(v).__name__ for v in vocab})}"
            )
        return _build_module(
            tf,
            vocab,
            self.similarity_,
            self.popular_items_,
            top_k,
        )

    def export(
        self,
        base_path: str | os.PathLike,
        version: int | None = None,
        top_k: int = 10,
    ) -> pathlib.Path:
        """Writes a servable SavedModel of TensorFlow ops (`base/<N>/`).

        The `serving_default` signature takes `item_ids` ([batch, None]
        int64 or string, matching the fitted ids, padded with -1 or "";
        padding and unknown ids are ignored) and returns `item_ids`
        ([batch, top_k]) and `scores` (float32 [batch, top_k]), the same
        as `recommend(None, top_k, user_items=..., unknown_items="ignore")`
        with the default exclusion and back-fill. The graph's memory is the
        neighbour table (items x n_neighbors) plus a dense [batch, items]
        score buffer per request.

        Args:
            base_path: str or path-like. The model's base directory.
            version: int or None. The version (None: latest + 1).
            top_k: int >= 1. Items returned per request row.

        Returns:
            pathlib.Path of the published version directory.

        Raises:
            NotFittedError: before `fit`.
            ExportError: for kind "user" or ids that are neither all
                integers nor all strings.

        Example:
        ```python
        version_dir = model.export("models/recommender")
        ```
        """
        import tensorflow as tf

        from aiservice_kit import export as _export

        self._check_fitted()
        top_k = _validation.check_positive_int("top_k", top_k)
        module = self._serving_module(top_k)
        dtype = "string" if module.id_dtype == tf.string else "int64"

        def write(tmp_dir):
            tf.saved_model.save(
                module,
                os.fspath(tmp_dir),
                signatures={"serving_default": module.serve},
            )

        metadata = {
            "task": "recommendation",
            "class_names": None,
            "inputs": {"item_ids": {"dtype": dtype, "shape": [None, None]}},
            "outputs": {
                "item_ids": {"dtype": dtype, "shape": [None, top_k]},
                "scores": {"dtype": "float32", "shape": [None, top_k]},
            },
        }
        return _export.write_versioned_saved_model(
            base_path, version, write, metadata
        )


def _build_module(tf, vocab, similarity, popular, top_k):
    """Builds the serving tf.Module (item kind) from fitted arrays."""
    n_items = len(vocab)
    width = max(1, int(np.diff(similarity.indptr).max(initial=0)))
    counts = np.diff(similarity.indptr)
    # Neighbour table padded with the dummy item n_items (similarity 0).
    table_idx = np.full((n_items + 1, width), n_items, dtype=np.int64)
    table_val = np.zeros((n_items + 1, width), dtype=np.float32)
    mask = np.arange(width)[None, :] < counts[:, None]
    table_idx[:n_items][mask] = similarity.indices
    table_val[:n_items][mask] = similarity.data
    pop_rank = np.empty(n_items, dtype=np.float32)
    pop_rank[popular] = np.arange(n_items, dtype=np.float32)
    id_dtype = tf.string if vocab.dtype.kind == "U" else tf.int64
    pad = "" if vocab.dtype.kind == "U" else -1
    k_eff = min(top_k, n_items)

    class RecommenderModule(tf.Module):
        def __init__(self):
            super().__init__(name="cosine_recommender")
            self.id_dtype = id_dtype
            keys = tf.constant(
                vocab.tolist() if vocab.dtype.kind == "U" else vocab,
                dtype=id_dtype,
            )
            self.table = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(
                    keys, tf.range(n_items, dtype=tf.int64)
                ),
                default_value=-1,
            )
            self.vocab = tf.Variable(keys, trainable=False, name="vocab")
            self.neighbour_idx = tf.Variable(
                table_idx, trainable=False, name="neighbour_idx"
            )
            self.neighbour_val = tf.Variable(
                table_val, trainable=False, name="neighbour_val"
            )
            self.backfill_key = tf.Variable(
                np.concatenate([-1.0 - pop_rank, [-np.inf]]).astype(np.float32),
                trainable=False,
                name="backfill_key",
            )

        @tf.function(
            input_signature=[
                tf.TensorSpec([None, None], id_dtype, name="item_ids")
            ]
        )
        def serve(self, item_ids):
            idx = self.table.lookup(item_ids)
            # Sort each row so sums run in the Python object's order.
            idx = tf.where(idx >= 0, idx, tf.constant(n_items, tf.int64))
            idx = tf.sort(idx, axis=1)
            batch = tf.shape(idx)[0]
            width_in = tf.shape(idx)[1]
            nb_idx = tf.gather(self.neighbour_idx, idx)  # [B, L, W]
            nb_val = tf.gather(self.neighbour_val, idx)
            rows = tf.range(batch, dtype=tf.int64)[:, None, None]
            segments = rows * (n_items + 1) + nb_idx
            n_segments = tf.cast(batch, tf.int64) * (n_items + 1)
            scores = tf.math.unsorted_segment_sum(
                tf.reshape(nb_val, [-1]),
                tf.reshape(segments, [-1]),
                n_segments,
            )
            scores = tf.reshape(scores, [batch, n_items + 1])
            liked_segments = (
                tf.range(batch, dtype=tf.int64)[:, None] * (n_items + 1) + idx
            )
            liked = tf.math.unsorted_segment_max(
                tf.ones([batch * width_in], tf.float32),
                tf.reshape(liked_segments, [-1]),
                n_segments,
            )
            liked = tf.reshape(liked, [batch, n_items + 1]) > 0
            key = tf.where(
                scores > 0,
                scores,
                tf.broadcast_to(self.backfill_key, tf.shape(scores)),
            )
            key = tf.where(liked, tf.constant(-np.inf, tf.float32), key)
            values, indices = tf.math.top_k(key[:, :n_items], k=k_eff)
            found = values > -np.inf
            out_scores = tf.where(values > 0, values, 0.0)
            out_ids = tf.where(
                found,
                tf.gather(self.vocab, indices),
                tf.constant(pad, dtype=id_dtype),
            )
            if k_eff < top_k:
                extra = top_k - k_eff
                out_ids = tf.concat(
                    [
                        out_ids,
                        tf.fill([batch, extra], tf.constant(pad, id_dtype)),
                    ],  # noqa: E501
                    axis=1,
                )
                out_scores = tf.concat(
                    [out_scores, tf.zeros([batch, extra], tf.float32)], axis=1
                )
            return {"item_ids": out_ids, "scores": out_scores}

    return RecommenderModule()
