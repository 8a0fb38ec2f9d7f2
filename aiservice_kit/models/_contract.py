"""What export, training and serving may assume about any model.

This is the contract between the builders and the rooms that consume their
models. A new builder family gets export, serving and multi-replica
training by meeting it (checked by `aiservice_kit.testing.check_builder`),
not by editing `export/` or `training.py`:

- A classifier's output layer is named `PROBABILITIES` (softmax over
  classes); a regressor's is named `PREDICTIONS`. Exports add
  `PREDICTED_CLASS` (the argmax) for classifiers.
- A classifier that trains on string labels stores them in a `ClassNames`
  layer, read back with `get_class_names`.
- A model that takes raw strings holds its own `TextVectorization` layer,
  so it can be split into that preprocessing and a numeric model
  (`split_text_model`) for strategies with several replicas.
"""

from typing import Any

import keras

from aiservice_kit.models.layers import ClassNames

#: Name of the output layer of every classifier built by this library.
PROBABILITIES = "probabilities"
#: Name of the output layer of every regressor built by this library.
PREDICTIONS = "predictions"
#: Name of the exported argmax output of classifiers.
PREDICTED_CLASS = "predicted_class"


def _check_model(model: Any) -> keras.Model:
    if not isinstance(model, keras.Model):
        raise TypeError(
            "`model` must be a keras.Model. Received: model of type "
            f"{type(model).__name__}"
        )
    return model


def get_class_names(model: keras.Model) -> list[str] | None:
    """Returns the class names a classifier stores, or None.

    Args:
        model: keras.Model. A model built by `build_text_classifier` (or
            any model with an `aiservice_kit` `ClassNames` layer).

    Returns:
        The label of each output column, or None when the model was built
        with integer labels (or stores no names).

    Raises:
        TypeError: if `model` is not a Keras model.

    Example:
    ```python
    from aiservice_kit.models import get_class_names
    get_class_names(model)  # ['ham', 'spam']
    ```
    """
    pending = list(_check_model(model).layers)
    while pending:
        layer = pending.pop(0)
        if isinstance(layer, ClassNames):
            names = layer.class_names
            return None if names is None else list(names)
        if isinstance(layer, keras.Model):
            pending.extend(layer.layers)
    return None


def split_text_model(
    model: keras.Model,
) -> tuple[keras.layers.Layer, keras.Model]:
    """Splits a raw-string model into its vectorizer and a numeric model.

    Keras 3 cannot `fit` a model with a string input under a
    `tf.distribute` strategy with more than one replica (keras #21172,
    TF #80951). Train the numeric model instead, vectorizing in the input
    pipeline: the numeric model SHARES the full model's layers and
    weights, so training it trains the raw-string model, which is the one
    to save and export.

    Args:
        model: keras.Model. A model whose input is a string tensor fed to a
            `TextVectorization` layer (as `build_text_classifier` builds).

    Returns:
        `(vectorizer, numeric_model)`. `vectorizer` is the model's
        `TextVectorization` layer (use it in `tf.data.Dataset.map`);
        `numeric_model` maps its output (token ids, or n-gram vectors) to
        the full model's outputs. When the full model is compiled, the
        numeric model is compiled the same way (with a fresh optimizer);
        build it under the strategy's scope.

    Raises:
        TypeError: if `model` is not a Keras model.
        ValueError: if the model has no string input feeding a
            `TextVectorization` layer.

    Example:
    ```python
    import tensorflow as tf
    from aiservice_kit import build_text_classifier, get_strategy
    from aiservice_kit.models import split_text_model
    strategy = get_strategy()
    with strategy.scope():
        model = build_text_classifier(texts, num_classes=2)
        vectorizer, numeric = split_text_model(model)
    data = tf.data.Dataset.from_tensor_slices((texts, labels)).batch(64)
    numeric.fit(data.map(lambda x, y: (vectorizer(x), y)), epochs=5)
    model.predict(["free prize"])  # trained
    ```
    """
    _check_model(model)
    if len(model.inputs) != 1 or model.inputs[0].dtype != "string":
        raise ValueError(
            "`model` must have one string input feeding a TextVectorization "
            f"layer. Received a model with inputs {model.inputs}"
        )
    vectorizers = [
        layer
        for layer in model.layers
        if isinstance(layer, keras.layers.TextVectorization)
    ]
    if len(vectorizers) != 1:
        raise ValueError(
            "`model` must have exactly one TextVectorization layer to split "
            f"at; it has {len(vectorizers)}."
        )
    vectorizer = vectorizers[0]
    numeric = keras.Model(
        vectorizer.output, model.outputs, name=f"{model.name}_numeric"
    )
    if model.compiled:
        numeric.compile_from_config(model.get_compile_config())
    return vectorizer, numeric
