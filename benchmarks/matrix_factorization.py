"""MatrixFactorization and KNNRatingPredictor against surprise and implicit.

Same data, same folds, same run, one process. Ratings (explicit): 5-fold
cross-validation with seed 0 on MovieLens latest-small (`--folds` to use
fewer of the five), ours (MF, KNN) against surprise's `SVD` and
`KNNBasic`: RMSE, MAE, fit and predict seconds per fold. Implicit
feedback (ratings >= 4, leave-last-5-out by time): NDCG@10 of our ALS
against implicit's `AlternatingLeastSquares` at the same factors and of
item- and user-based `CosineRecommender`. A synthetic 1M-rating case
(20k users x 5k items, rank-8 tastes plus noise, 1-5 stars) times one
fit of ours against surprise's `SVD` and reports held-out RMSE.

TensorFlow's import (seconds) is paid once before any timing, and each
library makes one tiny warm-up fit first; fit times are wall clock.

    python benchmarks/matrix_factorization.py            # everything
    python benchmarks/matrix_factorization.py --quick    # 2 folds, no 1M
"""

import argparse
import time
from pathlib import Path

import numpy as np

DEFAULT_DATA = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "data"
    / "movielens-latest-small"
)


def surprise_split(train, test, scale):
    """(trainset, testset) for surprise from our Ratings columns."""
    import surprise

    data = surprise.Dataset(surprise.Reader(rating_scale=scale))
    raw = [
        (u, i, float(r), None)
        for u, i, r in zip(
            train.user_ids.tolist(),
            train.item_ids.tolist(),
            train.ratings.tolist(),
            strict=True,
        )
    ]
    testset = list(
        zip(
            test.user_ids.tolist(),
            test.item_ids.tolist(),
            test.ratings.tolist(),
            strict=True,
        )
    )
    return data.construct_trainset(raw), testset


def timed(fn):
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


def explicit_rows(ratings, folds, n_folds, scale):
    import surprise

    from aiservice_kit.recommenders import KNNRatingPredictor
    from aiservice_kit.recommenders import MatrixFactorization
    from aiservice_kit.recommenders import metrics

    makers = {
        "ours MF": lambda: MatrixFactorization(rating_scale=scale),
        "surprise SVD": lambda: surprise.SVD(random_state=0),
        "ours KNN basic": lambda: KNNRatingPredictor(rating_scale=scale),
        "ours KNN means": lambda: KNNRatingPredictor(
            rating_scale=scale, centering="mean"
        ),
        "ours KNN baseline": lambda: KNNRatingPredictor(
            rating_scale=scale, centering="baseline"
        ),
        "surprise KNNBasic": lambda: surprise.KNNBasic(verbose=False),
    }
    results = {name: [] for name in makers}
    for fold in range(n_folds):
        train = ratings.subset(folds != fold)
        test = ratings.subset(folds == fold)
        trainset, testset = surprise_split(train, test, scale)
        for name, make in makers.items():
            model = make()
            if name.startswith("surprise"):
                _, fit_s = timed(lambda m=model, d=trainset: m.fit(d))
                preds, pred_s = timed(lambda m=model, d=testset: m.test(d))
                est = np.array([p.est for p in preds])
            else:
                _, fit_s = timed(lambda m=model, d=train: m.fit(d))
                est, pred_s = timed(
                    lambda m=model, d=test: m.predict(
                        d.user_ids, d.item_ids, unknown="baseline"
                    )
                )
            results[name].append(
                (
                    metrics.rmse(test.ratings, est),
                    metrics.mae(test.ratings, est),
                    fit_s,
                    pred_s,
                )
            )
        print(f"  fold {fold} done", flush=True)
    return {name: np.mean(rows, axis=0) for name, rows in results.items()}


def implicit_rows(data_dir, n_factors):
    import implicit

    from aiservice_kit.recommenders import CosineRecommender
    from aiservice_kit.recommenders import MatrixFactorization
    from aiservice_kit.recommenders import interactions
    from aiservice_kit.recommenders import metrics

    likes = interactions.load_movielens_ratings(data_dir, min_rating=4.0)
    test = interactions.leave_last_n_out(likes.user_ids, likes.timestamps, n=5)
    train, held = likes.subset(~test), likes.subset(test)
    users = np.unique(held.user_ids)
    relevant = [set(held.item_ids[held.user_ids == u]) for u in users]
    rows = {}
    models = {
        "ours ALS (numpy CG)": MatrixFactorization("als", n_factors),
        "ours BPR (Keras)": MatrixFactorization("bpr", n_factors),
        "cosine item K=20": CosineRecommender("item"),
        "cosine user K=20": CosineRecommender("user"),
    }
    for name, model in models.items():
        _, fit_s = timed(lambda m=model, d=train: m.fit(d))
        (ids, _), rec_s = timed(lambda m=model: m.recommend(users, top_k=10))
        rows[name] = (metrics.ndcg_at_k(ids, relevant, 10), fit_s, rec_s)
    matrix, user_vocab, item_vocab = interactions.encode_interactions(
        train.user_ids, train.item_ids
    )
    als = implicit.als.AlternatingLeastSquares(
        factors=n_factors, random_state=0
    )
    _, fit_s = timed(lambda: als.fit(matrix, show_progress=False))
    positions = interactions.lookup(user_vocab, users)
    (ids, _), rec_s = timed(
        lambda: als.recommend(positions, matrix[positions], N=10)
    )
    rows["implicit ALS"] = (
        metrics.ndcg_at_k(item_vocab[ids], relevant, 10),
        fit_s,
        rec_s,
    )
    return rows


def synthetic(n_users=20_000, n_items=5_000, n=1_000_000, seed=0):
    from aiservice_kit.recommenders import interactions

    rng = np.random.default_rng(seed)
    p = rng.normal(scale=0.5, size=(n_users, 8))
    q = rng.normal(scale=0.5, size=(n_items, 8))
    users = rng.integers(0, n_users, n)
    items = rng.integers(0, n_items, n)
    score = 3 + (p[users] * q[items]).sum(1) + rng.normal(scale=0.5, size=n)
    ratings = np.clip(np.rint(score), 1, 5).astype(np.float32)
    return interactions.Ratings(users, items, ratings)


def synthetic_rows(scale=(1.0, 5.0)):
    import surprise

    from aiservice_kit.recommenders import MatrixFactorization
    from aiservice_kit.recommenders import interactions
    from aiservice_kit.recommenders import metrics

    ratings = synthetic()
    folds = interactions.kfold_split(len(ratings), n_splits=5, seed=0)
    train, test = ratings.subset(folds != 0), ratings.subset(folds == 0)
    rows = {}
    ours = MatrixFactorization(rating_scale=scale, epochs=10)
    _, fit_s = timed(lambda: ours.fit(train))
    est, pred_s = timed(
        lambda: ours.predict(test.user_ids, test.item_ids, unknown="baseline")
    )
    rows["ours MF"] = (metrics.rmse(test.ratings, est), fit_s, pred_s)
    trainset, testset = surprise_split(train, test, scale)
    svd = surprise.SVD(random_state=0)
    _, fit_s = timed(lambda: svd.fit(trainset))
    preds, pred_s = timed(lambda: svd.test(testset))
    est = np.array([p.est for p in preds])
    rows["surprise SVD"] = (metrics.rmse(test.ratings, est), fit_s, pred_s)
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    import keras  # noqa: F401 - TensorFlow's import is not a fit cost

    from aiservice_kit.recommenders import MatrixFactorization
    from aiservice_kit.recommenders import interactions

    warm = ([0, 0, 1], [0, 1, 0], [1.0, 2.0, 3.0])
    MatrixFactorization(epochs=1).fit(warm)
    MatrixFactorization("bpr", epochs=1).fit(warm)
    scale = (0.5, 5.0)
    ratings = interactions.load_movielens_ratings(args.data_dir)
    folds = interactions.kfold_split(len(ratings), n_splits=5, seed=0)
    n_folds = 2 if args.quick else args.folds
    print(f"Explicit ratings, MovieLens small, {n_folds} of 5 folds (seed 0)")
    explicit = explicit_rows(ratings, folds, n_folds, scale)
    print(f"{'model':<22}{'RMSE':>8}{'MAE':>8}{'fit s':>9}{'predict s':>11}")
    for name, (r, m, f, p) in explicit.items():
        print(f"{name:<22}{r:>8.4f}{m:>8.4f}{f:>9.2f}{p:>11.3f}")
    mf, svd = explicit["ours MF"], explicit["surprise SVD"]
    knn = min(
        (explicit[k] for k in explicit if k.startswith("ours KNN")),
        key=lambda row: row[0],
    )
    basic, sknn = explicit["ours KNN basic"], explicit["surprise KNNBasic"]
    print("Ratios (ours / surprise):")
    print(f"  MF RMSE {mf[0] / svd[0]:.3f}, fit time {mf[2] / svd[2]:.2f}")
    print(
        f"  KNN basic RMSE {basic[0] / sknn[0]:.3f}, best KNN RMSE "
        f"{knn[0] / sknn[0]:.3f}, predict time {basic[3] / sknn[3]:.2f}"
    )
    print(
        f"\nImplicit (ratings >= 4, leave-last-5-out), {args.factors} factors"
    )
    implicit_result = implicit_rows(args.data_dir, args.factors)
    print(f"{'model':<22}{'NDCG@10':>9}{'fit s':>9}{'recommend s':>13}")
    for name, (n, f, r) in implicit_result.items():
        print(f"{name:<22}{n:>9.4f}{f:>9.2f}{r:>13.3f}")
    als = implicit_result["ours ALS (numpy CG)"]
    ref = implicit_result["implicit ALS"]
    print(
        f"Ratios: ALS NDCG {als[0] / ref[0]:.3f}, fit time "
        f"{als[1] / ref[1]:.2f} (ours / implicit)"
    )
    out = {"explicit": explicit, "implicit": implicit_result}
    if not args.quick:
        print("\nSynthetic 1M ratings (20k users x 5k items), one split")
        synth = synthetic_rows()
        print(f"{'model':<22}{'RMSE':>8}{'fit s':>9}{'predict s':>11}")
        for name, (r, f, p) in synth.items():
            print(f"{name:<22}{r:>8.4f}{f:>9.2f}{p:>11.3f}")
        ours, theirs = synth["ours MF"], synth["surprise SVD"]
        print(
            f"Ratios: RMSE {ours[0] / theirs[0]:.3f}, fit time "
            f"{ours[1] / theirs[1]:.2f}, predict time "
            f"{ours[2] / theirs[2]:.3f} (ours / surprise)"
        )
        out["synthetic"] = synth
    return out


if __name__ == "__main__":
    main()
