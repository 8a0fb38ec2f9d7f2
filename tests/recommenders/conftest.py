"""Shared MovieLens fixtures for the recommender tests (loaded once)."""

import pytest

from aiservice_kit.recommenders import interactions


@pytest.fixture(scope="session")
def movielens_likes(data_dir):
    """MovieLens small, ratings >= 4.0 as implicit feedback."""
    return interactions.load_movielens_ratings(
        data_dir / "movielens-latest-small", min_rating=4.0
    )


@pytest.fixture(scope="session")
def movielens_matrix(movielens_likes):
    matrix, users, items = interactions.encode_interactions(
        movielens_likes.user_ids, movielens_likes.item_ids
    )
    return matrix, users, items


@pytest.fixture(scope="session")
def movielens_split(movielens_likes):
    """Leave-last-5-out by timestamp: (train, test) Ratings."""
    test = interactions.leave_last_n_out(
        movielens_likes.user_ids, movielens_likes.timestamps, n=5
    )
    return movielens_likes.subset(~test), movielens_likes.subset(test)


@pytest.fixture(scope="session")
def movielens_ratings_all(data_dir):
    """MovieLens small, every explicit rating (0.5-5 stars)."""
    return interactions.load_movielens_ratings(
        data_dir / "movielens-latest-small"
    )
