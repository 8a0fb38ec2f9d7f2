"""The TensorFlow serving graph of an item-based nearest-neighbour model.

`CosineRecommender.export` hands its fitted arrays here; the graph is built
from plain numpy arrays (ids, the sparse neighbour graph, the popularity
order), so the recommender module never imports TensorFlow.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import tensorflow as tf

from aiservice_kit._layout import SERVING_SIGNATURE
from aiservice_kit._layout import publish_version
from aiservice_kit._validation import check_positive_int

#: Input and output names of the exported recommender.
ITEM_IDS = "item_ids"
SCORES = "scores"


class ItemNeighboursModule(tf.Module):
    """A tf.Module whose `serve` reproduces `recommend(user_items=...)`.

    The neighbour lists become a dense table padded with a dummy item (the
    row `n_items`, similarity 0); a request row's scores are the sum of its
    items' rows, liked items are excluded, and empty slots are back-filled
    by popularity, as `CosineRecommender.recommend` does.

    Args:
        vocab: np.ndarray. The item ids, int64 or unicode (column j of the
            fitted matrix).
        similarity: scipy.sparse.csr_matrix. The items x items neighbour
            graph (float32).
        popular: np.ndarray. Item indices, most popular first.
        top_k: int >= 1. Items returned per request row.

    Example:
    ```python
    module = ItemNeighboursModule(vocab, similarity, popular, top_k=10)
    out = module.serve(tf.constant([[3, 7, -1]], tf.int64))
    ```
    """

    def __init__(
        self,
        vocab: np.ndarray,
        similarity: sp.csr_matrix,
        popular: np.ndarray,
        top_k: int,
    ) -> None:
        super().__init__(name="cosine_recommender")
        if vocab.dtype.kind not in "iuU":
            raise TypeError(
                "`vocab` must hold int64 or unicode ids. Received: dtype "
                f"{vocab.dtype}"
            )
        top_k = check_positive_int("top_k", top_k)
        n_items = len(vocab)
        counts = np.diff(similarity.indptr)
        width = max(1, int(counts.max(initial=0)))
        # Neighbour table padded with the dummy item n_items (similarity 0).
        table_idx = np.full((n_items + 1, width), n_items, dtype=np.int64)
        table_val = np.zeros((n_items + 1, width), dtype=np.float32)
        mask = np.arange(width)[None, :] < counts[:, None]
        table_idx[:n_items][mask] = similarity.indices
        table_val[:n_items][mask] = similarity.data
        pop_rank = np.empty(n_items, dtype=np.float32)
        pop_rank[popular] = np.arange(n_items, dtype=np.float32)
        strings = vocab.dtype.kind == "U"
        self.id_dtype = tf.string if strings else tf.int64
        self._pad = "" if strings else -1
        self._n_items = n_items
        self._top_k = top_k
        keys = tf.constant(
            vocab.tolist() if strings else vocab, dtype=self.id_dtype
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
        self.serve = tf.function(
            self._serve,
            input_signature=[
                tf.TensorSpec([None, None], self.id_dtype, name=ITEM_IDS)
            ],
        )

    def _serve(self, item_ids: tf.Tensor) -> dict[str, tf.Tensor]:
        n_items, top_k = self._n_items, self._top_k
        k_eff = min(top_k, n_items)
        pad = tf.constant(self._pad, dtype=self.id_dtype)
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
        out_ids = tf.where(found, tf.gather(self.vocab, indices), pad)
        if k_eff < top_k:
            extra = top_k - k_eff
            out_ids = tf.concat([out_ids, tf.fill([batch, extra], pad)], axis=1)
            out_scores = tf.concat(
                [out_scores, tf.zeros([batch, extra], tf.float32)], axis=1
            )
        return {ITEM_IDS: out_ids, SCORES: out_scores}


def export_item_neighbours(
    base_path: str | os.PathLike,
    version: int | None,
    vocab: np.ndarray,
    similarity: sp.csr_matrix,
    popular: np.ndarray,
    top_k: int,
) -> Path:
    """Publishes an `ItemNeighboursModule` as `base_path/<version>/`.

    Args:
        base_path: str or PathLike. The model's base directory.
        version: int or None. The version (None: latest + 1).
        vocab: np.ndarray. The item ids, int64 or unicode.
        similarity: scipy.sparse.csr_matrix. Items x items neighbours.
        popular: np.ndarray. Item indices, most popular first.
        top_k: int >= 1. Items returned per request row.

    Returns:
        The published version directory.

    Raises:
        TypeError: if `vocab` holds ids other than int64 or unicode.
        ValueError: if `top_k` is not a positive integer.
        FileExistsError: if the version already exists.

    Example:
    ```python
    from aiservice_kit.export.recommender import export_item_neighbours
    export_item_neighbours(
        "models/rec", None, vocab, similarity, popular, top_k=10
    )
    ```
    """
    module = ItemNeighboursModule(vocab, similarity, popular, top_k)
    dtype = "string" if module.id_dtype == tf.string else "int64"

    def write(tmp_dir: Path) -> None:
        tf.saved_model.save(
            module,
            os.fspath(tmp_dir),
            signatures={SERVING_SIGNATURE: module.serve},
        )

    metadata = {
        "task": "recommendation",
        "class_names": None,
        "inputs": {ITEM_IDS: {"dtype": dtype, "shape": [None, None]}},
        "outputs": {
            ITEM_IDS: {"dtype": dtype, "shape": [None, top_k]},
            SCORES: {"dtype": "float32", "shape": [None, top_k]},
        },
    }
    return publish_version(base_path, version, write, metadata)
