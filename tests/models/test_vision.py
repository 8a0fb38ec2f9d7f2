"""build_cnn: shapes, training, round trips, accuracy on real data, errors."""

import keras
import numpy as np
import pytest

from aiservice_kit import build_cnn
from aiservice_kit.datasets import load_digits_images


def random_images(count, shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(count, *shape), dtype=np.uint8)


@pytest.mark.parametrize(
    "input_shape, num_classes",
    [((8, 8, 1), 10), ((28, 28), 2), ((32, 48, 3), 5), ((96, 96, 3), 3)],
)
def test_output_is_a_probability_per_class(input_shape, num_classes):
    model = build_cnn(input_shape, num_classes)

    probabilities = model.predict(random_images(3, input_shape), verbose=0)

    assert probabilities.shape == (3, num_classes)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert model.input.name == "image" or model.inputs[0].name == "image"
    assert model.output_names == ["probabilities"]


def test_large_photos_stay_small_models():
    # pooling="auto" averages large feature maps instead of flattening them.
    model = build_cnn((224, 224, 3), 10)

    assert model.count_params() < 200_000
    assert model.get_layer("avg_pool") is not None


def test_one_training_step_lowers_the_loss_on_uint8_pixels():
    images = random_images(32, (12, 12, 1))
    labels = (images.mean(axis=(1, 2, 3)) > 127).astype("int64")
    model = build_cnn((12, 12, 1), 2)

    first = model.evaluate(images, labels, verbose=0)[0]
    model.fit(images, labels, epochs=5, batch_size=32, verbose=0)
    after = model.evaluate(images, labels, verbose=0)[0]

    assert after < first


def test_one_hot_labels_with_label_mode_categorical():
    images = random_images(16, (8, 8, 1))
    labels = keras.utils.to_categorical(np.arange(16) % 4, 4)
    model = build_cnn((8, 8, 1), 4, label_mode="categorical")

    history = model.fit(images, labels, epochs=1, verbose=0)

    assert np.isfinite(history.history["loss"][0])


def test_compile_false_and_custom_optimizer():
    assert not build_cnn((8, 8, 1), 3, compile=False).compiled
    sgd = keras.optimizers.SGD(0.01)
    assert build_cnn((8, 8, 1), 3, optimizer=sgd).optimizer is sgd


def test_feature_extractor_without_top():
    features = build_cnn((28, 28, 1), include_top=False, pooling="avg")
    feature_map = build_cnn((28, 28, 1), include_top=False, pooling=None)

    assert features.output.shape == (None, 96)
    # 28 -conv-> 26 -pool-> 13 -conv-> 11 -pool-> 5 -conv-> 3 (valid
    # padding; no pooling below 4 pixels).
    assert feature_map.output.shape == (None, 3, 3, 96)
    assert not features.compiled


def test_padding_auto_is_valid_where_the_images_allow_it():
    # The textbook's valid padding on MNIST-sized images (less arithmetic
    # per image); small images keep their map with same padding.
    mnist = build_cnn((28, 28), 10)
    digits = build_cnn((8, 8), 10)
    same = build_cnn((28, 28), 10, padding="same")

    assert mnist.get_layer("block1_conv1").padding == "valid"
    assert digits.get_layer("block1_conv1").padding == "same"
    assert same.get_layer("block2_pool").output.shape == (None, 7, 7, 32)
    assert mnist.get_layer("block1_conv1").output.shape == (None, 26, 26, 8)
    assert same.get_layer("block1_conv1").output.shape == (None, 28, 28, 8)
    with pytest.raises(ValueError, match="padding"):
        build_cnn((28, 28), 10, padding="full")
    with pytest.raises(ValueError, match="shrinks the 5x5 images"):
        build_cnn((5, 5), 10, filters=(8, 8, 8), padding="valid")


def test_block_fn_replaces_the_convolution_block():
    calls = []

    def block(x, filters, index):
        calls.append((filters, index))
        return keras.layers.Conv2D(filters, 3, strides=2, activation="relu")(x)

    model = build_cnn((32, 32, 3), 4, filters=(8, 16), block_fn=block)

    assert calls == [(8, 0), (16, 1)]
    assert model.output.shape == (None, 4)


def test_augmentation_acts_only_in_training():
    model = build_cnn((16, 16, 1), 3, augmentation="photo")
    images = random_images(4, (16, 16, 1))

    first = model.predict(images, verbose=0)
    second = model.predict(images, verbose=0)
    eager = model(images.astype("float32"), training=False)

    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(first, eager, atol=1e-6)
    assert model.get_layer("augment_flip") is not None


def test_keras_round_trip_gives_identical_predictions(tmp_path):
    model = build_cnn((8, 8, 1), 10, augmentation="basic", batch_norm=True)
    images = random_images(8, (8, 8, 1))
    model.fit(images, np.arange(8), epochs=1, verbose=0)
    path = tmp_path / "cnn.keras"

    model.save(path)
    reloaded = keras.models.load_model(path)

    np.testing.assert_array_equal(
        model.predict(images, verbose=0), reloaded.predict(images, verbose=0)
    )


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"num_classes": 1}, ValueError, "num_classes=1"),
        ({"num_classes": 0}, ValueError, "num_classes=0"),
        ({"num_classes": 2.5}, TypeError, "num_classes=2.5"),
        ({"num_classes": "10"}, TypeError, "num_classes='10'"),
        ({"num_classes": True}, TypeError, "num_classes=True"),
        ({"num_classes": None}, TypeError, "num_classes=None"),
        ({"input_shape": (2, 2, 1)}, ValueError, "too small"),
        ({"input_shape": (28,)}, ValueError, "input_shape=(28,)"),
        ({"input_shape": (1, 28, 28, 1)}, ValueError, "2 or 3"),
        ({"input_shape": (28, -1)}, ValueError, "input_shape=(28, -1)"),
        ({"input_shape": "28x28"}, TypeError, "input_shape='28x28'"),
        ({"pooling": "mean"}, ValueError, "pooling='mean'"),
        ({"label_mode": "onehot"}, ValueError, "label_mode='onehot'"),
        ({"dropout": 1.0}, ValueError, "dropout=1.0"),
        ({"dropout": -0.1}, ValueError, "dropout=-0.1"),
        ({"filters": ()}, ValueError, "filters=()"),
        ({"filters": (32, 0)}, ValueError, "filters=(32, 0)"),
        ({"filters": 32}, TypeError, "filters=32"),
        ({"convs_per_block": 0}, ValueError, "convs_per_block=0"),
        ({"dense_units": 0}, ValueError, "dense_units=0"),
        ({"augmentation": "heavy"}, ValueError, "augmentation='heavy'"),
        ({"augmentation": [1, 2]}, TypeError, "augmentation=[1, 2]"),
        ({"optimizer": 0.01}, TypeError, "optimizer=0.01"),
        ({"rescale": "255"}, TypeError, "rescale='255'"),
        ({"block_fn": "conv"}, TypeError, "block_fn='conv'"),
        ({"include_top": "no"}, TypeError, "include_top='no'"),
    ],
)
def test_bad_arguments_name_the_argument_and_the_value(kwargs, error, words):
    arguments = {"input_shape": (28, 28, 1), "num_classes": 10, **kwargs}

    with pytest.raises(error) as raised:
        build_cnn(**arguments)

    assert words in str(raised.value)
    name = next(iter(kwargs))
    assert f"`{name}`" in str(raised.value)


def test_unknown_option_is_refused():
    with pytest.raises(TypeError, match="depth"):
        build_cnn((28, 28, 1), 10, depth=3)


@pytest.mark.large
def test_mnist_accuracy_with_the_defaults(trained_mnist_cnn, mnist_split):
    _, _, x_test, y_test = mnist_split

    _, accuracy = trained_mnist_cnn.evaluate(x_test, y_test, verbose=0)

    assert accuracy >= 0.98


@pytest.mark.large
def test_digits_accuracy_with_the_defaults():
    (x_train, y_train), (x_test, y_test) = load_digits_images(seed=0)
    model = build_cnn(x_train.shape[1:], num_classes=10)

    model.fit(x_train, y_train, epochs=30, batch_size=32, verbose=0)
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)

    assert accuracy >= 0.97
