"""Every export format against the Keras model: size, latency, accuracy.

Trains build_cnn on the MNIST split of the acceptance tests (first 8,000 of
the 10,000 official test images; tested on the last 2,000), exports it to
SavedModel, LiteRT (float32, dynamic, float16, int8) and ONNX, and prints
for each: artifact size, single-example latency (batch of 1, p50 of
interleaved rounds, each artifact in its own runtime), test accuracy and
agreement with Keras, with ratios against the Keras model in the same run.

    python benchmarks/export.py [--data-dir ../shared/data] [--quick]
"""

# Import aiservice_kit first: it hides TensorFlow's start-up notices.
import aiservice_kit as ak  # isort: skip

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from aiservice_kit.datasets import load_mnist
from aiservice_kit.export import load_artifact
from aiservice_kit.export import save_model

REPO_ROOT = Path(__file__).resolve().parents[1]


def size_of(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def p50_latency(calls: dict[str, Callable[[], object]], rounds: int, per: int):
    """Median seconds per call of each callable, rounds interleaved."""
    for call in calls.values():  # warm up (tracing, allocation)
        for _ in range(3):
            call()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            for _ in range(per):
                started = time.perf_counter()
                call()
                samples[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir", type=Path, default=REPO_ROOT.parent / "shared" / "data"
    )
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="2,000 images, 1 epoch, fewer calls",
    )
    args = parser.parse_args()
    train_size, epochs = (2000, 1) if args.quick else (8000, args.epochs)
    rounds, per = (5, 20) if args.quick else (10, 50)

    images, labels = load_mnist(args.data_dir / "mnist", kind="t10k")
    x_train, y_train = images[:train_size], labels[:train_size]
    x_test, y_test = images[8000:], labels[8000:]
    keras.utils.set_random_seed(0)
    model = ak.build_cnn(x_train.shape[1:], num_classes=10)
    model.fit(x_train, y_train, epochs=epochs, batch_size=64, verbose=0)

    out = Path(tempfile.mkdtemp(prefix="export-bench-"))
    keras_path = save_model(model, out / "mnist.keras")
    artifacts = {
        "SavedModel signature": ak.export_saved_model(model, out / "sm"),
        "LiteRT float32": ak.export_tflite(model, out / "f32.tflite"),
        "LiteRT dynamic": ak.export_tflite(
            model, out / "dynamic.tflite", "dynamic"
        ),
        "LiteRT float16": ak.export_tflite(
            model, out / "float16.tflite", "float16"
        ),
        "LiteRT int8": ak.export_tflite(
            model,
            out / "int8.tflite",
            "int8",
            representative_data=x_train[:500],
        ),
        "ONNX (onnxruntime)": ak.export_onnx(model, out / "model.onnx"),
    }

    one = x_test[:1]
    one_float = tf.constant(one.astype(np.float32))
    runners = {name: load_artifact(path) for name, path in artifacts.items()}
    calls: dict[str, Callable[[], object]] = {
        "Keras predict_on_batch": lambda: model.predict_on_batch(one),
        "Keras model(x)": lambda: model(one_float, training=False),
    }
    for name, run in runners.items():
        calls[name] = lambda run=run: run(image=one)
    latency = p50_latency(calls, rounds, per)
    keras_predict = p50_latency(
        {"predict": lambda: model.predict(one, verbose=0)}, 2, 10
    )["predict"]

    keras_probs = model.predict(x_test, verbose=0)
    keras_classes = keras_probs.argmax(-1)
    rows = [
        (
            "Keras model.predict",
            size_of(keras_path),
            keras_predict,
            float(np.mean(keras_classes == y_test)),
            1.0,
        )
    ]
    for name in ("Keras predict_on_batch", "Keras model(x)"):
        rows.append((name, size_of(keras_path), latency[name], rows[0][3], 1.0))
    for name, run in runners.items():
        predicted = run(image=x_test)["predicted_class"]
        rows.append(
            (
                name,
                size_of(artifacts[name]),
                latency[name],
                float(np.mean(predicted == y_test)),
                float(np.mean(predicted == keras_classes)),
            )
        )

    baseline_size = size_of(keras_path)
    baseline_latency = latency["Keras predict_on_batch"]
    print(
        f"MNIST build_cnn, trained on {train_size} images for {epochs} "
        f"epoch(s); latency: batch 1, p50 of {rounds}x{per} interleaved "
        "calls; ratios vs the .keras file / Keras predict_on_batch"
    )
    header = (
        f"{'format':24} {'size KB':>9} {'x size':>7} {'p50 ms':>8} "
        f"{'x speed':>8} {'accuracy':>9} {'agree':>7}"
    )
    print(header)
    print("-" * len(header))
    for name, size, seconds, accuracy, agree in rows:
        print(
            f"{name:24} {size / 1e3:9.1f} {size / baseline_size:7.2f} "
            f"{seconds * 1e3:8.3f} {baseline_latency / seconds:8.1f} "
            f"{accuracy:9.4f} {agree:7.2%}"
        )
    int8 = size_of(artifacts["LiteRT int8"])
    f32 = size_of(artifacts["LiteRT float32"])
    print(
        f"int8 size ratio: {int8 / f32:.3f} of LiteRT float32, "
        f"{int8 / baseline_size:.3f} of the .keras file"
    )


if __name__ == "__main__":
    main()
