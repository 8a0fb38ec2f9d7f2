"""Recommender inputs a user gets wrong: missing ids, bad saved files."""

import numpy as np
import pandas as pd
import pytest

from aiservice_kit import CosineRecommender
from aiservice_kit import KNNRatingPredictor
from aiservice_kit import MatrixFactorization
from aiservice_kit.recommenders import interactions

USERS = ["a", "a", "b", "b", "c"]
ITEMS = ["x", "y", "x", "z", "y"]
RATINGS = [1.0, 2.0, 3.0, 4.0, 5.0]


def _fit_mf():
    return MatrixFactorization(n_factors=2, epochs=1).fit(
        (USERS, ITEMS, RATINGS)
    )


# ------------------------------------------------------------ missing ids


def _with_missing(values, position, missing):
    column = np.array(values, dtype=object)
    column[position] = missing
    return column


MISSING = [None, np.nan, float("nan"), pd.NA]


@pytest.mark.parametrize("missing", MISSING, ids=repr)
@pytest.mark.parametrize(
    "fit",
    [
        lambda u, i: MatrixFactorization(n_factors=2, epochs=1).fit(
            (u, i, RATINGS)
        ),
        lambda u, i: KNNRatingPredictor().fit((u, i, RATINGS)),
        lambda u, i: CosineRecommender().fit((u, i)),
        lambda u, i: interactions.encode_interactions(u, i),
    ],
    ids=["MatrixFactorization", "KNNRatingPredictor", "Cosine", "encode"],
)
@pytest.mark.parametrize("argument", ["user_ids", "item_ids"])
def test_a_missing_id_is_refused_naming_its_position(fit, argument, missing):
    users, items = list(USERS), list(ITEMS)
    if argument == "user_ids":
        users = _with_missing(users, 3, missing)
    else:
        items = _with_missing(items, 3, missing)

    with pytest.raises(ValueError) as caught:
        fit(users, items)

    message = str(caught.value)
    assert message.startswith(f"`{argument}` must hold an id for every")
    assert "1 missing" in message and "the first at position 3" in message


@pytest.mark.parametrize(
    "column",
    [
        pd.Series(["a", None, "b", None, "c"]),  # object column
        pd.Series([1.0, 2.0, np.nan, 3.0, np.nan]),  # int ids with gaps
        [1, 2, None, 3, 4],  # a plain list
    ],
    ids=["object-series", "float-series", "list"],
)
def test_missing_ids_from_pandas_are_refused(column):
    with pytest.raises(ValueError, match="2 missing|1 missing") as caught:
        CosineRecommender().fit((column, ITEMS))
    assert "`user_ids`" in str(caught.value)
    assert "position" in str(caught.value)


def test_floats_without_gaps_are_still_refused_as_floats():
    with pytest.raises(TypeError, match="not floats"):
        interactions.encode_interactions([0.5, 1.5], [1, 2])


# ---------------------------------------------------------- saved files


def test_matrix_factorization_loads_the_path_given_to_save(tmp_path):
    model = _fit_mf()
    model.save(tmp_path / "mf")  # numpy writes mf.npz

    again = MatrixFactorization.load(tmp_path / "mf")

    np.testing.assert_array_equal(
        again.predict(USERS, ITEMS), model.predict(USERS, ITEMS)
    )
    assert MatrixFactorization.load(str(tmp_path / "mf.npz")).n_factors == 2


@pytest.mark.parametrize(
    ("cls", "save"),
    [
        (MatrixFactorization, lambda path: _fit_mf().save(path)),
        (CosineRecommender, lambda path: CosineRecommender().fit(
            (USERS, ITEMS)).save(path)),
    ],
    ids=["MatrixFactorization", "CosineRecommender"],
)  # fmt: skip
def test_load_refuses_what_save_did_not_write(cls, save, tmp_path):
    name = cls.__name__
    text = tmp_path / "junk.npz"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not a saved " + name) as caught:
        cls.load(text)
    assert "pickled" not in str(caught.value)
    assert repr(str(text)) in str(caught.value)

    with pytest.raises(ValueError, match="is a directory") as caught:
        cls.load(tmp_path)
    assert repr(str(tmp_path)) in str(caught.value)

    with pytest.raises(FileNotFoundError, match="no file at"):
        cls.load(tmp_path / "missing")

    save(tmp_path / "model")  # a round trip still works, suffix or not
    assert isinstance(cls.load(tmp_path / "model"), cls)
    assert isinstance(cls.load(tmp_path / "model.npz"), cls)
