"""Custom Keras layers used by the builders, usable in any Keras model.

Every layer here is registered as serializable under the `aiservice_kit`
package, stores each `__init__` argument and chains `get_config()` to
`super()`, so a `.keras` file that uses them reloads without
`custom_objects` (importing `aiservice_kit` registers them).
"""

import itertools
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from aiservice_kit._validation import check_choice
from aiservice_kit._validation import check_fraction
from aiservice_kit._validation import check_positive_int

_PACKAGE = "aiservice_kit"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PositionalEmbedding(keras.layers.Layer):
    """Token embedding plus a learned position embedding.

    Maps integer token ids of shape (batch, length) to vectors of shape
    (batch, length, embedding_dim): the embedding of each token plus the
    embedding of its position. With `mask_zero=True`, id 0 is padding and
    the layer emits a padding mask that downstream layers
    (`TransformerEncoder`, `GlobalAveragePooling1D`, RNNs) respect.

    Args:
        sequence_length: int. The longest sequence the layer accepts
            (number of learned positions).
        vocabulary_size: int. Number of token ids (ids are in
            `[0, vocabulary_size)`).
        embedding_dim: int. Size of each vector.
        mask_zero: bool. Whether token id 0 is padding.
        **kwargs: Standard `keras.layers.Layer` arguments (`name`, ...).

    Example:
    ```python
    import keras
    from aiservice_kit.models.layers import PositionalEmbedding
    from aiservice_kit.models.layers import TransformerEncoder
    tokens = keras.Input((64,), dtype="int32")
    x = PositionalEmbedding(64, vocabulary_size=20000, embedding_dim=64)(tokens)
    x = TransformerEncoder(intermediate_dim=128, num_heads=4)(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    ```
    """

    def __init__(
        self,
        sequence_length: int,
        vocabulary_size: int,
        embedding_dim: int,
        mask_zero: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.sequence_length = check_positive_int(
            "sequence_length", sequence_length
        )
        self.vocabulary_size = check_positive_int(
            "vocabulary_size", vocabulary_size
        )
        self.embedding_dim = check_positive_int("embedding_dim", embedding_dim)
        if not isinstance(mask_zero, bool):
            raise TypeError(
                "`mask_zero` must be True or False. "
                f"Received: mask_zero={mask_zero!r}"
            )
        self.mask_zero = mask_zero
        self.supports_masking = mask_zero
        self.token_embedding = keras.layers.Embedding(
            vocabulary_size,
            embedding_dim,
            dtype=self.dtype_policy,
            name="token_embedding",
        )
        self.position_embedding = keras.layers.Embedding(
            sequence_length,
            embedding_dim,
            dtype=self.dtype_policy,
            name="position_embedding",
        )

    def build(self, input_shape: Sequence[int | None]) -> None:
        length = input_shape[-1]
        if length is not None and length > self.sequence_length:
            raise ValueError(
                f"PositionalEmbedding has {self.sequence_length} positions "
                f"but received sequences of length {length}. Increase "
                f"`sequence_length`. Received: input_shape={input_shape}"
            )
        self.token_embedding.build(input_shape)
        self.position_embedding.build((self.sequence_length,))
        self.built = True

    def call(self, inputs: Any) -> Any:
        length = ops.shape(inputs)[-1]
        positions = ops.arange(0, length, dtype="int32")
        embedded = self.token_embedding(inputs)
        return embedded + ops.expand_dims(self.position_embedding(positions), 0)

    def compute_mask(self, inputs: Any, mask: Any = None) -> Any:
        if not self.mask_zero:
            return None
        return ops.not_equal(inputs, 0)

    def compute_output_shape(
        self, input_shape: Sequence[int | None]
    ) -> tuple[int | None, ...]:
        return (*input_shape, self.embedding_dim)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "sequence_length": self.sequence_length,
                "vocabulary_size": self.vocabulary_size,
                "embedding_dim": self.embedding_dim,
                "mask_zero": self.mask_zero,
            }
        )
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class TransformerEncoder(keras.layers.Layer):
    """One Transformer encoder block (post-layer-norm, as in Vaswani 2017).

    Multi-head self-attention, then a position-wise feed-forward network;
    each sub-block has dropout, a residual connection and layer
    normalization. A padding mask attached to the input (for example by
    `PositionalEmbedding` or `Embedding(mask_zero=True)`) keeps padded
    steps out of the attention, and is passed on to the next layer. The
    output has the input's shape.

    Args:
        intermediate_dim: int. Width of the feed-forward network.
        num_heads: int. Number of attention heads; must divide the
            input's last dimension.
        dropout: float. Dropout rate in [0, 1) for the attention weights
            and after each sub-block.
        activation: str. Activation of the feed-forward network.
        layer_norm_epsilon: float. Epsilon of the layer normalizations.
        **kwargs: Standard `keras.layers.Layer` arguments (`name`, ...).

    Example:
    ```python
    import keras
    from aiservice_kit.models.layers import TransformerEncoder
    inputs = keras.Input((None, 32))
    x = keras.layers.Masking()(inputs)
    x = TransformerEncoder(intermediate_dim=64, num_heads=2)(x)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling1D()(x))
    ```
    """

    def __init__(
        self,
        intermediate_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        activation: str = "relu",
        layer_norm_epsilon: float = 1e-5,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.intermediate_dim = check_positive_int(
            "intermediate_dim", intermediate_dim
        )
        self.num_heads = check_positive_int("num_heads", num_heads)
        self.dropout = check_fraction("dropout", dropout)
        if not isinstance(activation, str):
            raise TypeError(
                "`activation` must be the name of a Keras activation. "
                f"Received: activation={activation!r}"
            )
        keras.activations.get(activation)  # fails early on unknown names
        self.activation = activation
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.supports_masking = True

    def build(self, input_shape: Sequence[int | None]) -> None:
        hidden_dim = input_shape[-1]
        if hidden_dim is None or hidden_dim % self.num_heads:
            raise ValueError(
                "TransformerEncoder needs a last input dimension divisible "
                f"by `num_heads` ({self.num_heads}). "
                f"Received: input_shape={input_shape}"
            )
        self.attention = keras.layers.MultiHeadAttention(
            num_heads=self.num_heads,
            key_dim=hidden_dim // self.num_heads,
            dropout=self.dropout,
            dtype=self.dtype_policy,
            name="self_attention",
        )
        self.attention.build(input_shape, input_shape)
        self.attention_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon,
            dtype=self.dtype_policy,
            name="attention_norm",
        )
        self.attention_norm.build(input_shape)
        self.intermediate = keras.layers.Dense(
            self.intermediate_dim,
            activation=self.activation,
            dtype=self.dtype_policy,
            name="intermediate",
        )
        self.intermediate.build(input_shape)
        self.output_dense = keras.layers.Dense(
            hidden_dim, dtype=self.dtype_policy, name="output_dense"
        )
        self.output_dense.build((*input_shape[:-1], self.intermediate_dim))
        self.output_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon,
            dtype=self.dtype_policy,
            name="output_norm",
        )
        self.output_norm.build(input_shape)
        self.dropout_layer = keras.layers.Dropout(
            self.dropout, dtype=self.dtype_policy
        )
        self.built = True

    def call(self, inputs: Any, mask: Any = None, training: Any = None) -> Any:
        attention_mask = None
        if mask is not None:
            mask = ops.cast(mask, "bool")
            attention_mask = ops.logical_and(
                ops.expand_dims(mask, 1), ops.expand_dims(mask, 2)
            )
        attended = self.attention(
            inputs,
            inputs,
            attention_mask=attention_mask,
            training=training,
        )
        attended = self.dropout_layer(attended, training=training)
        x = self.attention_norm(inputs + attended)
        feed_forward = self.output_dense(self.intermediate(x))
        feed_forward = self.dropout_layer(feed_forward, training=training)
        return self.output_norm(x + feed_forward)

    def compute_mask(self, inputs: Any, mask: Any = None) -> Any:
        return mask

    def compute_output_shape(
        self, input_shape: Sequence[int | None]
    ) -> Sequence[int | None]:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "intermediate_dim": self.intermediate_dim,
                "num_heads": self.num_heads,
                "dropout": self.dropout,
                "activation": self.activation,
                "layer_norm_epsilon": self.layer_norm_epsilon,
            }
        )
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MaskedConv1D(keras.layers.Conv1D):
    """A `Conv1D` that respects and keeps a padding mask.

    Padded steps are set to zero before the convolution (so they look like
    the zeros a `"same"` convolution adds at a sequence's ends) and after
    it, and the mask is passed on. A sequence therefore gives the same
    outputs at its real steps however much padding follows or precedes it.
    Only `padding="same"` with stride 1 keeps steps aligned with the mask.

    Args:
        filters: int. Number of output channels.
        kernel_size: int. Width of the convolution window.
        **kwargs: Other `keras.layers.Conv1D` arguments (`activation`,
            `name`, ...). `padding` must be `"same"` and `strides` 1.

    Example:
    ```python
    import keras
    from aiservice_kit.models.layers import MaskedConv1D
    inputs = keras.Input((None, 3))
    x = keras.layers.Masking()(inputs)
    x = MaskedConv1D(16, 5, activation="relu")(x)
    x = keras.layers.LSTM(8)(x)
    ```
    """

    def __init__(self, filters: int, kernel_size: int, **kwargs: Any) -> None:
        kwargs.setdefault("padding", "same")
        if kwargs["padding"] != "same":
            raise ValueError(
                "`padding` must be 'same' for MaskedConv1D. "
                f"Received: padding={kwargs['padding']!r}"
            )
        strides = kwargs.get("strides", 1)
        if strides not in (1, (1,), [1]):
            raise ValueError(
                "`strides` must be 1 for MaskedConv1D. "
                f"Received: strides={strides!r}"
            )
        super().__init__(filters, kernel_size, **kwargs)
        self.supports_masking = True

    def call(self, inputs: Any, mask: Any = None) -> Any:
        if mask is None:
            return super().call(inputs)
        keep = ops.expand_dims(ops.cast(mask, inputs.dtype), -1)
        outputs = super().call(inputs * keep)
        return outputs * ops.cast(keep, outputs.dtype)

    def compute_mask(self, inputs: Any, mask: Any = None) -> Any:
        return mask


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MaskedGlobalAveragePooling1D(keras.layers.GlobalAveragePooling1D):
    """Mean over the unmasked steps; zeros when every step is masked.

    Keras' `GlobalAveragePooling1D` divides by the number of unmasked
    steps, which gives NaN for a sequence with none (a text that is empty
    after standardization, such as ":)"); one NaN then poisons every
    weight during training. This layer returns zeros for such rows.

    Args:
        **kwargs: `keras.layers.GlobalAveragePooling1D` arguments
            (`name`, ...). Channels-last only.

    Example:
    ```python
    import keras
    from aiservice_kit.models.layers import MaskedGlobalAveragePooling1D
    tokens = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(100, 8, mask_zero=True)(tokens)
    x = MaskedGlobalAveragePooling1D()(x)
    ```
    """

    def call(self, inputs: Any, mask: Any = None) -> Any:
        if mask is None or self.data_format != "channels_last":
            return super().call(inputs, mask=mask)
        weights = ops.expand_dims(ops.cast(mask, inputs.dtype), -1)
        total = ops.sum(inputs * weights, axis=1, keepdims=self.keepdims)
        count = ops.sum(weights, axis=1, keepdims=self.keepdims)
        return total / ops.maximum(count, 1.0)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ClassNames(keras.layers.Layer):
    """An identity layer that stores a classifier's class names.

    It travels with the model in `.keras` files and configs, so a saved
    model still knows which label each output column stands for. Read the
    names back with `aiservice_kit.models.text.get_class_names(model)`.

    Args:
        class_names: list of str or None. Label of each output column, in
            order; None when the labels are the integers themselves.
        **kwargs: Standard `keras.layers.Layer` arguments (`name`, ...).

    Example:
    ```python
    import keras
    from aiservice_kit.models.layers import ClassNames
    inputs = keras.Input((4,))
    x = ClassNames(["ham", "spam"], name="class_names")(inputs)
    ```
    """

    def __init__(
        self, class_names: Sequence[str] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if class_names is not None:
            if isinstance(class_names, str) or not all(
                isinstance(label, str) for label in class_names
            ):
                raise TypeError(
                    "`class_names` must be a list of str or None. "
                    f"Received: class_names={class_names!r}"
                )
            class_names = list(class_names)
        self.class_names = class_names
        self.supports_masking = True

    def call(self, inputs: Any) -> Any:
        return inputs

    def compute_output_shape(
        self, input_shape: Sequence[int | None]
    ) -> Sequence[int | None]:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["class_names"] = self.class_names
        return config


#: Accepted recurrent cells.
RNN_CELLS = ("lstm", "gru")


def recurrent_layer(
    cell: str,
    units: int,
    *,
    return_sequences: bool = False,
    bidirectional: bool = False,
    dropout: float = 0.0,
    unroll: bool = False,
    name: str = "rnn",
) -> keras.layers.Layer:
    """Returns an LSTM or GRU layer, optionally bidirectional.

    Args:
        cell: str. `"lstm"` or `"gru"`.
        units: int. Units of the cell (per direction).
        return_sequences: bool. Whether to return every step.
        bidirectional: bool. Whether to run both directions and concatenate.
        dropout: float. Dropout on the cell's inputs, in [0, 1).
        unroll: bool. Unroll the loop (fixed lengths only; converts to
            builtin TFLite ops).
        name: str. The layer's name.

    Returns:
        A Keras layer.

    Example:
    ```python
    from aiservice_kit.models.layers import recurrent_layer
    layer = recurrent_layer("gru", 32, bidirectional=True)
    ```
    """
    check_choice("cell", cell, RNN_CELLS)
    layer_class = keras.layers.LSTM if cell == "lstm" else keras.layers.GRU
    layer = layer_class(
        units,
        return_sequences=return_sequences,
        dropout=dropout,
        unroll=unroll,
        name=name if not bidirectional else f"{name}_cell",
    )
    if bidirectional:
        return keras.layers.Bidirectional(layer, name=name)
    return layer


#: Kernel length of `RandomConvolutionFeatures` (MiniRocket's).
_ROCKET_LENGTH = 9
#: Golden ratio: its multiples' fractional parts spread quantiles evenly.
_PHI = (1 + 5**0.5) / 2


def _rocket_kernels() -> np.ndarray:
    """MiniRocket's 84 kernels: weight -1 everywhere, 2 at 3 of 9 places."""
    kernels = []
    for places in itertools.combinations(range(_ROCKET_LENGTH), 3):
        kernel = -np.ones(_ROCKET_LENGTH, dtype=np.float32)
        kernel[list(places)] = 2.0
        kernels.append(kernel)
    return np.stack(kernels, axis=-1)  # (9, 84)


def rocket_dilations(timesteps: int | None, *, max_count: int = 8) -> list:
    """Exponentially spaced dilations whose kernels span up to `timesteps`.

    Args:
        timesteps: int or None. The (longest) sequence length; None uses
            256.
        max_count: int. Most dilations returned.

    Returns:
        A list of distinct ints, starting at 1.
    """
    span = (timesteps or 256) - 1
    largest = max(1.0, span / (_ROCKET_LENGTH - 1))
    count = min(max_count, int(np.floor(np.log2(largest))) + 1)
    values = np.floor(np.logspace(0, np.log2(largest), count, base=2))
    return sorted({int(value) for value in values})


@keras.saving.register_keras_serializable(package=_PACKAGE)
class RandomConvolutionFeatures(keras.layers.Layer):
    """MiniRocket-style features of a (batch, timesteps, channels) series.

    Fixed convolutions (MiniRocket's 84 kernels of length 9, weights -1
    and 2, each at several dilations, each summing a random subset of the
    channels) followed by the proportion of positive values (PPV) of each
    convolution output minus each of `biases_per_kernel` thresholds. Nothing
    here is trained: the thresholds are quantiles of the convolution
    outputs on training data, set by `adapt`. A linear classifier on these
    features is a strong time-series classifier (Dempster et al., 2021).

    Masked (padded) steps are zeroed before the convolutions, like the
    zeros a `"same"` convolution adds at the ends, and left out of the
    proportions, so padding never changes the features.

    Args:
        dilations: list of int. Dilation of each convolution; see
            `rocket_dilations`.
        biases_per_kernel: int. Thresholds per kernel and dilation.
        seed: int. Seed of the channel subsets (multivariate input).
        **kwargs: Standard `keras.layers.Layer` arguments (`name`, ...).

    Example:
    ```python
    import keras
    from aiservice_kit.models.layers import RandomConvolutionFeatures
    layer = RandomConvolutionFeatures(dilations=[1, 2, 4])
    features = layer(keras.Input((150, 1)))
    layer.adapt(x_train)  # thresholds from the training series
    ```
    """

    def __init__(
        self,
        dilations: Sequence[int] = (1, 2, 4, 8, 16, 32),
        biases_per_kernel: int = 4,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(dilations, int) or not dilations:
            raise ValueError(
                "`dilations` must be a non-empty list of ints >= 1. "
                f"Received: dilations={dilations!r}"
            )
        self.dilations = [
            check_positive_int("dilations", int(value)) for value in dilations
        ]
        self.biases_per_kernel = check_positive_int(
            "biases_per_kernel", biases_per_kernel
        )
        self.seed = int(seed)
        self.supports_masking = True
        self.num_kernels = _rocket_kernels().shape[-1]

    def build(self, input_shape: Any) -> None:
        channels = int(input_shape[-1])
        base = _rocket_kernels()
        rng = np.random.default_rng(self.seed)
        kernels = np.zeros(
            (len(self.dilations), _ROCKET_LENGTH, channels, self.num_kernels),
            dtype=np.float32,
        )
        for position in range(len(self.dilations)):
            for kernel in range(self.num_kernels):
                if channels == 1:
                    chosen = [0]
                else:
                    limit = np.log2(min(channels, _ROCKET_LENGTH) + 1)
                    size = int(2 ** rng.uniform(0, limit))
                    size = min(max(size, 1), channels)
                    chosen = rng.choice(channels, size, replace=False)
                kernels[position, :, chosen, kernel] = base[:, kernel]
        self.kernels = self.add_weight(
            name="kernels",
            shape=kernels.shape,
            initializer=keras.initializers.Constant(kernels),
            trainable=False,
        )
        self.biases = self.add_weight(
            name="biases",
            shape=(
                len(self.dilations),
                self.num_kernels,
                self.biases_per_kernel,
            ),
            initializer="zeros",
            trainable=False,
        )

    def _convolve(self, inputs: Any, mask: Any, position: int) -> Any:
        return ops.conv(
            inputs,
            self.kernels[position],
            strides=1,
            padding="same",
            dilation_rate=self.dilations[position],
        )

    def call(self, inputs: Any, mask: Any = None) -> Any:
        inputs = ops.cast(inputs, self.compute_dtype)
        keep = None
        if mask is not None:
            keep = ops.cast(mask, inputs.dtype)
            inputs = inputs * ops.expand_dims(keep, -1)
            length = ops.maximum(ops.sum(keep, axis=1, keepdims=True), 1.0)
        features = []
        for position in range(len(self.dilations)):
            outputs = self._convolve(inputs, mask, position)
            above = ops.cast(
                ops.expand_dims(outputs, -1) > self.biases[position],
                inputs.dtype,
            )  # (batch, steps, kernels, biases)
            if keep is None:
                ppv = ops.mean(above, axis=1)
            else:
                weights = ops.reshape(keep, (-1, ops.shape(keep)[1], 1, 1))
                ppv = ops.sum(above * weights, axis=1) / ops.reshape(
                    length, (-1, 1, 1)
                )
            features.append(
                ops.reshape(
                    ppv, (-1, self.num_kernels * self.biases_per_kernel)
                )
            )
        return ops.concatenate(features, axis=-1)

    def adapt(self, data: Any, mask: Any = None, *, max_samples=256) -> None:
        """Sets the thresholds from quantiles of the training outputs.

        Args:
            data: float array (samples, timesteps, channels), already
                normalized as the layer's input will be.
            mask: bool array (samples, timesteps) or None: False marks
                padded steps.
            max_samples: int. Series used (the first ones).
        """
        data = np.asarray(data, dtype=np.float32)[:max_samples]
        if not self.built:
            self.build(data.shape)
        if mask is not None:
            mask = np.asarray(mask, dtype=bool)[:max_samples]
            data = data * mask[..., None]
        levels = (
            np.arange(1, self.num_kernels * self.biases_per_kernel + 1) * _PHI
        ) % 1.0
        levels = levels.reshape(self.num_kernels, self.biases_per_kernel)
        biases = np.zeros(
            (len(self.dilations), self.num_kernels, self.biases_per_kernel),
            dtype=np.float32,
        )
        for position in range(len(self.dilations)):
            outputs = np.asarray(
                self._convolve(ops.convert_to_tensor(data), None, position)
            )
            outputs = outputs.reshape(-1, self.num_kernels)
            if mask is not None:
                outputs = outputs[mask.reshape(-1)]
            for kernel in range(self.num_kernels):
                biases[position, kernel] = np.quantile(
                    outputs[:, kernel], levels[kernel]
                )
        self.biases.assign(biases)

    def compute_output_shape(self, input_shape: Any) -> tuple:
        width = len(self.dilations) * self.num_kernels * self.biases_per_kernel
        return (input_shape[0], width)

    def compute_mask(self, inputs: Any, mask: Any = None) -> Any:
        return None

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            dilations=list(self.dilations),
            biases_per_kernel=self.biases_per_kernel,
            seed=self.seed,
        )
        return config
