"""Image classification on real MNIST: fit, evaluate, save, load, predict.

Run from the repository root; MNIST is downloaded once into the dataset
cache (`--data-dir`, else $AISERVICE_KIT_DATA, else ~/.aiservice_kit/datasets):

    python examples/image_classification.py

Tests run it small with `--train-size 500 --epochs 1`.
"""

# Import aiservice_kit first: it hides TensorFlow's start-up notices.
import aiservice_kit as ak  # isort: skip

import argparse
import time
from pathlib import Path

import keras
import numpy as np

from aiservice_kit.datasets import fetch_mnist


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="dataset cache folder (default: $AISERVICE_KIT_DATA, else "
        "~/.aiservice_kit/datasets); missing datasets are downloaded once",
    )
    parser.add_argument("--train-size", type=int, default=8000)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=Path("runs") / f"mnist-{time.strftime('%Y%m%d-%H%M%S')}",
        help="where the model and the plot go (default: runs/mnist-<time>)",
    )
    parser.add_argument("--verbose", type=int, default=2, help="as in fit")
    args = parser.parse_args(argv)
    output_dir = args.output_dir
    output_dir.mkdir(parents=True, exist_ok=True)

    # 1. Data: MNIST's 10,000 official test images, split 8,000 / 2,000.
    print("Loading MNIST (downloaded once, then read from the cache)...")
    images, labels = fetch_mnist("t10k", data_home=args.data_dir)
    x_train, y_train = images[: args.train_size], labels[: args.train_size]
    x_test, y_test = images[8000:], labels[8000:]

    # 2. Build: raw uint8 pixels in, class probabilities out.
    keras.utils.set_random_seed(0)
    model = ak.build_cnn(x_train.shape[1:], num_classes=10)

    # 3. Fit, keeping the best epoch on a validation slice of the training set.
    print(f"Training on {len(x_train)} images, up to {args.epochs} epochs...")
    started = time.perf_counter()
    history = model.fit(
        x_train,
        y_train,
        epochs=args.epochs,
        batch_size=64,
        validation_split=0.1,
        callbacks=[
            keras.callbacks.EarlyStopping(
                monitor="val_accuracy", patience=3, restore_best_weights=True
            )
        ],
        verbose=args.verbose,
    )
    training_seconds = time.perf_counter() - started
    plot = ak.plot_history(history, output_dir / "history.png")

    # 4. Evaluate on images the model never saw.
    print(f"Evaluating on {len(x_test)} held-out images, saving, reloading...")
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)

    # 5. Save, load back (no custom_objects needed) and predict.
    path = output_dir / "mnist_cnn.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    predictions = reloaded.predict(x_test[:5], verbose=0).argmax(axis=1)
    same = np.array_equal(
        model.predict(x_test, verbose=0), reloaded.predict(x_test, verbose=0)
    )

    print(f"test accuracy      {accuracy:.4f}")
    print(f"training time      {training_seconds:.1f} s")
    print(f"saved model        {path} ({path.stat().st_size / 1e6:.2f} MB)")
    print(f"reload identical   {same}")
    print(f"first predictions  {predictions.tolist()}")
    print(f"true labels        {y_test[:5].tolist()}")
    print(f"artifacts in {output_dir}:")
    print(f"  {path}  the trained model (reloads with keras.models.load_model)")
    print(f"  {plot}  loss and accuracy per epoch")
    return {
        "accuracy": float(accuracy),
        "training_seconds": training_seconds,
        "reload_identical": float(same),
    }


if __name__ == "__main__":
    main()
