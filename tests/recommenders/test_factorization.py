"""MatrixFactorization and KNNRatingPredictor: contract, errors, storage,
replicas, and the acceptance comparisons against surprise."""

import subprocess
import sys

import numpy as np
import pytest
from sklearn.base import clone

from aiservice_kit import KNNRatingPredictor
from aiservice_kit import MatrixFactorization
from aiservice_kit import NotFittedError
from aiservice_kit.recommenders import _factor_scoring
from aiservice_kit.recommenders import interactions
from aiservice_kit.recommenders import metrics


def toy_ratings(n_users=30, n_items=20, n=300, seed=0, strings=False):
    """Ratings from a rank-2 taste model on a 1-5 scale."""
    rng = np.random.default_rng(seed)
    u = rng.integers(0, n_users, n)
    i = rng.integers(0, n_items, n)
    taste = rng.normal(size=(n_users, 2)) @ rng.normal(size=(2, n_items))
    r = np.clip(np.rint(3 + taste[u, i]), 1, 5).astype(np.float32)
    if strings:
        return interactions.Ratings(
            np.array([f"u{x}" for x in u]), np.array([f"i{x}" for x in i]), r
        )
    return interactions.Ratings(u.astype(np.int64), i.astype(np.int64), r)


FAST = {"epochs": 3, "batch_size": 64, "n_factors": 4}


@pytest.fixture(scope="module")
def explicit_model():
    return MatrixFactorization(rating_scale=(1, 5), **FAST).fit(
        toy_ratings(strings=True)
    )


def test_import_does_not_load_tensorflow():
    code = (
        "import sys, aiservice_kit;"
        "from aiservice_kit import MatrixFactorization, KNNRatingPredictor;"
        "MatrixFactorization('als', epochs=2).fit("
        "(['a','a','b'],['x','y','x'],[1.0,1.0,1.0]));"
        # The explicit fit on one device runs the compiled kernel.
        "MatrixFactorization(epochs=2).fit("
        "(['a','a','b'],['x','y','x'],[1.0,2.0,3.0]));"
        "print('tensorflow' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True
    )
    assert out.stdout.strip() == "False", out.stderr


def test_params_contract_and_clone():
    model = MatrixFactorization("bpr", n_factors=8, epochs=2)
    assert model.get_params()["objective"] == "bpr"
    other = clone(model).set_params(n_factors=3)
    assert other.n_factors == 3 and model.n_factors == 8
    assert "n_factors=8" in repr(model)
    with pytest.raises(ValueError, match="Invalid parameter 'k'"):
        model.set_params(k=1)


def test_explicit_fit_predict_recommend_similar(explicit_model):
    model = explicit_model
    assert model.user_factors_.shape == (len(model.user_ids_), 4)
    assert len(model.history_["loss"]) == 3
    pred = model.predict(["u1", "u2"], ["i3", "i4"])
    assert pred.dtype == np.float32 and pred.shape == (2,)
    assert ((pred >= 1) & (pred <= 5)).all()
    # The prediction is the documented formula, from numpy arrays.
    u = list(model.user_ids_).index("u1")
    i = list(model.item_ids_).index("i3")
    expected = (
        model.global_mean_
        + model.user_bias_[u]
        + model.item_bias_[i]
        + model.user_factors_[u] @ model.item_factors_[i]
    )
    assert pred[0] == pytest.approx(np.clip(expected, 1, 5), abs=1e-5)
    items, scores = model.recommend(["u1", "u2"], top_k=5)
    assert items.shape == (2, 5) and np.isfinite(scores).all()
    assert (np.diff(scores, axis=1) <= 1e-6).all()
    liked = set(model.user_items_[u].indices)
    assert not liked & {list(model.item_ids_).index(x) for x in items[0]}
    neighbours, sims = model.similar_items("i3", top_k=4)
    assert "i3" not in neighbours and len(neighbours) == 4
    assert (sims <= 1 + 1e-6).all()
    users, _ = model.similar_users(["u1"], top_k=3)
    assert users.shape == (1, 3) and "u1" not in users[0]


def test_top_k_is_guaranteed_and_backfill_is_marked(explicit_model):
    model = explicit_model
    n_items = len(model.item_ids_)
    items, scores = model.recommend("u1", top_k=n_items)
    seen = model.user_items_[list(model.user_ids_).index("u1")].nnz
    assert (items[: n_items - seen] != "").all()
    assert (items[n_items - seen :] == "").all()
    assert np.isnan(scores[n_items - seen :]).all()
    cold, cold_scores = model.recommend(["nobody"], top_k=3)
    top = model.item_ids_[np.argsort(-model.item_popularity_, kind="stable")]
    assert list(cold[0]) == list(top[:3]) and np.isnan(cold_scores).all()


def test_fold_in_answers_new_users_from_their_history(explicit_model):
    model = explicit_model
    u = list(model.user_ids_).index("u1")
    row = model.user_items_[u]
    history = {
        model.item_ids_[j]: float(v)
        for j, v in zip(row.indices, row.data, strict=True)
    }
    items, scores = model.recommend(None, top_k=3, user_items=[history])
    assert items.shape == (1, 3) and np.isfinite(scores).all()
    assert not set(items[0]) & set(history)
    with pytest.raises(TypeError, match="mappings"):
        model.recommend(None, user_items=[["i1"]])


def test_histories_are_parsed_alike_by_both_recommenders(explicit_model):
    """`recommend(user_items=...)` has one parser (`_rating_data`)."""
    import scipy.sparse as sp

    from aiservice_kit import CosineRecommender

    data = toy_ratings(strings=True)
    cosine = CosineRecommender(n_neighbors=5).fit(
        (data.user_ids, data.item_ids, data.ratings)
    )
    als = MatrixFactorization("als", **FAST).fit(data)
    histories = [["i1", "i2", "i1"], ["i3", "ghost"]]
    for model in (cosine, als):
        with pytest.raises(ValueError, match=r"unknown ids: \['ghost'\]"):
            model.recommend(None, user_items=histories)
        nan_row = sp.csr_matrix(
            ([np.nan], ([0], [0])), shape=(1, len(model.item_ids_))
        )
        with pytest.raises(ValueError, match="finite"):
            model.recommend(None, user_items=nan_row)
    # Implicit: repeats add up as weights; unknown items may be dropped.
    for model in (cosine, als):
        twice = model.recommend(None, user_items=[["i1", "i1", "i2"]])
        weighted = model.recommend(None, user_items=[{"i1": 2.0, "i2": 1}])
        np.testing.assert_array_equal(twice[0], weighted[0])
        np.testing.assert_allclose(twice[1], weighted[1], rtol=1e-6)
    kept, _ = cosine.recommend(
        None, user_items=histories, unknown_items="ignore"
    )
    np.testing.assert_array_equal(
        kept[1], cosine.recommend(None, user_items=[["i3"]])[0][0]
    )
    with pytest.raises(ValueError, match="rating_scale"):
        explicit_model.recommend(None, user_items=[{"i1": 9.0}])


@pytest.mark.parametrize(
    ("data", "match", "error"),
    [
        ((["a"], ["x"], [np.nan]), "finite", ValueError),
        ((["a", "b"], ["x", "y"], [3.0, 9.0]), "rating_scale", ValueError),
        (([], [], []), "at least one", ValueError),
        ((["a"], ["x", "y"], [3.0]), "same length", ValueError),
        ((["a"], ["x"], ["good"]), "numeric", TypeError),
        ([1, 2, 3], "Ratings", TypeError),
    ],
)
def test_bad_training_data_is_refused_clearly(data, match, error):
    with pytest.raises(error, match=match):
        MatrixFactorization(rating_scale=(1, 5), **FAST).fit(data)
    with pytest.raises(error, match=match):
        KNNRatingPredictor(rating_scale=(1, 5)).fit(data)


def test_bad_queries_and_params_are_refused_clearly(explicit_model):
    with pytest.raises(ValueError, match=r"unknown ids: \['ghost'\]"):
        explicit_model.predict(["ghost"], ["i1"])
    baseline = explicit_model.predict(["ghost"], ["i1"], unknown="baseline")
    assert np.isfinite(baseline).all()
    with pytest.raises(ValueError, match="top_k"):
        explicit_model.recommend("u1", top_k=0)
    with pytest.raises(ValueError, match="unknown ids"):
        explicit_model.similar_items("nothing")
    with pytest.raises(NotFittedError, match="fit"):
        MatrixFactorization().predict([1], [1])
    with pytest.raises(ValueError, match="objective"):
        MatrixFactorization("svd").fit(toy_ratings())
    with pytest.raises(ValueError, match="learning_rate"):
        MatrixFactorization(learning_rate=-1).fit(toy_ratings())
    with pytest.raises(ValueError, match="rating_scale"):
        MatrixFactorization(rating_scale=(5, 1)).fit(toy_ratings())
    with pytest.raises(ValueError, match=">= 0"):
        MatrixFactorization("als").fit((["a"], ["x"], [-1.0]))


@pytest.mark.parametrize("objective", ["explicit", "als", "bpr"])
def test_save_load_gives_identical_answers(objective, tmp_path):
    data = toy_ratings(strings=objective != "als")
    model = MatrixFactorization(objective, **FAST).fit(data)
    model.save(tmp_path / "mf.npz")
    loaded = MatrixFactorization.load(tmp_path / "mf.npz")
    assert loaded.get_params() == model.get_params()
    users, items = data.user_ids[:50], data.item_ids[:50]
    np.testing.assert_array_equal(
        loaded.predict(users, items), model.predict(users, items)
    )
    a, sa = model.recommend(users[:10], top_k=5)
    b, sb = loaded.recommend(users[:10], top_k=5)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(sa, sb)
    with pytest.raises(ValueError, match="MatrixFactorization saved"):
        np.savez(tmp_path / "other.npz", x=np.zeros(1))
        MatrixFactorization.load(tmp_path / "other.npz")


def test_implicit_objectives_rank_the_held_out_items(movielens_split):
    train, test = movielens_split
    users = np.unique(test.user_ids)[:100]
    relevant = [set(test.item_ids[test.user_ids == u]) for u in users]
    als = MatrixFactorization("als", n_factors=16, epochs=5).fit(train)
    items, scores = als.recommend(users, top_k=10)
    assert metrics.ndcg_at_k(items, relevant, 10) > 0.02
    assert np.isfinite(scores).all()
    popular = als.item_ids_[np.argsort(-als.item_popularity_)][:10]
    assert (items != popular).any()


def test_pure_scoring_functions_match_brute_force():
    rng = np.random.default_rng(1)
    p, q = rng.normal(size=(5, 3)), rng.normal(size=(7, 3))
    bu, bi = rng.normal(size=5), rng.normal(size=7)
    got = _factor_scoring.predict_ratings(
        p, q, bu, bi, 3.0, np.array([0, 4, -1]), np.array([6, -1, 2])
    )
    want = [3 + bu[0] + bi[6] + p[0] @ q[6], 3 + bu[4], 3 + bi[2]]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    idx, val = _factor_scoring.top_k_items(p, q, bi, 3)
    dense = p @ q.T + bi
    np.testing.assert_array_equal(idx, np.argsort(-dense, axis=1)[:, :3])
    np.testing.assert_allclose(val, -np.sort(-dense, axis=1)[:, :3], rtol=1e-5)


def test_knn_matches_brute_force_surprise_rule():
    data = toy_ratings(n_users=12, n_items=8, n=70)
    _, first = np.unique(data.user_ids * 8 + data.item_ids, return_index=True)
    data = data.subset(first)
    model = KNNRatingPredictor(n_neighbors=3, centering="mean").fit(data)
    dense = np.zeros((12, 8))
    dense[data.user_ids, data.item_ids] = data.ratings
    norms = np.linalg.norm(dense, axis=1)
    sim = dense @ dense.T / np.maximum(np.outer(norms, norms), 1e-12)
    means = np.array(
        [row[row > 0].mean() if (row > 0).any() else 0 for row in dense]
    )
    for u, i in [(0, 1), (3, 5), (7, 2), (11, 0)]:
        raters = [v for v in range(12) if v != u and dense[v, i] > 0]
        raters = sorted(raters, key=lambda v: (-sim[u, v], v))[:3]
        s = np.array([sim[u, v] for v in raters])
        if len(raters) and s.sum() > 0:
            dev = np.array([dense[v, i] - means[v] for v in raters])
            want = means[u] + (s * dev).sum() / s.sum()
        else:
            want = means[u]
        want = np.clip(want, data.ratings.min(), data.ratings.max())
        assert model.predict(u, i) == pytest.approx(want, abs=1e-4)


def test_rating_metrics_and_folds():
    assert metrics.rmse([4.0, 3.0], [3.5, 3.0]) == pytest.approx(0.125**0.5)
    assert metrics.mae([4.0, 3.0], [3.5, 3.0]) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="same length"):
        metrics.rmse([1.0], [1.0, 2.0])
    folds = interactions.kfold_split(10, n_splits=3, seed=0)
    assert sorted(np.bincount(folds)) == [3, 3, 4]
    np.testing.assert_array_equal(
        folds, interactions.kfold_split(10, n_splits=3, seed=0)
    )
    test = interactions.temporal_split([5, 1, 4, 2, 3], test_fraction=0.4)
    np.testing.assert_array_equal(test, [True, False, True, False, False])
    scores = metrics.cross_validate(
        KNNRatingPredictor(n_neighbors=5), toy_ratings(), n_splits=3
    )
    assert scores["test_rmse"].shape == (3,)
    assert (scores["test_mae"] <= scores["test_rmse"] + 1e-9).all()


def test_loaders_read_the_three_movielens_layouts(tmp_path):
    (tmp_path / "u.data").write_text("1\t10\t4\t100\n2\t20\t3\t101\n")
    dat = tmp_path / "ratings.dat"
    dat.write_text("1::10::4::100\n2::20::5::102\n")
    hundred_k = interactions.load_movielens_ratings(tmp_path / "u.data")
    one_m = interactions.load_movielens_ratings(dat)
    assert hundred_k.item_ids.tolist() == [10, 20]
    assert one_m.ratings.tolist() == [4.0, 5.0]
    assert one_m.timestamps.tolist() == [100, 102]
    with pytest.raises(FileNotFoundError, match="u.data"):
        interactions.load_movielens_ratings(tmp_path / "missing")


def test_compiled_fit_is_the_keras_training():
    """Outside a strategy scope the explicit fit runs a compiled kernel;
    inside one, `keras.Model.fit`. Same tables, batches and Adam steps:
    equal up to float32 summation order (tolerance 1e-5)."""
    import tensorflow as tf

    data = toy_ratings(n=500)  # 500 = 3 full batches + a partial one
    params = {"rating_scale": (1, 5), "epochs": 3, "batch_size": 128}
    compiled = MatrixFactorization(n_factors=4, **params).fit(data)
    with tf.distribute.OneDeviceStrategy("/cpu:0").scope():
        keras_fit = MatrixFactorization(n_factors=4, **params).fit(data)
    np.testing.assert_allclose(
        compiled.history_["loss"], keras_fit.history_["loss"], rtol=1e-5
    )
    for name in ("user_factors_", "item_factors_", "user_bias_", "item_bias_"):
        np.testing.assert_allclose(
            getattr(compiled, name), getattr(keras_fit, name), atol=1e-5
        )


@pytest.mark.multi_device
def test_two_replicas_give_the_loss_of_one():
    from aiservice_kit import get_strategy

    data = toy_ratings(n=512)
    params = {"rating_scale": (1, 5), "epochs": 3, "batch_size": 128}
    # One device: the compiled kernel; two replicas: keras.Model.fit.
    single = MatrixFactorization(n_factors=4, **params).fit(data)
    strategy = get_strategy("mirrored", log=False)
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        mirrored = MatrixFactorization(n_factors=4, **params).fit(data)
    # Same seed, same global batches: the replicas' mean gradient is the
    # single-device gradient up to float32 summation order.
    np.testing.assert_allclose(
        mirrored.history_["loss"], single.history_["loss"], rtol=1e-4
    )
    np.testing.assert_allclose(
        mirrored.item_factors_, single.item_factors_, atol=1e-4
    )


@pytest.mark.large
def test_acceptance_against_surprise_on_movielens(movielens_ratings_all):
    """Same 3 folds (of 5, seed 0) for every model; margin 0."""
    surprise = pytest.importorskip("surprise")
    ratings = movielens_ratings_all
    folds = interactions.kfold_split(len(ratings), n_splits=5, seed=0)
    rows = list(
        zip(ratings.user_ids, ratings.item_ids, ratings.ratings, strict=True)
    )
    reader = surprise.Reader(rating_scale=(0.5, 5.0))
    ours = {"mf": [], "knn": []}
    theirs = {"svd": [], "knn": []}
    for fold in range(3):
        train = ratings.subset(folds != fold)
        test = ratings.subset(folds == fold)
        mf = MatrixFactorization(rating_scale=(0.5, 5.0)).fit(train)
        knn = KNNRatingPredictor(rating_scale=(0.5, 5.0), centering="mean")
        knn.fit(train)
        for name, model in (("mf", mf), ("knn", knn)):
            pred = model.predict(
                test.user_ids, test.item_ids, unknown="baseline"
            )
            ours[name].append(metrics.rmse(test.ratings, pred))
        train_rows = [rows[j] for j in np.flatnonzero(folds != fold)]
        data = surprise.Dataset(reader)
        data.raw_ratings = [(u, i, float(r), None) for u, i, r in train_rows]
        trainset = data.construct_trainset(data.raw_ratings)
        testset = [
            (u, i, float(r))
            for u, i, r in (rows[j] for j in np.flatnonzero(folds == fold))
        ]
        for name, algo in (
            ("svd", surprise.SVD(random_state=0)),
            ("knn", surprise.KNNBasic(verbose=False)),
        ):
            algo.fit(trainset)
            est = np.array([p.est for p in algo.test(testset)])
            truth = np.array([r for _, _, r in testset])
            theirs[name].append(metrics.rmse(truth, est))
    assert np.mean(ours["mf"]) <= np.mean(theirs["svd"])
    assert np.mean(ours["knn"]) <= np.mean(theirs["knn"])
