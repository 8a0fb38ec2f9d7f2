"""Hyperparameter search: a CNN on MNIST and the recommender on MovieLens.

Searches `build_cnn`'s declared space (width, depth, dense units, dropout,
learning rate, batch size) with Bayesian optimisation on a validation
split, prints a line per trial and the final table, evaluates the best
model (retrained on all the training images) on held-out digits, then
tunes `CosineRecommender`'s neighbour count by NDCG@10. Run it again on the
same `--directory` and the completed trials are read back, not re-run.

    python examples/tuning.py --data-dir ../shared/data

Tests run it small with `--train-size 400 --max-trials 2 --epochs 1`.
"""

# Import aiservice_kit first: it hides TensorFlow's start-up notices.
import aiservice_kit as ak  # isort: skip

import argparse
import tempfile
from pathlib import Path

from aiservice_kit.datasets import load_mnist
from aiservice_kit.recommenders import interactions
from aiservice_kit.tuning import Choice

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data"


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--train-size", type=int, default=4000)
    parser.add_argument("--max-trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--directory", type=Path, default=None)
    args = parser.parse_args(argv)
    directory = args.directory or Path(tempfile.mkdtemp(prefix="tuning-"))

    # 1. Data: the MNIST test file, split into train / held-out test.
    images, labels = load_mnist(args.data_dir / "mnist", kind="t10k")
    x_train, y_train = images[: args.train_size], labels[: args.train_size]
    x_test, y_test = images[8000:], labels[8000:]

    # 2. Search build_cnn's space, narrowed to two widths; a fifth of the
    #    training images (seeded) scores each trial.
    result = ak.tune(
        ak.build_cnn,
        x_train,
        y_train,
        search_space={"width": Choice((8, 16), default=16)},
        max_trials=args.max_trials,
        epochs=args.epochs,
        directory=directory,
    )
    _, accuracy = result.model.evaluate(x_test, y_test, verbose=0)
    print(f"best {result.best_params}: test accuracy {accuracy:.4f}")

    # 3. The recommender: a grid over n_neighbors, scored by NDCG@10 on each
    #    user's 5 latest likes.
    likes = interactions.load_movielens_ratings(
        args.data_dir / "movielens-latest-small", min_rating=4.0
    )
    recommended = ak.tune(
        ak.CosineRecommender,
        likes,
        algorithm="grid",
        max_trials=args.max_trials,
        directory=directory,
    )
    return {
        "cnn_best_val_accuracy": result.best_score,
        "cnn_default_val_accuracy": result.trials[0]["score"],
        "cnn_test_accuracy": float(accuracy),
        "cnn_trials": float(len(result.trials)),
        "recommender_best_ndcg": recommended.best_score,
        "recommender_default_ndcg": recommended.trials[0]["score"],
        "recommender_best_neighbors": float(
            recommended.best_params["n_neighbors"]
        ),
    }


if __name__ == "__main__":
    main()
