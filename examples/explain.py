"""Why did the model say that? Explanations for digits, SMS and movies.

Trains a small CNN on MNIST, a spam filter on SMS and an item-based
recommender on MovieLens, explains a few predictions of each with
`ak.explain`, prints what matters most, and saves each explanation's plot
(`ak.plot_explanation`) as a PNG.

    python examples/explain.py --data-dir ../shared/data

Tests run it small with `--train-size 600 --epochs 1`.
"""

# Import aiservice_kit first: it hides TensorFlow's start-up notices.
import aiservice_kit as ak  # isort: skip

import argparse
import tempfile
from pathlib import Path

import keras
import matplotlib
import numpy as np

from aiservice_kit.datasets import load_labelled_text
from aiservice_kit.datasets import load_mnist
from aiservice_kit.models.text import encode_labels
from aiservice_kit.recommenders import interactions

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data"


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--train-size", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--output-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    output_dir = args.output_dir or Path(tempfile.mkdtemp(prefix="explain-"))
    output_dir.mkdir(parents=True, exist_ok=True)
    matplotlib.use("Agg")  # write PNGs; in a notebook the figures show inline
    n = args.train_size

    # 1. Digits: integrated gradients from a black image.
    images, labels = load_mnist(args.data_dir / "mnist", kind="t10k")
    keras.utils.set_random_seed(0)
    cnn = ak.build_cnn((28, 28), num_classes=10)
    cnn.fit(images[:n], labels[:n], epochs=args.epochs, verbose=0)
    digits = ak.explain(cnn, images[8000:8003])
    for e in digits:
        print(
            f"digit {e.target} (p={e.prediction:.2f}): attributions sum to "
            f"{e.attributions.sum():.3f}, completeness error "
            f"{e.convergence_delta:+.1e}"
        )
    ak.plot_explanation(digits[0]).savefig(output_dir / "digit.png")

    # 2. SMS spam: which words made a message spam.
    texts, text_labels = load_labelled_text(
        args.data_dir / "sms-spam-collection" / "SMSSpamCollection"
    )
    texts = np.asarray(texts, dtype=object)
    spam_filter = ak.build_text_classifier(
        texts[:n], class_names=["ham", "spam"]
    )
    spam_filter.fit(
        texts[:n],
        encode_labels(spam_filter, text_labels[:n]),
        epochs=args.epochs,
        verbose=0,
    )
    message = "URGENT! You have won a FREE prize. Call 09061701461 to claim"
    (why,) = ak.explain(spam_filter, [message], target=1)
    print(f"spam p={why.prediction:.3f}; top words {why.top_tokens(3)}")
    ak.plot_explanation(why).savefig(output_dir / "spam.png")

    # 3. Movies: the liked movies behind each recommendation.
    likes = interactions.load_movielens_ratings(
        args.data_dir / "movielens-latest-small", min_rating=4.0
    )
    recommender = ak.CosineRecommender().fit(likes)
    (picks,) = ak.explain(recommender, [1], top_k=5)
    for item, score, contributors in zip(
        picks.items, picks.scores, picks.contributors, strict=True
    ):
        top = ", ".join(f"{i} ({v:.2f})" for i, v in contributors[:3])
        print(f"movie {item}: score {score:.2f} <- liked {top}")
    ak.plot_explanation(picks).savefig(output_dir / "movies.png")
    gap = max(
        abs(sum(v for _, v in c) - s)
        for c, s in zip(picks.contributors, picks.scores, strict=True)
    )
    return {
        "max_completeness_error": max(abs(e.convergence_delta) for e in digits),
        "spam_probability": why.prediction,
        "recommender_sum_gap": float(gap),
        "figures": float(len(list(output_dir.glob("*.png")))),
    }


if __name__ == "__main__":
    main()
