"""Text classifier benchmark: every encoder vs the textbook Keras LSTM.

SMS Spam Collection, stratified 80/20 split with a fixed seed. The
baseline is the textbook recipe, run in the same process: integer sequences
(pre-)padded to 100 outside the model, Embedding(1000, 32) -> LSTM(32) ->
Dense(1, sigmoid), batch 32. Each encoder of `build_text_classifier` trains
on the raw strings with the same number of epochs at the library's default
batch size (128), plus the default encoder at the textbook's batch size.
Training time includes adapting the vocabulary. Prints one table with
ratios against the baseline.

    python benchmarks/text.py            # all encoders, 5 epochs
    python benchmarks/text.py --quick    # default encoder only, 3 epochs
"""

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
from sklearn.metrics import f1_score  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

from aiservice_kit import build_text_classifier  # noqa: E402
from aiservice_kit.datasets import load_labelled_text  # noqa: E402
from aiservice_kit.models.text import ENCODERS  # noqa: E402
from aiservice_kit.models.text import predict_labels  # noqa: E402

DEFAULT_DATA = (
    Path(__file__).resolve().parents[1].parent
    / "shared"
    / "data"
    / "sms-spam-collection"
    / "SMSSpamCollection"
)


def textbook(x_train, y_train, x_test, epochs, batch_size):
    """The textbook recipe; returns (train seconds, test predictions)."""
    start = time.perf_counter()
    # Keras' Tokenizer(num_words=1000) + pad_sequences(maxlen=100): ids of
    # the 1000 most frequent words, pre-padded and pre-truncated to 100.
    tokenizer = keras.layers.TextVectorization(max_tokens=1000, ragged=True)
    tokenizer.adapt(x_train)

    def to_ids(texts):
        ragged = tokenizer(texts).to_list()
        return keras.utils.pad_sequences(ragged, maxlen=100)

    train_ids = to_ids(x_train)
    model = keras.Sequential(
        [
            keras.Input((100,)),
            keras.layers.Embedding(1000, 32),
            keras.layers.LSTM(32),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile("adam", "binary_crossentropy", metrics=["accuracy"])
    model.fit(
        train_ids, y_train, epochs=epochs, batch_size=batch_size, verbose=0
    )
    seconds = time.perf_counter() - start
    probabilities = model.predict(to_ids(x_test), verbose=0)
    return seconds, (probabilities[:, 0] > 0.5).astype(int)


def ours(encoder, x_train, y_train, x_test, epochs, batch_size=None):
    """One `build_text_classifier` encoder on raw strings.

    `batch_size=None` keeps the library's default (128 for text models).
    """
    start = time.perf_counter()
    model = build_text_classifier(
        x_train, class_names=["ham", "spam"], encoder=encoder
    )
    fit_options = {} if batch_size is None else {"batch_size": batch_size}
    model.fit(x_train, y_train, epochs=epochs, verbose=0, **fit_options)
    seconds = time.perf_counter() - start
    predicted = predict_labels(model, x_test)
    return seconds, (predicted == "spam").astype(int)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    epochs = args.epochs or (3 if args.quick else 5)
    encoders = ("ngrams",) if args.quick else ENCODERS

    texts, labels = load_labelled_text(args.data)
    x_train, x_test, y_train, y_test = train_test_split(
        texts, labels, test_size=0.2, stratify=labels, random_state=0
    )
    y_test01 = (y_test == "spam").astype(int)
    samples = len(x_train) * epochs

    rows = []
    keras.utils.set_random_seed(0)
    base_seconds, predicted = textbook(
        x_train,
        (y_train == "spam").astype(int),
        x_test,
        epochs,
        args.batch_size,
    )
    base_f1 = f1_score(y_test01, predicted)
    rows.append(("textbook LSTM (baseline)", base_seconds, base_f1))
    for encoder in encoders:
        keras.utils.set_random_seed(0)
        seconds, predicted = ours(encoder, x_train, y_train, x_test, epochs)
        rows.append((encoder, seconds, f1_score(y_test01, predicted)))
    # The default encoder at the textbook's batch size, to show how much of
    # the speed comes from the model and how much from the batch size.
    keras.utils.set_random_seed(0)
    seconds, predicted = ours(
        "ngrams", x_train, y_train, x_test, epochs, args.batch_size
    )
    label = f"ngrams, batch {args.batch_size}"
    rows.append((label, seconds, f1_score(y_test01, predicted)))

    print(
        f"SMS Spam: {len(x_train)} train / {len(x_test)} test, {epochs} "
        f"epochs; baseline batch {args.batch_size}, ours 128 unless named; "
        f"keras {keras.__version__}"
    )
    header = (
        f"{'encoder':<26}{'train s':>9}{'samples/s':>11}{'spam F1':>9}"
        f"{'speed x':>9}{'F1 - base':>11}"
    )
    print(header)
    print("-" * len(header))
    for name, seconds, f1 in rows:
        print(
            f"{name:<26}{seconds:>9.1f}{samples / seconds:>11.0f}{f1:>9.4f}"
            f"{base_seconds / seconds:>9.2f}{f1 - base_f1:>+11.4f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
