"""Draws the figures of docs/tuning.md and docs/explaining.md.

Every PNG under docs/img/ comes from this script, on the real data sets:

    python docs/make_figures.py --data-dir ../shared/data

It takes about two minutes on two CPU cores and writes small (80 dpi)
files; rerun it when `explain`, `plot_explanation` or `tune` change.
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
from aiservice_kit.datasets import load_ts
from aiservice_kit.models.text import encode_labels
from aiservice_kit.recommenders import interactions

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

IMG = Path(__file__).resolve().parent / "img"
DPI = 80


def save(figure, name):
    figure.savefig(IMG / name, dpi=DPI, bbox_inches="tight")
    plt.close(figure)
    print("wrote", IMG / name)


def image_figure(data_dir):
    images, labels = load_mnist(data_dir / "mnist", kind="t10k")
    keras.utils.set_random_seed(0)
    model = ak.build_cnn((28, 28), num_classes=10)
    model.fit(images[:3000], labels[:3000], epochs=2, verbose=0)
    explanations = ak.explain(model, images[8000:8003])
    figure, axes = plt.subplots(1, 3, figsize=(9, 3.2))
    for e, ax in zip(explanations, axes, strict=True):
        ak.plot_explanation(e, ax=ax)
        ax.set_title(
            f"{e.target} (p={e.prediction:.2f}), "
            f"delta {e.convergence_delta:+.1e}",
            fontsize=9,
        )
    save(figure, "explain-image.png")


def text_figure(data_dir):
    texts, labels = load_labelled_text(
        data_dir / "sms-spam-collection" / "SMSSpamCollection"
    )
    texts = np.asarray(texts, dtype=object)
    keras.utils.set_random_seed(0)
    model = ak.build_text_classifier(texts[:3000], class_names=["ham", "spam"])
    model.fit(
        texts[:3000],
        encode_labels(model, labels[:3000]),
        epochs=3,
        verbose=0,
    )
    message = "Congratulations! You won a FREE prize. Call 09061701461 to claim"
    save(
        ak.plot_explanation(ak.explain(model, [message], target=1)[0]),
        "explain-text.png",
    )


def sequence_figure(data_dir):
    x, y = load_ts(data_dir / "italypowerdemand" / "ItalyPowerDemand_TRAIN.ts")
    classes = sorted(set(y))
    y = np.asarray([classes.index(label) for label in y])
    keras.utils.set_random_seed(0)
    model = ak.build_lstm(x.shape[1:], num_classes=2, normalization_data=x)
    model.fit(x, y, epochs=30, verbose=0)
    save(
        ak.plot_explanation(ak.explain(model, x[:1])[0]), "explain-sequence.png"
    )


def recommender_figure(data_dir):
    likes = interactions.load_movielens_ratings(
        data_dir / "movielens-latest-small", min_rating=4.0
    )
    model = ak.CosineRecommender().fit(likes)
    save(
        ak.plot_explanation(ak.explain(model, [1], top_k=5)[0]),
        "explain-recommender.png",
    )


def tuning_figure(data_dir):
    images, labels = load_mnist(data_dir / "mnist", kind="t10k")
    with tempfile.TemporaryDirectory() as directory:
        result = ak.tune(
            ak.build_cnn,
            images[:2000],
            labels[:2000],
            validation_data=(images[2000:2600], labels[2000:2600]),
            max_trials=6,
            epochs=3,
            directory=directory,
        )
    scores = [row["score"] for row in result.trials]
    figure, ax = plt.subplots(figsize=(6, 3))
    colours = ["tab:gray"] + ["tab:blue"] * (len(scores) - 1)
    ax.bar(range(len(scores)), scores, color=colours)
    ax.set_xticks(
        range(len(scores)), [f"#{row['trial']}" for row in result.trials]
    )
    ax.set_ylim(min(scores) - 0.02, 1.0)
    ax.set_ylabel("validation accuracy")
    ax.set_title("tune(build_cnn) on 2,000 MNIST digits (grey: defaults)")
    save(figure, "tuning-trials.png")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--only", default=None, help="one figure by name")
    args = parser.parse_args(argv)
    IMG.mkdir(exist_ok=True)
    figures = {
        "image": image_figure,
        "text": text_figure,
        "sequence": sequence_figure,
        "recommender": recommender_figure,
        "tuning": tuning_figure,
    }
    for name, draw in figures.items():
        if args.only in (None, name):
            draw(args.data_dir)


if __name__ == "__main__":
    main()
