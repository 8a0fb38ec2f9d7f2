"""Motion and gesture recognition from sensor sequences with `build_lstm`.

Fit, evaluate, save, load and predict on the UEA BasicMotions (6 channels,
4 activities) or UCR GunPoint (1 channel, 2 gestures) archives, read from
their `.ts` files with the official train/test split. The files are
downloaded once into the dataset cache (`--data-dir`, else
$AISERVICE_KIT_DATA, else ~/.aiservice_kit/datasets). Run from the
repository root:

    python examples/sequence_classification.py --dataset basicmotions

Tests run it small with `--epochs 3`.
"""

# Import aiservice_kit first: it hides TensorFlow's start-up notices.
import aiservice_kit as ak  # isort: skip

import argparse
import time
from pathlib import Path

import keras
import numpy as np

from aiservice_kit.datasets import fetch_ucr_uea

DATASETS = {
    # archive name, build_lstm options, epochs, batch size
    "basicmotions": (
        "BasicMotions",
        {"conv_filters": (32, 32)},
        60,
        16,
    ),
    "gunpoint": (
        "GunPoint",
        {
            "conv_filters": (32, 32),
            "conv_pool_size": 2,
            "units": 32,
            "dropout": 0.1,
        },
        60,
        8,
    ),
}


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="dataset cache folder (default: $AISERVICE_KIT_DATA, else "
        "~/.aiservice_kit/datasets); missing datasets are downloaded once",
    )
    parser.add_argument(
        "--dataset", choices=sorted(DATASETS), default="basicmotions"
    )
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=None,
        help="where the model goes (default: runs/<dataset>-<time>)",
    )
    parser.add_argument("--verbose", type=int, default=2, help="as in fit")
    args = parser.parse_args(argv)
    stem, options, epochs, batch_size = DATASETS[args.dataset]
    epochs = args.epochs or epochs
    output_dir = args.output_dir or Path("runs") / (
        f"{args.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    output_dir.mkdir(parents=True, exist_ok=True)

    # 1. Data: (cases, timesteps, channels) float32 and string labels.
    print(f"Loading {stem} (downloaded once, then read from the cache)...")
    (x_train, y_train), (x_test, y_test) = fetch_ucr_uea(
        stem, data_home=args.data_dir
    )
    class_names, y_train = np.unique(y_train, return_inverse=True)
    y_test = np.searchsorted(class_names, y_test)

    # 2. Build: normalization statistics come from the training set and
    #    are stored in the model, so it takes raw sensor readings.
    keras.utils.set_random_seed(0)
    model = ak.build_lstm(
        x_train.shape[1:],
        num_classes=len(class_names),
        normalization_data=x_train,
        optimizer=keras.optimizers.Adam(3e-3),
        **options,
    )

    # 3. Fit.
    print(f"Training on {len(x_train)} sequences for {epochs} epochs...")
    started = time.perf_counter()
    model.fit(
        x_train,
        y_train,
        epochs=epochs,
        batch_size=batch_size,
        verbose=args.verbose,
    )
    seconds = time.perf_counter() - started
    print(f"Evaluating on {len(x_test)} test sequences, saving, reloading...")

    # 4. Evaluate on the official test split.
    loss, accuracy = model.evaluate(x_test, y_test, verbose=0)

    # 5. Save, load (no custom_objects) and predict.
    path = output_dir / f"{args.dataset}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    probabilities = loaded.predict(x_test, verbose=0)
    same = np.allclose(probabilities, model.predict(x_test, verbose=0))
    first = class_names[np.argmax(probabilities[0])]
    print(f"{stem}: trained on {len(x_train)} sequences in {seconds:.1f} s")
    print(f"test accuracy {accuracy:.4f}; reloaded model identical: {same}")
    print(f"first test case: predicted {first}, true {class_names[y_test[0]]}")
    print(f"artifacts in {output_dir}:")
    print(f"  {path}  the trained model (takes raw readings)")
    return {
        "accuracy": float(accuracy),
        "loss": float(loss),
        "train_seconds": seconds,
        "reloaded_identical": float(same),
    }


if __name__ == "__main__":
    main()
