"""Helpers for the serving tests: real servers as subprocesses on 127.0.0.1.

Every server is `python -m aiservice_kit.cli serve ...` started on a free
loopback port and reached over HTTP with httpx. Models are real
SavedModels: `build_cnn` exported with `export_saved_model`, TF Serving's
`half_plus_three` toy model, multi-input and string models written with
`write_versioned_saved_model`, a text classifier and the recommender.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import keras
import numpy as np
import tensorflow as tf

from aiservice_kit import build_cnn
from aiservice_kit.export import export_saved_model
from aiservice_kit.export import write_versioned_saved_model
from aiservice_kit.serving.config import DEFAULT_DB_ENV

REPO_ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "aiservice_kit.cli"]
STARTUP_TIMEOUT_S = 120

CONFIG = {
    "currency": "USD",
    "prices": {"mnist": 0.40, "*": 0.10},
    "plans": {
        "pro": {},
        "limited": {"requests_per_second": 0.2, "burst": 2},
        "quota": {"monthly_instances": 3},
    },
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`aiservice-kit serve` as a subprocess; stderr goes to a log file."""

    def __init__(self, args: list[str], log_path: Path) -> None:
        self.args = args
        self.log_path = log_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> "Server":
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
        # A server started without --db would write aiservice_kit.db into
        # the checkout: beside its log instead.
        env.setdefault(DEFAULT_DB_ENV, str(self.log_path.with_suffix(".db")))
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log = log
        self.process = subprocess.Popen(
            [*CLI, "serve", *self.args, "--port", str(self.port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO_ROOT,
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.process.returncode}:\n"
                    + self.log()
                )
            try:
                if (
                    httpx.get(self.url + "/readyz", timeout=2).status_code
                    == 200
                ):
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("server not ready in time:\n" + self.log())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)
        self._log.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        self._log.close()


def export_cnn(base: Path, version: int, seed: int) -> Path:
    """A tiny MNIST-shaped build_cnn, exported through the public exporter."""
    keras.utils.set_random_seed(seed)
    model = build_cnn((28, 28), num_classes=10, filters=(4,), dense_units=8)
    return export_saved_model(model, base, version, verify=False)


def _save_module(base: Path, version: int, module, fn, metadata) -> Path:
    def write(tmp_dir: Path) -> None:
        tf.saved_model.save(
            module, str(tmp_dir), signatures={"serving_default": fn}
        )

    return write_versioned_saved_model(base, version, write, metadata)


def export_half_plus_three(base: Path) -> Path:
    """TF Serving's `saved_model_half_plus_three` toy: y = 0.5 x + 3."""

    class HalfPlusThree(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def serve(self, x):
            return {"y": 0.5 * x + 3.0}

    module = HalfPlusThree()
    io = {"inputs": {"x": {"dtype": "float32", "shape": [None]}}}
    return _save_module(
        base, 123, module, module.serve, {"task": "regression", **io}
    )


def export_multi_input(base: Path) -> Path:
    """The REST doc's three-input example: `tag`, `signal`, `sensor`."""

    class MultiInput(tf.Module):
        @tf.function(
            input_signature=[
                tf.TensorSpec([None], tf.string),
                tf.TensorSpec([None, 5], tf.float32),
                tf.TensorSpec([None, 2, 2], tf.float32),
            ]
        )
        def serve(self, tag, signal, sensor):
            return {
                "tag_length": tf.strings.length(tag),
                "signal_sum": tf.reduce_sum(signal, axis=1),
                "sensor_max": tf.reduce_max(sensor, axis=[1, 2]),
            }

    module = MultiInput()
    return _save_module(base, 1, module, module.serve, {"task": "regression"})


def export_bytes_echo(base: Path) -> Path:
    """A binary-input model: `image_bytes` in, its length and itself out."""

    class Echo(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def serve(self, image_bytes):
            return {
                "length": tf.strings.length(image_bytes),
                "echo_bytes": image_bytes,
            }

    module = Echo()
    return _save_module(base, 1, module, module.serve, {"task": "regression"})


def export_text_classifier(base: Path) -> Path:
    """A raw-string text classifier (TextVectorization inside)."""
    keras.utils.set_random_seed(3)
    vectorizer = keras.layers.TextVectorization(
        max_tokens=50, output_mode="multi_hot"
    )
    vectorizer.adapt(
        tf.constant(["free prize now", "see you at lunch", "win cash now"])
    )
    inputs = keras.Input(shape=(), dtype="string", name="text")
    x = vectorizer(inputs)
    outputs = keras.layers.Dense(2, activation="softmax", name="probabilities")(
        x
    )
    model = keras.Model(inputs, outputs)
    return export_saved_model(
        model, base, 1, verify=False, class_names=["ham", "spam"]
    )


def export_recommender(base: Path) -> Path:
    """The item-item recommender on string ids, via its own export."""
    from aiservice_kit.recommenders import CosineRecommender

    users = ["u1", "u1", "u2", "u2", "u3", "u3", "u4"]
    items = ["a", "b", "a", "c", "b", "c", "d"]
    model = CosineRecommender(n_neighbors=3).fit((users, items))
    return model.export(base, 1, top_k=2)


def load_signature(version_dir: Path, name: str = "serving_default"):
    return tf.saved_model.load(str(version_dir)).signatures[name]


def run_signature(
    version_dir: Path, signature: str = "serving_default", **inputs
) -> dict[str, np.ndarray]:
    fn = load_signature(version_dir, signature)
    outputs = fn(**{k: tf.constant(v) for k, v in inputs.items()})
    return {name: value.numpy() for name, value in outputs.items()}
