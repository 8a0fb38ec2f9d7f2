"""Each `fit` and `evaluate` traces its Keras step once (`_tracing`).

Keras 3 without a distribution strategy builds metric and loss variables
inside the first trace, and `tf.function` then traces the step again: about
a second per new model on two cores. These tests count the traces and
check that building first changes no weight.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from aiservice_kit import build_cnn
from aiservice_kit import build_text_classifier
from aiservice_kit import train
from aiservice_kit.training import evaluate

TEXTS = np.array(
    [
        "free prize, call now",
        "see you at lunch",
        "win cash today",
        "running late, sorry",
    ]
    * 8
)
TEXT_LABELS = np.array([1, 0, 1, 0] * 8)


def _images(data_dir, count=128, side=12):
    from aiservice_kit.datasets import load_mnist

    images, labels = load_mnist(data_dir / "mnist", kind="t10k")
    start = (28 - side) // 2
    crop = images[:count, start : start + side, start : start + side]
    return np.ascontiguousarray(crop), labels[:count].astype("int64")


def _small_cnn():
    return build_cnn((12, 12), 10, filters=(4,), dense_units=8)


def _plain_keras_cnn():
    """A user's own compiled Functional model, not one of our classes."""
    inputs = keras.Input((12, 12))
    x = keras.layers.Reshape((12, 12, 1))(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(10)(x))
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def _count_traces(model, step_name):
    """Counts how often Keras traces `model.<step_name>` from now on."""
    traces = []
    step = getattr(model, step_name)

    def counted(data):
        traces.append(step_name)
        return step(data)

    setattr(model, step_name, counted)
    return traces


def _fit_and_count(model, x, y, **fit_kwargs):
    traces = _count_traces(model, "train_step")
    model.fit(x, y, epochs=2, verbose=0, **fit_kwargs)
    return len(traces)


def test_a_builders_model_traces_its_training_step_once(data_dir):
    x, y = _images(data_dir)

    # numpy arrays through the fast pipeline, and through Keras' own
    # (sample_weight makes CheckedModel hand the arrays to Keras).
    assert _fit_and_count(_small_cnn(), x, y, batch_size=32) == 1
    weights = np.ones(len(x), "float32")
    assert (
        _fit_and_count(_small_cnn(), x, y, batch_size=32, sample_weight=weights)
        == 1
    )
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    assert _fit_and_count(_small_cnn(), dataset, None, shuffle=False) == 1


def test_a_text_classifier_traces_its_training_step_once():
    model = build_text_classifier(TEXTS, num_classes=2)
    assert _fit_and_count(model, TEXTS, TEXT_LABELS, early_stopping=False) == 1


def test_evaluate_on_a_fresh_model_traces_its_test_step_once(data_dir):
    x, y = _images(data_dir)
    model = _small_cnn()
    traces = _count_traces(model, "test_step")
    model.evaluate(x, y, verbose=0)
    assert len(traces) == 1

    plain = _plain_keras_cnn()
    traces = _count_traces(plain, "test_step")
    evaluate(plain, x, y)
    assert len(traces) == 1


def test_train_traces_a_plain_keras_models_step_once(data_dir):
    x, y = _images(data_dir)
    model = _plain_keras_cnn()
    traces = _count_traces(model, "train_step")
    train(model, x, y, epochs=2, batch_size=32, seed=0, verbose=0)
    assert len(traces) == 1


@pytest.mark.parametrize("build_fn", [_small_cnn, _plain_keras_cnn])
def test_building_before_tracing_leaves_the_weights_unchanged(
    data_dir, monkeypatch, build_fn
):
    # A seeded train() must end with exactly the weights Keras' own
    # in-trace build gives.
    from aiservice_kit import training
    from aiservice_kit.models import _checks

    x, y = _images(data_dir, count=256)

    def trained_weights():
        keras.utils.set_random_seed(3)
        model, _ = train(
            build_fn,
            x,
            y,
            epochs=2,
            batch_size=64,
            seed=0,
            mixed_precision=False,
            verbose=0,
        )
        assert model.optimizer.built
        return model.get_weights()

    built_first = trained_weights()
    for module in (training, _checks):
        monkeypatch.setattr(module, "build_before_tracing", lambda *_: None)
    built_in_trace = trained_weights()

    assert len(built_first) == len(built_in_trace)
    for first, in_trace in zip(built_first, built_in_trace, strict=True):
        np.testing.assert_array_equal(first, in_trace)


def test_data_it_cannot_read_a_batch_from_is_left_to_keras():
    from aiservice_kit._tracing import build_before_tracing

    model = _plain_keras_cnn()
    # A list and an unbatched dataset: no batch spec, no build, no error.
    build_before_tracing(model, [[0.0] * 12] * 12, [0] * 12)
    unbatched = tf.data.Dataset.from_tensor_slices(
        (np.zeros((4, 12, 12), "float32"), np.zeros(4, "int64"))
    )
    build_before_tracing(model, unbatched)
    assert not model.optimizer.built
    # Keras still reports the unbatched data itself.
    with pytest.raises(ValueError):
        model.fit(unbatched, epochs=1, shuffle=False, verbose=0)
