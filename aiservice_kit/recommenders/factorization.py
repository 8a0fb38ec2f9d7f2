"""`MatrixFactorization`: latent-factor models for ratings and feedback.

One estimator, three objectives, chosen by `objective`:

- `"explicit"`: biased matrix factorisation of ratings (the model
  surprise's `SVD` fits): `r_ui ~ mean + b_u + b_i + p_u . q_i`, squared
  error plus `regularization * (|p_u|^2 + |q_i|^2 + b_u^2 + b_i^2)` per
  rating, predictions clipped to `rating_scale`. A Keras model
  (embeddings, Adam on batches of (user, item, rating) triples; no users
  x items matrix is ever built), trained by `keras.Model.fit` on a
  `tf.data` pipeline inside a `tf.distribute` scope and otherwise by the
  same steps in a compiled kernel (`_factor_adam`), without TensorFlow.
- `"bpr"`: Bayesian personalised ranking on implicit feedback, the same
  Keras embeddings trained on (user, liked item, sampled item) triples.
- `"als"`: confidence-weighted least squares on implicit feedback
  (Hu, Koren and Volinsky 2008, implicit's `AlternatingLeastSquares`),
  solved exactly in numpy: each half step is a batch of small linear
  systems, closed form, no learning rate; on these sizes it converges in
  a few sweeps where gradient steps through Keras need many epochs.

TensorFlow is imported by `fit` for BPR and for fits in a strategy scope
only; a fitted model answers every query from numpy arrays
(`_factor_scoring`).
"""

import os
import pathlib
import time
from typing import Any

import numpy as np
import scipy.sparse as sp

from aiservice_kit import _validation
from aiservice_kit.exceptions import ExportError
from aiservice_kit.exceptions import NotFittedError
from aiservice_kit.recommenders import _factor_adam
from aiservice_kit.recommenders import _factor_als
from aiservice_kit.recommenders import _factor_scoring
from aiservice_kit.recommenders import _rating_data
from aiservice_kit.recommenders._params import ParamsMixin

_SAVE_FORMAT = 1
_OBJECTIVES = ("explicit", "bpr", "als")
#: Per-objective defaults of the parameters left at None.
_DEFAULTS = {
    "explicit": {"epochs": 12, "learning_rate": 0.04, "regularization": 0.1},
    "bpr": {"epochs": 40, "learning_rate": 0.01, "regularization": 0.001},
    "als": {"epochs": 15, "learning_rate": None, "regularization": 0.01},
}
#: Fits with more (ratings x epochs) than this show progress by default.
_PROGRESS_WORK = 50_000_000
_ARRAYS = (
    "user_factors_",
    "item_factors_",
    "user_bias_",
    "item_bias_",
    "item_popularity_",
)


class MatrixFactorization(ParamsMixin):
    """Matrix factorisation for rating prediction or implicit feedback.

    Same verbs and conventions as `CosineRecommender` (ids of any
    hashable type in and out, `recommend` excludes liked items and always
    returns `top_k` slots, `.npz` save/load), plus `predict` for ratings.

    Unknown users: `predict` answers them with `mean + b_i` (no user
    term, as surprise does) when `unknown="baseline"`; `recommend` answers
    a user with a given history (`user_items`) by fold-in (their factors
    are solved from that history with the item factors held fixed) and a
    user with neither a fitted nor a given history by popularity, with
    NaN scores marking those back-filled slots.

    Distribution: call `fit` inside `with strategy.scope():` (any
    `tf.distribute` strategy, e.g. `aiservice_kit.get_strategy()`); the
    Keras model is built there and `keras.Model.fit` splits each global
    batch of `batch_size` triples over the replicas. Outside a scope the
    explicit objective runs the same training steps (initial tables,
    batches, Adam) in a compiled CPU kernel, ~10x faster at 100k ratings;
    both give the same factors up to float32 summation order.

    Args:
        objective: str. `"explicit"` (ratings), `"als"` or `"bpr"`
            (implicit feedback).
        n_factors: int >= 1. Latent dimensions.
        epochs: int >= 1 or None. Passes over the data (ALS sweeps);
            None takes the objective's default (12, 15 for ALS, 40 BPR).
        learning_rate: float > 0 or None. Adam's learning rate (Keras
            objectives); None: 0.04 (explicit), 0.01 (BPR).
        regularization: float >= 0 or None. L2 weight: per rating and
            per touched parameter for the Keras objectives, ALS's lambda
            for ALS; None: 0.1 (explicit), 0.01 (ALS), 0.001 (BPR).
        rating_scale: (low, high) or None. Explicit only: ratings outside
            it are refused at `fit` and predictions are clipped to it;
            None takes the observed range.
        alpha: float > 0. ALS confidence `1 + alpha * weight`.
        batch_size: int >= 1. Global batch of triples per Keras step.
        init_std: float > 0. Standard deviation of the initial factors.
        seed: int. Seeds the initial factors, shuffling and sampling.
        show_progress: bool or None. Per-epoch progress (Keras' bar in
            `keras.Model.fit`, else tqdm); None: on long fits only.

    Attributes:
        user_ids_: np.ndarray. Fitted user ids, row i of `user_factors_`.
        item_ids_: np.ndarray. Fitted item ids.
        user_factors_: float32 (n_users, n_factors).
        item_factors_: float32 (n_items, n_factors).
        user_bias_: float32 (n_users,), zeros for the implicit objectives.
        item_bias_: float32 (n_items,), zeros for ALS.
        global_mean_: float. Mean training rating (0.0 when implicit).
        rating_range_: (low, high) or None. The clipping range.
        user_items_: scipy CSR (users x items) of the training pairs
            (their ratings as values): the histories `recommend` excludes.
        history_: dict. Per-epoch training loss (`"loss"`).

    Example:
    ```python
    from aiservice_kit.recommenders import MatrixFactorization

    model = MatrixFactorization(n_factors=32, rating_scale=(1, 5)).fit(
        (["ann", "ann", "bob"], ["x", "y", "x"], [5.0, 3.0, 4.0])
    )
    model.predict(["bob"], ["y"])
    items, scores = model.recommend("bob", top_k=1)
    ```
    """

    def __init__(
        self,
        objective: str = "explicit",
        n_factors: int = 64,
        *,
        epochs: int | None = None,
        learning_rate: float | None = None,
        regularization: float | None = None,
        rating_scale: tuple[float, float] | None = None,
        alpha: float = 1.0,
        batch_size: int = 16384,
        init_std: float = 0.1,
        seed: int = 0,
        show_progress: bool | None = None,
    ) -> None:
        self.objective = objective
        self.n_factors = n_factors
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.regularization = regularization
        self.rating_scale = rating_scale
        self.alpha = alpha
        self.batch_size = batch_size
        self.init_std = init_std
        self.seed = seed
        self.show_progress = show_progress

    # ------------------------------------------------------------ params

    def _setting(self, name: str) -> Any:
        value = getattr(self, name)
        return _DEFAULTS[self.objective][name] if value is None else value

    @staticmethod
    def _check_number(name: str, value: Any, *, positive: bool) -> float:
        if isinstance(value, bool) or not isinstance(
            value, (int, float, np.integer, np.floating)
        ):
            raise TypeError(
                f"`{name}` must be a number. Received: {name}={value!r}"
            )
        if not np.isfinite(value) or value < 0 or (positive and value == 0):
            bound = "> 0" if positive else ">= 0"
            raise ValueError(
                f"`{name}` must be a finite number {bound}. "
                f"Received: {name}={value!r}"
            )
        return float(value)

    def _check_params(self) -> dict[str, Any]:
        _validation.check_choice("objective", self.objective, _OBJECTIVES)
        settings = {
            "n_factors": _validation.check_positive_int(
                "n_factors", self.n_factors
            ),
            "epochs": _validation.check_positive_int(
                "epochs", self._setting("epochs")
            ),
            "regularization": self._check_number(
                "regularization",
                self._setting("regularization"),
                positive=self.objective == "als",
            ),
            "alpha": self._check_number("alpha", self.alpha, positive=True),
            "batch_size": _validation.check_positive_int(
                "batch_size", self.batch_size
            ),
            "init_std": self._check_number(
                "init_std", self.init_std, positive=True
            ),
            "seed": _validation.check_positive_int(
                "seed", self.seed, minimum=0
            ),
            "rating_scale": _rating_data.check_rating_scale(self.rating_scale),
        }
        if self.objective != "als":
            settings["learning_rate"] = self._check_number(
                "learning_rate", self._setting("learning_rate"), positive=True
            )
        if self.show_progress is not None:
            _validation.check_bool("show_progress", self.show_progress)
        return settings

    # --------------------------------------------------------------- fit

    def fit(self, X: Any, y: None = None) -> "MatrixFactorization":
        """Learns the factors from (user, item, rating) triples.

        Args:
            X: an `interactions.Ratings`, a `(user_ids, item_ids,
                ratings)` tuple of 1-D arrays (ids of any hashable type) or
                a scipy sparse users x items matrix whose stored entries
                are the triples. Explicit: ratings on `rating_scale`.
                Implicit: non-negative weights (zeros are dropped).
            y: None. Ignored (scikit-learn convention).

        Returns:
            self.

        Raises:
            TypeError: on wrongly typed data or parameters.
            ValueError: on empty data, NaN/inf ratings, ratings outside
                `rating_scale`, negative implicit weights or invalid
                parameters.

        Example:
        ```python
        model = MatrixFactorization("als", n_factors=16).fit(
            (["ann", "ann", "bob"], ["x", "y", "x"], [1.0, 1.0, 1.0])
        )
        ```
        """
        settings = self._check_params()
        explicit = self.objective == "explicit"
        users, items, ratings, user_vocab, item_vocab = (
            _rating_data.encode_triples(
                X, settings["rating_scale"], non_negative=not explicit
            )
        )
        if not explicit:
            keep = ratings > 0
            users, items, ratings = users[keep], items[keep], ratings[keep]
            if len(ratings) == 0:
                raise ValueError(
                    "`X` must hold at least one positive weight for "
                    f"objective={self.objective!r}. Received: all zero"
                )
        n_users, n_items = len(user_vocab), len(item_vocab)
        matrix = sp.csr_matrix(
            (ratings, (users, items)),
            shape=(n_users, n_items),
            dtype=np.float32,
        )
        matrix.sum_duplicates()
        if explicit:
            # A pair rated twice trains on both ratings (as in surprise)
            # and is stored with their mean.
            counts = sp.csr_matrix(
                (np.ones_like(ratings), (users, items)),
                shape=(n_users, n_items),
            )
            counts.sum_duplicates()
            matrix.data /= counts.data
            scale = settings["rating_scale"]
            self.rating_range_ = scale or (
                float(ratings.min()),
                float(ratings.max()),
            )
            self.global_mean_ = float(ratings.astype(np.float64).mean())
        else:
            self.rating_range_ = None
            self.global_mean_ = 0.0
        work = len(ratings) * settings["epochs"]
        show = (
            work > _PROGRESS_WORK
            if self.show_progress is None
            else self.show_progress
        )
        started = time.perf_counter()
        if self.objective == "als":
            arrays, losses = _factor_als.fit(matrix, settings, show)
        else:
            arrays, losses = self._fit_keras(
                users, items, ratings, n_users, n_items, settings, show
            )
        self.fit_seconds_ = time.perf_counter() - started
        (
            self.user_factors_,
            self.item_factors_,
            self.user_bias_,
            self.item_bias_,
        ) = arrays
        self.history_ = {"loss": [float(v) for v in losses]}
        self.user_ids_ = user_vocab
        self.item_ids_ = item_vocab
        self.user_items_ = matrix
        self._set_popularity()
        return self

    def _set_popularity(self) -> None:
        counts = np.bincount(
            self.user_items_.indices, minlength=self.user_items_.shape[1]
        ).astype(np.int64)
        self.item_popularity_ = counts
        self._popular = np.argsort(-counts, kind="stable")

    def _fit_keras(
        self,
        users: np.ndarray,
        items: np.ndarray,
        ratings: np.ndarray,
        n_users: int,
        n_items: int,
        settings: dict,
        show: bool,
    ) -> tuple[tuple[np.ndarray, ...], list[float]]:
        names = ("n_factors", "epochs", "learning_rate", "regularization")
        names += ("batch_size", "init_std", "seed")
        kwargs = {name: settings[name] for name in names}
        args = (users, items, ratings, n_users, n_items)
        if self.objective == "explicit" and not (
            _factor_adam.strategy_in_scope()
        ):
            return _factor_adam.fit(
                *args, global_mean=self.global_mean_, show=show, **kwargs
            )
        from aiservice_kit.recommenders import _factor_keras

        return _factor_keras.fit(
            self.objective,
            *args,
            global_mean=self.global_mean_,
            verbose=1 if show else 0,
            **kwargs,
        )

    # ------------------------------------------------------------ queries

    def _check_fitted(self) -> None:
        if not hasattr(self, "item_factors_"):
            raise NotFittedError(
                "This MatrixFactorization is not fitted yet. Call `fit` "
                "with the (user, item, rating) triples first."
            )

    def predict(
        self, user_ids: Any, item_ids: Any, *, unknown: str = "error"
    ) -> np.ndarray:
        """Predicted ratings (explicit) or scores (implicit) per pair.

        Args:
            user_ids: 1-D array-like of user ids (or one id).
            item_ids: 1-D array-like of item ids, one per user id.
            unknown: str. `"error"` raises on ids `fit` never saw;
                `"baseline"` answers them without the unknown side (`mean
                + b_u` or `mean + b_i`, the global mean when both are
                unknown), as surprise does.

        Returns:
            float32 array, one prediction per pair, clipped to the rating
            scale for the explicit objective.

        Raises:
            NotFittedError: before `fit`.
            ValueError: on unknown ids with `unknown="error"` or
                mismatched lengths.

        Example:
        ```python
        model.predict(["ann", "bob"], ["x", "x"])
        ```
        """
        self._check_fitted()
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
        out = _factor_scoring.predict_ratings(
            self.user_factors_,
            self.item_factors_,
            self.user_bias_,
            self.item_bias_,
            self.global_mean_,
            users,
            items,
            self.rating_range_,
        )
        return out[0] if scalar_u and scalar_i else out

    def _fold_in(self, user_items: Any, n_users: int | None) -> tuple:
        """(factors, liked CSR) of new users from their histories."""
        liked = _rating_data.histories_matrix(
            self.item_ids_,
            user_items,
            n_users,
            self.rating_range_ if self.objective == "explicit" else None,
            explicit=self.objective == "explicit",
        )
        reg = self._setting("regularization")
        if self.objective == "explicit":
            factors = np.zeros((liked.shape[0], self.item_factors_.shape[1]))
            for row in range(liked.shape[0]):
                lo, hi = liked.indptr[row], liked.indptr[row + 1]
                if hi > lo:
                    factors[row], _ = _factor_scoring.fold_in_explicit(
                        self.item_factors_,
                        self.item_bias_,
                        self.global_mean_,
                        liked.indices[lo:hi],
                        liked.data[lo:hi],
                        reg,
                    )
        else:
            factors = _factor_als.als_solve(
                liked, self.item_factors_, max(reg, 1e-3), float(self.alpha)
            )
        return factors.astype(np.float32), liked

    def recommend(
        self,
        user_ids: Any,
        top_k: int = 10,
        *,
        user_items: Any = None,
        exclude_liked: bool = True,
        backfill: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k items for one user or a batch of users (vectorised).

        Args:
            user_ids: a user id or a 1-D array of them; may be None when
                `user_items` is given.
            top_k: int >= 1. Items per user.
            user_items: None, a scipy sparse matrix (one row per user, one
                column per fitted item) or a sequence with one history per
                user: item-id sequences (implicit) or {item_id: rating}
                mappings (explicit). The users' factors are then solved
                from these histories (fold-in) instead of looked up.
            exclude_liked: bool. Never return items in the history.
            backfill: bool. Users with neither a fitted nor a given history
                get the most popular items (score NaN); False pads them.

        Returns:
            `(item_ids, scores)`: arrays of shape `(n_users, top_k)` (1-D
            for one user id), best first, ties to the lower item index.
            Scores are `p_u . q_i + b_i`; NaN marks a back-filled slot.
            Slots left when no unseen item remains hold -1 (int ids), ""
            (string ids) or None, score NaN.

        Raises:
            NotFittedError: before `fit`.
            TypeError: on wrongly typed ids or histories.
            ValueError: on `top_k` < 1 or shape mismatches.

        Example:
        ```python
        item_ids, scores = model.recommend(["ann", "bob"], top_k=5)
        ```
        """
        self._check_fitted()
        top_k = _validation.check_positive_int("top_k", top_k)
        _validation.check_bool("exclude_liked", exclude_liked)
        _validation.check_bool("backfill", backfill)
        scalar = False
        if user_ids is None:
            if user_items is None:
                raise ValueError(
                    "`user_ids` may be None only when `user_items` is "
                    "given. Received: user_ids=None, user_items=None"
                )
            positions = None
        else:
            positions, scalar = _rating_data.id_positions(
                self.user_ids_, user_ids, "user_ids", "ignore"
            )
        if user_items is None:
            known = positions >= 0
            vectors = self.user_factors_[np.where(known, positions, 0)]
            liked = self.user_items_[np.where(known, positions, 0)]
            liked = sp.csr_matrix(sp.diags(known.astype(np.float32)) @ liked)
            liked.eliminate_zeros()
        else:
            n = None if positions is None else len(positions)
            vectors, liked = self._fold_in(user_items, n)
            known = np.diff(liked.indptr) > 0
        bias = self.item_bias_ if self.objective != "als" else None
        idx, val = _factor_scoring.top_k_items(
            vectors,
            self.item_factors_,
            bias,
            top_k,
            liked if exclude_liked else None,
        )
        cold = np.flatnonzero(~known)
        if len(cold):
            idx[cold] = -1
            val[cold] = np.nan
            if backfill:
                for row in cold:
                    seen = liked.indices[
                        liked.indptr[row] : liked.indptr[row + 1]
                    ]
                    popular = self._popular
                    if exclude_liked and len(seen):
                        popular = popular[~np.isin(popular, seen)]
                    idx[row, : min(top_k, len(popular))] = popular[:top_k]
        item_ids = _rating_data.to_ids(self.item_ids_, idx)
        if scalar:
            return item_ids[0], val[0]
        return item_ids, val

    def _similar(
        self, vocab: np.ndarray, factors: np.ndarray, ids: Any, top_k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        self._check_fitted()
        top_k = _validation.check_positive_int("top_k", top_k)
        positions, scalar = _rating_data.id_positions(
            vocab, ids, "ids", "error"
        )
        norms = np.linalg.norm(factors, axis=1)
        unit = factors / np.maximum(norms, 1e-12)[:, None]
        own = sp.csr_matrix(
            (
                np.ones(len(positions), np.float32),
                (np.arange(len(positions)), positions),
            ),
            shape=(len(positions), len(vocab)),
        )
        idx, val = _factor_scoring.top_k_items(
            unit[positions], unit, None, top_k, own
        )
        out = _rating_data.to_ids(vocab, idx)
        if scalar:
            return out[0], val[0]
        return out, val

    def similar_items(
        self, item_ids: Any, top_k: int = 10
    ) -> tuple[np.ndarray, np.ndarray]:
        """The items whose factors are most cosine-similar to each item.

        Args:
            item_ids: an item id or a 1-D array of them (fitted ids).
            top_k: int >= 1. Neighbours per item (the item itself is
                left out).

        Returns:
            `(item_ids, similarities)`, shape `(n, top_k)` (1-D for one
            id), most similar first.

        Raises:
            NotFittedError: before `fit`.
            ValueError: on unknown ids or `top_k` < 1.

        Example:
        ```python
        neighbours, similarity = model.similar_items("x", top_k=5)
        ```
        """
        return self._similar(
            self.item_ids_ if hasattr(self, "item_ids_") else None,
            getattr(self, "item_factors_", None),
            item_ids,
            top_k,
        )

    def similar_users(
        self, user_ids: Any, top_k: int = 10
    ) -> tuple[np.ndarray, np.ndarray]:
        """The users whose factors are most cosine-similar to each user.

        Args:
            user_ids: a user id or a 1-D array of them (fitted ids).
            top_k: int >= 1. Neighbours per user (the user left out).

        Returns:
            `(user_ids, similarities)`, as in `similar_items`.

        Raises:
            NotFittedError: before `fit`.
            ValueError: on unknown ids or `top_k` < 1.

        Example:
        ```python
        neighbours, similarity = model.similar_users("ann", top_k=5)
        ```
        """
        return self._similar(
            self.user_ids_ if hasattr(self, "user_ids_") else None,
            getattr(self, "user_factors_", None),
            user_ids,
            top_k,
        )

    def export(
        self,
        base_path: str | os.PathLike,
        version: int | None = None,
        top_k: int = 10,
    ) -> pathlib.Path:
        """Writes a servable SavedModel of TensorFlow ops (`base/<N>/`).

        Signatures (ids int64 or string, as fitted):

        - `serving_default`: `user_ids` [batch] and `item_ids` [batch,
          None] (padded with -1 or "": items to exclude besides the
          user's fitted history) in; `item_ids` and `scores` (float32)
          [batch, top_k] out, as `recommend(user_ids, top_k)` answers
          (NaN marks back-filled and empty slots).
        - `rating`: `user_ids` and `item_ids` [batch] in, `ratings`
          [batch] out, as `predict(..., unknown="baseline")`.
        - `fold_in` (`"als"` and `"bpr"` only): `item_ids` [batch, None]
          in, top-k out, as `recommend(None, user_items=...)`: the
          user's factors are solved from their items by the ALS
          equation. Explicit fold-in needs ratings, so it is not
          exported.

        TensorFlow is imported here, not before (the graph lives in
        `aiservice_kit.export.factorization`).

        Args:
            base_path: str or path-like. The model's base directory.
            version: int or None. The version (None: latest + 1).
            top_k: int >= 1. Items returned per request row.

        Returns:
            pathlib.Path of the published version directory.

        Raises:
            NotFittedError: before `fit`.
            ExportError: for ids that are neither all integers nor all
                strings.

        Example:
        ```python
        version_dir = model.export("models/mf", top_k=10)
        ```
        """
        self._check_fitted()
        top_k = _validation.check_positive_int("top_k", top_k)
        for name, vocab in (("user", self.user_ids_), ("item", self.item_ids_)):
            if vocab.dtype.kind not in "iuU":
                raise ExportError(
                    f"`export` needs {name} ids that are all integers or "
                    f"all strings. Received {name} ids of types "
                    f"{sorted({type(v).__name__ for v in vocab})}"
                )
        from aiservice_kit.export import factorization

        module = factorization.FactorModule(
            self.user_ids_,
            self.item_ids_,
            self.user_factors_,
            self.item_factors_,
            self.user_bias_,
            self.item_bias_,
            self.global_mean_,
            self.rating_range_,
            self.user_items_,
            self._popular,
            top_k,
            fold_in=None
            if self.objective == "explicit"
            else (max(self._setting("regularization"), 1e-3), self.alpha),
        )
        return factorization.export_factor_model(base_path, version, module)

    # ------------------------------------------------------------ storage

    def save(self, path: str | os.PathLike) -> None:
        """Writes the fitted model to a `.npz` file (no pickle).

        Args:
            path: str or path-like. The file; `.npz` is appended by numpy
                when missing.

        Raises:
            NotFittedError: before `fit`.
            TypeError: on ids that are neither all integers nor all
                strings (they cannot be stored without pickle).

        Example:
        ```python
        model.save("mf.npz")
        same = MatrixFactorization.load("mf.npz")
        ```
        """
        self._check_fitted()
        for name, vocab in (("user", self.user_ids_), ("item", self.item_ids_)):
            if vocab.dtype.kind not in "iuU":
                raise TypeError(
                    f"save() stores {name} ids that are all integers or "
                    f"all strings. Received: {name} ids of mixed types"
                )
        matrix = self.user_items_
        np.savez(
            path,
            format_version=np.int64(_SAVE_FORMAT),
            params=np.array(repr(self._json_params())),
            user_ids=self.user_ids_,
            item_ids=self.item_ids_,
            global_mean=np.float64(self.global_mean_),
            rating_range=np.array(
                self.rating_range_ or (np.nan, np.nan), np.float64
            ),
            indptr=matrix.indptr,
            indices=matrix.indices,
            data=matrix.data,
            loss=np.array(self.history_["loss"], np.float64),
            **{name: getattr(self, name) for name in _ARRAYS},
        )

    def _json_params(self) -> dict:
        params = self.get_params()
        if params["rating_scale"] is not None:
            params["rating_scale"] = tuple(
                float(v) for v in params["rating_scale"]
            )
        return params

    @classmethod
    def load(cls, path: str | os.PathLike) -> "MatrixFactorization":
        """Reads a model written by `save` (`allow_pickle=False`).

        Args:
            path: str or path-like. The `.npz` file (the suffix may be
                omitted, as for `save`).

        Returns:
            A fitted `MatrixFactorization`.

        Raises:
            FileNotFoundError: if the file does not exist.
            ValueError: if the path is a directory or the file is not a
                saved `MatrixFactorization`.

        Example:
        ```python
        model = MatrixFactorization.load("mf.npz")
        ```
        """
        import ast

        path, archive = _rating_data.open_saved(path, "MatrixFactorization")
        with archive as stored:
            if "format_version" not in stored or "user_factors_" not in (
                stored
            ):
                raise ValueError(
                    "`path` must be a MatrixFactorization saved by save(). "
                    f"Received: {path} with arrays {sorted(stored.files)}"
                )
            version = int(stored["format_version"])
            if version != _SAVE_FORMAT:
                raise ValueError(
                    f"`path` holds save format {version}; this version "
                    f"reads format {_SAVE_FORMAT}. Received: {path}"
                )
            model = cls(**ast.literal_eval(str(stored["params"])))
            model.user_ids_ = stored["user_ids"]
            model.item_ids_ = stored["item_ids"]
            model.global_mean_ = float(stored["global_mean"])
            low, high = stored["rating_range"].tolist()
            model.rating_range_ = None if np.isnan(low) else (low, high)
            for name in _ARRAYS:
                setattr(model, name, stored[name])
            model.user_items_ = sp.csr_matrix(
                (stored["data"], stored["indices"], stored["indptr"]),
                shape=(len(model.user_ids_), len(model.item_ids_)),
            )
            model.history_ = {"loss": stored["loss"].tolist()}
        model._popular = np.argsort(-model.item_popularity_, kind="stable")
        return model
