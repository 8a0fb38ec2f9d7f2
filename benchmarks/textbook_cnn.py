"""The textbook Keras CNN, trained the way a user without this library does.

Keras' "simple MNIST convnet" (Conv32-Pool-Conv64-Pool-Flatten-Dense,
floats scaled outside the model, adam, plain `fit`), run with nothing but
`import keras`: TensorFlow's own defaults, no aiservice_kit import. It is
the baseline of benchmarks/cnn.py, which runs this script in a child
process of the same run so that the library's process-wide settings (the
oneDNN kernels it turns on at import) cannot leak into the baseline.

    python benchmarks/textbook_cnn.py DATA.npz [--epochs 8] [--batch-size 32]

DATA.npz holds `x_train`, `y_train`, `x_test`, `y_test` (uint8 images of
shape (n, 28, 28), integer labels). Prints one JSON line: samples_per_s,
seconds, accuracy, onednn (whether TensorFlow ran its oneDNN kernels).
"""

import argparse
import json
import time

import keras
import numpy as np


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


def scale(images: np.ndarray) -> np.ndarray:
    """The textbook's preprocessing: floats in [0, 1], a channel axis."""
    return (images / 255.0).astype("float32")[..., None]


def train_textbook(data, epochs: int, batch_size: int = 32) -> dict:
    """Trains and scores the textbook CNN; returns the measured figures."""
    keras.utils.set_random_seed(0)
    model = textbook_cnn()
    x_train = scale(data["x_train"])
    started = time.perf_counter()
    model.fit(
        x_train,
        data["y_train"],
        epochs=epochs,
        batch_size=batch_size,
        verbose=0,
    )
    seconds = time.perf_counter() - started
    _, accuracy = model.evaluate(
        scale(data["x_test"]), data["y_test"], verbose=0
    )
    return {
        "samples_per_s": epochs * len(x_train) / seconds,
        "seconds": seconds,
        "accuracy": float(accuracy),
        "onednn": onednn_enabled(),
    }


def onednn_enabled() -> bool:
    """Whether this process's TensorFlow runs its oneDNN CPU kernels."""
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "data", help="an .npz with x_train, y_train, x_test, y_test"
    )
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    with np.load(args.data) as data:
        figures = train_textbook(dict(data), args.epochs, args.batch_size)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
