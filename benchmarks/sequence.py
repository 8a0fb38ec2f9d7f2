"""`build_lstm` defaults against 1-nearest-neighbour DTW, same run.

The four UCR/UEA problems in ../shared/data with their official train/test
splits: GunPoint, ItalyPowerDemand, ArrowHead (univariate) and
BasicMotions (6 channels). The baseline is 1-NN with dependent DTW (full
window, squared Euclidean step cost, all channels together), written here
in numpy. Ours is `build_lstm(shape, num_classes, normalization_data=x)`
with everything else at its defaults (the random-convolution front end),
trained with `fit(x, y, epochs=50, batch_size=16)`; the recurrent stack
of the project's own examples (`conv_filters=(32, 32)`) is shown for
comparison. Published accuracies of 1-NN DTW (full window) are 0.907,
0.950, 0.703 and 0.975; of ROCKET about 1.00, 0.97, 0.81 and 1.00.

    python benchmarks/sequence.py [--data-dir ../shared/data] [--epochs 50]
"""

# Import aiservice_kit first: it hides TensorFlow's start-up notices.
import aiservice_kit as ak  # isort: skip

import argparse
import time
from pathlib import Path

import keras
import numpy as np

from aiservice_kit.datasets import load_ts

REPO_ROOT = Path(__file__).resolve().parents[1]
DATASETS = (
    ("gunpoint", "GunPoint"),
    ("italypowerdemand", "ItalyPowerDemand"),
    ("arrowhead", "ArrowHead"),
    ("basicmotions", "BasicMotions"),
)


def dtw_1nn(x_train, y_train, x_test):
    """Labels of the nearest training series under dependent DTW.

    Full warping window, squared Euclidean cost over all channels; the
    dynamic programme runs over every (test, train) pair at once.
    """
    test = np.asarray(x_test, np.float64)[:, None]
    train = np.asarray(x_train, np.float64)[None]
    steps = train.shape[2]
    shape = (test.shape[0], train.shape[1], steps + 1)
    previous = np.full(shape, np.inf)
    previous[:, :, 0] = 0.0
    for i in range(steps):
        cost = ((test[:, :, i : i + 1] - train) ** 2).sum(-1)
        current = np.full(shape, np.inf)
        for j in range(steps):
            best = np.minimum(previous[:, :, j], previous[:, :, j + 1])
            current[:, :, j + 1] = cost[:, :, j] + np.minimum(
                best, current[:, :, j]
            )
        previous = current
    return np.asarray(y_train)[np.argmin(previous[:, :, steps], axis=1)]


def load_split(data_dir: Path, folder: str, stem: str):
    x_train, y_train = load_ts(data_dir / folder / f"{stem}_TRAIN.ts")
    x_test, y_test = load_ts(data_dir / folder / f"{stem}_TEST.ts")
    names, y_train = np.unique(y_train, return_inverse=True)
    return x_train, y_train, x_test, np.searchsorted(names, y_test), names


def train_ours(x_train, y_train, num_classes, epochs, **options):
    keras.utils.set_random_seed(0)
    started = time.perf_counter()
    model = ak.build_lstm(
        x_train.shape[1:],
        num_classes=num_classes,
        normalization_data=x_train,
        **options,
    )
    model.fit(x_train, y_train, epochs=epochs, batch_size=16, verbose=0)
    return model, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir", type=Path, default=REPO_ROOT.parent / "shared" / "data"
    )
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument(
        "--no-recurrent",
        action="store_true",
        help="skip the recurrent stack's row",
    )
    args = parser.parse_args()
    header = (
        f"{'data set':<18}{'train/test':>11}{'1-NN DTW':>10}{'defaults':>10}"
        f"{'- DTW':>8}{'fit s':>7}{'recurrent':>11}"
    )
    print(
        f"build_lstm defaults, {args.epochs} epochs, batch 16; keras "
        f"{keras.__version__}"
    )
    print(header)
    print("-" * len(header))
    for folder, stem in DATASETS:
        x_train, y_train, x_test, y_test, names = load_split(
            args.data_dir, folder, stem
        )
        dtw = float(np.mean(dtw_1nn(x_train, y_train, x_test) == y_test))
        model, seconds = train_ours(x_train, y_train, len(names), args.epochs)
        ours = model.evaluate(x_test, y_test, verbose=0)[1]
        recurrent = float("nan")
        if not args.no_recurrent:
            model, _ = train_ours(
                x_train,
                y_train,
                len(names),
                args.epochs,
                conv_filters=(32, 32),
            )
            recurrent = model.evaluate(x_test, y_test, verbose=0)[1]
        split = f"{len(x_train)}/{len(x_test)}"
        print(
            f"{stem:<18}{split:>11}{dtw:>10.4f}{ours:>10.4f}"
            f"{ours - dtw:>+8.4f}{seconds:>7.1f}{recurrent:>11.4f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
