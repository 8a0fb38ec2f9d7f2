"""The classify/regress core: hand-written `tf.Example`s and results."""

import numpy as np
import pytest
import tensorflow as tf

from aiservice_kit.export import _examples as export_examples
from aiservice_kit.export import _signature
from aiservice_kit.serving._errors import ServingError
from aiservice_kit.serving._examples import classify_results
from aiservice_kit.serving._examples import regress_results
from aiservice_kit.serving._examples import serialize_examples


def test_examples_parse_as_tensorflows_own_protos():
    blobs = serialize_examples(
        [
            {"text": "héllo", "ids": [3, -7, 2**40], "x": [0.5, 2]},
            {"text": b"\x00\xff", "ids": 5, "x": 1.25},
        ],
        context={"shared": "yes", "x": [9.0]},
        kinds={"x": "float", "ids": "int64"},
    )
    first = tf.train.Example.FromString(blobs[0]).features.feature
    assert first["text"].bytes_list.value == ["héllo".encode()]
    assert first["ids"].int64_list.value == [3, -7, 2**40]
    assert first["x"].float_list.value == [0.5, 2.0]  # the example wins
    assert first["shared"].bytes_list.value == [b"yes"]
    second = tf.train.Example.FromString(blobs[1]).features.feature
    assert second["text"].bytes_list.value == [b"\x00\xff"]
    assert second["ids"].int64_list.value == [5]
    parsed = tf.io.parse_example(
        blobs.astype(bytes),
        {"x": tf.io.VarLenFeature(tf.float32)},
    )
    np.testing.assert_array_equal(
        tf.sparse.to_dense(parsed["x"]).numpy(), [[0.5, 2.0], [1.25, 0.0]]
    )


def test_they_match_the_exporters_own_encoding():
    import keras

    model = keras.Sequential(
        [keras.Input((2, 2), name="grid"), keras.layers.Flatten()]
    )
    plan = _signature.plan(model)
    grid = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    ours = serialize_examples(
        [{"grid": row.reshape(-1).tolist()} for row in grid]
    )
    theirs = export_examples.serialize_examples(plan, {"grid": grid})
    assert [tf.train.Example.FromString(b) for b in ours] == [
        tf.train.Example.FromString(b) for b in theirs
    ]


@pytest.mark.parametrize(
    ("examples", "kinds", "message"),
    [
        ([{"x": "a"}], {"x": "float"}, "expects float numbers"),
        ([{"x": 1.5}], {"x": "int64"}, "whole numbers"),
        ([{"x": ["a", 1]}], None, "mixes strings and numbers"),
        ([{"x": {"y": 1}}], None, "must be a string, a number"),
        ([{"x": 2**70}], {"x": "int64"}, "outside int64"),
        ([], None, "non-empty list"),
        (["x"], None, "must be an object"),
    ],
)
def test_bad_values_are_named(examples, kinds, message):
    with pytest.raises(ServingError, match=message) as error:
        serialize_examples(examples, kinds=kinds)
    assert error.value.status_code == 400


def test_results():
    outputs = {
        "classes": np.array([[b"ham", b"spam"]] * 2, dtype=object),
        "scores": np.array([[0.25, 0.75], [1.0, 0.0]], np.float32),
    }
    assert classify_results(outputs) == [
        [("ham", 0.25), ("spam", 0.75)],
        [("ham", 1.0), ("spam", 0.0)],
    ]
    assert classify_results({"scores": outputs["scores"][:1]}) == [
        [("", 0.25), ("", 0.75)]
    ]
    assert regress_results({"outputs": np.array([[1.5], [2.0]])}) == [1.5, 2.0]
    with pytest.raises(ServingError, match="one value per example"):
        regress_results({"outputs": np.zeros((2, 3))})


def test_out_of_range_numbers():
    # float32 would make it infinity, as :predict refuses.
    with pytest.raises(ServingError, match="does not fit in float32"):
        serialize_examples([{"x": 1e300}], kinds={"x": "float"})
    for bad in (float("inf"), float("nan")):
        with pytest.raises(ServingError, match="whole numbers"):
            serialize_examples([{"x": [1.0, bad]}], kinds={"x": "int64"})
