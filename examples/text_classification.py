"""Spam filtering on raw SMS text: fit, evaluate, save, load, predict.

Run from the repository root; the SMS Spam Collection is downloaded once
into the dataset cache (`--data-dir`, else $AISERVICE_KIT_DATA, else
~/.aiservice_kit/datasets):

    python examples/text_classification.py

Tests run it small with `--train-size 600 --epochs 2`.
"""

# Import aiservice_kit first: it hides TensorFlow's start-up notices.
import aiservice_kit as ak  # isort: skip

import argparse
import time
from pathlib import Path

import keras
import numpy as np
from sklearn.metrics import f1_score
from sklearn.model_selection import train_test_split

from aiservice_kit.datasets import fetch_sms_spam
from aiservice_kit.models.text import get_class_names
from aiservice_kit.models.text import predict_labels


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="dataset cache folder (default: $AISERVICE_KIT_DATA, else "
        "~/.aiservice_kit/datasets); missing datasets are downloaded once",
    )
    parser.add_argument("--train-size", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--encoder", default="ngrams")
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=Path("runs") / f"sms-{time.strftime('%Y%m%d-%H%M%S')}",
        help="where the model goes (default: runs/sms-<time>)",
    )
    parser.add_argument("--verbose", type=int, default=2, help="as in fit")
    args = parser.parse_args(argv)
    output_dir = args.output_dir
    output_dir.mkdir(parents=True, exist_ok=True)

    # 1. Data: 5,574 labelled SMS, split 80/20 stratified with a fixed seed.
    print("Loading the SMS Spam Collection (downloaded once)...")
    texts, labels = fetch_sms_spam(data_home=args.data_dir)
    x_train, x_test, y_train, y_test = train_test_split(
        texts, labels, test_size=0.2, stratify=labels, random_state=0
    )
    x_train, y_train = x_train[: args.train_size], y_train[: args.train_size]

    # 2. Build: the vocabulary is adapted on the training texts and lives
    #    inside the model, with the class names.
    print(f"Building the {args.encoder} model (adapting its vocabulary)...")
    keras.utils.set_random_seed(0)
    model = ak.build_text_classifier(
        x_train, class_names=["ham", "spam"], encoder=args.encoder
    )

    # 3. Fit on raw strings and string labels.
    print(f"Training on {len(x_train)} texts for {args.epochs} epochs...")
    started = time.perf_counter()
    model.fit(
        x_train,
        y_train,
        epochs=args.epochs,
        batch_size=32,
        verbose=args.verbose,
    )
    seconds = time.perf_counter() - started
    print(f"Evaluating on {len(x_test)} held-out texts, saving, reloading...")

    # 4. Evaluate: spam is the rare class, so report its F1 too.
    loss, accuracy = model.evaluate(x_test, y_test, verbose=0)
    predicted = predict_labels(model, x_test)
    spam_f1 = f1_score(
        y_test.astype(str), predicted.astype(str), pos_label="spam"
    )

    # 5. Save, load (no custom_objects), and predict on new raw strings.
    path = output_dir / "sms_spam.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    new_messages = ["WINNER! Claim your free prize now, call 0800", "ok see u"]
    same = np.array_equal(
        loaded.predict(x_test[:64], verbose=0),
        model.predict(x_test[:64], verbose=0),
    )
    print(f"trained on {len(x_train)} texts in {seconds:.1f} s")
    print(f"test accuracy {accuracy:.4f}, spam F1 {spam_f1:.4f}")
    print(
        f"classes {get_class_names(loaded)}; reloaded model identical: {same}"
    )
    for message, label in zip(
        new_messages, predict_labels(loaded, new_messages), strict=True
    ):
        print(f"  {label:>4}  {message}")
    print(f"artifacts in {output_dir}:")
    print(f"  {path}  the trained model (takes raw strings)")
    return {
        "accuracy": float(accuracy),
        "loss": float(loss),
        "spam_f1": float(spam_f1),
        "train_seconds": seconds,
        "reloaded_identical": float(same),
    }


if __name__ == "__main__":
    main()
