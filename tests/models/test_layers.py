"""Tests for the custom layers in `aiservice_kit.models.layers`."""

import keras
import numpy as np
import pytest

from aiservice_kit import PositionalEmbedding
from aiservice_kit import TransformerEncoder
from aiservice_kit.models.layers import ClassNames
from aiservice_kit.models.layers import MaskedConv1D


def _tiny_transformer_model():
    tokens = keras.Input((None,), dtype="int32")
    x = PositionalEmbedding(6, vocabulary_size=20, embedding_dim=8)(tokens)
    x = TransformerEncoder(intermediate_dim=16, num_heads=2, dropout=0.1)(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(tokens, keras.layers.Dense(2)(x))


def test_transformer_ignores_padding_and_keeps_shape():
    model = _tiny_transformer_model()
    short = np.array([[3, 4, 5]], dtype="int32")
    padded = np.array([[3, 4, 5, 0, 0, 0]], dtype="int32")
    np.testing.assert_allclose(
        model(padded, training=False), model(short, training=False), atol=1e-5
    )
    encoder = model.layers[2]
    assert isinstance(encoder, TransformerEncoder)
    assert encoder.compute_output_shape((None, 6, 8)) == (None, 6, 8)


def test_layers_round_trip_through_config_and_keras_file(tmp_path):
    model = _tiny_transformer_model()
    ids = np.array([[1, 2, 3, 4, 0, 0], [5, 6, 0, 0, 0, 0]], dtype="int32")
    model.save(tmp_path / "layers.keras")
    loaded = keras.saving.load_model(tmp_path / "layers.keras")
    np.testing.assert_allclose(
        loaded.predict(ids, verbose=0), model.predict(ids, verbose=0), atol=1e-6
    )
    encoder = TransformerEncoder(32, 4, dropout=0.2, activation="gelu")
    clone = TransformerEncoder.from_config(encoder.get_config())
    assert clone.get_config() == encoder.get_config()
    embedding = PositionalEmbedding(10, 50, 4, mask_zero=False, name="pe")
    assert (
        PositionalEmbedding.from_config(embedding.get_config()).mask_zero
        is False
    )
    names = ClassNames(["a", "b"])
    assert ClassNames.from_config(names.get_config()).class_names == ["a", "b"]
    conv = MaskedConv1D(4, 3, activation="relu")
    assert MaskedConv1D.from_config(conv.get_config()).filters == 4


def test_masked_conv_zeroes_padded_steps_and_keeps_the_mask():
    inputs = keras.Input((None, 2))
    masked = keras.layers.Masking()(inputs)
    outputs = MaskedConv1D(3, 3, activation="relu", bias_initializer="ones")(
        masked
    )
    model = keras.Model(inputs, outputs)
    x = np.zeros((1, 5, 2), dtype="float32")
    x[0, :2] = 1.0
    out = model.predict(x, verbose=0)
    assert np.all(out[0, 2:] == 0.0)
    assert np.all(out[0, :2] > 0.0)


@pytest.mark.parametrize(
    ("factory", "error", "match"),
    [
        (lambda: TransformerEncoder(0, 2), ValueError, "intermediate_dim"),
        (lambda: TransformerEncoder(8, 2, dropout=1.0), ValueError, "dropout"),
        (lambda: TransformerEncoder(8, 2, activation=3), TypeError, "activ"),
        (lambda: PositionalEmbedding(0, 10, 4), ValueError, "sequence_length"),
        (lambda: PositionalEmbedding(5, 10, 4, mask_zero=1), TypeError, "mask"),
        (lambda: MaskedConv1D(4, 3, padding="valid"), ValueError, "padding"),
        (lambda: MaskedConv1D(4, 3, strides=2), ValueError, "strides"),
        (lambda: ClassNames("ab"), TypeError, "class_names"),
    ],
)
def test_bad_arguments_raise_clear_errors(factory, error, match):
    with pytest.raises(error, match=match):
        factory()


def test_heads_must_divide_the_width_and_positions_must_suffice():
    with pytest.raises(ValueError, match="divisible"):
        TransformerEncoder(8, num_heads=3)(keras.Input((4, 8)))
    with pytest.raises(ValueError, match="sequence_length"):
        PositionalEmbedding(4, 10, 8)(keras.Input((6,), dtype="int32"))


def test_masked_average_pooling_gives_zeros_not_nan_for_empty_rows():
    from aiservice_kit.models.layers import MaskedGlobalAveragePooling1D

    tokens = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(10, 4, mask_zero=True)(tokens)
    model = keras.Model(tokens, MaskedGlobalAveragePooling1D()(x))
    out = model(np.array([[0, 0, 0], [1, 2, 0]], dtype="int32")).numpy()
    assert np.all(out[0] == 0.0) and np.all(np.isfinite(out))
    np.testing.assert_allclose(
        out[1], model(np.array([[1, 2]], dtype="int32")).numpy()[0], atol=1e-6
    )


def test_random_convolution_features_thresholds_and_config():
    from aiservice_kit.models.layers import RandomConvolutionFeatures
    from aiservice_kit.models.layers import rocket_dilations

    assert rocket_dilations(24) == [1, 2]
    assert rocket_dilations(251)[-1] <= 31
    rng = np.random.default_rng(0)
    series = rng.normal(size=(6, 30, 3)).astype("float32")
    layer = RandomConvolutionFeatures([1, 2], biases_per_kernel=3, seed=5)
    features = layer(keras.Input((30, 3)))
    assert tuple(features.shape) == (None, 2 * 84 * 3)
    layer.adapt(series)
    values = np.asarray(layer(series))
    assert values.shape == (6, 2 * 84 * 3)
    # Thresholds are training quantiles: proportions spread over (0, 1).
    assert 0.2 < values.mean() < 0.8
    assert not layer.trainable_weights
    clone = RandomConvolutionFeatures.from_config(layer.get_config())
    clone.build((None, 30, 3))
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(np.asarray(clone(series)), values)
    with pytest.raises(ValueError, match="dilations"):
        RandomConvolutionFeatures([])
