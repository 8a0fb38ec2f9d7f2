"""CosineRecommender: semantics, parity with implicit, fixes, errors."""

import sys

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone

from aiservice_kit import CosineRecommender
from aiservice_kit import NotFittedError
from aiservice_kit.recommenders import interactions
from aiservice_kit.recommenders import metrics


def random_matrix(n_users=40, n_items=25, density=0.2, seed=0):
    """Small users x items matrix with distinct positive weights."""
    rng = np.random.default_rng(seed)
    matrix = sp.random(
        n_users, n_items, density=density, format="csr", random_state=rng
    )
    matrix.data = (matrix.data + 0.1).astype(np.float32)
    return matrix.astype(np.float32)


def dense_reference(matrix, kind, k, top_k):
    """Brute force in numpy float64: the documented semantics."""
    x = matrix.toarray().astype(np.float64)
    if kind == "item":
        xn = x / np.maximum(np.linalg.norm(x, axis=0), 1e-300)
        sim = xn.T @ xn
    else:
        xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-300)
        sim = xn @ xn.T
    kept = np.zeros_like(sim)
    for row in range(sim.shape[0]):
        best = np.argsort(-sim[row], kind="stable")[:k]
        best = best[sim[row, best] > 0]
        kept[row, best] = sim[row, best]
    scores = x @ kept if kind == "item" else kept @ x
    scores[x > 0] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :top_k]
    return order, np.take_along_axis(scores, order, axis=1)


@pytest.mark.parametrize("kind", ["item", "user"])
def test_scores_follow_the_documented_formula(kind):
    matrix = random_matrix(60, 30, density=0.25)
    model = CosineRecommender(kind, n_neighbors=6).fit(matrix)
    ids, scores = model.recommend(np.arange(60), top_k=5, backfill=False)
    want_ids, want_scores = dense_reference(matrix, kind, 6, 5)
    scored = scores > 0
    np.testing.assert_array_equal(ids[scored], want_ids[scored])
    np.testing.assert_allclose(scores[scored], want_scores[scored], rtol=1e-5)
    # Where ours stopped (nothing else scored), the reference has 0 or -inf.
    assert np.all(want_scores[~scored] <= 0)


# implicit's own fit hands a COO matrix to itself and warns about it.
IMPLICIT_WARNING = "ignore:Method expects CSR input"


def _both_graphs(matrix, n_neighbors, kind="item"):
    """Our fitted model, implicit's and its similarity graph (sorted CSR)
    on the same data and K; the graphs' structures must already be equal."""
    implicit_nn = pytest.importorskip("implicit.nearest_neighbours")
    ours = CosineRecommender(n_neighbors=n_neighbors, kind=kind).fit(matrix)
    theirs = implicit_nn.CosineRecommender(K=n_neighbors)
    theirs.fit(
        matrix if kind == "item" else matrix.T.tocsr(), show_progress=False
    )
    graph = sp.csr_matrix(theirs.similarity)
    graph.sort_indices()
    np.testing.assert_array_equal(graph.indptr, ours.similarity_.indptr)
    np.testing.assert_array_equal(graph.indices, ours.similarity_.indices)
    return ours, theirs, graph


@pytest.mark.filterwarnings(IMPLICIT_WARNING)
@pytest.mark.parametrize("n_neighbors", [20, 100])
def test_parity_with_implicit_on_movielens(movielens_matrix, n_neighbors):
    matrix, _, _ = movielens_matrix
    # The neighbour graphs are the same, entry for entry.
    ours, theirs, graph = _both_graphs(matrix, n_neighbors)
    np.testing.assert_allclose(graph.data, ours.similarity_.data, rtol=1e-6)

    users = np.arange(matrix.shape[0])
    ids, scores = ours.recommend(users, top_k=10)
    overlaps = []
    for user in users:
        liked = matrix[user].indices
        found, found_scores = theirs.recommend(
            user, matrix[user], N=10 + len(liked)
        )
        keep = ~np.isin(found, liked)
        found, found_scores = found[keep][:10], found_scores[keep][:10]
        tenth = found_scores[-1]
        tied = np.isclose(scores[user], tenth, rtol=1e-5)
        hits = np.isin(ids[user], found) | tied
        overlaps.append(min(hits.sum(), 10) / 10)
    assert np.mean(overlaps) >= 0.99


@pytest.mark.filterwarnings(IMPLICIT_WARNING)
@pytest.mark.parametrize("kind", ["item", "user"])
def test_weighted_graph_matches_implicit_and_binary_path(
    movielens_likes, movielens_matrix, kind
):
    # Binary data take the kernels' per-row weights; rated data the
    # normalised copies. Both must give implicit's graph.
    weighted, _, _ = interactions.encode_interactions(
        movielens_likes.user_ids,
        movielens_likes.item_ids,
        movielens_likes.ratings,
    )
    assert len(np.unique(weighted.data)) > 1
    binary, _, _ = movielens_matrix
    for matrix in (weighted, binary):
        ours, _, graph = _both_graphs(matrix, 20, kind)
        np.testing.assert_allclose(graph.data, ours.similarity_.data, rtol=1e-6)


@pytest.mark.filterwarnings(IMPLICIT_WARNING)
@pytest.mark.parametrize("n_neighbors", [10, 50])
def test_binary_graph_is_bit_identical_to_implicit_with_large_counts(
    n_neighbors,
):
    # Binary fits count shared users and rebuild each kept similarity
    # from the count; popular items share thousands of users here, so
    # the rebuilt float64 sums (cast to float32) must match implicit's
    # scatter-add bit for bit, ties at the k-th score included.
    rng = np.random.default_rng(3)
    user_p = 1.0 / np.arange(1, 3001) ** 0.6
    item_p = 1.0 / np.arange(1, 201) ** 0.8
    rows = rng.choice(3000, size=100_000, p=user_p / user_p.sum())
    cols = rng.choice(200, size=100_000, p=item_p / item_p.sum())
    matrix = sp.csr_matrix(
        (np.ones(len(rows), np.float32), (rows, cols)), shape=(3000, 200)
    )
    matrix.data[:] = 1.0
    assert np.diff(matrix.tocsc().indptr).max() > 1000
    ours, _, graph = _both_graphs(matrix, n_neighbors)
    np.testing.assert_array_equal(
        graph.data.astype(np.float32), ours.similarity_.data
    )


def test_repeated_sums_match_the_float64_loop():
    # The kernel's O(log n) form of "add c n times, rounding each sum"
    # (how binary fits turn counts into similarities) against the loop
    # itself: np.cumsum adds in order. The c with few low bits make the
    # sums hit exact ties (round half to even).
    from aiservice_kit.recommenders import _neighbours

    kernels = _neighbours.load_kernels()
    n = np.arange(0, 70_001, dtype=np.int64)
    rng = np.random.default_rng(0)
    norms = np.sqrt(rng.integers(1, 100_000, size=(8, 2)).astype(np.float64))
    cs = [0.1, 1 / 3, 0.7, 1e-3, 2.0**-10 * (1 + 2.0**-52)]
    cs += [1.5 * 2.0**-7 + 2.0**-59, (2**52 + 3) * 2.0**-60]
    cs += [1.0 / a / b for a, b in norms]
    for c in cs:
        out = np.empty(len(n))
        kernels.repeated_sums(c, n, out)
        want = np.concatenate([[0.0], np.cumsum(np.full(len(n) - 1, c))])
        np.testing.assert_array_equal(out, want, err_msg=f"c={c!r}")


@pytest.mark.filterwarnings(IMPLICIT_WARNING)
def test_liked_items_are_excluded_unlike_implicit(movielens_matrix):
    implicit_nn = pytest.importorskip("implicit.nearest_neighbours")
    matrix, _, _ = movielens_matrix
    users = np.arange(matrix.shape[0])
    ours = CosineRecommender(n_neighbors=20).fit(matrix)
    ids, scores = ours.recommend(users, top_k=50)
    for user in users:
        assert not np.isin(ids[user], matrix[user].indices).any()
    assert (ids >= 0).all()  # always top_k items: 6298 items, few liked
    assert np.all(np.diff(scores, axis=1) <= 0)  # best first

    # implicit #345: a user whose neighbourhood scores fewer than N unseen
    # items gets liked items back with score 0.
    theirs = implicit_nn.CosineRecommender(K=20)
    theirs.fit(matrix, show_progress=False)
    n_liked = np.diff(matrix.indptr)
    user = int(np.argmax(n_liked))
    found, found_scores = theirs.recommend(user, matrix[user], N=6000)
    assert np.isin(found, matrix[user].indices).any()
    ours_ids, _ = ours.recommend(user, top_k=6000 - n_liked[user])
    assert not np.isin(ours_ids, matrix[user].indices).any()


def test_backfill_by_popularity_is_marked_by_score_zero():
    # Items 0-1 co-occur; item 2 is the most popular, 3 next, 4 unseen.
    matrix = sp.csr_matrix(
        np.array(
            [
                [1, 1, 0, 0, 0],
                [0, 0, 1, 1, 0],
                [0, 0, 1, 0, 0],
                [0, 0, 1, 1, 0],
                [1, 0, 0, 0, 0],
            ],
            dtype=np.float32,
        )
    )
    model = CosineRecommender(n_neighbors=5).fit(matrix)
    ids, scores = model.recommend(4, top_k=4)
    assert ids[0] == 1 and scores[0] > 0  # the one scored neighbour
    np.testing.assert_array_equal(ids[1:], [2, 3, 4])  # by popularity
    np.testing.assert_array_equal(scores[1:], 0.0)
    ids, scores = model.recommend(4, top_k=4, backfill=False)
    np.testing.assert_array_equal(ids, [1, -1, -1, -1])
    # More slots than unseen items: padded with -1 / 0.0.
    ids, scores = model.recommend(0, top_k=5)
    np.testing.assert_array_equal(ids, [2, 3, 4, -1, -1])
    np.testing.assert_array_equal(scores, 0.0)


def test_cold_start_users_get_the_most_popular_items():
    users = ["ann", "ann", "bob", "bob", "cat", "cat", "cat"]
    items = ["x", "y", "x", "z", "x", "z", "w"]
    model = CosineRecommender().fit((users, items))
    ids, scores = model.recommend(["nobody", "ann"], top_k=2)
    np.testing.assert_array_equal(ids[0], ["x", "z"])
    np.testing.assert_array_equal(scores[0], [0.0, 0.0])
    assert not np.isin(ids[1], ["x", "y"]).any()
    ids, scores = model.recommend(None, top_k=2, user_items=[[]])
    np.testing.assert_array_equal(ids[0], ["x", "z"])


def test_batch_single_and_new_histories_agree(movielens_matrix):
    matrix, _, _ = movielens_matrix
    model = CosineRecommender(n_neighbors=20).fit(matrix)
    users = np.array([3, 0, 3, 100])
    ids, scores = model.recommend(users, top_k=10)
    one_ids, one_scores = model.recommend(3, top_k=10)
    assert one_ids.shape == (10,)
    np.testing.assert_array_equal(ids[0], one_ids)
    np.testing.assert_array_equal(ids[2], one_ids)
    np.testing.assert_array_equal(scores[0], one_scores)
    new_ids, new_scores = model.recommend(
        None, top_k=10, user_items=matrix[users]
    )
    np.testing.assert_array_equal(new_ids, ids)
    np.testing.assert_array_equal(new_scores, scores)
    lists = [matrix[u].indices.tolist() for u in users]
    list_ids, _ = model.recommend(None, top_k=10, user_items=lists)
    np.testing.assert_array_equal(list_ids, ids)
    single = model.set_params(num_threads=1).recommend(users, top_k=10)
    np.testing.assert_array_equal(single[0], ids)


def test_user_kind_with_new_histories_uses_nearest_users():
    matrix = random_matrix(50, 20, density=0.3, seed=3)
    model = CosineRecommender("user", n_neighbors=5).fit(matrix)
    fitted_ids, fitted_scores = model.recommend(np.arange(50), top_k=4)
    new_ids, new_scores = model.recommend(
        None, top_k=4, user_items=matrix.copy()
    )
    np.testing.assert_array_equal(new_ids, fitted_ids)
    np.testing.assert_allclose(new_scores, fitted_scores, rtol=1e-6)


def test_string_ids_are_mapped_in_and_out():
    matrix = random_matrix(30, 15, density=0.3, seed=1)
    coo = matrix.tocoo()
    users = np.array([f"user{u:03d}" for u in coo.row])
    items = np.array([f"item{i:03d}" for i in coo.col])
    by_name = CosineRecommender(n_neighbors=5).fit((users, items, coo.data))
    by_index = CosineRecommender(n_neighbors=5).fit(matrix)
    ids, scores = by_name.recommend(["user004", "user007"], top_k=5)
    want, want_scores = by_index.recommend([4, 7], top_k=5)
    names = np.where(
        want >= 0, np.char.add("item", np.char.zfill(want.astype(str), 3)), ""
    )  # noqa: E501
    np.testing.assert_array_equal(ids, names)
    np.testing.assert_array_equal(scores, want_scores)
    similar, _ = by_name.similar_items("item002", top_k=3)
    assert similar.dtype.kind == "U" and "item002" not in similar


def test_any_hashable_ids():
    users = [("a", 1), ("a", 1), ("b", 2), ("b", 2)]
    items = [10, "ten", 10, 3.5]
    model = CosineRecommender().fit((users, items))
    ids, _ = model.recommend([("a", 1)], top_k=1)
    assert ids[0, 0] == 3.5


@pytest.mark.parametrize("kind", ["item", "user"])
def test_similar_is_exact_cosine_without_self(kind):
    matrix = random_matrix(40, 25, density=0.3, seed=2)
    model = CosineRecommender(n_neighbors=3).fit(matrix)
    x = matrix.toarray().astype(np.float64)
    vectors = x.T if kind == "item" else x
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    sim = vectors @ vectors.T
    np.fill_diagonal(sim, -np.inf)
    method = model.similar_items if kind == "item" else model.similar_users
    ids, scores = method([0, 5], top_k=8)  # more than n_neighbors
    for row, query in enumerate([0, 5]):
        want = np.argsort(-sim[query], kind="stable")[:8]
        np.testing.assert_array_equal(ids[row], want)
        np.testing.assert_allclose(scores[row], sim[query, want], rtol=1e-5)


def test_item_based_beats_most_popular_on_movielens(movielens_split):
    train, test = movielens_split
    model = CosineRecommender("item").fit((train.user_ids, train.item_ids))
    tested = np.unique(test.user_ids)
    relevant = [set(test.item_ids[test.user_ids == u].tolist()) for u in tested]
    ids, _ = model.recommend(tested, top_k=10)
    # Most popular unseen items: the same model with every slot back-filled.
    empty = CosineRecommender(n_neighbors=1).fit(
        (train.user_ids, train.item_ids)
    )
    seen = [train.item_ids[train.user_ids == u].tolist() for u in tested]
    popular_ids, popular_scores = empty.recommend(
        tested, top_k=10, user_items=seen, backfill=True
    )
    # n_neighbors=1 keeps only each item itself: nothing unseen is scored.
    assert (popular_scores == 0).all()
    ndcg = metrics.ndcg_at_k(ids, relevant, 10)
    ndcg_popular = metrics.ndcg_at_k(popular_ids, relevant, 10)
    assert ndcg > ndcg_popular * 1.1
    assert metrics.precision_at_k(ids, relevant, 10) > metrics.precision_at_k(
        popular_ids, relevant, 10
    )


def test_save_load_round_trip(tmp_path):
    matrix = random_matrix(30, 15, density=0.3, seed=4)
    coo = matrix.tocoo()
    for kind in ("item", "user"):
        for users, items in (
            (coo.row, coo.col),
            (
                np.array([f"u{u}" for u in coo.row]),
                np.array([f"i{i}" for i in coo.col]),
            ),
        ):
            model = CosineRecommender(kind, n_neighbors=4).fit(
                (users, items, coo.data)
            )
            path = tmp_path / f"{kind}-{users.dtype.kind}.npz"
            model.save(path)
            with np.load(path, allow_pickle=False) as data:
                assert data["item_ids"].dtype.kind in "iU"
            loaded = CosineRecommender.load(path)
            assert loaded.get_params() == model.get_params()
            query = np.unique(users)[:7]
            for got, want in zip(
                loaded.recommend(query, top_k=6),
                model.recommend(query, top_k=6),
                strict=True,
            ):
                np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(
                loaded.similar_items(np.unique(items)[:3], 4)[0],
                model.similar_items(np.unique(items)[:3], 4)[0],
            )


def test_save_refuses_ids_that_need_pickle(tmp_path):
    model = CosineRecommender().fit(([1, "a"], [2, 3]))
    with pytest.raises(TypeError, match="without pickle"):
        model.save(tmp_path / "model.npz")


def test_scikit_learn_contract():
    model = CosineRecommender("user", n_neighbors=7, num_threads=1)
    assert model.get_params() == {
        "kind": "user",
        "n_neighbors": 7,
        "num_threads": 1,
        "show_progress": None,
    }
    assert not hasattr(model, "similarity_")
    copy = clone(model).set_params(n_neighbors=3)
    assert copy.n_neighbors == 3 and model.n_neighbors == 7
    assert repr(copy) == (
        "CosineRecommender(kind='user', n_neighbors=3, num_threads=1)"
    )
    with pytest.raises(ValueError, match="'neighbours'.*n_neighbors"):
        model.set_params(neighbours=3)
    matrix = random_matrix()
    assert model.fit(matrix) is model
    assert model.similarity_.shape == (40, 40)
    assert np.diff(model.similarity_.indptr).max() <= 7
    # Unvalidated params are only checked at fit.
    bad = CosineRecommender(n_neighbors=0)
    with pytest.raises(ValueError, match="n_neighbors"):
        bad.fit(matrix)


def test_progress_bar(capsys):
    CosineRecommender(show_progress=True).fit(random_matrix())
    assert "CosineRecommender.fit" in capsys.readouterr().err
    CosineRecommender().fit(random_matrix())  # small: no bar by default
    assert capsys.readouterr().err == ""


def test_fit_runs_the_compiled_kernels_in_parallel_threads():
    """Two threads give the same graph as one (blocks are independent)
    and the kernels are the compiled extension, not Python."""
    from aiservice_kit.recommenders import _kernels

    assert not _kernels.__file__.endswith(".py")
    matrix = random_matrix(n_users=400, n_items=700, density=0.05)
    one = CosineRecommender(n_neighbors=7, num_threads=1).fit(matrix)
    two = CosineRecommender(n_neighbors=7, num_threads=2).fit(matrix)
    assert (one.similarity_ != two.similarity_).nnz == 0


def test_missing_kernels_get_a_message_naming_the_fix(monkeypatch):
    # As in a source checkout used without `pip install -e .`.
    import aiservice_kit.recommenders

    monkeypatch.setitem(
        sys.modules, "aiservice_kit.recommenders._kernels", None
    )
    monkeypatch.delattr(aiservice_kit.recommenders, "_kernels", raising=False)
    with pytest.raises(ImportError, match=r"pip install -e \."):
        CosineRecommender().fit(random_matrix())


def test_not_fitted():
    model = CosineRecommender()
    for call in (
        lambda: model.recommend(0),
        lambda: model.similar_items(0),
        lambda: model.similar_users(0),
        lambda: model.save("never.npz"),
    ):
        with pytest.raises(NotFittedError, match="not fitted"):
            call()


@pytest.mark.parametrize(
    ("params", "data", "error", "match"),
    [
        ({}, np.ones((3, 3)), TypeError, "scipy sparse"),
        ({}, [[1, 0], [0, 1]], TypeError, "scipy sparse"),
        ({}, sp.csr_matrix(-np.eye(3)), ValueError, ">= 0"),
        ({}, sp.csr_matrix(np.full((2, 2), np.nan)), ValueError, "finite"),
        ({}, sp.csr_matrix((3, 3)), ValueError, "at least one"),
        ({}, ([1, 2], [1]), ValueError, "same length"),
        ({}, ([1, 2], [1, 2], [1.0, -1.0]), ValueError, ">= 0"),
        ({}, ([1, 2], [1, 2], ["a", "b"]), TypeError, "numeric"),
        ({}, ([[1], [2]], [1, 2]), TypeError, "hashable"),
        ({}, ([1.5, 2.5], [1, 2]), TypeError, "not floats"),
        (
            {"n_neighbors": 0},
            sp.eye(3, format="csr"),
            ValueError,
            "n_neighbors",
        ),  # noqa: E501
        (
            {"n_neighbors": 2.0},
            sp.eye(3, format="csr"),
            TypeError,
            "n_neighbors",
        ),  # noqa: E501
        ({"kind": "items"}, sp.eye(3, format="csr"), ValueError, "kind"),
        (
            {"num_threads": -1},
            sp.eye(3, format="csr"),
            ValueError,
            "num_threads",
        ),  # noqa: E501
    ],
)
def test_fit_rejects_bad_input(params, data, error, match):
    with pytest.raises(error, match=match):
        CosineRecommender(**params).fit(data)


def test_queries_reject_bad_input():
    model = CosineRecommender().fit(random_matrix(10, 6, density=0.5))
    cases = [
        (lambda: model.recommend(0, top_k=0), ValueError, "top_k"),
        (lambda: model.recommend(0, top_k=2.5), TypeError, "top_k"),
        (lambda: model.recommend(0.5), TypeError, "user_ids"),
        (lambda: model.recommend(None), ValueError, "user_items"),
        (
            lambda: model.recommend(0, user_items=sp.eye(1, 5, format="csr")),
            ValueError,
            "one column per fitted item",
        ),
        (
            lambda: model.recommend([0, 1], user_items=[[0]]),
            ValueError,
            "one row per entry",
        ),
        (
            lambda: model.recommend(None, user_items=[[0, 99]]),
            ValueError,
            "unknown",
        ),
        (
            lambda: model.recommend(None, user_items=np.eye(6)),
            TypeError,
            "user_items",
        ),
        (lambda: model.similar_items(99), ValueError, "unknown"),
        (lambda: model.similar_users([0, 42]), ValueError, "unknown"),
        (lambda: model.similar_items(0, top_k=0), ValueError, "top_k"),
        (
            lambda: model.recommend(0, exclude_liked="yes"),
            TypeError,
            "exclude_liked",
        ),
    ]
    for call, error, match in cases:
        with pytest.raises(error, match=match):
            call()
    # Unknown items can be ignored on request (as the exported model does).
    ids, _ = model.recommend(None, user_items=[[0, 99]], unknown_items="ignore")
    np.testing.assert_array_equal(
        ids, model.recommend(None, user_items=[[0]])[0]
    )


def test_ratings_and_thresholds(movielens_likes):
    model = CosineRecommender().fit(movielens_likes)
    # Ratings (>= 4) are the weights: scores scale with them.
    binary = CosineRecommender().fit(
        (movielens_likes.user_ids, movielens_likes.item_ids)
    )
    assert model.user_items_.data.max() == 5.0
    assert binary.user_items_.data.max() == 1.0
    weights = interactions.to_implicit(movielens_likes.ratings, 4.5)
    strict = CosineRecommender().fit(
        (movielens_likes.user_ids, movielens_likes.item_ids, weights)
    )
    assert strict.user_items_.nnz == int((movielens_likes.ratings >= 4.5).sum())
