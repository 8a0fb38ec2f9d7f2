"""`KNNRatingPredictor`: rating prediction from the k nearest neighbours.

The neighbourhood models of surprise (`KNNBasic`, `KNNWithMeans`,
`KNNBaseline`) on the recommenders' own cosine kernels, so both model
families can be compared on the same triples:

- Similarity: cosine of the rating vectors (users, or items with
  `kind="item"`), computed by the compiled `topk_products` kernel that
  `CosineRecommender` uses; each row keeps its `n_candidates` most
  similar rows.
- A rating `r_ui` is predicted from the `n_neighbors` most similar
  candidates of `u` that rated `i` (surprise's rule: the neighbours are
  chosen per item among its raters):
  `base + sum(sim * (r_vi - base_v)) / sum(sim)`, where `base` is 0
  (`centering="none"`, KNNBasic), the row mean (`"mean"`, KNNWithMeans)
  or the baseline `mean + b_u + b_i` (`"baseline"`, KNNBaseline,
  surprise's ALS baseline with its default regularisation).
- Fewer than `min_neighbors` neighbours, or zero total similarity: the
  base alone (the global mean for `"none"`), as surprise falls back.

Predictions are vectorised over pairs (sparse products, no Python loop
per pair) and clipped to the rating scale.
"""

from typing import Any

import numpy as np
import scipy.sparse as sp

from aiservice_kit import _validation
from aiservice_kit.exceptions import NotFittedError
from aiservice_kit.recommenders import _blocks
from aiservice_kit.recommenders import _neighbours
from aiservice_kit.recommenders import _rating_data
from aiservice_kit.recommenders._params import ParamsMixin

_CENTERINGS = ("none", "mean", "baseline")
#: Pairs predicted per step: bounds the sparse temporaries.
_PAIR_BLOCK = 2048
#: Added to the values before the sparse products so that a centred value
#: of exactly 0 keeps its place in the sparsity pattern.
_OFFSET = 1000.0


def _baselines(
    rows: np.ndarray,
    cols: np.ndarray,
    ratings: np.ndarray,
    n_rows: int,
    n_cols: int,
    mean: float,
) -> tuple[np.ndarray, np.ndarray]:
    """surprise's ALS baseline biases (reg_u=15, reg_i=10, 10 sweeps)."""
    b_row = np.zeros(n_rows)
    b_col = np.zeros(n_cols)
    count_row = np.bincount(rows, minlength=n_rows)
    count_col = np.bincount(cols, minlength=n_cols)
    residual = ratings.astype(np.float64) - mean
    for _ in range(10):
        b_row = np.bincount(rows, residual - b_col[cols], minlength=n_rows) / (
            15.0 + count_row
        )
        b_col = np.bincount(cols, residual - b_row[rows], minlength=n_cols) / (
            10.0 + count_col
        )
    return b_row, b_col


class KNNRatingPredictor(ParamsMixin):
    """Neighbour-based rating prediction (surprise's KNN family).

    Args:
        kind: str. `"user"` (neighbours are users who rated the item, the
            default of surprise) or `"item"` (items the user rated).
        n_neighbors: int >= 1. Neighbours per prediction (surprise's `k`,
            40).
        min_neighbors: int >= 1. Below this many, the base alone is
            predicted (surprise's `min_k`).
        centering: str. `"none"` (KNNBasic), `"mean"` (KNNWithMeans) or
            `"baseline"` (KNNBaseline).
        n_candidates: int >= 1 or None. Most similar rows kept per row at
            `fit`; None keeps up to 1000 (all rows on mid-sized data, which
            reproduces surprise's choice exactly).
        rating_scale: (low, high) or None. Ratings outside are refused;
            predictions are clipped to it (None: the observed range).
        num_threads: int >= 0. Threads for the similarity kernel; 0 uses
            every core.

    Attributes:
        user_ids_: np.ndarray. Fitted user ids.
        item_ids_: np.ndarray. Fitted item ids.
        similarity_: scipy CSR (rows x rows). Kept neighbours and cosine
            similarities (users for `kind="user"`, else items).
        global_mean_: float. Mean training rating.
        rating_range_: (low, high). The clipping range.

    Example:
    ```python
    from aiservice_kit.recommenders import KNNRatingPredictor

    model = KNNRatingPredictor(n_neighbors=20).fit(
        (["ann", "ann", "bob", "bob"], ["x", "y", "x", "z"], [5, 3, 4, 2])
    )
    model.predict(["bob"], ["y"])
    ```
    """

    def __init__(
        self,
        kind: str = "user",
        n_neighbors: int = 40,
        *,
        min_neighbors: int = 1,
        centering: str = "none",
        n_candidates: int | None = None,
        rating_scale: tuple[float, float] | None = None,
        num_threads: int = 0,
    ) -> None:
        self.kind = kind
        self.n_neighbors = n_neighbors
        self.min_neighbors = min_neighbors
        self.centering = centering
        self.n_candidates = n_candidates
        self.rating_scale = rating_scale
        self.num_threads = num_threads

    def fit(self, X: Any, y: None = None) -> "KNNRatingPredictor":
        """Computes the neighbour graph and the bases from rating triples.

        Args:
            X: an `interactions.Ratings`, a `(user_ids, item_ids, ratings)`
                tuple or a scipy sparse users x items matrix of ratings.
            y: None. Ignored (scikit-learn convention).

        Returns:
            self.

        Raises:
            TypeError: on wrongly typed data or parameters.
            ValueError: on empty data, NaN/inf ratings, ratings outside
                `rating_scale` or invalid parameters.

        Example:
        ```python
        model = KNNRatingPredictor(centering="baseline").fit(ratings)
        ```
        """
        _validation.check_choice("kind", self.kind, ("user", "item"))
        _validation.check_choice("centering", self.centering, _CENTERINGS)
        _validation.check_positive_int("n_neighbors", self.n_neighbors)
        _validation.check_positive_int("min_neighbors", self.min_neighbors)
        _validation.check_optional_positive_int(
            "n_candidates", self.n_candidates
        )
        _validation.check_positive_int(
            "num_threads", self.num_threads, minimum=0
        )
        scale = _rating_data.check_rating_scale(self.rating_scale)
        users, items, ratings, user_vocab, item_vocab = (
            _rating_data.encode_triples(X, scale)
        )
        self.user_ids_, self.item_ids_ = user_vocab, item_vocab
        self.global_mean_ = float(ratings.astype(np.float64).mean())
        self.rating_range_ = scale or (
            float(ratings.min()),
            float(ratings.max()),
        )
        rows, cols = (users, items) if self.kind == "user" else (items, users)
        n_rows = len(user_vocab if self.kind == "user" else item_vocab)
        n_cols = len(item_vocab if self.kind == "user" else user_vocab)
        # A pair rated more than once counts once, with its mean rating.
        pairs = rows.astype(np.int64) * n_cols + cols
        unique, inverse = np.unique(pairs, return_inverse=True)
        if len(unique) < len(pairs):
            sums = np.bincount(inverse, ratings.astype(np.float64))
            ratings = (sums / np.bincount(inverse)).astype(np.float32)
            rows, cols = unique // n_cols, unique % n_cols
        if self.centering == "baseline":
            self._row_base, self._col_bias = _baselines(
                rows, cols, ratings, n_rows, n_cols, self.global_mean_
            )
            self._row_base = self._row_base + self.global_mean_
            residual = ratings - self._row_base[rows] - self._col_bias[cols]
        elif self.centering == "mean":
            sums = np.bincount(rows, ratings.astype(np.float64), n_rows)
            self._row_base = sums / np.maximum(
                np.bincount(rows, None, n_rows), 1
            )
            self._col_bias = np.zeros(n_cols)
            residual = ratings - self._row_base[rows]
        else:
            self._row_base = np.zeros(n_rows)
            self._col_bias = np.zeros(n_cols)
            residual = ratings.astype(np.float64)
        matrix = sp.csr_matrix(
            (ratings, (rows, cols)), shape=(n_rows, n_cols), dtype=np.float32
        )
        matrix.sum_duplicates()
        matrix.sort_indices()
        # Column-major residuals (+ offset) for the per-pair gathers.
        self._columns = sp.csr_matrix(
            (residual + _OFFSET, (cols, rows)), shape=(n_cols, n_rows)
        )
        self._columns.sum_duplicates()
        candidates = min(n_rows - 1, self.n_candidates or 1000)
        if candidates >= 1:
            queries, targets = _neighbours.normalised_space(matrix, "user")
            idx, val, count = _neighbours.topk_neighbours(
                queries,
                np.arange(n_rows),
                targets,
                candidates,
                np.arange(n_rows, dtype=np.int64),
                self.num_threads or _blocks.default_num_threads(),
            )
            self.similarity_ = _neighbours.dense_to_csr(idx, val, count, n_rows)
        else:
            self.similarity_ = sp.csr_matrix((n_rows, n_rows), dtype=np.float32)
        return self

    def predict(
        self, user_ids: Any, item_ids: Any, *, unknown: str = "error"
    ) -> np.ndarray:
        """Predicted ratings for (user, item) pairs, vectorised.

        Args:
            user_ids: 1-D array-like of user ids (or one id).
            item_ids: 1-D array-like of item ids, one per user id.
            unknown: str. `"error"` raises on ids `fit` never saw;
                `"baseline"` answers such pairs with the global mean, as
                surprise does.

        Returns:
            float32 predictions clipped to the rating scale.

        Raises:
            NotFittedError: before `fit`.
            ValueError: on unknown ids (with `unknown="error"`) or
                mismatched lengths.

        Example:
        ```python
        model.predict(["ann", "bob"], ["x", "y"])
        ```
        """
        if not hasattr(self, "similarity_"):
            raise NotFittedError(
                "This KNNRatingPredictor is not fitted yet. Call `fit` "
                "with the (user, item, rating) triples first."
            )
        _validation.check_choice("unknown", unknown, ("error", "baseline"))
        mode = "error" if unknown == "error" else "ignore"
        users, scalar_u = _rating_data.id_positions(
            self.user_ids_, user_ids, "user_ids", mode
        )
        items, scalar_i = _rating_data.id_positions(
            self.item_ids_, item_ids, "item_ids", mode
        )
        if len(users) != len(items):
            raise ValueError(
                "`user_ids` and `item_ids` must have the same length. "
                f"Received: {len(users)} users and {len(items)} items"
            )
        rows, cols = (users, items) if self.kind == "user" else (items, users)
        out = np.full(len(rows), self.global_mean_, dtype=np.float64)
        known = np.flatnonzero((rows >= 0) & (cols >= 0))
        for start in range(0, len(known), _PAIR_BLOCK):
            chunk = known[start : start + _PAIR_BLOCK]
            out[chunk] = self._predict_known(rows[chunk], cols[chunk])
        out = np.clip(out, *self.rating_range_).astype(np.float32)
        return out[0] if scalar_u and scalar_i else out

    def _predict_known(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        sims = self.similarity_[rows]
        values = self._columns[cols]
        raters = values.copy()
        raters.data[:] = 1.0
        shared = sp.csr_matrix(sims.multiply(raters))
        near = sims.copy()
        near.data[:] = 1.0
        picked = sp.csr_matrix(values.multiply(near))
        shared.sort_indices()
        picked.sort_indices()
        # Same pattern: both are the intersection of the two rows.
        owner = np.repeat(np.arange(len(rows)), np.diff(shared.indptr))
        order = np.lexsort((-shared.data, owner))
        starts = shared.indptr[:-1]
        rank = np.arange(len(order)) - np.repeat(starts, np.diff(shared.indptr))
        keep = order[rank < self.n_neighbors]
        who = owner[keep]
        sim = shared.data[keep].astype(np.float64)
        dev = picked.data[keep].astype(np.float64) - _OFFSET
        n = len(rows)
        num = np.bincount(who, sim * dev, n)
        den = np.bincount(who, sim, n)
        count = np.bincount(who, None, n)
        base = self._row_base[rows] + self._col_bias[cols]
        ok = (count >= self.min_neighbors) & (den > 0)
        if self.centering == "none":
            base = np.where(ok, 0.0, self.global_mean_)
        return base + np.where(ok, num / np.where(ok, den, 1.0), 0.0)
