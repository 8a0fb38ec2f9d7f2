"""Rating prediction on MovieLens: matrix factorisation and neighbours.

Loads the explicit ratings (any MovieLens layout: `ratings.csv`, `u.data`,
`ratings.dat`), cross-validates a biased matrix factorisation (a Keras
model, trained on one device by a compiled kernel taking its steps) and
a neighbour model on the same folds (RMSE, MAE), fits both on a per-user
train split, evaluates them there, recommends unseen movies by title,
saves and reloads the model, then exports a SavedModel (top-k by user id
and a `rating` signature) that `aiservice-kit serve` or TensorFlow Serving
serves, and checks that it answers as the Python object does.

    python examples/rating_prediction.py \
        --data-dir ../shared/data/movielens-latest-small
    python examples/rating_prediction.py --data-dir ... --max-users 100
"""

# Import aiservice_kit first: it hides TensorFlow's start-up notices.
import aiservice_kit as ak  # isort: skip

import argparse
import csv
import tempfile
from pathlib import Path

import numpy as np

from aiservice_kit.recommenders import interactions
from aiservice_kit.recommenders import metrics


def load_titles(data_dir: Path) -> dict[int, str]:
    path = data_dir / "movies.csv"
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as handle:
        return {
            int(row["movieId"]): row["title"] for row in csv.DictReader(handle)
        }


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--max-users", type=int, default=None)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=None)
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ratings-"))

    ratings = interactions.load_movielens_ratings(args.data_dir)
    if args.max_users:
        keep = np.unique(ratings.user_ids)[: args.max_users]
        ratings = ratings.subset(np.isin(ratings.user_ids, keep))
    scale = (float(ratings.ratings.min()), float(ratings.ratings.max()))
    print(f"{len(ratings)} ratings, scale {scale}")

    mf = ak.MatrixFactorization(rating_scale=scale, epochs=args.epochs)
    knn = ak.KNNRatingPredictor(rating_scale=scale, centering="baseline")
    # The same seed gives both models the same folds.
    results: dict[str, float] = {}
    for name, model in (("MF", mf), ("KNN", knn)):
        cv = metrics.cross_validate(model, ratings, n_splits=args.folds, seed=0)
        rmse, mae = cv["test_rmse"].mean(), cv["test_mae"].mean()
        print(f"{name} {args.folds}-fold CV: RMSE {rmse:.4f} MAE {mae:.4f}")
        results[f"cv_rmse_{name.lower()}"] = rmse

    test = interactions.random_split(ratings.user_ids, test_fraction=0.2)
    train, held = ratings.subset(~test), ratings.subset(test)
    mf.fit(train)
    predicted = mf.predict(held.user_ids, held.item_ids, unknown="baseline")
    results["rmse"] = metrics.rmse(held.ratings, predicted)
    print(f"MF held-out RMSE {results['rmse']:.4f}")

    titles = load_titles(args.data_dir)
    user = held.user_ids[0]
    items, scores = mf.recommend(user, top_k=5)
    print(f"top 5 for user {user}:")
    for item, score in zip(items, scores, strict=True):
        print(f"  {score:6.3f}  {titles.get(int(item), item)}")

    path = workdir / "movielens_mf.npz"
    mf.save(path)
    reloaded = ak.MatrixFactorization.load(path)
    again = reloaded.predict(held.user_ids, held.item_ids, unknown="baseline")
    results["reload_identical"] = float(np.array_equal(again, predicted))
    print(f"saved to {path}; reload identical: {results['reload_identical']}")

    # Export: TensorFlow is imported here, by `export`, not before.
    import tensorflow as tf

    users = np.unique(held.user_ids)[:8]
    version_dir = reloaded.export(workdir / "serving", top_k=10)
    served = tf.saved_model.load(str(version_dir)).signatures
    top = served["serving_default"](
        user_ids=tf.constant(users, tf.int64),
        # Items to exclude besides each user's history (-1 pads): none.
        item_ids=tf.constant(np.full((len(users), 1), -1), tf.int64),
    )
    want_ids, want_scores = reloaded.recommend(users, top_k=10)
    rated = served["rating"](
        user_ids=tf.constant(held.user_ids, tf.int64),
        item_ids=tf.constant(held.item_ids, tf.int64),
    )["ratings"].numpy()
    results["export_identical"] = float(
        np.array_equal(top["item_ids"].numpy(), want_ids)
        and np.allclose(top["scores"].numpy(), want_scores, rtol=1e-5)
        and np.allclose(rated, again, rtol=1e-6)
    )
    print(
        f"exported to {version_dir}; serves the same top-10 and ratings: "
        f"{bool(results['export_identical'])}"
    )
    print(f"serve it: aiservice-kit serve --model mf={workdir / 'serving'}")
    return results


if __name__ == "__main__":
    main()
