"""The aiservice_kit demo: the library's main job, start to finish.

On scikit-learn's handwritten digits (they ship with scikit-learn, so this
runs offline) it builds a CNN, trains, evaluates, saves, reloads and
predicts, then prints a short table. Run it with `make demo`.
"""

# Import aiservice_kit first: it hides TensorFlow's start-up notices.
import aiservice_kit as ak  # isort: skip

import argparse
import tempfile
import time
from pathlib import Path

import keras
import numpy as np

from aiservice_kit.datasets import load_digits_images


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description="aiservice_kit demo")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="aiservice-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results: dict[str, float] = {}

    print(f"aiservice_kit {ak.__version__} demo, working in {workdir}")
    (x_train, y_train), (x_test, y_test) = load_digits_images(seed=0)
    print(
        f"data      scikit-learn digits: {len(x_train)} training and "
        f"{len(x_test)} test images of {x_train.shape[1:]} uint8 pixels"
    )

    keras.utils.set_random_seed(0)
    model = ak.build_cnn(x_train.shape[1:], num_classes=10)
    started = time.perf_counter()
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=32, verbose=0)
    results["training_seconds"] = time.perf_counter() - started
    _, results["accuracy"] = model.evaluate(x_test, y_test, verbose=0)

    saved = workdir / "digits_cnn.keras"
    model.save(saved)
    reloaded = keras.models.load_model(saved)
    predicted = reloaded.predict(x_test, verbose=0).argmax(axis=1)
    results["reloaded_accuracy"] = float(np.mean(predicted == y_test))
    results["file_megabytes"] = saved.stat().st_size / 1e6

    rows = [
        ("test accuracy", f"{results['accuracy']:.4f}"),
        ("accuracy after reload", f"{results['reloaded_accuracy']:.4f}"),
        ("training time", f"{results['training_seconds']:.1f} s"),
        ("saved .keras file", f"{results['file_megabytes']:.2f} MB"),
    ]
    width = max(len(name) for name, _ in rows)
    print()
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    return results


if __name__ == "__main__":
    main()
