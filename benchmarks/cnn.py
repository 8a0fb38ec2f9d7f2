"""build_cnn's default path against the textbook Keras CNN, same run.

Trains on the MNIST split of the acceptance tests (first 8,000 of the
10,000 official test images; tested on the last 2,000) and prints samples
per second, wall time to finish training and test accuracy, with ratios:

- the textbook CNN (Keras' "simple MNIST convnet": Conv32-Pool-Conv64-
  Pool-Flatten-Dense, floats scaled outside the model), plain `fit`,
  batch 32;
- `build_cnn((28, 28), 10)` with every default and plain `fit`, batch 32
  (the same batch size: its compile-time `steps_per_execution` is what
  makes it faster);
- `aiservice_kit.train(build_fn, ..., batch_size=256)`, the documented
  fast path (learning rate 6e-3 for the larger batch, as
  benchmarks/training.py).

    python benchmarks/cnn.py [--data-dir ../shared/data] [--epochs 8]
"""

# Import aiservice_kit first: it hides TensorFlow's start-up notices.
import aiservice_kit as ak  # isort: skip

import argparse
import time
from pathlib import Path

import keras

from aiservice_kit.datasets import load_mnist

REPO_ROOT = Path(__file__).resolve().parents[1]


def textbook_cnn() -> keras.Model:
    """The CNN of most tutorials: two conv layers, adam, float inputs."""
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(32, (3, 3), activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, (3, 3), activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(
        optimizer="adam",
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def run(name, model, x_train, y_train, x_test, y_test, epochs, batch_size):
    started = time.perf_counter()
    model.fit(x_train, y_train, epochs=epochs, batch_size=batch_size, verbose=0)
    seconds = time.perf_counter() - started
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    return {
        "name": name,
        "samples_per_s": epochs * len(x_train) / seconds,
        "seconds": seconds,
        "accuracy": accuracy,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir", type=Path, default=REPO_ROOT.parent / "shared" / "data"
    )
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()

    images, labels = load_mnist(args.data_dir / "mnist", kind="t10k")
    x_train, y_train = images[:8000], labels[:8000]
    x_test, y_test = images[8000:], labels[8000:]
    # The textbook feeds floats scaled outside the model; build_cnn takes
    # the raw uint8 pixels and rescales inside.
    scaled_train = (x_train / 255.0).astype("float32")[..., None]
    scaled_test = (x_test / 255.0).astype("float32")[..., None]

    keras.utils.set_random_seed(0)
    textbook = run(
        "textbook CNN (batch 32)",
        textbook_cnn(),
        scaled_train,
        y_train,
        scaled_test,
        y_test,
        args.epochs,
        32,
    )
    keras.utils.set_random_seed(0)
    default = run(
        "build_cnn defaults (batch 32)",
        ak.build_cnn((28, 28), 10),
        x_train,
        y_train,
        x_test,
        y_test,
        args.epochs,
        32,
    )
    keras.utils.set_random_seed(0)
    started = time.perf_counter()
    model, _ = ak.train(
        lambda: ak.build_cnn(
            (28, 28), 10, optimizer=keras.optimizers.Adam(6e-3)
        ),
        x_train,
        y_train,
        epochs=args.epochs,
        batch_size=256,
        seed=0,
        verbose=0,
    )
    seconds = time.perf_counter() - started
    trained = {
        "name": "train() (batch 256)",
        "samples_per_s": args.epochs * len(x_train) / seconds,
        "seconds": seconds,
        "accuracy": model.evaluate(x_test, y_test, verbose=0)[1],
    }

    print(f"MNIST split 8,000 train / 2,000 test, {args.epochs} epochs each")
    header = (
        f"{'path':<32}{'samples/s':>11}{'train s':>9}{'accuracy':>10}"
        f"{'speed x':>9}{'time x':>8}"
    )
    print(header)
    print("-" * len(header))
    for row in (textbook, default, trained):
        print(
            f"{row['name']:<32}{row['samples_per_s']:>11.0f}"
            f"{row['seconds']:>9.1f}{row['accuracy']:>10.4f}"
            f"{row['samples_per_s'] / textbook['samples_per_s']:>9.2f}"
            f"{row['seconds'] / textbook['seconds']:>8.2f}"
        )


if __name__ == "__main__":
    main()
