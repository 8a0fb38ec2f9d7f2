"""The recommender graph, built from plain arrays (no estimator)."""

import numpy as np
import pytest
import scipy.sparse as sp
import tensorflow as tf

from aiservice_kit._layout import read_metadata
from aiservice_kit.export.recommender import ItemNeighboursModule
from aiservice_kit.export.recommender import export_item_neighbours


def neighbours():
    # Three items: 0 ~ 1 (0.5), 1 ~ 2 (0.25); each its own neighbour (1.0).
    dense = np.array(
        [[1.0, 0.5, 0.0], [0.5, 1.0, 0.25], [0.0, 0.25, 1.0]], np.float32
    )
    return sp.csr_matrix(dense)


def test_module_scores_neighbours_excludes_liked_and_backfills():
    vocab = np.array([10, 20, 30], np.int64)
    popular = np.array([2, 0, 1])  # item 30 most popular
    module = ItemNeighboursModule(vocab, neighbours(), popular, top_k=4)
    out = module.serve(tf.constant([[10, -1], [99, -1]], tf.int64))
    ids, scores = out["item_ids"].numpy(), out["scores"].numpy()
    # Row 0 liked 10: 20 scores 0.5, then 30 back-filled, then padding.
    np.testing.assert_array_equal(ids[0], [20, 30, -1, -1])
    np.testing.assert_allclose(scores[0], [0.5, 0.0, 0.0, 0.0])
    # Row 1 knows no item: the popular order, padded past 3 items.
    np.testing.assert_array_equal(ids[1], [30, 10, 20, -1])
    np.testing.assert_array_equal(scores[1], np.zeros(4, np.float32))


def test_export_writes_string_ids_and_metadata(tmp_path):
    vocab = np.array(["a", "b", "c"])
    version_dir = export_item_neighbours(
        tmp_path, None, vocab, neighbours(), np.array([0, 1, 2]), top_k=2
    )
    metadata = read_metadata(version_dir)
    assert metadata["task"] == "recommendation"
    assert metadata["inputs"]["item_ids"]["dtype"] == "string"
    assert metadata["outputs"]["scores"]["shape"] == [None, 2]
    signature = tf.saved_model.load(str(version_dir)).signatures[
        "serving_default"
    ]
    out = signature(item_ids=tf.constant([["b", ""]]))
    assert out["item_ids"].numpy()[0].tolist() == [b"a", b"c"]


def test_module_refuses_bad_ids_and_top_k():
    with pytest.raises(TypeError, match="int64 or unicode"):
        ItemNeighboursModule(
            np.array([1, "a", 2], object), neighbours(), np.arange(3), 2
        )
    with pytest.raises(ValueError, match="top_k"):
        ItemNeighboursModule(
            np.array([1, 2, 3]), neighbours(), np.arange(3), top_k=0
        )
