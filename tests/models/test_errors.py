"""Data that does not fit a model: errors that name the fix.

Each case was a Keras error from deep inside the graph before (quoted in
the test); each must now name the argument, what was received and the fix.
"""

import keras
import numpy as np
import pytest

from aiservice_kit import build_cnn
from aiservice_kit import build_lstm
from aiservice_kit import build_text_classifier
from aiservice_kit.datasets import load_ts
from aiservice_kit.models import get_class_names
from aiservice_kit.models._checks import CheckedModel

TEXTS = ["很好用", "太差了", "不错", "垃圾"] * 4


def _images(shape=(4, 28, 28)):
    return np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)


def test_a_single_string_is_a_batch_of_one_for_the_text_model():
    # Was: ValueError: Unrecognized data type: x=很好用 (of type <class 'str'>)
    model = build_text_classifier(TEXTS, class_names=["good", "bad"])
    one = model.predict("很好用", verbose=0)
    assert one.shape == (1, 2)
    np.testing.assert_allclose(one, model.predict(["很好用"], verbose=0))


def test_one_hot_labels_for_an_int_text_model_name_argmax():
    # Was: "Argument `output` must have rank (ndim) `target.ndim - 1`".
    model = build_text_classifier(TEXTS, 2)
    one_hot = keras.utils.to_categorical(np.arange(16) % 2, 2)
    with pytest.raises(ValueError) as error:
        model.fit(TEXTS, one_hot, epochs=1, verbose=0)
    message = str(error.value)
    assert "`y` looks one-hot (shape (16, 2))" in message
    assert "y.argmax(axis=-1)" in message
    assert "label_mode='categorical'" in message


def test_lstm_given_the_wrong_number_of_features_names_both():
    # Was: "Matrix size-incompatible" (fit) or "incompatible with the
    # layer" (predict).
    model = build_lstm((10, 3), num_classes=2, units=4)
    x = np.zeros((4, 10, 5), "float32")
    for call in (
        lambda: model.fit(x, np.array([0, 1, 0, 1]), epochs=1, verbose=0),
        lambda: model.predict(x, verbose=0),
        lambda: model.evaluate(x, np.array([0, 1, 0, 1]), verbose=0),
    ):
        with pytest.raises(ValueError) as error:
            call()
        message = str(error.value)
        assert "`x` must have shape (batch, 10, 3)" in message
        assert "holds 5 features" in message and "built for 3" in message
        assert "input_shape=x.shape[1:], here (10, 5)" in message
        assert "Received: x of shape (4, 10, 5)" in message


def test_lstm_string_labels_without_class_names_say_how():
    # Was: ValueError: Invalid dtype: str32
    model = build_lstm((10, 3), num_classes=2)
    with pytest.raises(TypeError) as error:
        model.fit(
            np.zeros((4, 10, 3), "float32"),
            np.array(["run", "walk", "run", "walk"]),
            epochs=1,
            verbose=0,
        )
    message = str(error.value)
    assert "`y` holds string labels (such as ['run', 'walk', 'run'])" in message
    assert "class_names=[...]" in message
    assert "np.unique(y, return_inverse=True)" in message


def test_lstm_trains_on_string_labels_with_class_names(data_dir, tmp_path):
    x, y = load_ts(data_dir / "basicmotions" / "BasicMotions_TRAIN.ts")
    names = sorted(set(y.tolist()))
    model = build_lstm(x.shape[1:], class_names=names, normalization_data=x)
    assert isinstance(model, CheckedModel)
    assert model.output_shape == (None, len(names))
    history = model.fit(
        x, y, validation_data=(x[:8], list(y[:8])), epochs=2, verbose=0
    )
    assert len(history.history["val_loss"]) == 2
    expected = model.predict(x[:4], verbose=0)
    model.save(tmp_path / "motions.keras")
    loaded = keras.saving.load_model(tmp_path / "motions.keras")
    assert type(loaded) is CheckedModel
    assert get_class_names(loaded) == names
    np.testing.assert_allclose(loaded.predict(x[:4], verbose=0), expected)
    loss, accuracy = loaded.evaluate(x, y, verbose=0)
    assert accuracy > 0.5  # 4 classes, trained on these very sequences
    with pytest.raises(ValueError, match="not among the model's classes"):
        loaded.evaluate(x[:2], np.array(["flying", "running"]), verbose=0)
    recurrent = build_lstm(x.shape[1:], class_names=names, units=4)
    assert get_class_names(recurrent) == names
    recurrent.fit(x[:8], list(y[:8]), epochs=1, verbose=0)


def test_cnn_given_rgb_images_when_built_for_grayscale():
    # Was: "Exception encountered when calling Functional.call(). Invalid
    # input shape for input Tensor("cnn_1/Cast:0", ...)".
    model = build_cnn((28, 28), num_classes=10, filters=(4,))
    with pytest.raises(ValueError) as error:
        model.predict(_images((2, 28, 28, 3)), verbose=0)
    message = str(error.value)
    assert "`x` must have shape (batch, 28, 28) for model 'cnn'" in message
    assert "input_shape=x.shape[1:], here (28, 28, 3)" in message
    assert "Received: x of shape (2, 28, 28, 3)" in message


def test_cnn_given_the_wrong_channel_count():
    model = build_cnn((28, 28, 3), num_classes=10, filters=(4,))
    with pytest.raises(ValueError) as error:
        model.fit(_images((4, 28, 28, 1)), np.arange(4), verbose=0)
    message = str(error.value)
    assert "holds 1 features (or channels), the model was built for 3" in (
        message
    )


def test_a_single_image_where_a_batch_is_expected():
    model = build_cnn((28, 28), num_classes=10, filters=(4,))
    with pytest.raises(ValueError) as error:
        model.predict(_images((28, 28)), verbose=0)
    message = str(error.value)
    assert "`x` is one sample of shape (28, 28)" in message
    assert "batch of shape (batch, 28, 28)" in message
    assert "x[None]" in message
    assert model.predict(_images((28, 28))[None], verbose=0).shape == (1, 10)


def test_cnn_label_formats_that_do_not_match_the_loss():
    x = _images()
    model = build_cnn((28, 28), num_classes=10, filters=(4,))
    with pytest.raises(ValueError) as error:
        model.fit(x, keras.utils.to_categorical(np.arange(4), 10), verbose=0)
    assert "`y` looks one-hot (shape (4, 10))" in str(error.value)
    assert "y.argmax(axis=-1)" in str(error.value)
    with pytest.raises(ValueError) as error:
        model.fit(x, np.array([0, 1, 2, 10]), verbose=0)
    assert "class indices in [0, 10)" in str(error.value)
    assert "Received: y with values from 0 to 10" in str(error.value)
    categorical = build_cnn(
        (28, 28), num_classes=10, filters=(4,), label_mode="categorical"
    )
    with pytest.raises(ValueError) as error:
        categorical.fit(x, np.arange(4), verbose=0)
    message = str(error.value)
    assert "`y` holds class indices (shape (4,))" in message
    assert "keras.utils.to_categorical(y, 10)" in message
    assert "label_mode='int'" in message
    history = categorical.fit(
        x, keras.utils.to_categorical(np.arange(4), 10), verbose=0
    )
    assert len(history.history["loss"]) == 1


def test_validation_data_is_checked_too():
    model = build_cnn((28, 28), num_classes=10, filters=(4,))
    with pytest.raises(ValueError, match="Received: x of shape"):
        model.fit(
            _images(),
            np.arange(4),
            validation_data=(_images((2, 28, 28, 3)), np.arange(2)),
            verbose=0,
        )
