"""Image classification: `build_cnn` and its building blocks."""

from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

import keras

from aiservice_kit._validation import check_bool
from aiservice_kit._validation import check_choice
from aiservice_kit._validation import check_fraction
from aiservice_kit._validation import check_input_shape
from aiservice_kit._validation import check_int_sequence
from aiservice_kit._validation import check_optional_positive_int
from aiservice_kit._validation import check_positive_int
from aiservice_kit.models._checks import CheckedModel
from aiservice_kit.models._heads import check_num_classes
from aiservice_kit.models._heads import check_optimizer
from aiservice_kit.models._heads import classification_head
from aiservice_kit.models._heads import compile_classifier

#: Name of the image input of every model built by `build_cnn`.
IMAGE_INPUT = "image"
#: The smallest image side `build_cnn` accepts, in pixels.
MIN_IMAGE_SIDE = 4
#: Accepted values of `pooling`.
POOLINGS = ("auto", "avg", "max", "flatten")
#: Accepted values of `padding`.
PADDINGS = ("auto", "same", "valid")
#: `padding="auto"` picks "valid" when every block keeps a feature map at
#: least this many pixels wide after its convolutions.
MIN_VALID_MAP_SIDE = 3
#: Largest feature map (values) that `pooling="auto"` flattens.
MAX_FLATTEN_SIZE = 4096
#: Named augmentation presets; a list of Keras layers is accepted too.
AUGMENTATIONS = ("basic", "photo")
#: `build_cnn`'s default blocks. Eight first-layer filters (one AVX2
#: vector) and a wide last block: as accurate as (16, 32, 64) over ten
#: MNIST splits and seeds, at 0.7x its arithmetic and about 1.3x its
#: training speed on a 2-core CPU (docs/image-classification.md).
DEFAULT_FILTERS = (8, 32, 96)

#: A block callable: `block_fn(x, filters, index) -> x`.
BlockFn = Callable[[Any, int, int], Any]


def conv_block(
    x: Any,
    filters: int,
    *,
    convs: int = 2,
    kernel_size: int = 3,
    batch_norm: bool = True,
    downsample: bool = True,
    padding: str = "same",
    name: str = "block",
) -> Any:
    """Applies `convs` convolutions (+ batch norm + ReLU), then max pooling.

    Args:
        x: KerasTensor. A channels-last image tensor.
        filters: int. Number of filters of each convolution.
        convs: int. Number of convolutions in the block.
        kernel_size: int. Side of the square convolution kernel.
        batch_norm: bool. Whether to batch-normalize after each convolution.
        downsample: bool. Whether to end with 2x2 max pooling.
        padding: str. `"same"` keeps the map's size; `"valid"` trims
            `kernel_size - 1` pixels per convolution (less arithmetic).
        name: str. Prefix of the layer names.

    Returns:
        The block's output tensor.

    Example:
    ```python
    import keras
    from aiservice_kit.models.vision import conv_block
    inputs = keras.Input((32, 32, 3))
    features = conv_block(inputs, 16, name="stem")
    ```
    """
    for index in range(convs):
        x = keras.layers.Conv2D(
            filters,
            kernel_size,
            padding=padding,
            use_bias=not batch_norm,
            name=f"{name}_conv{index + 1}",
        )(x)
        if batch_norm:
            x = keras.layers.BatchNormalization(
                momentum=0.9, name=f"{name}_bn{index + 1}"
            )(x)
        x = keras.layers.Activation("relu", name=f"{name}_relu{index + 1}")(x)
    if downsample:
        x = keras.layers.MaxPooling2D(2, name=f"{name}_pool")(x)
    return x


def augmentation_layers(
    augmentation: str | Sequence[keras.layers.Layer] | None,
) -> list[keras.layers.Layer]:
    """Returns the layers of an augmentation preset (or the user's own).

    Keras' random layers act only in training: `predict`, `evaluate` and
    `model(x, training=False)` leave images untouched.

    Args:
        augmentation: None, `"basic"` (small shifts, rotations and zooms,
            safe for digits and documents), `"photo"` (basic plus horizontal
            flips and contrast, for natural photos), or a list of Keras
            layers.

    Returns:
        A list of layers to apply in order.
    """
    if augmentation is None:
        return []
    if isinstance(augmentation, str):
        check_choice("augmentation", augmentation, AUGMENTATIONS)
        layers = [
            keras.layers.RandomTranslation(
                0.1, 0.1, fill_mode="constant", name="augment_translate"
            ),
            keras.layers.RandomRotation(
                0.04, fill_mode="constant", name="augment_rotate"
            ),
            keras.layers.RandomZoom(
                0.1, fill_mode="constant", name="augment_zoom"
            ),
        ]
        if augmentation == "photo":
            layers += [
                keras.layers.RandomFlip("horizontal", name="augment_flip"),
                keras.layers.RandomContrast(0.1, name="augment_contrast"),
            ]
        return layers
    if isinstance(augmentation, Sequence) and all(
        isinstance(layer, keras.layers.Layer) for layer in augmentation
    ):
        return list(augmentation)
    raise TypeError(
        "`augmentation` must be None, one of "
        f"{', '.join(repr(a) for a in AUGMENTATIONS)}, or a list of Keras "
        f"layers. Received: augmentation={augmentation!r}"
    )


def _check_image_shape(input_shape: Any) -> tuple[int, int, int]:
    shape = check_input_shape("input_shape", input_shape, ranks=(2, 3))
    height, width = shape[0], shape[1]
    if min(height, width) < MIN_IMAGE_SIDE:
        raise ValueError(
            "`input_shape` is too small: images need at least "
            f"{MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} pixels, given as (height, "
            f"width) or (height, width, channels). "
            f"Received: input_shape={input_shape!r}"
        )
    channels = shape[2] if len(shape) == 3 else 1
    return height, width, channels


def _auto_padding(
    size: tuple[int, int], blocks: int, convs: int, kernel_size: int
) -> str:
    """`"valid"` when every block keeps a map >= MIN_VALID_MAP_SIDE wide."""
    side = min(size)
    for _ in range(blocks):
        side -= convs * (kernel_size - 1)
        if side < MIN_VALID_MAP_SIDE:
            return "same"
        if side >= 4:
            side //= 2
    return "valid"


def build_cnn(
    input_shape: Sequence[int],
    num_classes: int | None = None,
    *,
    filters: Sequence[int] = DEFAULT_FILTERS,
    convs_per_block: int = 1,
    kernel_size: int = 3,
    padding: str = "auto",
    batch_norm: bool = False,
    dense_units: int | None = 128,
    dropout: float = 0.3,
    augmentation: str | Sequence[keras.layers.Layer] | None = None,
    rescale: float | None = 1.0 / 255,
    include_top: bool = True,
    pooling: str | None = "auto",
    label_mode: str = "int",
    optimizer: str | keras.optimizers.Optimizer = "adam",
    compile: bool = True,
    block_fn: BlockFn | None = None,
    name: str = "cnn",
) -> keras.Model:
    """Builds a convolutional image classifier that takes raw pixels.

    The model rescales pixels inside (uint8 0-255 by default), so a saved
    or exported model takes the images exactly as the notebook had them.
    Each entry of `filters` adds one block of `convs_per_block`
    convolutions followed by 2x2 max pooling (pooling is skipped once the
    feature map is smaller than 4 pixels, so 8x8 images work too).

    Args:
        input_shape: tuple of int. `(height, width, channels)` or
            `(height, width)` for grayscale, without the batch axis.
        num_classes: int. Number of classes (>= 2; binary is 2 classes).
            Required when `include_top=True`.
        filters: tuple of int. Filters of each convolutional block. The
            default three blocks (8, 32, 96) do a quarter of the
            arithmetic of the textbook's two (32, 64) on 28x28 images and
            were more accurate on ten MNIST splits and seeds (see
            docs/image-classification.md).
        convs_per_block: int. Convolutions per block.
        kernel_size: int. Side of the square convolution kernels.
        padding: str. `"same"`, `"valid"`, or `"auto"`: valid (the
            textbook CNN's: on 28x28 MNIST the default stack does 0.4x the
            arithmetic of same padding) when every block keeps a map at
            least 3 pixels wide, else same (small images such as 8x8
            digits).
        batch_norm: bool. Batch normalization after each convolution (off
            by default: on the shallow default stack it made validation
            accuracy swing by a point between epochs on MNIST).
        dense_units: int or None. Width of the hidden dense layer before the
            softmax; None for none.
        dropout: float. Dropout rate before the dense layers, in [0, 1).
        augmentation: None, `"basic"`, `"photo"` or a list of Keras layers.
            Augmentation acts only in training (see `augmentation_layers`).
        rescale: float or None. Factor applied to the raw pixels inside the
            model (1/255 for uint8 pixels); None when inputs are already
            scaled.
        include_top: bool. False returns a feature extractor without the
            classification head (and uncompiled).
        pooling: str or None. How the feature map becomes a vector: `"avg"`
            (global average), `"max"` (global max), `"flatten"`, or
            `"auto"`: flatten when the final feature map holds at most 4096
            values (small images keep their spatial detail), else global
            average (large photos stay small models). With
            `include_top=False`, None returns the 4-D feature map.
        label_mode: str. `"int"` for integer labels, `"categorical"` for
            one-hot labels.
        optimizer: str or keras.optimizers.Optimizer. Used when compiling.
        compile: bool. Whether to compile the classifier (ignored when
            `include_top=False`).
        block_fn: callable or None. `block_fn(x, filters, index) -> x`
            replaces `conv_block`, to try other blocks without forking.
        name: str. The model's name.

    Returns:
        A Functional `keras.Model` with one input named `image`. With the
        head, its output `probabilities` has shape (batch, num_classes).
        Its `fit`, `evaluate` and `predict` check numpy data first
        (`CheckedModel`): images of another shape, NaN or infinite
        pixels, labels out of range or in another format than
        `label_mode` are refused with an error naming the fix.

    Raises:
        ValueError: if an argument has a bad value (for example
            `num_classes=1`, an image smaller than 4x4, an unknown pooling).
        TypeError: if an argument has a bad type.

    Example:
    ```python
    from aiservice_kit import build_cnn
    from aiservice_kit.datasets import load_digits_images
    (x_train, y_train), (x_test, y_test) = load_digits_images()
    model = build_cnn(x_train.shape[1:], num_classes=10)
    model.fit(x_train, y_train, epochs=10, validation_split=0.1)
    model.evaluate(x_test, y_test)
    ```
    """
    height, width, channels = _check_image_shape(input_shape)
    check_bool("include_top", include_top)
    check_bool("compile", compile)
    check_bool("batch_norm", batch_norm)
    if include_top:
        num_classes = check_num_classes(num_classes)
        check_choice("pooling", pooling, POOLINGS)
    else:
        check_choice("pooling", pooling, (*POOLINGS, None))
    filters = check_int_sequence("filters", filters)
    convs_per_block = check_positive_int("convs_per_block", convs_per_block)
    kernel_size = check_positive_int("kernel_size", kernel_size)
    dense_units = check_optional_positive_int("dense_units", dense_units)
    dropout = check_fraction("dropout", dropout)
    check_choice("label_mode", label_mode, ("int", "categorical"))
    check_choice("padding", padding, PADDINGS)
    check_optimizer(optimizer)
    if rescale is not None and (
        isinstance(rescale, bool) or not isinstance(rescale, (int, float))
    ):
        raise TypeError(
            f"`rescale` must be a number or None. Received: rescale={rescale!r}"
        )
    if block_fn is not None and not callable(block_fn):
        raise TypeError(
            "`block_fn` must be a callable block_fn(x, filters, index) -> x. "
            f"Received: block_fn={block_fn!r}"
        )
    augment = augmentation_layers(augmentation)

    inputs = keras.Input(shape=tuple(input_shape), name=IMAGE_INPUT)
    x = inputs
    if len(input_shape) == 2:
        x = keras.layers.Reshape((height, width, channels), name="channel")(x)
    if rescale is not None:
        x = keras.layers.Rescaling(rescale, name="rescale")(x)
    for layer in augment:
        x = layer(x)
    if padding == "auto":
        padding = _auto_padding(
            (height, width), len(filters), convs_per_block, kernel_size
        )
    trim = convs_per_block * (kernel_size - 1) if padding == "valid" else 0
    map_height, map_width = height, width
    for index, block_filters in enumerate(filters):
        if block_fn is not None:
            x = block_fn(x, block_filters, index)
            continue
        map_height, map_width = map_height - trim, map_width - trim
        if min(map_height, map_width) < 1:
            raise ValueError(
                f"`padding='valid'` shrinks the {height}x{width} images to "
                f"nothing by block {index + 1}; use padding='same' or "
                f"'auto', or fewer filters. Received: padding={padding!r}, "
                f"filters={tuple(filters)!r}"
            )
        downsample = min(map_height, map_width) >= 4
        x = conv_block(
            x,
            block_filters,
            convs=convs_per_block,
            kernel_size=kernel_size,
            batch_norm=batch_norm,
            downsample=downsample,
            padding=padding,
            name=f"block{index + 1}",
        )
        if downsample:
            map_height, map_width = map_height // 2, map_width // 2
    if pooling == "auto":
        final_size = (
            map_height * map_width * filters[-1] if block_fn is None else None
        )
        pooling = (
            "flatten"
            if final_size is not None and final_size <= MAX_FLATTEN_SIZE
            else "avg"
        )
    if pooling == "avg":
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = keras.layers.GlobalMaxPooling2D(name="max_pool")(x)
    elif pooling == "flatten":
        x = keras.layers.Flatten(name="flatten")(x)
    if not include_top:
        return keras.Model(inputs, x, name=name)
    if dense_units:
        if dropout:
            x = keras.layers.Dropout(dropout, name="dense_dropout")(x)
        x = keras.layers.Dense(dense_units, activation="relu", name="dense")(x)
    outputs = classification_head(x, num_classes, dropout=dropout)
    model = CheckedModel(inputs, outputs, name=name)
    if compile:
        compile_classifier(model, optimizer=optimizer, label_mode=label_mode)
    return model
