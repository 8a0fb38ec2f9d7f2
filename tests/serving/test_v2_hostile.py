"""Hostile V2 infer requests over real HTTP: each is a 400 that names the
input, what was given and what is accepted, never a 500 or a silent
infinity.

One server subprocess for the module (auth off on loopback) serving
`half_plus_three` (an FP32 `x` of shape [-1]), `echo` (a BYTES
`image_bytes`) and `mnist` (UINT8 images); requests go as JSON and with
the binary tensor extension (`Inference-Header-Content-Length`).
"""

import json

import httpx
import numpy as np
import pytest
from serving_helpers import Server

from aiservice_kit.serving.config import MAX_INPUT_AXES

#: Deeper than the interpreter's recursion limit, within orjson's 1024.
DEEP = 1000


@pytest.fixture(scope="module")
def server(model_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("v2-hostile")
    args = ["--host", "127.0.0.1", "--db", str(tmp / "service.db")]
    for name in ("half_plus_three", "echo", "mnist"):
        args += ["--model", f"{name}={model_root / name}"]
    running = Server(args, tmp / "server.log").start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


def _x(datatype="FP32", shape=(1,), **fields):
    """`half_plus_three`'s input tensor (the model takes FP32 `x`)."""
    return {"name": "x", "shape": list(shape), "datatype": datatype, **fields}


def _infer(http, inputs, model="half_plus_three", **extra):
    return http.post(
        f"/v2/models/{model}/infer", json={"inputs": inputs, **extra}
    )


def _infer_raw(http, body, model="half_plus_three", headers=None):
    return http.post(
        f"/v2/models/{model}/infer", content=body, headers=headers or {}
    )


def _infer_binary(http, inputs, data, model="half_plus_three"):
    """A binary-extension request: the JSON part, then `data`."""
    head = json.dumps({"inputs": inputs}).encode()
    return _infer_raw(
        http,
        head + data,
        model,
        headers={"Inference-Header-Content-Length": str(len(head))},
    )


def _refused(response, *parts):
    """Asserts a 400 whose message holds each of `parts`; returns it."""
    assert response.status_code == 400, response.text
    message = response.json()["error"]
    for part in parts:
        assert part in message, (part, message)
    return message


def _nested(depth, leaf="1"):
    return "[" * depth + leaf + "]" * depth


# -- shapes numpy cannot hold -----------------------------------------------


def test_a_shape_too_large_for_numpy_is_400(http):
    shape = [0, 2**62, 2**62]
    _refused(
        _infer(http, [_x(shape=shape, data=[])]),
        "Input 'x'",
        str(2**62),
        "shape [-1]",
    )
    _refused(
        _infer_binary(
            http, [_x(shape=shape, parameters={"binary_data_size": 0})], b""
        ),
        "Input 'x'",
        str(2**62),
        "shape [-1]",
    )


def test_a_shape_with_too_many_axes_is_400(http):
    _refused(
        _infer(http, [_x(shape=[1] * 70, data=[1.0])]),
        "Input 'x'",
        "70 axes",
        f"at most {MAX_INPUT_AXES}",
        "shape [-1]",
    )


def test_an_axis_beyond_numpy_is_400(http):
    _refused(
        _infer(http, [_x(shape=[2**64 - 1, 0], data=[])]),
        "Input 'x'",
        "non-negative integers",
        str(2**64 - 1),
    )


@pytest.mark.parametrize(
    ("tensor", "binary"),
    [
        ('{"name": "x", "shape": @, "datatype": "FP32", "data": [1]}', False),
        ('{"name": "x", "shape": [1], "datatype": @, "data": [1]}', False),
        (
            '{"name": "x", "shape": [1], "datatype": "FP32", '
            '"parameters": {"binary_data_size": @}}',
            True,
        ),
    ],
    ids=["shape", "datatype", "binary_data_size"],
)
def test_deeply_nested_fields_are_400(http, tensor, binary):
    """The field at `@`, nested past the recursion limit, is refused with
    a short message (its echo cannot recurse)."""
    body = ('{"inputs": [' + tensor.replace("@", _nested(DEEP)) + "]}").encode()
    headers = {"Inference-Header-Content-Length": str(len(body))}
    response = _infer_raw(http, body, headers=headers if binary else None)
    assert len(_refused(response, "Input 'x'")) < 1000


# -- strings ----------------------------------------------------------------


def test_a_lone_surrogate_in_bytes_data_is_400(http):
    body = (
        b'{"inputs": [{"name": "image_bytes", "shape": [1], '
        b'"datatype": "BYTES", "data": ["\\ud800"]}]}'
    )
    _refused(
        _infer_raw(http, body, model="echo"),
        "Input 'image_bytes'",
        "\\ud800",
        "lone surrogate",
    )


# -- the request id ---------------------------------------------------------


@pytest.mark.parametrize("request_id", [_nested(DEEP), "5", '{"a": 1}'])
def test_a_request_id_that_is_not_a_string_is_400(http, request_id):
    body = (
        '{"id": ' + request_id + ', "inputs": '
        '[{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}'
    ).encode()
    _refused(_infer_raw(http, body), "'id'", "string")


def test_a_string_request_id_is_echoed(http):
    body = (
        b'{"id": "call-\\ud800-7", "inputs": '
        b'[{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}'
    )
    response = _infer_raw(http, body)
    assert response.status_code == 200, response.text
    assert response.json()["id"] == "call-\ud800-7"


def test_a_signature_name_that_is_not_a_string_is_400(http):
    body = (
        '{"parameters": {"signature_name": ' + _nested(DEEP) + '}, "inputs": '
        '[{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}'
    ).encode()
    _refused(_infer_raw(http, body), "signature_name", "string")


# -- lossy numbers ----------------------------------------------------------


@pytest.mark.parametrize(
    ("datatype", "value", "shown"),
    [
        ("FP64", 1e300, "1e+300"),  # converted to the input's FP32
        ("FP32", 1e300, "1e+300"),  # the request's own datatype
        ("FP16", 1e10, "10000000000.0"),
        ("FP32", 10**40, "1e+40"),
        ("FP64", 10**400, str(10**400)[:100]),
        ("INT64", 2**62, None),  # fits FP32: no refusal
    ],
    ids=["FP64", "FP32", "FP16", "FP32-int", "FP64-int", "INT64-fits"],
)
def test_json_numbers_that_overflow_are_400(http, datatype, value, shown):
    response = _infer(http, [_x(datatype, (2,), data=[value, 1])])
    if shown is None:
        assert response.status_code == 200, response.text
        return
    _refused(
        response,
        "Input 'x'",
        shown,
        "without loss of precision",
        "values must lie in [",
    )


def test_binary_numbers_that_overflow_are_400(http):
    data = np.array([1e300, 1.0]).tobytes()
    tensor = _x("FP64", (2,), parameters={"binary_data_size": len(data)})
    _refused(
        _infer_binary(http, [tensor], data),
        "Input 'x'",
        "1e+300",
        "FP32",
        "without loss of precision",
    )


def test_explicit_infinity_is_still_accepted(http):
    body = (
        b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", '
        b'"data": [Infinity, 1]}]}'
    )
    response = _infer_raw(http, body)
    assert response.status_code == 200, response.text


def test_an_integer_out_of_range_names_the_value_and_range(http):
    image = [-1] + [0] * (28 * 28 - 1)
    tensor = {
        "name": "image",
        "shape": [1, 28, 28],
        "datatype": "UINT8",
        "data": image,
    }
    _refused(
        _infer(http, [tensor], model="mnist"),
        "Input 'image'",
        "-1",
        "UINT8",
        "[0, 255]",
    )
    tensor["datatype"], tensor["data"] = "INT64", [0] * 783 + [256]
    _refused(
        _infer(http, [tensor], model="mnist"),
        "Input 'image'",
        "256",
        "UINT8",
        "[0, 255]",
    )


# -- echoed client strings --------------------------------------------------


def test_a_megabyte_input_name_is_not_echoed_whole(http):
    name = "n" * 1_000_000
    message = _refused(
        _infer(http, [{"name": name, "shape": [1], "datatype": "FP32"}]),
        "must name each",
        "nnnn",
    )
    assert len(message) < 1000


def test_a_megabyte_datatype_is_not_echoed_whole(http):
    message = _refused(
        _infer(http, [_x("D" * 1_000_000, data=[1])]),
        "Input 'x'",
        "unknown datatype",
        "DDDD",
    )
    assert len(message) < 1000


def test_bool_data_mixing_numbers_is_400(http):
    # numpy would read [true, 2] as [True, True].
    _refused(
        _infer(http, [_x("BOOL", shape=(2,), data=[True, 2])]),
        "Input 'x'",
        "BOOL data must be true/false only",
    )
