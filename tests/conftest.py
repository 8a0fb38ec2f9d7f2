"""Shared test setup: one TensorFlow import per session, real data paths.

The CPU is split into two logical devices before TensorFlow initializes, so
`multi_device` tests can run MirroredStrategy with two replicas on one CPU
(as Keras' own distribute tests do). Ordinary ops still run on /CPU:0.
"""

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

import aiservice_kit  # noqa: E402, F401

REPO_ROOT = Path(__file__).resolve().parents[1]
#: The real datasets: ../shared/data beside the checkout, or
#: $AISERVICE_KIT_DATA.
DATA_DIR = Path(
    os.environ.get("AISERVICE_KIT_DATA", REPO_ROOT.parent / "shared" / "data")
)


def pytest_configure(config):
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
        )
    except RuntimeError:  # already initialized (e.g. a plugin ran ops)
        pass


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared real datasets; tests fail loudly when they are missing."""
    if not DATA_DIR.is_dir():
        pytest.fail(
            f"Real datasets not found at {DATA_DIR}. Check out the project "
            "beside shared/ or set AISERVICE_KIT_DATA."
        )
    return DATA_DIR


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same seeds and a fresh Keras session.

    `free_memory=False` skips a full garbage collection per test, which
    cost up to seconds each under load; Python's own gc still runs.
    """
    keras.backend.clear_session(free_memory=False)
    keras.utils.set_random_seed(1234)
    yield


@pytest.fixture(scope="session")
def mnist_split(data_dir):
    """The MNIST split of the acceptance tests: first 8,000 / last 2,000.

    Returns:
        `(x_train, y_train, x_test, y_test)`: uint8 images (n, 28, 28) and
        integer labels, read from the real IDX files.
    """
    from aiservice_kit.datasets import load_mnist

    images, labels = load_mnist(data_dir / "mnist", kind="t10k")
    return images[:8000], labels[:8000], images[8000:], labels[8000:]


@pytest.fixture(scope="session")
def trained_mnist_cnn(mnist_split):
    """A default `build_cnn` trained on the MNIST split (once per session).

    Trained for up to 10 epochs with early stopping on a validation slice of
    the training images (never on the test images), restoring the best
    weights. Shared by the accuracy and export tests.
    """
    from aiservice_kit import build_cnn

    x_train, y_train, _, _ = mnist_split
    keras.utils.set_random_seed(0)
    model = build_cnn(x_train.shape[1:], num_classes=10)
    model.fit(
        x_train,
        y_train,
        epochs=10,
        batch_size=64,
        validation_split=0.1,
        callbacks=[
            keras.callbacks.EarlyStopping(
                monitor="val_accuracy", patience=3, restore_best_weights=True
            )
        ],
        verbose=0,
    )
    return model
