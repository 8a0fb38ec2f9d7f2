"""Train a CNN on real MNIST, export it to every format and verify each.

Run from the repository root; MNIST is downloaded once into the dataset
cache (`--data-dir`, else $AISERVICE_KIT_DATA, else ~/.aiservice_kit/datasets):

    python examples/export_everything.py

It writes, under --output-dir: the .keras file, a versioned SavedModel
(`saved_model/1/`, TF Serving's layout), LiteRT files (float32, dynamic,
float16 and int8 quantization) and an ONNX file. Each artifact runs in its
own runtime on the 2,000 held-out test images and is compared with the
Keras model. Tests run it small with `--train-size 1000 --epochs 1`.
"""

# Import aiservice_kit first: it hides TensorFlow's start-up notices.
import aiservice_kit as ak  # isort: skip

import argparse
import time
from pathlib import Path

import keras
import numpy as np

from aiservice_kit.datasets import fetch_mnist
from aiservice_kit.export import load_artifact
from aiservice_kit.export import save_model


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="dataset cache folder (default: $AISERVICE_KIT_DATA, else "
        "~/.aiservice_kit/datasets); missing datasets are downloaded once",
    )
    parser.add_argument("--train-size", type=int, default=8000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=Path("runs") / f"export-{time.strftime('%Y%m%d-%H%M%S')}",
        help="where the artifacts go (default: runs/export-<time>)",
    )
    parser.add_argument("--verbose", type=int, default=2, help="as in fit")
    args = parser.parse_args(argv)
    out = args.output_dir
    out.mkdir(parents=True, exist_ok=True)

    # 1. Real data: MNIST's official test set, split 8,000 / 2,000.
    print("Loading MNIST (downloaded once, then read from the cache)...")
    images, labels = fetch_mnist("t10k", data_home=args.data_dir)
    x_train, y_train = images[: args.train_size], labels[: args.train_size]
    x_test, y_test = images[8000:], labels[8000:]

    # 2. Train (raw uint8 pixels in, probabilities out) and save.
    keras.utils.set_random_seed(0)
    model = ak.build_cnn(x_train.shape[1:], num_classes=10)
    print(f"Training on {len(x_train)} images for {args.epochs} epochs...")
    model.fit(
        x_train,
        y_train,
        epochs=args.epochs,
        batch_size=64,
        verbose=args.verbose,
    )
    keras_path = save_model(model, out / "mnist_cnn.keras")
    keras_accuracy = float(
        np.mean(model.predict(x_test, verbose=0).argmax(-1) == y_test)
    )

    # 3. Export to every format. Each exporter checks its artifact against
    #    the model before publishing it.
    print("Exporting: SavedModel, 4 LiteRT files, ONNX (each one checked)...")
    digits = [str(digit) for digit in range(10)]
    artifacts = {
        "saved_model": ak.export_saved_model(
            model, out / "saved_model", class_names=digits
        ),
        "tflite": ak.export_tflite(model, out / "mnist.tflite"),
        "tflite dynamic": ak.export_tflite(
            model, out / "mnist.dynamic.tflite", "dynamic"
        ),
        "tflite float16": ak.export_tflite(
            model, out / "mnist.float16.tflite", "float16"
        ),
        "tflite int8": ak.export_tflite(
            model,
            out / "mnist.int8.tflite",
            "int8",
            representative_data=x_train[:500],
        ),
        "onnx": ak.export_onnx(model, out / "mnist.onnx"),
    }

    # 4. Verify each on the held-out images, in its own runtime.
    print(f"Verifying each artifact on {len(x_test)} held-out images...")
    results: dict[str, dict[str, float]] = {
        "keras": {
            "size_bytes": _size(keras_path),
            "accuracy": keras_accuracy,
            "max_abs_diff": 0.0,
            "class_agreement": 1.0,
        }
    }
    print(
        f"{'format':16} {'size KB':>9} {'max |diff|':>11} "
        f"{'agreement':>10} {'accuracy':>9}"
    )
    print(
        f"{'keras':16} {_size(keras_path) / 1e3:9.1f} {'-':>11} "
        f"{'-':>10} {keras_accuracy:9.4f}"
    )
    for name, path in artifacts.items():
        report = ak.verify_export(model, path, x_test)
        predicted = load_artifact(path)(image=x_test)["predicted_class"]
        accuracy = float(np.mean(predicted == y_test))
        results[name] = {
            "size_bytes": _size(path),
            "accuracy": accuracy,
            "max_abs_diff": report.max_abs_diff,
            "class_agreement": report.class_agreement,
        }
        print(
            f"{name:16} {_size(path) / 1e3:9.1f} {report.max_abs_diff:11.2e}"
            f" {report.class_agreement:10.2%} {accuracy:9.4f}"
        )
    print(f"artifacts in {out}:")
    print(f"  {keras_path}")
    for path in artifacts.values():
        print(f"  {path}")
    return results


if __name__ == "__main__":
    main()
