"""The exported MatrixFactorization answers exactly like the Python object."""

import numpy as np
import pytest
import tensorflow as tf

from aiservice_kit import ExportError
from aiservice_kit import MatrixFactorization
from aiservice_kit._layout import FOLD_IN_SIGNATURE
from aiservice_kit._layout import RATING_SIGNATURE
from aiservice_kit._layout import read_metadata
from aiservice_kit.recommenders import interactions


def signatures(version_dir):
    return tf.saved_model.load(str(version_dir)).signatures


def padded(rows, pad, dtype):
    width = max(1, max(len(row) for row in rows))
    batch = np.full((len(rows), width), pad, dtype=dtype)
    for position, row in enumerate(rows):
        batch[position, : len(row)] = row
    return batch


def expected_with_exclusions(model, users, extra, top_k):
    """`recommend` on a longer list, the extra exclusions filtered out."""
    width = top_k + max(len(row) for row in extra)
    ids, scores = model.recommend(users, top_k=width)
    pad = "" if model.item_ids_.dtype.kind == "U" else -1
    out_ids = np.full((len(users), top_k), pad, dtype=model.item_ids_.dtype)
    out_scores = np.full((len(users), top_k), np.nan, np.float32)
    for row, drop in enumerate(extra):
        keep = ~np.isin(ids[row], list(drop)) & (ids[row] != pad)
        kept_ids, kept_scores = ids[row][keep][:top_k], scores[row][keep]
        out_ids[row, : len(kept_ids)] = kept_ids
        out_scores[row, : len(kept_ids)] = kept_scores[:top_k]
    return out_ids, out_scores


@pytest.fixture(scope="module")
def string_ratings():
    rng = np.random.default_rng(3)
    n = 800
    return interactions.Ratings(
        np.array([f"user-{u}" for u in rng.integers(0, 40, n)]),
        np.array([f"item-{i}" for i in rng.zipf(1.4, n) % 60]),
        rng.integers(1, 6, n).astype(np.float32),
    )


def test_explicit_export_matches_recommend_and_predict(
    string_ratings, tmp_path
):
    model = MatrixFactorization(
        n_factors=6, epochs=4, batch_size=128, rating_scale=(1, 5)
    ).fit(string_ratings)
    version_dir = model.export(tmp_path, top_k=8)
    assert version_dir == tmp_path / "1"
    metadata = read_metadata(version_dir)
    assert metadata["task"] == "recommendation"
    assert metadata["inputs"]["user_ids"]["dtype"] == "string"
    assert metadata["outputs"]["scores"]["shape"] == [None, 8]
    assert metadata["signatures"][RATING_SIGNATURE]["outputs"] == {
        "ratings": {"dtype": "float32", "shape": [None]}
    }
    served = signatures(version_dir)
    # Explicit fold-in needs ratings: no fold_in signature.
    assert set(served) == {"serving_default", RATING_SIGNATURE}

    users = np.array(list(model.user_ids_[:6]) + ["never-seen"])
    extra = [[], ["item-1", "item-2"], ["nope"], [], [], [], ["item-1"]]
    out = served["serving_default"](
        user_ids=tf.constant(users.astype(object)),
        item_ids=tf.constant(padded(extra, "", object)),
    )
    ids = out["item_ids"].numpy().astype(str)
    scores = out["scores"].numpy()
    want_ids, want_scores = expected_with_exclusions(model, users, extra, 8)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-6)
    # The unknown user is back-filled by popularity, NaN-marked, item-1 out.
    assert np.isnan(scores[-1]).all() and "item-1" not in ids[-1]
    # Without extra exclusions it is exactly `recommend(user_ids)`.
    plain = served["serving_default"](
        user_ids=tf.constant(users.astype(object)),
        item_ids=tf.constant(np.full((len(users), 1), "", object)),
    )
    want_ids, want_scores = model.recommend(users, top_k=8)
    np.testing.assert_array_equal(
        plain["item_ids"].numpy().astype(str), want_ids
    )
    np.testing.assert_allclose(
        plain["scores"].numpy(), want_scores, rtol=1e-5, atol=1e-6
    )

    pair_users = np.array(["user-1", "user-2", "ghost", "user-3", "ghost"])
    pair_items = np.array(["item-1", "ufo", "item-2", "item-0", "ufo"])
    ratings = served[RATING_SIGNATURE](
        user_ids=tf.constant(pair_users.astype(object)),
        item_ids=tf.constant(pair_items.astype(object)),
    )["ratings"].numpy()
    np.testing.assert_allclose(
        ratings,
        model.predict(pair_users, pair_items, unknown="baseline"),
        rtol=1e-6,
    )
    assert model.export(tmp_path, top_k=3) == tmp_path / "2"


def test_als_export_on_movielens_matches_recommend(movielens_likes, tmp_path):
    likes = movielens_likes
    model = MatrixFactorization("als", n_factors=16, epochs=3).fit(
        (likes.user_ids, likes.item_ids, np.ones(len(likes.user_ids)))
    )
    users = np.append(model.user_ids_[::25], [-7, 10**9])
    version_dir = model.export(tmp_path, top_k=20)
    assert read_metadata(version_dir)["inputs"]["item_ids"]["dtype"] == "int64"
    out = signatures(version_dir)["serving_default"](
        user_ids=tf.constant(users, tf.int64),
        item_ids=tf.constant(np.full((len(users), 1), -1), tf.int64),
    )
    want_ids, want_scores = model.recommend(users, top_k=20)
    np.testing.assert_array_equal(out["item_ids"].numpy(), want_ids)
    np.testing.assert_allclose(
        out["scores"].numpy(), want_scores, rtol=1e-4, atol=1e-6
    )

    # fold_in: a user given only by item ids, factors solved in the graph.
    histories = [
        likes.item_ids[likes.user_ids == user][:30].tolist()
        for user in np.unique(likes.user_ids)[::40]
    ]
    histories[0] = histories[0] + histories[0][:3]  # repeats weigh more
    histories[1] = []  # nothing known: popularity back-fill
    folded = signatures(version_dir)[FOLD_IN_SIGNATURE](
        item_ids=tf.constant(padded(histories, -1, np.int64))
    )
    want_ids, want_scores = model.recommend(
        None, top_k=20, user_items=histories
    )
    np.testing.assert_array_equal(folded["item_ids"].numpy(), want_ids)
    np.testing.assert_allclose(
        folded["scores"].numpy(), want_scores, rtol=1e-4, atol=1e-5
    )
    assert np.isnan(folded["scores"].numpy()[1]).all()


def test_export_pads_when_items_run_out_and_refuses_mixed_ids(tmp_path):
    model = MatrixFactorization("als", n_factors=2, epochs=2).fit(
        ([1, 1, 2, 2], [10, 20, 10, 30], [1.0, 1.0, 1.0, 1.0])
    )
    out = signatures(model.export(tmp_path, top_k=4))["serving_default"](
        user_ids=tf.constant([1, 2], tf.int64),
        item_ids=tf.constant([[30], [-1]], tf.int64),
    )
    # User 1 saw 10 and 20 and excludes 30: nothing left but padding.
    np.testing.assert_array_equal(out["item_ids"].numpy()[0], [-1] * 4)
    assert np.isnan(out["scores"].numpy()[0]).all()
    want_ids, _ = model.recommend(2, top_k=4)
    np.testing.assert_array_equal(out["item_ids"].numpy()[1], want_ids)
    mixed = MatrixFactorization("als", n_factors=2, epochs=2).fit(
        ([1, "a"], [10, 20], [1.0, 1.0])
    )
    with pytest.raises(ExportError, match="user ids that are all integers"):
        mixed.export(tmp_path / "mixed")


def test_bpr_fold_in_on_string_ids_matches_recommend(string_ratings, tmp_path):
    model = MatrixFactorization(
        "bpr", n_factors=4, epochs=3, batch_size=128
    ).fit(string_ratings)
    assert np.abs(model.item_bias_).max() > 0  # the bias term is exercised
    histories = [["item-1", "item-5"], ["item-2"], [], ["item-0", "item-3"]]
    folded = signatures(model.export(tmp_path, top_k=6))[FOLD_IN_SIGNATURE](
        item_ids=tf.constant(padded(histories, "", object))
    )
    want_ids, want_scores = model.recommend(None, top_k=6, user_items=histories)
    np.testing.assert_array_equal(
        folded["item_ids"].numpy().astype(str), want_ids
    )
    np.testing.assert_allclose(
        folded["scores"].numpy(), want_scores, rtol=1e-4, atol=1e-5
    )
