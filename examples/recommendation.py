"""Recommendations on MovieLens, start to finish.

Loads the ratings (>= 4 stars count as a "like"), holds out each user's 5
latest likes, fits an item-based `CosineRecommender`, evaluates it against
a most-popular baseline, saves and reloads it, recommends movies by title,
and exports a SavedModel that TensorFlow Serving (or aiservice_kit's own
server) can serve, checking that it answers like the Python object.

MovieLens latest-small is downloaded once from GroupLens into the dataset
cache (`--data-dir`, else $AISERVICE_KIT_DATA, else
~/.aiservice_kit/datasets):

    python examples/recommendation.py
    python examples/recommendation.py --max-users 100  # quick
"""

# Import aiservice_kit first: it hides TensorFlow's start-up notices.
import aiservice_kit as ak  # isort: skip

import argparse
import csv
import time
from pathlib import Path

import numpy as np

from aiservice_kit.datasets import fetch_movielens
from aiservice_kit.recommenders import interactions
from aiservice_kit.recommenders import metrics


def most_popular(train: "np.ndarray", user_items, top_k: int) -> "np.ndarray":  # noqa: UP037
    """The most popular items each user has not seen (baseline)."""
    popularity = np.diff(user_items.tocsc().indptr)
    order = np.argsort(-popularity, kind="stable")
    out = np.empty((user_items.shape[0], top_k), dtype=np.int64)
    for row in range(user_items.shape[0]):
        seen = set(user_items[row].indices.tolist())
        picks = [
            item for item in order[: top_k + len(seen)] if item not in seen
        ]
        out[row] = picks[:top_k]
    return train[out]


def load_titles(data_dir: Path) -> dict[int, str]:
    path = data_dir / "movies.csv"
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as handle:
        return {
            int(row["movieId"]): row["title"] for row in csv.DictReader(handle)
        }  # noqa: E501


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="dataset cache folder (default: $AISERVICE_KIT_DATA, else "
        "~/.aiservice_kit/datasets); missing datasets are downloaded once",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path("runs") / f"recommender-{time.strftime('%Y%m%d-%H%M%S')}",
        help="where the model and the export go (default: "
        "runs/recommender-<time>)",
    )
    parser.add_argument(
        "--max-users", type=int, default=None, help="keep the first N users"
    )
    parser.add_argument("--n-neighbors", type=int, default=20)
    parser.add_argument("--top-k", type=int, default=10)
    args = parser.parse_args(argv)
    workdir = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    k = args.top_k
    results: dict[str, float] = {}

    # 1. Data: explicit ratings -> implicit likes, temporal split per user.
    print("Loading MovieLens latest-small (downloaded once)...", flush=True)
    folder = fetch_movielens("latest-small", data_home=args.data_dir)
    ratings = interactions.load_movielens_ratings(folder, min_rating=4.0)
    if args.max_users is not None:
        kept_users = np.unique(ratings.user_ids)[: args.max_users]
        ratings = ratings.subset(np.isin(ratings.user_ids, kept_users))
    test_mask = interactions.leave_last_n_out(
        ratings.user_ids, ratings.timestamps, n=5
    )
    train, test = ratings.subset(~test_mask), ratings.subset(test_mask)
    print(
        f"data      {len(ratings)} likes, {len(np.unique(ratings.user_ids))} "
        f"users; {len(test)} held out (each user's 5 latest)"
    )

    # 2. Fit on the training likes (ids are MovieLens movie ids).
    print("Fitting the item-based cosine recommender...", flush=True)
    model = ak.CosineRecommender(kind="item", n_neighbors=args.n_neighbors)
    started = time.perf_counter()
    model.fit((train.user_ids, train.item_ids))
    results["fit_seconds"] = time.perf_counter() - started

    # 3. Evaluate on the held-out likes of the tested users.
    print("Recommending for every tested user and scoring...", flush=True)
    tested = np.unique(test.user_ids)
    relevant = [
        set(test.item_ids[test.user_ids == user].tolist()) for user in tested
    ]
    started = time.perf_counter()
    recommended, scores = model.recommend(tested, top_k=k)
    results["recommend_seconds"] = time.perf_counter() - started
    report = metrics.ranking_report(
        recommended, relevant, k=k, n_items=len(model.item_ids_)
    )
    positions = interactions.lookup(model.user_ids_, tested)
    baseline = most_popular(
        model.item_ids_, model.user_items_[positions], top_k=k
    )
    popular_report = metrics.ranking_report(
        recommended=baseline, relevant=relevant, k=k
    )
    results["ndcg"] = report[f"ndcg@{k}"]
    results["precision"] = report[f"precision@{k}"]
    results["popular_ndcg"] = popular_report[f"ndcg@{k}"]
    results["backfilled_share"] = float(np.mean(scores == 0.0))

    # 4. Save and reload: identical answers.
    path = workdir / "movielens_cosine.npz"
    model.save(path)
    reloaded = ak.CosineRecommender.load(path)
    again, _ = reloaded.recommend(tested, top_k=k)
    results["reload_identical"] = float(np.array_equal(again, recommended))

    # 5. Recommend for one user, by title.
    titles = load_titles(folder)
    user = tested[0]
    items, user_scores = reloaded.recommend(user, top_k=5)
    print(f"\ntop 5 for user {user}:")
    for item, score in zip(items.tolist(), user_scores.tolist(), strict=True):
        mark = " (popular back-fill)" if score == 0.0 else ""
        print(f"  {score:7.3f}  {titles.get(item, item)}{mark}")

    # 6. Export a servable SavedModel and check it answers the same.
    print("\nExporting a SavedModel and checking its answers...", flush=True)
    import tensorflow as tf

    version_dir = reloaded.export(workdir / "serving", top_k=k)
    histories = [
        train.item_ids[train.user_ids == user].tolist() for user in tested[:20]
    ]
    width = max(len(history) for history in histories)
    padded = np.full((len(histories), width), -1, dtype=np.int64)
    for row, history in enumerate(histories):
        padded[row, : len(history)] = history
    served = tf.saved_model.load(str(version_dir)).signatures[
        "serving_default"
    ](item_ids=tf.constant(padded))
    expected, _ = reloaded.recommend(None, top_k=k, user_items=histories)
    results["export_identical"] = float(
        np.array_equal(served["item_ids"].numpy(), expected)
    )

    rows = [
        (f"NDCG@{k} item-based", f"{results['ndcg']:.4f}"),
        (f"NDCG@{k} most popular", f"{results['popular_ndcg']:.4f}"),
        (f"precision@{k} item-based", f"{results['precision']:.4f}"),
        (f"coverage@{k}", f"{report[f'coverage@{k}']:.3f}"),
        ("fit time", f"{results['fit_seconds']:.2f} s"),
        (
            f"recommend {len(tested)} users",
            f"{results['recommend_seconds']:.3f} s",
        ),  # noqa: E501
        ("identical after reload", str(bool(results["reload_identical"]))),
        ("SavedModel identical", str(bool(results["export_identical"]))),
    ]
    width = max(len(name) for name, _ in rows)
    print()
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print(f"artifacts in {workdir}:")
    print(f"  {path}  the fitted recommender (CosineRecommender.load)")
    print(f"  {version_dir}  the SavedModel (aiservice-kit serve, TF Serving)")
    return results


if __name__ == "__main__":
    main()
