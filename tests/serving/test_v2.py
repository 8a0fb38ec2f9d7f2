"""The Open Inference Protocol codec on a real loaded version."""

import json
import struct

import numpy as np
import pytest
import tensorflow as tf

from aiservice_kit.export import write_versioned_saved_model
from aiservice_kit.serving._errors import ServingError
from aiservice_kit.serving._servable import load_version
from aiservice_kit.serving._v2 import HEADER_LENGTH
from aiservice_kit.serving._v2 import decoder
from aiservice_kit.serving._v2 import encode
from aiservice_kit.serving.batching import BatchingConfig


@pytest.fixture(scope="module")
def servable(tmp_path_factory):
    """A model of uint8 pixels and strings, loaded as the server does."""

    class Model(tf.Module):
        @tf.function(
            input_signature=[
                tf.TensorSpec([None, 2], tf.uint8),
                tf.TensorSpec([None], tf.string),
            ]
        )
        def serve(self, pixels, text):
            total = tf.reduce_sum(tf.cast(pixels, tf.float32), axis=1)
            length = tf.cast(tf.strings.length(text), tf.float32)
            return {"outputs": total + length}

    module = Model()

    def write(tmp_dir):
        tf.saved_model.save(
            module, str(tmp_dir), signatures={"serving_default": module.serve}
        )

    base = tmp_path_factory.mktemp("v2") / "m"
    version_dir = write_versioned_saved_model(
        base, 1, write, {"task": "regression"}
    )
    loaded = load_version("m", 1, version_dir, BatchingConfig())
    yield loaded
    loaded.close()


def _request(inputs, **extra):
    return json.dumps({"inputs": inputs, **extra}).encode()


PIXELS = {"name": "pixels", "shape": [2, 2], "datatype": "UINT8"}
TEXT = {"name": "text", "shape": [2], "datatype": "BYTES"}


def test_json_and_binary_requests_decode_alike(servable):
    as_json = decoder(None)(
        _request(
            [
                {**PIXELS, "data": [[1, 2], [3, 4]]},
                {**TEXT, "data": ["ab", "cde"]},
            ]
        ),
        servable,
    )
    strings = b"".join(struct.pack("<I", len(s)) + s for s in (b"ab", b"cde"))
    pixels = np.array([[1, 2], [3, 4]], np.uint8).tobytes()
    head = _request(
        [
            {**PIXELS, "parameters": {"binary_data_size": len(pixels)}},
            {**TEXT, "parameters": {"binary_data_size": len(strings)}},
        ],
        parameters={"binary_data_output": True},
    )
    as_binary = decoder(str(len(head)))(head + pixels + strings, servable)
    for decoded in (as_json, as_binary):
        np.testing.assert_array_equal(
            decoded.arrays["pixels"], [[1, 2], [3, 4]]
        )
        assert decoded.arrays["pixels"].dtype == np.uint8
        assert list(decoded.arrays["text"]) == [b"ab", b"cde"]
        assert decoded.instances == 2
    outputs = {"outputs": np.array([0.5, 1.5], np.float32)}
    body, headers = encode(
        {name: outputs["outputs"] for name in as_binary.state["outputs"]},
        as_binary,
    )
    size = int(headers[HEADER_LENGTH])
    answer = json.loads(body[:size])
    assert answer["outputs"][0]["parameters"] == {"binary_data_size": 8}
    np.testing.assert_array_equal(
        np.frombuffer(body[size:], np.float32), [0.5, 1.5]
    )
    body, headers = encode(
        {name: outputs["outputs"] for name in as_json.state["outputs"]},
        as_json,
    )
    assert headers == {}
    assert json.loads(body)["outputs"][0]["data"] == [0.5, 1.5]


@pytest.mark.parametrize(
    ("inputs", "header", "message"),
    [
        ([{**PIXELS, "data": [1, 2, 3]}], None, "must name each"),
        (
            [{**PIXELS, "data": [1, 2, 3]}, {**TEXT, "data": ["a", "b"]}],
            None,
            "needs 4 values; received 3",
        ),
        (
            [{**PIXELS, "data": [1, 2, 3, 300]}, {**TEXT, "data": ["a", "b"]}],
            None,
            "does not fit in UINT8",
        ),
        (
            [
                {**PIXELS, "datatype": "INT64", "data": [1, 2, 3, 256]},
                {**TEXT, "data": ["a", "b"]},
            ],
            None,
            r"values must lie in \[0, 255\]",
        ),
        (
            [
                {**PIXELS, "datatype": "FP32", "data": [1, 2, 3, 4]},
                {**TEXT, "data": ["a", "b"]},
            ],
            None,
            "expects datatype UINT8",
        ),
        (
            [{**PIXELS, "data": [1, 2, 3, 4]}, {**TEXT, "data": [1, 2]}],
            None,
            "BYTES data must be strings",
        ),
        (
            [
                {**PIXELS, "datatype": "COMPLEX", "data": [1, 2, 3, 4]},
                {**TEXT, "data": ["a", "b"]},
            ],
            None,
            "unknown datatype",
        ),
        (
            [
                {**PIXELS, "shape": [2, -2], "data": [1, 2, 3, 4]},
                {**TEXT, "data": ["a", "b"]},
            ],
            None,
            "non-negative integers",
        ),
        (
            [
                {**PIXELS, "parameters": {"binary_data_size": 99}},
                {**TEXT, "data": ["a", "b"]},
            ],
            "0",
            "runs past",
        ),
        ([], None, "non-empty list"),
    ],
)
def test_bad_requests_are_400_naming_the_input(
    servable, inputs, header, message
):
    body = _request(inputs)
    if header == "0":
        header = str(len(body))
    with pytest.raises(ServingError, match=message) as error:
        decoder(header)(body, servable)
    assert error.value.status_code == 400


def test_bytes_elements_must_fit_their_data(servable):
    strings = struct.pack("<I", 50) + b"short"
    head = _request(
        [
            {**PIXELS, "data": [1, 2, 3, 4]},
            {**TEXT, "parameters": {"binary_data_size": len(strings)}},
        ]
    )
    with pytest.raises(ServingError, match="runs past the end"):
        decoder(str(len(head)))(head + strings, servable)
    with pytest.raises(ServingError, match=HEADER_LENGTH):
        decoder("12345")(head, servable)


@pytest.mark.parametrize(
    "document",
    [
        {"inputs": [{**PIXELS, "name": ["pixels"], "data": [1, 2, 3, 4]}]},
        {"inputs": [{**PIXELS, "datatype": ["UINT8"], "data": [1]}]},
        {"inputs": [{**PIXELS, "parameters": [1], "data": [1]}]},
        {"inputs": [PIXELS], "parameters": [1]},
        {
            "inputs": [
                {**PIXELS, "data": [1, 2, 3, 4]},
                {**TEXT, "data": ["a", "b"]},
            ],
            "outputs": [{"name": ["outputs"]}],
        },
        {
            "inputs": [
                {**PIXELS, "parameters": {"binary_data_size": -4}},
                {**TEXT, "data": ["a", "b"]},
            ]
        },
    ],
)
def test_hostile_shapes_of_json_are_400_not_500(servable, document):
    # Found by the OpenAPI fuzzer: unhashable names and non-object
    # parameters once raised TypeError (a 500).
    with pytest.raises(ServingError) as error:
        decoder(None)(json.dumps(document).encode(), servable)
    assert error.value.status_code == 400
