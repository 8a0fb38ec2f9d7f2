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
from typing import Any

import numpy as np
import scipy.sparse as sp

from aiservice_kit import _validation
from aiservice_kit.exceptions import ExportError
from aiservice_kit.exceptions import NotFittedError
from aiservice_kit.recommenders import _blocks
from aiservice_kit.recommenders import _neighbours
from aiservice_kit.recommenders import _rating_data
from aiservice_kit.recommenders import interactions as _interactions
from aiservice_kit.recommenders._params import ParamsMixin

_SAVE_FORMAT = 1


# Fits whose scatter-add work (sum over users of their item count squared,
# or over items for the user kind) exceeds this show a progress bar when
# `show_progress=None` (a few seconds on one core).
_PROGRESS_WORK = 500_000_000
_RECOMMEND_BLOCK = 1024


def _pad_value(ids: np.ndarray) -> Any:
    if ids.dtype.kind in "iu":
        return -1
    if ids.dtype.kind == "U":
        return ""
    return None


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
            matrix = _rating_data.check_sparse("X", X, None)
            users = np.arange(matrix.shape[0], dtype=np.int64)
            items = np.arange(matrix.shape[1], dtype=np.int64)
        elif isinstance(X, tuple) and len(X) in (2, 3):
            matrix, users, items = _interactions.encode_interactions(*X)
            users = _rating_data.normalise_ids(users)
            items = _rating_data.normalise_ids(items)
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
        # Binary interactions (the usual implicit feedback) need no
        # normalised float64 copies: the kernels take one weight per row.
        binary = _neighbours.binary_space(matrix, self.kind)
        if binary is None:
            queries, targets = _neighbours.normalised_space(matrix, self.kind)
            weights = None
        else:
            queries, targets, weights = binary
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
            idx, val, count = _neighbours.topk_neighbours(
                queries,
                np.arange(n),
                targets,
                min(k, n),
                None,
                self._threads(),
                progress,
                ordered=False,
                weights=weights,
            )
        finally:
            if progress is not None:
                progress.close()
        # Users per item: the row lengths of the items x users side.
        item_users = queries if self.kind == "item" else targets
        popularity = np.diff(item_users.indptr).astype(np.int64)
        del queries, targets, item_users  # free the normalised copies
        self.similarity_ = _neighbours.dense_to_csr(
            idx, val, count, n, sorted_rows=True
        )
        self.user_items_ = matrix
        self.user_ids_ = users
        self.item_ids_ = items
        self._set_popularity(popularity)
        self._cache = {}
        return self

    def _set_popularity(self, counts: np.ndarray | None = None) -> None:
        """Users per item (`counts`, when fit has them) and their order."""
        if counts is None:
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
            cache[kind] = _neighbours.normalised_space(self.user_items_, kind)
        return cache[kind]

    # ------------------------------------------------------------ recommend

    def _histories(
        self, user_items: Any, n_users: int | None, unknown_items: str
    ) -> sp.csr_matrix:
        """New histories as a CSR matrix over the fitted items."""
        return _rating_data.histories_matrix(
            self.item_ids_,
            user_items,
            n_users,
            None,
            explicit=False,
            unknown=unknown_items,
        )

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
            ids = _rating_data.normalise_ids(ids)
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
                column per fitted item) or a sequence with one history per
                user, item ids (weight 1 each, repeats add up) or
                {item_id: weight} mappings: histories to use instead of
                the fitted ones.
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
        queries = _neighbours.normalise_rows(histories)
        n_users = len(self.user_ids_)
        k = min(self.n_neighbors, n_users)
        idx, val, count = _neighbours.topk_neighbours(
            queries,
            np.arange(queries.shape[0]),
            targets,
            k,
            None,
            self._threads(),
        )
        return _neighbours.dense_to_csr(idx, val, count, n_users)

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
        g = _neighbours.kernel_csr(graph)
        popular = self.popular_items_

        def block(start: int, stop: int) -> None:
            h = _neighbours.kernel_csr(history[start:stop])
            x = _neighbours.kernel_csr(liked[start:stop])
            _neighbours.load_kernels().score_and_select(
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
            ids = _rating_data.normalise_ids(one)
        positions = _interactions.lookup(vocab, ids, name=name)
        queries, targets = self._space(kind)
        idx, val, count = _neighbours.topk_neighbours(
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
            ids = _rating_data.normalise_ids(ids)
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
            ValueError: if the path is a directory or the file is not a
                saved CosineRecommender.

        Example:
        ```python
        model = CosineRecommender.load("model.npz")
        ```
        """
        path, archive = _rating_data.open_saved(path, "CosineRecommender")
        with archive as data:
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
        score buffer per request. TensorFlow is imported here, not before
        (the graph lives in `aiservice_kit.export.recommender`).

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
        self._check_fitted()
        top_k = _validation.check_positive_int("top_k", top_k)
        if self.kind != "item":
            raise ExportError(
                "`export` supports kind='item' only: a user-based model "
                "needs the whole interaction matrix at serving time. "
                f"Received: kind={self.kind!r}"
            )
        vocab = _rating_data.normalise_ids(self.item_ids_)
        if vocab.dtype.kind not in "iuU":
            raise ExportError(
                "`export` needs item ids that are all integers or all "
                "strings. Received ids of types "
                f"{sorted({type(v).__name__ for v in vocab})}"
            )
        from aiservice_kit.export import recommender

        return recommender.export_item_neighbours(
            base_path,
            version,
            vocab,
            self.similarity_,
            self.popular_items_,
            top_k,
        )
