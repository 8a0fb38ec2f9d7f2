"""build_cnn's default path against the textbook Keras CNN, same run.

Trains on the MNIST split of the acceptance tests (first 8,000 of the
10,000 official test images; tested on the last 2,000) and prints samples
per second, wall time to finish training and test accuracy, with ratios
against the baseline:

- baseline: the textbook CNN (benchmarks/textbook_cnn.py: Keras' "simple
  MNIST convnet", floats scaled outside the model, plain `fit`, batch 32)
  in a process that imports only Keras, as a user without this library
  runs it (TensorFlow's own defaults);
- `build_cnn((28, 28), 10)` with every default and plain `fit`, batch 32
  (the same batch size; what makes it faster: the oneDNN CPU kernels that
  `import aiservice_kit` turns on where TensorFlow leaves them off, the
  input pipeline its `fit` gives numpy arrays, its compile-time
  `steps_per_execution`, and one trace of the training step);
- `aiservice_kit.train(build_fn, ..., batch_size=256)`, the documented
  fast path (learning rate 6e-3 for the larger batch, as
  benchmarks/training.py; bfloat16 on CPUs that compute it natively),
  timed without the building of the model, which the other paths do
  before their clocks start;
- the textbook CNN again, after `import aiservice_kit` (plain `fit` on
  arrays, so only the process settings differ from the baseline): what
  the oneDNN switch alone is worth, for reference.

Each measurement runs in a fresh process, so each pays its own start-up
(first graphs, kernel set-up) and none inherits another's settings. The
paths take turns, `--repeats` rounds of them, and the table shows each
path's fastest round (as `timeit` does: the machine's other load only
ever adds time) with the ratio of medians beside it: on a shared
machine one sequential round drifted by up to 1.4x from the next. The
training is seeded, so every round of a path reaches the same accuracy.

    python benchmarks/cnn.py [--data-dir ../shared/data] [--epochs 8]
                             [--repeats 3]
"""

import os

# Read before aiservice_kit sets it, so the baseline gets what the user had.
USERS_ONEDNN_SETTING = os.environ.get("TF_ENABLE_ONEDNN_OPTS")

# Import aiservice_kit first: it hides TensorFlow's start-up notices.
import aiservice_kit as ak  # isort: skip  # noqa: E402

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
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

#: Path name -> the row label of the table.
PATHS = {
    "textbook": "textbook, plain Keras (batch 32)",
    "build_cnn": "build_cnn defaults (batch 32)",
    "train": "train() (batch 256)",
    "textbook-after-import": "textbook, after import (batch 32)",
}


def _timed_fit(model, data, epochs, batch_size) -> dict:
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
        "accuracy": float(accuracy),
    }


def _timed_train(data, epochs) -> dict:
    # train() builds the model itself (under its strategy and dtype
    # policy); the other paths build theirs before the clock starts, so
    # the building time is taken out here too.
    build_seconds = []

    def build_fn():
        started = time.perf_counter()
        model = ak.build_cnn(
            (28, 28), 10, optimizer=keras.optimizers.Adam(6e-3)
        )
        build_seconds.append(time.perf_counter() - started)
        return model

    keras.utils.set_random_seed(0)
    started = time.perf_counter()
    model, _ = ak.train(
        build_fn,
        data["x_train"],
        data["y_train"],
        epochs=epochs,
        batch_size=256,
        seed=0,
        verbose=0,
    )
    seconds = time.perf_counter() - started - sum(build_seconds)
    _, accuracy = model.evaluate(data["x_test"], data["y_test"], verbose=0)
    return {
        "samples_per_s": epochs * len(data["x_train"]) / seconds,
        "seconds": seconds,
        "accuracy": float(accuracy),
    }


def measure(path: str, data: dict, epochs: int) -> dict:
    """Runs one path in this process (a child of `main`); its figures."""
    if path == "build_cnn":
        keras.utils.set_random_seed(0)
        figures = _timed_fit(ak.build_cnn((28, 28), 10), data, epochs, 32)
    elif path == "train":
        figures = _timed_train(data, epochs)
    elif path == "textbook-after-import":
        figures = train_textbook(data, epochs)
    else:
        raise ValueError(f"unknown path {path!r}; one of {sorted(PATHS)}")
    return {**figures, "onednn": onednn_enabled()}


def run_in_child(path: str, data_file: str, epochs: int) -> dict:
    """Measures one path in a fresh process; its figures."""
    if path == "textbook":
        # Only Keras, with the user's own oneDNN setting.
        environment = dict(os.environ)
        environment.pop("TF_ENABLE_ONEDNN_OPTS", None)
        if USERS_ONEDNN_SETTING is not None:
            environment["TF_ENABLE_ONEDNN_OPTS"] = USERS_ONEDNN_SETTING
        command = [str(BENCHMARKS / "textbook_cnn.py"), data_file]
    else:
        environment = None
        command = [__file__, "--child", path, "--data", data_file]
    completed = subprocess.run(
        [sys.executable, *command, "--epochs", str(epochs)],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"{path}: {completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def _load_split(data_dir: Path) -> dict:
    images, labels = load_mnist(data_dir / "mnist", kind="t10k")
    return {
        "x_train": images[:8000],
        "y_train": labels[:8000],
        "x_test": images[8000:],
        "y_test": labels[8000:],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=BENCHMARKS.parent.parent / "shared" / "data",
    )
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="rounds of all paths, taking turns (default 3)",
    )
    parser.add_argument(
        "--child", choices=sorted(PATHS), help=argparse.SUPPRESS
    )
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1; got {args.repeats}")

    if args.child is not None:
        with np.load(args.data) as data:
            print(json.dumps(measure(args.child, dict(data), args.epochs)))
        return

    runs = {path: [] for path in PATHS}
    with tempfile.TemporaryDirectory() as tmp:
        data_file = os.path.join(tmp, "mnist.npz")
        np.savez(data_file, **_load_split(args.data_dir))
        for round_number in range(1, args.repeats + 1):
            for path in PATHS:
                figures = run_in_child(path, data_file, args.epochs)
                runs[path].append(figures)
                print(
                    f"round {round_number}/{args.repeats} {path}: "
                    f"{figures['samples_per_s']:.0f} samples/s",
                    file=sys.stderr,
                    flush=True,
                )

    def best(path):
        return max(runs[path], key=lambda figures: figures["samples_per_s"])

    def median_speed(path):
        return statistics.median(f["samples_per_s"] for f in runs[path])

    baseline = best("textbook")
    print(
        f"MNIST split 8,000 train / 2,000 test, {args.epochs} epochs each, "
        f"fastest of {args.repeats} rounds; oneDNN kernels: plain Keras "
        f"{'on' if baseline['onednn'] else 'off'}, after import "
        f"{'on' if best('build_cnn')['onednn'] else 'off'}"
    )
    header = (
        f"{'path':<36}{'samples/s':>11}{'train s':>9}{'accuracy':>10}"
        f"{'speed x':>9}{'time x':>8}{'median x':>10}"
    )
    print(header)
    print("-" * len(header))
    for path, name in PATHS.items():
        row = best(path)
        print(
            f"{name:<36}{row['samples_per_s']:>11.0f}"
            f"{row['seconds']:>9.1f}{row['accuracy']:>10.4f}"
            f"{row['samples_per_s'] / baseline['samples_per_s']:>9.2f}"
            f"{row['seconds'] / baseline['seconds']:>8.2f}"
            f"{median_speed(path) / median_speed('textbook'):>10.2f}"
        )
    print(
        "every round, samples/s: "
        + "; ".join(
            f"{path} "
            + ", ".join(f"{f['samples_per_s']:.0f}" for f in runs[path])
            for path in PATHS
        )
    )


if __name__ == "__main__":
    main()
