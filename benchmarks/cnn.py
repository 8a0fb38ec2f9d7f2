"""build_cnn's default path against the textbook Keras CNN, same run.

Trains on the MNIST split of the acceptance tests (first 8,000 of the
10,000 official test images; tested on the last 2,000) and prints samples
per second, wall time to finish training and test accuracy, with ratios
against the baseline:

- baseline: the textbook CNN (benchmarks/textbook_cnn.py: Keras' "simple
  MNIST convnet", floats scaled outside the model, plain `fit`, batch 32)
  in a child process that imports only Keras, as a user without this
  library runs it (TensorFlow's own defaults);
- `build_cnn((28, 28), 10)` with every default and plain `fit`, batch 32
  (the same batch size; what makes it faster: the oneDNN CPU kernels that
  `import aiservice_kit` turns on where TensorFlow leaves them off, the
  input pipeline its `fit` gives numpy arrays, and its compile-time
  `steps_per_execution`);
- `aiservice_kit.train(build_fn, ..., batch_size=256)`, the documented
  fast path (learning rate 6e-3 for the larger batch, as
  benchmarks/training.py; bfloat16 on CPUs that compute it natively);
- the textbook CNN again, in this process after `import aiservice_kit`
  (plain `fit` on arrays, so only the process settings differ from the
  baseline): what the oneDNN switch alone is worth, for reference.

    python benchmarks/cnn.py [--data-dir ../shared/data] [--epochs 8]
"""

import os

# Read before aiservice_kit sets it, so the baseline gets what the user had.
USERS_ONEDNN_SETTING = os.environ.get("TF_ENABLE_ONEDNN_OPTS")

# Import aiservice_kit first: it hides TensorFlow's start-up notices.
import aiservice_kit as ak  # isort: skip  # noqa: E402

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

from aiservice_kit.datasets import load_mnist  # noqa: E402

BENCHMARKS = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCHMARKS))

from textbook_cnn import onednn_enabled  # noqa: E402
from textbook_cnn import train_textbook  # noqa: E402


def plain_keras_baseline(data: dict, epochs: int) -> dict:
    """Runs benchmarks/textbook_cnn.py in a child process; its figures."""
    environment = dict(os.environ)
    environment.pop("TF_ENABLE_ONEDNN_OPTS", None)
    if USERS_ONEDNN_SETTING is not None:
        environment["TF_ENABLE_ONEDNN_OPTS"] = USERS_ONEDNN_SETTING
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "mnist.npz")
        np.savez(path, **data)
        completed = subprocess.run(
            [
                sys.executable,
                str(BENCHMARKS / "textbook_cnn.py"),
                path,
                "--epochs",
                str(epochs),
            ],
            capture_output=True,
            text=True,
            env=environment,
            check=False,
        )
    if completed.returncode != 0:
        raise RuntimeError(completed.stderr[-3000:])
    return json.loads(completed.stdout.strip().splitlines()[-1])


def timed_fit(model, data, epochs, batch_size) -> dict:
    started = time.perf_counter()
    model.fit(
        data["x_train"],
        data["y_train"],
        epochs=epochs,
        batch_size=batch_size,
        verbose=0,
    )
    seconds = time.perf_counter() - started
    _, accuracy = model.evaluate(data["x_test"], data["y_test"], verbose=0)
    return {
        "samples_per_s": epochs * len(data["x_train"]) / seconds,
        "seconds": seconds,
        "accuracy": accuracy,
    }


def timed_train(data, epochs) -> dict:
    keras.utils.set_random_seed(0)
    started = time.perf_counter()
    model, _ = ak.train(
        lambda: ak.build_cnn(
            (28, 28), 10, optimizer=keras.optimizers.Adam(6e-3)
        ),
        data["x_train"],
        data["y_train"],
        epochs=epochs,
        batch_size=256,
        seed=0,
        verbose=0,
    )
    seconds = time.perf_counter() - started
    return {
        "samples_per_s": epochs * len(data["x_train"]) / seconds,
        "seconds": seconds,
        "accuracy": model.evaluate(data["x_test"], data["y_test"], verbose=0)[
            1
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=BENCHMARKS.parent.parent / "shared" / "data",
    )
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()

    images, labels = load_mnist(args.data_dir / "mnist", kind="t10k")
    data = {
        "x_train": images[:8000],
        "y_train": labels[:8000],
        "x_test": images[8000:],
        "y_test": labels[8000:],
    }

    baseline = plain_keras_baseline(data, args.epochs)
    # build_cnn first: it pays this process's start-up (first graphs,
    # kernel set-up), as the baseline pays its own.
    keras.utils.set_random_seed(0)
    default = timed_fit(ak.build_cnn((28, 28), 10), data, args.epochs, 32)
    trained = timed_train(data, args.epochs)
    rows = [
        ("textbook, plain Keras (batch 32)", baseline),
        ("build_cnn defaults (batch 32)", default),
        ("train() (batch 256)", trained),
        (
            "textbook, after import (batch 32)",
            train_textbook(data, args.epochs),
        ),
    ]

    print(
        f"MNIST split 8,000 train / 2,000 test, {args.epochs} epochs each; "
        f"oneDNN kernels: plain Keras {'on' if baseline['onednn'] else 'off'}"
        f", after import {'on' if onednn_enabled() else 'off'}"
    )
    header = (
        f"{'path':<36}{'samples/s':>11}{'train s':>9}{'accuracy':>10}"
        f"{'speed x':>9}{'time x':>8}"
    )
    print(header)
    print("-" * len(header))
    for name, row in rows:
        print(
            f"{name:<36}{row['samples_per_s']:>11.0f}"
            f"{row['seconds']:>9.1f}{row['accuracy']:>10.4f}"
            f"{row['samples_per_s'] / baseline['samples_per_s']:>9.2f}"
            f"{row['seconds'] / baseline['seconds']:>8.2f}"
        )


if __name__ == "__main__":
    main()
