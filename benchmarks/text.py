"""Text classifier defaults against TF-IDF + logistic regression, same run.

Three real data sets, each split 80/20 (stratified, seed 0): SMS Spam
(English, 2 classes), online-shopping-zh sentiment (Chinese, 2 classes)
and online-shopping-zh product category (Chinese, 9 classes), the full
52,773 reviews. Ours is `build_text_classifier(x_train, class_names=...)`
then `model.fit(x_train, y_train)` with every default (early stopping on
a held-out 10% of the training texts, up to 10 epochs). The baselines are
scikit-learn's `TfidfVectorizer` (character 1-3-grams, and word 1-2-grams)
with `LogisticRegression`, fit on the same training texts. Prints
accuracy and macro F1 per data set, with our margin over the better
baseline.

    python benchmarks/text.py                # the three data sets
    python benchmarks/text.py --encoders     # every encoder on SMS Spam
"""

import argparse
import csv
import gzip
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.feature_extraction.text import TfidfVectorizer  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import f1_score  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

from aiservice_kit import build_text_classifier  # noqa: E402
from aiservice_kit.datasets import load_labelled_text  # noqa: E402
from aiservice_kit.models.text import ENCODERS  # noqa: E402
from aiservice_kit.models.text import predict_labels  # noqa: E402

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def load_sms(data_dir: Path):
    path = data_dir / "sms-spam-collection" / "SMSSpamCollection"
    return load_labelled_text(path)


def load_shopping(data_dir: Path, column: str):
    """online-shopping-zh reviews and one label column (`label`, `cat`)."""
    path = data_dir / "online-shopping-zh" / "online_shopping_9_cats.csv.gz"
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    texts = np.asarray([row["review"] for row in rows], dtype=object)
    labels = np.asarray([row[column] for row in rows], dtype=object)
    return texts, labels


def tfidf_lr(x_train, y_train, x_test, analyzer, ngram_range):
    """TF-IDF + logistic regression; returns (seconds, predictions)."""
    started = time.perf_counter()
    vectorizer = TfidfVectorizer(analyzer=analyzer, ngram_range=ngram_range)
    features = vectorizer.fit_transform(x_train)
    model = LogisticRegression(max_iter=2000).fit(features, y_train)
    seconds = time.perf_counter() - started
    return seconds, model.predict(vectorizer.transform(x_test))


def ours(x_train, y_train, x_test, names, **options):
    """`build_text_classifier` defaults; returns (seconds, predictions)."""
    keras.utils.set_random_seed(0)
    started = time.perf_counter()
    model = build_text_classifier(x_train, class_names=names, **options)
    model.fit(x_train, y_train, verbose=0)
    seconds = time.perf_counter() - started
    return seconds, predict_labels(model, x_test)


def compare(name, texts, labels):
    x_train, x_test, y_train, y_test = train_test_split(
        texts, labels, test_size=0.2, stratify=labels, random_state=0
    )
    names = sorted(set(labels.tolist()))
    rows = [
        (
            "TF-IDF char 1-3 + LR",
            *tfidf_lr(x_train, y_train, x_test, "char", (1, 3)),
        ),
        (
            "TF-IDF word 1-2 + LR",
            *tfidf_lr(x_train, y_train, x_test, "word", (1, 2)),
        ),
        ("build_text_classifier", *ours(x_train, y_train, x_test, names)),
    ]
    print(
        f"\n{name}: {len(x_train)} train / {len(x_test)} test, "
        f"{len(names)} classes"
    )
    header = f"{'model':<24}{'train s':>9}{'accuracy':>10}{'macro F1':>10}"
    print(header)
    print("-" * len(header))
    scores = []
    for label, seconds, predicted in rows:
        accuracy = float(np.mean(predicted == y_test))
        macro = f1_score(y_test, predicted, average="macro")
        scores.append(accuracy)
        print(f"{label:<24}{seconds:>9.1f}{accuracy:>10.4f}{macro:>10.4f}")
    print(
        f"defaults - best baseline: {scores[-1] - max(scores[:-1]):+.4f}",
        flush=True,
    )


def encoders(data_dir: Path, epochs: int = 5) -> None:
    """Every encoder on SMS Spam, `epochs` epochs, no early stopping."""
    texts, labels = load_sms(data_dir)
    x_train, x_test, y_train, y_test = train_test_split(
        texts, labels, test_size=0.2, stratify=labels, random_state=0
    )
    samples = len(x_train) * epochs
    print(f"SMS Spam, every encoder, {epochs} epochs, batch 128")
    header = f"{'encoder':<14}{'train s':>9}{'samples/s':>11}{'spam F1':>9}"
    print(header)
    print("-" * len(header))
    for encoder in ENCODERS:
        keras.utils.set_random_seed(0)
        started = time.perf_counter()
        model = build_text_classifier(
            x_train, class_names=["ham", "spam"], encoder=encoder
        )
        model.fit(
            x_train, y_train, epochs=epochs, verbose=0, early_stopping=False
        )
        seconds = time.perf_counter() - started
        predicted = predict_labels(model, x_test)
        f1 = f1_score(y_test == "spam", predicted == "spam")
        print(
            f"{encoder:<14}{seconds:>9.1f}{samples / seconds:>11.0f}{f1:>9.4f}",
            flush=True,
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--encoders", action="store_true")
    args = parser.parse_args(argv)
    if args.encoders:
        encoders(args.data_dir)
        return 0
    print(f"keras {keras.__version__}")
    compare("SMS Spam", *load_sms(args.data_dir))
    compare(
        "online-shopping-zh sentiment",
        *load_shopping(args.data_dir, "label"),
    )
    compare("online-shopping-zh category", *load_shopping(args.data_dir, "cat"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
