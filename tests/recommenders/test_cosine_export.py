"""The exported SavedModel answers exactly like the Python object."""

import json

import numpy as np
import pytest
import tensorflow as tf

from aiservice_kit import CosineRecommender
from aiservice_kit import ExportError


def serve(version_dir, rows, pad, dtype):
    width = max(len(row) for row in rows)
    batch = np.full((len(rows), width), pad, dtype=dtype)
    for position, row in enumerate(rows):
        batch[position, : len(row)] = row
    signature = tf.saved_model.load(str(version_dir)).signatures[
        "serving_default"
    ]
    out = signature(item_ids=tf.constant(batch))
    return out["item_ids"].numpy(), out["scores"].numpy()


def test_export_matches_recommend_int_ids(movielens_likes, tmp_path):
    likes = movielens_likes
    model = CosineRecommender().fit((likes.user_ids, likes.item_ids))
    users = np.unique(likes.user_ids)[::7]
    histories = [
        likes.item_ids[likes.user_ids == user][::-1].tolist() for user in users
    ]
    histories[0] = histories[0] + [-5, 10**9]  # unknown ids are ignored
    histories[1] = []  # empty history: the cold-start answer
    version_dir = model.export(tmp_path, top_k=12)
    assert version_dir == tmp_path / "1"
    metadata = json.loads(
        (version_dir / "assets.extra" / "aiservice_kit.json").read_text()
    )
    assert metadata["task"] == "recommendation"
    assert metadata["inputs"]["item_ids"]["dtype"] == "int64"
    assert metadata["outputs"]["scores"]["shape"] == [None, 12]

    ids, scores = serve(version_dir, histories, -1, np.int64)
    want_ids, want_scores = model.recommend(
        None, top_k=12, user_items=histories, unknown_items="ignore"
    )
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(scores, want_scores)
    assert (scores[1] == 0).all()  # back-filled by popularity
    assert model.export(tmp_path, top_k=3) == tmp_path / "2"


def test_export_matches_recommend_string_ids(tmp_path):
    rng = np.random.default_rng(0)
    users = rng.integers(0, 40, 400)
    items = np.array([f"item-{i}" for i in rng.zipf(1.5, 400) % 30])
    model = CosineRecommender(n_neighbors=5).fit((users, items))
    histories = [
        ["item-1", "item-7", "never-seen"],
        ["item-3"],
        [],
        list(model.item_ids_[:-1]),  # almost everything: padding at the end
    ]
    version_dir = model.export(tmp_path, top_k=6)
    ids, scores = serve(version_dir, histories, "", object)
    want_ids, want_scores = model.recommend(
        None, top_k=6, user_items=histories, unknown_items="ignore"
    )
    np.testing.assert_array_equal(ids.astype(str), want_ids)
    np.testing.assert_array_equal(scores, want_scores)
    assert want_ids[3, 0] == model.item_ids_[-1] and want_ids[3, 1] == ""


def test_export_refuses_what_it_cannot_serve(tmp_path):
    users = [0, 0, 1, 1]
    with pytest.raises(ExportError, match="kind='item'"):
        CosineRecommender("user").fit((users, [1, 2, 1, 3])).export(tmp_path)
    with pytest.raises(ExportError, match="integers or all strings"):
        CosineRecommender().fit((users, [1, "a", 1, 2])).export(tmp_path)
