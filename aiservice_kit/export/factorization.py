"""The TensorFlow serving graph of a matrix-factorisation model.

`MatrixFactorization.export` hands its fitted arrays here (id vocabularies,
factors, biases, the training histories, the popularity order); the graph
is built from plain numpy arrays, so the estimator never imports
TensorFlow before `export`.

Two signatures, both on the model's own ids (int64 or string, looked up
in `StaticHashTable`s):

- `serving_default`: `user_ids` [batch] and `item_ids` [batch, None]
  (padded with -1 or "") in, `item_ids` and `scores` [batch, top_k] out:
  `recommend(user_ids, top_k)` with the user's fitted history and the
  request's `item_ids` excluded. A user the model never saw gets the most
  popular items left (score NaN, as `recommend` marks back-fill); slots
  no item is left for hold -1 or "" (score NaN).
- `rating` (`RATING_SIGNATURE`): `user_ids` and `item_ids` [batch] in,
  `ratings` [batch] out: `predict(user_ids, item_ids,
  unknown="baseline")`, clipped to the rating range.
- `fold_in` (`FOLD_IN_SIGNATURE`, implicit objectives only): `item_ids`
  [batch, None] (padded) in, `item_ids` and `scores` [batch, top_k] out:
  `recommend(None, top_k, user_items=...)`, the user's factors solved from
  their items by the ALS equation (`tf.linalg.solve`, one [k, k] system
  per row); a row with no known item is back-filled by popularity.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import tensorflow as tf

from aiservice_kit._layout import FOLD_IN_SIGNATURE
from aiservice_kit._layout import RATING_SIGNATURE
from aiservice_kit._layout import SERVING_SIGNATURE
from aiservice_kit._layout import publish_version
from aiservice_kit._validation import check_positive_int
from aiservice_kit.export.recommender import ITEM_IDS
from aiservice_kit.export.recommender import SCORES

#: Input names and the rating output of the exported factor model
#: (`ITEM_IDS` and `SCORES` are the cosine export's names).
USER_IDS = "user_ids"
RATINGS = "ratings"


def _check_vocab(name: str, vocab: np.ndarray) -> np.ndarray:
    if vocab.dtype.kind not in "iuU":
        raise TypeError(
            f"`{name}` must hold int64 or unicode ids. Received: dtype "
            f"{vocab.dtype}"
        )
    return vocab.astype(np.int64) if vocab.dtype.kind in "iu" else vocab


def _id_table(vocab: np.ndarray) -> tuple[tf.lookup.StaticHashTable, Any]:
    """(id -> position table, the ids as a tensor); -1 for unknown ids."""
    strings = vocab.dtype.kind == "U"
    dtype = tf.string if strings else tf.int64
    keys = tf.constant(vocab.tolist() if strings else vocab, dtype=dtype)
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            keys, tf.range(len(vocab), dtype=tf.int64)
        ),
        default_value=-1,
    )
    return table, keys


def _padded(array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """`array` plus one zero row (the answer for an unknown id)."""
    extra = np.zeros((1, *array.shape[1:]), dtype=dtype)
    return np.concatenate([array.astype(dtype), extra])


class FactorModule(tf.Module):
    """A tf.Module whose signatures reproduce `recommend` and `predict`.

    Args:
        user_vocab: np.ndarray. The user ids (row u of `user_factors`),
            int64 or unicode.
        item_vocab: np.ndarray. The item ids, int64 or unicode.
        user_factors: float array (n_users, k).
        item_factors: float array (n_items, k).
        user_bias: float array (n_users,).
        item_bias: float array (n_items,).
        global_mean: float.
        rating_range: (low, high) or None. Clips the ratings.
        history: scipy CSR (n_users, n_items). The fitted histories,
            excluded from each user's recommendations.
        popular: np.ndarray. Item positions, most popular first.
        top_k: int >= 1. Items returned per request row.
        fold_in: (regularization, alpha) or None. Implicit models: adds
            the `fold_in` signature, which solves a user's factors from
            their item ids by the ALS equation.

    Example:
    ```python
    m = fitted_matrix_factorization
    module = FactorModule(
        m.user_ids_, m.item_ids_, m.user_factors_, m.item_factors_,
        m.user_bias_, m.item_bias_, m.global_mean_, m.rating_range_,
        m.user_items_, popular_positions, top_k=10,
    )
    out = module.serve(tf.constant(["ann"]), tf.constant([[""]]))
    rated = module.rate(tf.constant(["ann"]), tf.constant(["x"]))
    ```
    """

    def __init__(
        self,
        user_vocab: np.ndarray,
        item_vocab: np.ndarray,
        user_factors: np.ndarray,
        item_factors: np.ndarray,
        user_bias: np.ndarray,
        item_bias: np.ndarray,
        global_mean: float,
        rating_range: tuple[float, float] | None,
        history: sp.csr_matrix,
        popular: np.ndarray,
        top_k: int,
        fold_in: tuple[float, float] | None = None,
    ) -> None:
        super().__init__(name="matrix_factorization")
        user_vocab = _check_vocab("user_vocab", user_vocab)
        item_vocab = _check_vocab("item_vocab", item_vocab)
        self._top_k = check_positive_int("top_k", top_k)
        n_users, n_items = len(user_vocab), len(item_vocab)
        if history.shape != (n_users, n_items):
            raise ValueError(
                "`history` must be (n_users, n_items) = "
                f"({n_users}, {n_items}). Received: shape {history.shape}"
            )
        self._n_users, self._n_items = n_users, n_items
        self.user_table, user_keys = _id_table(user_vocab)
        self.item_table, item_keys = _id_table(item_vocab)
        self.user_dtype = user_keys.dtype
        self.item_dtype = item_keys.dtype
        self._pad = "" if self.item_dtype == tf.string else -1
        self.item_vocab = tf.Variable(
            item_keys, trainable=False, name="item_vocab"
        )
        self.user_factors = tf.Variable(
            _padded(user_factors, np.float32), False, name="user_factors"
        )
        self.item_factors = tf.Variable(
            item_factors.astype(np.float32), False, name="item_factors"
        )
        self.item_factors_padded = tf.Variable(
            _padded(item_factors, np.float32), False, name="item_factors_pad"
        )
        self.user_bias = tf.Variable(
            _padded(user_bias, np.float32), False, name="user_bias"
        )
        self.item_bias = tf.Variable(
            _padded(item_bias, np.float32), False, name="item_bias"
        )
        self._global_mean = float(global_mean)
        self._range = (
            None
            if rating_range is None
            else (float(rating_range[0]), float(rating_range[1]))
        )
        history = sp.csr_matrix(history)
        # One empty row more: the history of an unknown user.
        splits = np.append(history.indptr, history.indptr[-1])
        self.history_splits = tf.Variable(
            splits.astype(np.int64), False, name="history_splits"
        )
        self.history_items = tf.Variable(
            history.indices.astype(np.int64), False, name="history_items"
        )
        pop_rank = np.empty(n_items, dtype=np.float32)
        pop_rank[np.asarray(popular)] = np.arange(n_items, dtype=np.float32)
        self.backfill_key = tf.Variable(
            -1.0 - pop_rank, False, name="backfill_key"
        )
        self.serve = tf.function(
            self._serve,
            input_signature=[
                tf.TensorSpec([None], self.user_dtype, name=USER_IDS),
                tf.TensorSpec([None, None], self.item_dtype, name=ITEM_IDS),
            ],
        )
        self.fold_in = None
        if fold_in is not None:
            self._fold_reg, self._fold_alpha = map(float, fold_in)
            y = item_factors.astype(np.float64)
            base = y.T @ y + self._fold_reg * np.eye(y.shape[1])
            self.fold_in_base = tf.Variable(base, False, name="fold_in_base")
            self.fold_in = tf.function(
                self._fold_in,
                input_signature=[
                    tf.TensorSpec([None, None], self.item_dtype, name=ITEM_IDS)
                ],
            )
        self.rate = tf.function(
            self._rate,
            input_signature=[
                tf.TensorSpec([None], self.user_dtype, name=USER_IDS),
                tf.TensorSpec([None], self.item_dtype, name=ITEM_IDS),
            ],
        )

    def _positions(self, table, ids, size) -> tuple[tf.Tensor, tf.Tensor]:
        """(positions with unknown ids at the zero row `size`, known)."""
        idx = table.lookup(ids)
        known = idx >= 0
        return tf.where(known, idx, tf.constant(size, tf.int64)), known

    def _serve(
        self, user_ids: tf.Tensor, item_ids: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        n_items = self._n_items
        users, known = self._positions(self.user_table, user_ids, self._n_users)
        vectors = tf.gather(self.user_factors, users)
        # Excluded: the user's fitted history and the request's item ids
        # (unknown ids and padding land on the dummy column n_items).
        history = tf.RaggedTensor.from_row_splits(
            self.history_items, self.history_splits, validate=False
        )
        seen = tf.gather(history, users).to_tensor(default_value=n_items)
        asked, _ = self._positions(self.item_table, item_ids, n_items)
        excluded = tf.concat([seen, asked], axis=1)
        return self._rank(vectors, known, excluded)

    def _fold_in(self, item_ids: tf.Tensor) -> dict[str, tf.Tensor]:
        n_items = self._n_items
        asked, _ = self._positions(self.item_table, item_ids, n_items)
        weights = self._scatter(asked, tf.ones_like(asked, tf.float64))
        # `als_solve`: (Y^T Y + reg I + Y^T diag(alpha w) Y) x = Y^T (1 +
        # alpha w) over the rated items, in float64 as numpy solves it.
        y = tf.cast(self.item_factors, tf.float64)
        confidence = self._fold_alpha * weights
        gram = self.fold_in_base + tf.einsum("bi,ik,il->bkl", confidence, y, y)
        preference = tf.where(weights > 0, 1.0 + confidence, 0.0)
        rhs = tf.matmul(preference, y)[:, :, None]
        vectors = tf.cast(tf.linalg.solve(gram, rhs)[:, :, 0], tf.float32)
        known = tf.reduce_any(weights > 0, axis=1)
        return self._rank(vectors, known, asked)

    def _scatter(self, positions: tf.Tensor, values: tf.Tensor) -> tf.Tensor:
        """Sums `values` into [batch, n_items] at `positions` per row."""
        n_items = self._n_items
        batch = tf.shape(positions, out_type=tf.int64)[0]
        rows = tf.range(batch, dtype=tf.int64)[:, None]
        segments = tf.reshape(rows * (n_items + 1) + positions, [-1])
        summed = tf.math.unsorted_segment_sum(
            tf.reshape(values, [-1]), segments, batch * (n_items + 1)
        )
        return tf.reshape(summed, [batch, n_items + 1])[:, :n_items]

    def _rank(
        self, vectors: tf.Tensor, known: tf.Tensor, excluded: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        """`recommend`'s top-k: exclusions, popularity back-fill, pads."""
        n_items, top_k = self._n_items, self._top_k
        k_eff = min(top_k, n_items)
        scores = tf.matmul(vectors, self.item_factors, transpose_b=True)
        scores = scores + self.item_bias[:n_items]
        batch = tf.shape(excluded, out_type=tf.int64)[0]
        liked = self._scatter(excluded, tf.ones_like(excluded, tf.float32)) > 0
        key = tf.where(
            known[:, None],
            scores,
            tf.broadcast_to(self.backfill_key, tf.shape(scores)),
        )
        key = tf.where(liked, tf.constant(-np.inf, tf.float32), key)
        values, indices = tf.math.top_k(key, k=k_eff)
        found = values > -np.inf
        nan = tf.constant(np.nan, tf.float32)
        out_scores = tf.where(found & known[:, None], values, nan)
        pad = tf.constant(self._pad, dtype=self.item_dtype)
        out_ids = tf.where(found, tf.gather(self.item_vocab, indices), pad)
        if k_eff < top_k:
            extra = top_k - k_eff
            out_ids = tf.concat([out_ids, tf.fill([batch, extra], pad)], axis=1)
            out_scores = tf.concat(
                [out_scores, tf.fill([batch, extra], nan)], axis=1
            )
        return {ITEM_IDS: out_ids, SCORES: out_scores}

    def _rate(
        self, user_ids: tf.Tensor, item_ids: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        users, _ = self._positions(self.user_table, user_ids, self._n_users)
        items, _ = self._positions(self.item_table, item_ids, self._n_items)
        p = tf.cast(tf.gather(self.user_factors, users), tf.float64)
        q = tf.cast(tf.gather(self.item_factors_padded, items), tf.float64)
        out = (
            self._global_mean
            + tf.cast(tf.gather(self.user_bias, users), tf.float64)
            + tf.cast(tf.gather(self.item_bias, items), tf.float64)
            + tf.reduce_sum(p * q, axis=1)
        )
        if self._range is not None:
            out = tf.clip_by_value(out, self._range[0], self._range[1])
        return {RATINGS: tf.cast(out, tf.float32)}


def export_factor_model(
    base_path: str | os.PathLike,
    version: int | None,
    module: FactorModule,
) -> Path:
    """Publishes a `FactorModule` as `base_path/<version>/`.

    Args:
        base_path: str or PathLike. The model's base directory.
        version: int or None. The version (None: latest + 1).
        module: FactorModule. The graph to publish.

    Returns:
        The published version directory.

    Raises:
        FileExistsError: if the version already exists.

    Example:
    ```python
    from aiservice_kit.export.factorization import export_factor_model
    export_factor_model("models/mf", None, module)
    ```
    """
    users = "string" if module.user_dtype == tf.string else "int64"
    items = "string" if module.item_dtype == tf.string else "int64"
    top_k = module._top_k

    signatures = {
        SERVING_SIGNATURE: module.serve,
        RATING_SIGNATURE: module.rate,
    }
    if module.fold_in is not None:
        signatures[FOLD_IN_SIGNATURE] = module.fold_in

    def write(tmp_dir: Path) -> None:
        tf.saved_model.save(
            module,
            os.fspath(tmp_dir),
            signatures=signatures,
        )

    inputs = {
        USER_IDS: {"dtype": users, "shape": [None]},
        ITEM_IDS: {"dtype": items, "shape": [None, None]},
    }
    outputs = {
        ITEM_IDS: {"dtype": items, "shape": [None, top_k]},
        SCORES: {"dtype": "float32", "shape": [None, top_k]},
    }
    metadata = {
        "task": "recommendation",
        "class_names": None,
        "inputs": inputs,
        "outputs": outputs,
        "signatures": {
            SERVING_SIGNATURE: {
                "api": "predict",
                "inputs": inputs,
                "outputs": outputs,
            },
            RATING_SIGNATURE: {
                "api": "predict",
                "inputs": {
                    USER_IDS: {"dtype": users, "shape": [None]},
                    ITEM_IDS: {"dtype": items, "shape": [None]},
                },
                "outputs": {RATINGS: {"dtype": "float32", "shape": [None]}},
            },
        },
    }
    if module.fold_in is not None:
        metadata["signatures"][FOLD_IN_SIGNATURE] = {
            "api": "predict",
            "inputs": {ITEM_IDS: inputs[ITEM_IDS]},
            "outputs": outputs,
        }
    return publish_version(base_path, version, write, metadata)
