"""Messy data given to the builders' models: converted, or refused by name.

Each case was a deep Keras/TensorFlow error or a silently wrong result
before (quoted in the test). Lists and pandas Series are converted; bad
values are refused naming the argument, what was received and the fix.
"""

import keras
import numpy as np
import pandas as pd
import pytest

from aiservice_kit import build_cnn
from aiservice_kit import build_lstm
from aiservice_kit import build_text_classifier
from aiservice_kit.models.text import encode_labels
from aiservice_kit.pipelines import arrays_as_fit_dataset

FIT = {"epochs": 1, "batch_size": 4, "verbose": 0}
TEXTS = [
    "free prize call now",
    "see you at 5",
    "win cash now",
    "lunch tomorrow?",
    "claim your prize",
    "ok see you",
]
TEXT_LABELS = np.array([1, 0, 1, 0, 1, 0])


def _images(count=8, channels=1):
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (count, 8, 8, channels)).astype("uint8")


LABELS = np.array([0, 1, 2, 0, 1, 2, 0, 1])


def _cnn(**kwargs):
    return build_cnn(
        (8, 8, 1), num_classes=3, filters=(4,), dense_units=8, **kwargs
    )


def _text_model(**kwargs):
    kwargs.setdefault("num_classes", 2)
    return build_text_classifier(TEXTS, dense_units=4, **kwargs)


# ---------------------------------------------------------------- labels


def test_fractional_float_labels_are_refused_not_truncated():
    # Was: fit(x, y + 0.5) trained on 0.5 -> 0, 1.5 -> 1 without a word.
    with pytest.raises(ValueError) as error:
        _cnn().fit(_images(), LABELS + 0.5, **FIT)
    message = str(error.value)
    assert "`y` must hold whole class indices" in message
    assert "0.5 at index 0" in message
    assert "np.unique(y, return_inverse=True)" in message


def test_whole_number_float_labels_train_as_integers():
    history = _cnn().fit(_images(), LABELS.astype("float64"), **FIT)
    assert np.isfinite(history.history["loss"][0])


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        # Was: InvalidArgumentError from SparseSoftmaxCrossEntropyWithLogits.
        (np.full(8, 5.0), r"class indices in \[0, 3\).*from 5 to 5"),
        (np.full(8, np.nan), r"`y` holds 8 NaN or infinite labels"),
        (pd.Series([5] * 8), r"class indices in \[0, 3\).*from 5 to 5"),
        (np.array([0, 1, 2, 0, 1, 2, 0, -1]), r"from -1 to 2"),
    ],
)
def test_labels_out_of_range_or_nan_are_refused_naming_y(labels, match):
    with pytest.raises(ValueError, match=match):
        _cnn().fit(_images(), labels, **FIT)


@pytest.mark.parametrize(
    "labels",
    [list(LABELS), tuple(LABELS), pd.Series(LABELS), LABELS.astype(object)],
    ids=["list", "tuple", "series", "object-array"],
)
def test_list_and_series_labels_are_converted(labels):
    # Was (list): IndexError: tuple index out of range.
    history = _cnn().fit(_images(), labels, **FIT)
    assert np.isfinite(history.history["loss"][0])


def test_one_hot_labels_of_the_wrong_width_name_the_width():
    # Was: "Argument `output` must have rank (ndim) `target.ndim - 1`".
    with pytest.raises(ValueError) as error:
        _cnn().fit(_images(), np.eye(4)[LABELS], **FIT)
    message = str(error.value)
    assert "one class index per sample" in message
    assert "one-hot rows would need 3 columns" in message
    assert "Received: y of shape (8, 4)" in message
    categorical = _cnn(label_mode="categorical")
    with pytest.raises(ValueError) as error:
        categorical.fit(_images(), np.eye(4)[LABELS], **FIT)
    assert "one-hot rows of 3 columns" in str(error.value)
    assert "Received: y of shape (8, 4)" in str(error.value)


def test_regression_targets_are_converted_and_checked_finite():
    x = np.random.default_rng(0).normal(size=(6, 5, 2)).astype("float32")
    model = build_lstm((5, 2), output_size=1, units=4)
    history = model.fit(x, [0.5, 1.0, 1.5, 2.0, 2.5, 3.0], **FIT)
    assert np.isfinite(history.history["loss"][0])
    with pytest.raises(ValueError, match="`y` holds 1 NaN or infinite"):
        model.fit(x, [0.5, 1.0, np.inf, 2.0, 2.5, 3.0], **FIT)


# ------------------------------------------------ inputs and fit arguments


@pytest.mark.parametrize(
    ("batch_size", "error"),
    [(0, ValueError), (-1, ValueError), (2.5, TypeError), ("4", TypeError)],
)
def test_a_bad_batch_size_is_refused_naming_it(batch_size, error):
    # Was: 0 trained with 32 silently; -1 and 2.5 failed in tf.data ops.
    model = _cnn()
    for call in (
        lambda: model.fit(_images(), LABELS, epochs=1, batch_size=batch_size),
        lambda: model.evaluate(_images(), LABELS, batch_size=batch_size),
        lambda: model.predict(_images(), batch_size=batch_size),
        lambda: _text_model().fit(TEXTS, TEXT_LABELS, batch_size=batch_size),
    ):
        with pytest.raises(error) as raised:
            call()
        assert "`batch_size` must be an integer >= 1" in str(raised.value)
        assert f"Received: batch_size={batch_size!r}" in str(raised.value)


def test_the_fast_fit_path_leaves_a_bad_batch_size_to_keras():
    x, y = np.zeros((4, 2)), np.zeros(4)
    assert arrays_as_fit_dataset(x, y, {"batch_size": 0}) is None
    assert arrays_as_fit_dataset(x, y, {"batch_size": -1}) is None
    assert arrays_as_fit_dataset(x, y, {"batch_size": None}) is not None


def test_no_samples_are_refused():
    # Was: predict -> UnboundLocalError inside Keras; fit -> a warning and
    # an empty history.
    model = _cnn()
    with pytest.raises(ValueError, match=r"`x` holds no samples.*\(0, 8, 8"):
        model.predict(_images()[:0], verbose=0)
    with pytest.raises(ValueError, match="`x` holds no samples"):
        model.fit(_images()[:0], LABELS[:0], **FIT)


def test_inputs_and_labels_of_different_lengths_are_refused():
    # Was: Keras' "Data cardinality is ambiguous".
    with pytest.raises(ValueError) as error:
        _cnn().fit(_images(), LABELS[:5], **FIT)
    assert "`x` and `y` must hold the same number of samples" in str(
        error.value
    )
    assert "x with 8 samples, y with 5" in str(error.value)


def test_object_inputs_to_a_numeric_model_are_refused():
    # Was: ValueError: Invalid dtype: object
    with pytest.raises(TypeError) as error:
        _cnn().fit(_images().astype(object), LABELS, **FIT)
    message = str(error.value)
    assert "`x` must hold numbers for model 'cnn'" in message
    assert "x.astype('float32')" in message
    assert "Received: x of dtype object" in message


def test_missing_x_or_y_is_refused():
    with pytest.raises(TypeError, match="Received: x=None"):
        _cnn().predict(None)
    with pytest.raises(ValueError, match="`y` must be given"):
        _cnn().fit(_images(), None, **FIT)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs_are_refused(bad):
    # Was: NaN probabilities (or confident ones) without a word.
    images = _images().astype("float32")
    images[3, 2, 1, 0] = bad
    model = _cnn()
    for call in (
        lambda: model.predict(images, verbose=0),
        lambda: model.fit(images, LABELS, **FIT),
        lambda: model.evaluate(images, LABELS, verbose=0),
    ):
        with pytest.raises(ValueError) as error:
            call()
        message = str(error.value)
        assert "`x` holds 1 NaN or infinite inputs" in message
        assert "index (3, 2, 1, 0)" in message
    sequences = np.full((2, 5, 2), bad, "float32")
    with pytest.raises(ValueError, match="`x` holds 20 NaN or infinite"):
        build_lstm((5, 2), num_classes=2, units=4).predict(sequences)


# ------------------------------------------------------------ text models


def test_text_predict_refuses_missing_texts_naming_the_index():
    # Was: ValueError: Unrecognized data type: x=['free prize', None]
    with pytest.raises(TypeError) as error:
        _text_model().predict(["free prize", None], verbose=0)
    message = str(error.value)
    assert "`x` must hold strings only; item 1 is a NoneType" in message
    assert "missing text" in message


def test_text_model_takes_pandas_series():
    # Was: ValueError: Invalid dtype: object
    model = _text_model()
    np.testing.assert_allclose(
        model.predict(pd.Series(["free prize", "hi"]), verbose=0),
        model.predict(["free prize", "hi"], verbose=0),
    )
    history = model.fit(pd.Series(TEXTS), pd.Series(TEXT_LABELS), **FIT)
    assert np.isfinite(history.history["loss"][0])


@pytest.mark.parametrize(
    "labels",
    [
        list(TEXT_LABELS),  # was: IndexError: tuple index out of range
        TEXT_LABELS.astype(object),  # was: "`labels` must be integers"
        TEXT_LABELS.astype("float32"),
    ],
    ids=["int-list", "int-object-array", "whole-floats"],
)
def test_text_model_takes_integer_labels_in_any_container(labels):
    history = _text_model().fit(TEXTS, labels, **FIT)
    assert np.isfinite(history.history["loss"][0])


def test_text_model_takes_string_labels_as_a_series():
    # Was: ValueError: Invalid dtype: object
    model = _text_model(num_classes=None, class_names=["ham", "spam"])
    history = model.fit(TEXTS, pd.Series(["spam", "ham"] * 3), **FIT)
    assert np.isfinite(history.history["loss"][0])


@pytest.mark.parametrize(
    ("labels", "error", "match"),
    [
        # Was: ValueError: Unrecognized data type: x=[...]
        (["spam", "ham", None] * 2, ValueError, r"missing label \(None\) at "),
        (["spam", "ham", np.nan] * 2, ValueError, r"missing label \(nan\)"),
        (["spam", 1, "ham"] * 2, TypeError, "mixes class names"),
        (["spam", "eggs"] * 3, ValueError, "not among the model's classes"),
    ],
)
def test_text_model_refuses_bad_string_labels_naming_y(labels, error, match):
    model = _text_model(num_classes=None, class_names=["ham", "spam"])
    with pytest.raises(error, match=match) as raised:
        model.fit(TEXTS, labels, **FIT)
    assert "`y`" in str(raised.value)


@pytest.mark.parametrize(
    ("texts", "error", "match"),
    [
        # Was: KeyError: 'pop from an empty set'
        ([], ValueError, "`x` holds no texts"),
        (np.array([], dtype=str), ValueError, "`x` holds no texts"),
        # Was: UnimplementedError: ... Cast string to float
        (np.array([1.0, 2.0]), TypeError, "`x` must hold strings only"),
        ([1, 2], TypeError, "raw texts"),
        (None, TypeError, "Received: x=None"),
    ],
)
def test_text_predict_refuses_empty_and_numeric_input(texts, error, match):
    with pytest.raises(error, match=match):
        _text_model().predict(texts, verbose=0)


def test_text_validation_data_is_checked_too():
    with pytest.raises(TypeError, match="item 1 is a NoneType"):
        _text_model().fit(
            TEXTS,
            TEXT_LABELS,
            validation_data=(["ok", None], [0, 1]),
            **FIT,
        )


def test_encode_labels_takes_what_fit_takes():
    model = _text_model(num_classes=None, class_names=["ham", "spam"])
    np.testing.assert_array_equal(
        encode_labels(model, pd.Series(["spam", "ham"])), [1, 0]
    )
    np.testing.assert_array_equal(
        encode_labels(model, np.array([1, 0], dtype=object)), [1, 0]
    )
    np.testing.assert_array_equal(encode_labels(model, [1.0, 0.0]), [1, 0])
    with pytest.raises(ValueError, match=r"`labels` has a missing label"):
        encode_labels(model, ["spam", None])
    with pytest.raises(ValueError, match="`labels` must hold whole class"):
        encode_labels(model, [0.5])


def test_one_hot_labels_still_train_a_categorical_model():
    model = _cnn(label_mode="categorical")
    history = model.fit(_images(), keras.utils.to_categorical(LABELS, 3), **FIT)
    assert np.isfinite(history.history["loss"][0])
