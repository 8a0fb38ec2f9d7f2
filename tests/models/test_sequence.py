"""Tests for `aiservice_kit.models.sequence.build_lstm`."""

import keras
import numpy as np
import pytest

from aiservice_kit import build_lstm
from aiservice_kit.datasets import load_ts


def _random_sequences(n=8, steps=12, features=3, seed=0):
    return np.random.default_rng(seed).normal(size=(n, steps, features))


def test_classifier_shapes_names_and_one_step_fit():
    x = _random_sequences().astype("float32")
    model = build_lstm((12, 3), num_classes=3, units=4)
    assert model.inputs[0].name == "sequence"
    assert model.layers[-1].name == "probabilities"
    model.fit(x, np.arange(8) % 3, epochs=1, verbose=0)
    probabilities = model.predict(x, verbose=0)
    assert probabilities.shape == (8, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert model.loss.__class__.__name__ == "SparseCategoricalCrossentropy"


def test_classifier_defaults_to_random_conv_features():
    x = _random_sequences(steps=40).astype("float32")
    model = build_lstm((40, 3), num_classes=2, normalization_data=x)
    assert model.get_layer("random_conv").count_params() > 0
    assert not model.get_layer("random_conv").trainable_weights
    configured = build_lstm((40, 3), num_classes=2, units=4)
    assert configured.get_layer("lstm1")
    with pytest.raises(ValueError, match="frontend"):
        build_lstm((40, 3), frontend="random_conv")


def test_random_conv_padding_and_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    raw = [rng.normal(size=(length, 2)) + 3.0 for length in (15, 30, 22)]
    model = build_lstm((None, 2), num_classes=3, normalization_data=raw)
    short = keras.utils.pad_sequences(raw, dtype="float32", padding="post")
    long = keras.utils.pad_sequences(
        raw, maxlen=40, dtype="float32", padding="post"
    )
    model.fit(short, np.arange(3), epochs=1, verbose=0)
    expected = model.predict(short, verbose=0)
    np.testing.assert_allclose(
        model.predict(long, verbose=0), expected, atol=1e-5
    )
    for index, sequence in enumerate(raw):
        alone = model.predict(sequence[None].astype("float32"), verbose=0)
        np.testing.assert_allclose(alone[0], expected[index], atol=1e-5)
    model.save(tmp_path / "rocket.keras")
    loaded = keras.saving.load_model(tmp_path / "rocket.keras")
    np.testing.assert_allclose(
        loaded.predict(long, verbose=0), expected, atol=1e-5
    )


def test_regressor_has_linear_predictions_of_output_size():
    model = build_lstm((None, 2), output_size=3, cell="gru", units=(4, 4))
    assert model.layers[-1].name == "predictions"
    x = _random_sequences(features=2).astype("float32")
    model.fit(x, np.zeros((8, 3)), epochs=1, verbose=0)
    assert model.predict(x, verbose=0).shape == (8, 3)
    assert model.loss == "mse"


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"bidirectional": True, "cell": "gru"},
        {"conv_filters": (4, 4), "units": (4, 4), "pooling": "avg"},
    ],
)
def test_padding_never_changes_a_prediction(options):
    rng = np.random.default_rng(1)
    raw = [rng.normal(size=(length, 2)) + 3.0 for length in (5, 9, 7)]
    model = build_lstm(
        (None, 2),
        num_classes=2,
        normalization_data=raw,
        **{"units": 4, **options},
    )
    short = keras.utils.pad_sequences(raw, dtype="float32", padding="post")
    long = keras.utils.pad_sequences(
        raw, maxlen=20, dtype="float32", padding="post"
    )
    pre = keras.utils.pad_sequences(
        raw, maxlen=16, dtype="float32", padding="pre"
    )
    alone = np.concatenate(
        [model.predict(seq[None].astype("float32"), verbose=0) for seq in raw]
    )
    np.testing.assert_allclose(
        model.predict(short, verbose=0), alone, atol=1e-5
    )
    np.testing.assert_allclose(model.predict(long, verbose=0), alone, atol=1e-5)
    np.testing.assert_allclose(model.predict(pre, verbose=0), alone, atol=1e-5)


def test_normalization_is_adapted_from_training_data():
    x = (_random_sequences(n=30) * 5.0 + 100.0).astype("float32")
    model = build_lstm((12, 3), num_classes=2, normalization_data=x)
    normalized = model.get_layer("normalize")(x).numpy()
    np.testing.assert_allclose(normalized.mean(axis=(0, 1)), 0.0, atol=1e-3)
    np.testing.assert_allclose(normalized.std(axis=(0, 1)), 1.0, atol=1e-3)


def test_keras_round_trip_and_unroll(tmp_path):
    x = _random_sequences().astype("float32")
    model = build_lstm(
        (12, 3), num_classes=2, units=4, conv_filters=(4,), unroll=True
    )
    model.fit(x, np.arange(8) % 2, epochs=1, verbose=0)
    model.save(tmp_path / "seq.keras")
    loaded = keras.saving.load_model(tmp_path / "seq.keras")
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6
    )
    assert model.get_layer("lstm1").unroll


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (((None, None),), {}, ValueError, "features"),
        (((12,),), {}, ValueError, "input_shape"),
        (("12x3",), {}, TypeError, "input_shape"),
        (((12, 3),), {"num_classes": 1}, ValueError, "num_classes"),
        (((12, 3),), {"cell": "rnn"}, ValueError, "cell"),
        (((12, 3),), {"units": 0}, ValueError, "units"),
        (((12, 3),), {"units": "64"}, TypeError, "units"),
        (((12, 3),), {"dropout": 1.5}, ValueError, "dropout"),
        (((12, 3),), {"pooling": "max"}, ValueError, "pooling"),
        (((12, 3),), {"mask_value": "zero"}, TypeError, "mask_value"),
        (((None, 3),), {"unroll": True}, ValueError, "unroll"),
        (((12, 3),), {"optimizer": 1}, TypeError, "optimizer"),
        (((None, 3),), {"conv_pool_size": 2}, ValueError, "conv_pool_size"),
        (
            ((12, 3),),
            {"normalization_data": np.zeros((2, 12, 4))},
            ValueError,
            "features",
        ),
        (((12, 3),), {"normalization_data": "x"}, TypeError, "normalization"),
    ],
)
def test_bad_arguments_raise_clear_errors(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        build_lstm(*args, **kwargs)


def _load_split(data_dir, folder, name):
    x_train, y_train = load_ts(data_dir / folder / f"{name}_TRAIN.ts")
    x_test, y_test = load_ts(data_dir / folder / f"{name}_TEST.ts")
    names, y_train = np.unique(y_train, return_inverse=True)
    return x_train, y_train, x_test, np.searchsorted(names, y_test), names


@pytest.mark.large
def test_gunpoint_test_accuracy(data_dir):
    x_train, y_train, x_test, y_test, names = _load_split(
        data_dir, "gunpoint", "GunPoint"
    )
    model = build_lstm(
        x_train.shape[1:],
        num_classes=len(names),
        units=32,
        conv_filters=(32, 32),
        conv_pool_size=2,
        dropout=0.1,
        normalization_data=x_train,
        optimizer=keras.optimizers.Adam(3e-3),
    )
    model.fit(x_train, y_train, epochs=60, batch_size=8, verbose=0)
    accuracy = model.evaluate(x_test, y_test, verbose=0)[1]
    assert accuracy >= 0.90, f"GunPoint test accuracy {accuracy:.3f}"


@pytest.mark.large
def test_basicmotions_test_accuracy(data_dir):
    x_train, y_train, x_test, y_test, names = _load_split(
        data_dir, "basicmotions", "BasicMotions"
    )
    model = build_lstm(
        x_train.shape[1:],
        num_classes=len(names),
        conv_filters=(32, 32),
        normalization_data=x_train,
    )
    model.fit(x_train, y_train, epochs=60, batch_size=16, verbose=0)
    accuracy = model.evaluate(x_test, y_test, verbose=0)[1]
    assert accuracy >= 0.95, f"BasicMotions test accuracy {accuracy:.3f}"


def _dtw_1nn(x_train, y_train, x_test):
    """1-NN under dependent DTW (full window, squared Euclidean cost)."""
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
    return y_train[np.argmin(previous[:, :, steps], axis=1)]


@pytest.mark.large
@pytest.mark.parametrize(
    ("folder", "stem"),
    [("gunpoint", "GunPoint"), ("italypowerdemand", "ItalyPowerDemand")],
)
def test_defaults_match_1nn_dtw(data_dir, folder, stem):
    x_train, y_train, x_test, y_test, names = _load_split(
        data_dir, folder, stem
    )
    dtw = np.mean(_dtw_1nn(x_train, y_train, x_test) == y_test)
    model = build_lstm(
        x_train.shape[1:], num_classes=len(names), normalization_data=x_train
    )
    model.fit(x_train, y_train, epochs=50, batch_size=16, verbose=0)
    accuracy = model.evaluate(x_test, y_test, verbose=0)[1]
    assert accuracy >= dtw, f"{stem}: defaults {accuracy:.3f} < DTW {dtw:.3f}"
