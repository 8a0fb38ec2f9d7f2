"""TF Serving's Classify and Regress signatures: `tf.Example`s in.

A classifier's `classification` signature and a regressor's `regression`
signature take a [batch] vector of serialized `tf.Example`s, one feature
per model input (see docs/export.md, "The signatures"). This module parses
them back into the model's inputs and serializes samples for verification.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from aiservice_kit._layout import CLASSES_OUTPUT
from aiservice_kit._layout import CLASSIFY_SIGNATURE
from aiservice_kit._layout import REGRESS_OUTPUT
from aiservice_kit._layout import REGRESS_SIGNATURE
from aiservice_kit._layout import SCORES_OUTPUT
from aiservice_kit.export import _signature


def example_features(plan: _signature.Plan) -> dict[str, dict[str, Any]] | None:
    """The `tf.Example` feature of each input, or None if one cannot be one.

    Each input is one feature named like it: strings a `bytes_list`,
    floats a `float_list`, integers and booleans an `int64_list`, holding
    the example's values flattened in row-major order. One axis of unknown
    length is allowed (its examples are padded with zeros to the longest
    in a batch); two are not (the rows could not be told apart).

    Args:
        plan: _signature.Plan. The model's plan.

    Returns:
        `{name: {"dtype": "string"|"float"|"int64", "shape": [...]}}` (the
        shape without the batch axis, None: any length), or None.
    """
    features = {}
    for spec in plan.inputs:
        shape = list(spec.shape[1:])
        if shape.count(None) > 1:
            return None
        if spec.dtype == "string":
            kind = "string"
        elif _signature.is_float(spec.dtype):
            kind = "float"
        else:
            kind = "int64"
        features[spec.name] = {"dtype": kind, "shape": shape}
    return features


_FEATURE_DTYPES = {"string": tf.string, "float": tf.float32, "int64": tf.int64}


def _parse_examples(
    serialized: tf.Tensor,
    plan: _signature.Plan,
    features: dict[str, dict[str, Any]],
) -> list[tf.Tensor]:
    spec_of = {}
    for name, feature in features.items():
        dtype = _FEATURE_DTYPES[feature["dtype"]]
        if None in feature["shape"]:
            spec_of[name] = tf.io.VarLenFeature(dtype)
        else:
            spec_of[name] = tf.io.FixedLenFeature(feature["shape"], dtype)
    parsed = tf.io.parse_example(serialized, spec_of)
    args = []
    batch = tf.shape(serialized)[0]
    for spec in plan.inputs:
        value = parsed[spec.name]
        shape = features[spec.name]["shape"]
        if isinstance(value, tf.SparseTensor):
            value = tf.sparse.to_dense(value)
            value = tf.reshape(
                value,
                [batch, *(-1 if axis is None else axis for axis in shape)],
            )
        if spec.dtype != "string":
            value = tf.cast(value, spec.dtype)
        args.append(value)
    return args


def class_labels(
    plan: _signature.Plan, class_names: Sequence[str] | None
) -> list[str]:
    """The `classes` labels: the class names, or "0", "1", ... when None."""
    if class_names is not None:
        return [str(name) for name in class_names]
    return [str(index) for index in range(plan.num_classes or 0)]


def classify_fn(
    model: keras.Model, plan: _signature.Plan, class_names: Sequence[str] | None
) -> Callable[[tf.Tensor], dict[str, tf.Tensor]]:
    """TF Serving's classify: serialized `tf.Example`s to classes + scores."""
    features = example_features(plan)
    labels = tf.constant([class_labels(plan, class_names)])

    @tf.autograph.experimental.do_not_convert
    def classify(inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        args = _parse_examples(inputs, plan, features)
        value = _signature.call(model, plan, args)[plan.output_name]
        if plan.binary:
            positive = tf.reshape(value, [-1, 1])
            value = tf.concat([1.0 - positive, positive], axis=1)
        classes = tf.tile(labels, [tf.shape(inputs)[0], 1])
        return {CLASSES_OUTPUT: classes, SCORES_OUTPUT: value}

    return classify


def regress_fn(
    model: keras.Model, plan: _signature.Plan
) -> Callable[[tf.Tensor], dict[str, tf.Tensor]]:
    """TF Serving's regress: serialized `tf.Example`s to one float each."""
    features = example_features(plan)

    @tf.autograph.experimental.do_not_convert
    def regress(inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        args = _parse_examples(inputs, plan, features)
        value = _signature.call(model, plan, args)[plan.output_name]
        return {REGRESS_OUTPUT: tf.reshape(value, [-1])}

    return regress


def example_signature(plan: _signature.Plan) -> str | None:
    """The classify or regress signature this plan offers, or None."""
    if example_features(plan) is None:
        return None
    # TF Serving needs [batch, num_classes] scores and [batch] (or
    # [batch, 1]) regression outputs.
    if plan.task == "classification" and len(plan.outputs[0].shape) <= 2:
        return CLASSIFY_SIGNATURE
    if plan.task == "regression" and plan.one_per_example:
        return REGRESS_SIGNATURE
    return None


def serialize_examples(
    plan: _signature.Plan, samples: Mapping[str, np.ndarray]
) -> np.ndarray:
    """Rows of signature inputs as serialized `tf.Example`s (for classify).

    Args:
        plan: _signature.Plan. The model's plan.
        samples: dict of arrays. One array per input name, rows first.

    Returns:
        A 1-D object array of serialized `tf.Example` bytes, one per row.

    Raises:
        ValueError: if the plan's inputs cannot be `tf.Example` features.
    """
    features = example_features(plan)
    if features is None:
        raise ValueError(
            "The model's inputs cannot be tf.Example features (an input "
            "has more than one axis of unknown length)."
        )
    rows = len(next(iter(samples.values())))
    serialized = []
    for row in range(rows):
        feature = {}
        for name, spec in features.items():
            values = np.asarray(samples[name][row]).reshape(-1)
            if spec["dtype"] == "string":
                listed = [
                    v if isinstance(v, bytes) else str(v).encode()
                    for v in values
                ]
                feature[name] = tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=listed)
                )
            elif spec["dtype"] == "float":
                feature[name] = tf.train.Feature(
                    float_list=tf.train.FloatList(value=values.tolist())
                )
            else:
                feature[name] = tf.train.Feature(
                    int64_list=tf.train.Int64List(
                        value=values.astype(np.int64).tolist()
                    )
                )
        example = tf.train.Example(features=tf.train.Features(feature=feature))
        serialized.append(example.SerializeToString())
    return np.array(serialized, dtype=object)
