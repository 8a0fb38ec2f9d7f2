"""Interactions: id mapping, implicit feedback, per-user splits, loader."""

import numpy as np
import pytest

from aiservice_kit.recommenders import interactions


def test_encode_maps_any_ids_and_sums_duplicates():
    matrix, users, items = interactions.encode_interactions(
        ["bob", "ann", "ann", "ann", "bob"],
        ["y", "x", "y", "x", "z"],
        [1.0, 2.0, 0.5, 1.0, 0.0],
    )
    np.testing.assert_array_equal(users, ["ann", "bob"])
    np.testing.assert_array_equal(items, ["x", "y", "z"])
    np.testing.assert_array_equal(
        matrix.toarray(), [[3.0, 0.5, 0.0], [0.0, 1.0, 0.0]]
    )
    assert matrix.nnz == 3  # the zero weight is dropped
    assert matrix.dtype == np.float32


def test_encode_with_fixed_vocabularies():
    _, users, items = interactions.encode_interactions([1, 2], [10, 20])
    matrix, _, _ = interactions.encode_interactions(
        [2, 3], [20, 30], users=users, items=items, unknown="ignore"
    )
    np.testing.assert_array_equal(matrix.toarray(), [[0, 0], [0, 1]])
    with pytest.raises(ValueError, match=r"unknown ids: \[3\]"):
        interactions.encode_interactions(
            [2, 3], [20, 20], users=users, items=items
        )


def test_lookup_and_vocabulary():
    vocab = interactions.vocabulary(["b", "a", "b"])
    np.testing.assert_array_equal(vocab, ["a", "b"])
    np.testing.assert_array_equal(
        interactions.lookup(vocab, ["b", "zz"], unknown="ignore"), [1, -1]
    )
    mixed = interactions.vocabulary([2, "a", 2])
    assert mixed.dtype == object and len(mixed) == 2


def test_to_implicit():
    ratings = [5.0, 3.5, 4.0, 0.5]
    np.testing.assert_array_equal(
        interactions.to_implicit(ratings, 4.0), [1, 0, 1, 0]
    )
    np.testing.assert_array_equal(
        interactions.to_implicit(ratings, 4.0, binary=False), [5, 0, 4, 0]
    )


def test_random_split_is_per_user_and_seeded():
    users = np.repeat(["a", "b", "c"], [10, 5, 1])
    test = interactions.random_split(users, test_fraction=0.2, seed=3)
    assert test[users == "a"].sum() == 2
    assert test[users == "b"].sum() == 1
    assert test[users == "c"].sum() == 0  # a lone event stays in training
    again = interactions.random_split(users, test_fraction=0.2, seed=3)
    np.testing.assert_array_equal(test, again)
    other = interactions.random_split(users, test_fraction=0.2, seed=4)
    assert not np.array_equal(test, other)
    with pytest.raises(ValueError, match="test_fraction"):
        interactions.random_split(users, test_fraction=1.0)


def test_leave_last_n_out_takes_each_users_latest(movielens_likes):
    likes = movielens_likes
    test = interactions.leave_last_n_out(likes.user_ids, likes.timestamps, n=5)
    counts = np.bincount(likes.user_ids)
    tested = np.bincount(likes.user_ids[test], minlength=len(counts))
    eligible = counts >= 6
    assert (tested[eligible] == 5).all() and (tested[~eligible] == 0).all()
    for user in np.unique(likes.user_ids)[:50]:
        mine = likes.user_ids == user
        if test[mine].any():
            assert likes.timestamps[mine & test].min() >= (
                likes.timestamps[mine & ~test].max()
            )
    with pytest.raises(ValueError, match="timestamps"):
        interactions.leave_last_n_out([1, 2], [1], n=1)
    with pytest.raises(ValueError, match="n"):
        interactions.leave_last_n_out([1], [1], n=0)


def test_load_movielens(data_dir, tmp_path):
    folder = data_dir / "movielens-latest-small"
    ratings = interactions.load_movielens_ratings(folder)
    assert len(ratings) == 100836  # the documented size of ml-latest-small
    assert ratings.ratings.min() == 0.5 and ratings.ratings.max() == 5.0
    liked = interactions.load_movielens_ratings(
        folder / "ratings.csv", min_rating=4.0
    )
    assert len(liked) == int((ratings.ratings >= 4.0).sum())
    bad = tmp_path / "ratings.csv"
    bad.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(ValueError, match="columns"):
        interactions.load_movielens_ratings(bad)
    with pytest.raises(FileNotFoundError):
        interactions.load_movielens_ratings(tmp_path / "missing")


def test_bad_ids_and_weights():
    with pytest.raises(TypeError, match="not floats"):
        interactions.encode_interactions([0.5], [1])
    with pytest.raises(TypeError, match="1-D sequence"):
        interactions.encode_interactions("abc", [1, 2, 3])
    with pytest.raises(ValueError, match="one value per interaction"):
        interactions.encode_interactions([1, 2], [1, 2], [1.0])
    with pytest.raises(ValueError, match="finite"):
        interactions.encode_interactions([1], [1], [np.inf])
