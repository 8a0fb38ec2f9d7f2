"""Hostile `:classify`/`:regress` bodies against a real server on loopback.

Each request here once got a 500 (a value nested hundreds of lists deep, a
lone surrogate) or a silently wrong answer (a uint8 pixel of 256 scored as
0, `true` taken as 1, a float beyond float32 turned into infinity). The
Example-building code now refuses them as `:predict` refuses the same
values: 400, naming the feature, what was given and what is accepted.
"""

import json
from types import SimpleNamespace

import httpx
import keras
import pytest
import tensorflow as tf
from serving_helpers import Server

from aiservice_kit.export import export_saved_model
from aiservice_kit.serving._errors import ServingError
from aiservice_kit.serving._examples import ExampleCall
from aiservice_kit.serving._examples import check_example_protos
from aiservice_kit.serving._examples import example_call
from aiservice_kit.serving._examples import serialize_examples

#: Pixels of the session's MNIST-shaped CNN (`model_root`'s `mnist`).
PIXELS = 28 * 28


@pytest.fixture(scope="module")
def server(model_root, tmp_path_factory):
    """A server with a uint8 image classifier, a text classifier and a
    float32 regressor (feature `a`, three values)."""
    tmp = tmp_path_factory.mktemp("examples_hostile")
    keras.utils.set_random_seed(4)
    regressor = keras.Sequential(
        [keras.Input((3,), name="a"), keras.layers.Dense(1)]
    )
    export_saved_model(regressor, tmp / "reg", 1, verify=False)
    args = ["--db", str(tmp / "db.sqlite"), "--auth", "off"]
    args += ["--access-log", "off"]
    args += ["--model", f"mnist={model_root / 'mnist'}"]
    args += ["--model", f"text={model_root / 'text'}"]
    args += ["--model", f"reg={tmp / 'reg'}"]
    running = Server(args, tmp / "server.log").start()
    yield running
    running.stop()


def _post(server, path: str, body) -> httpx.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(
        f"{server.url}/v1/models/{path}",
        content=data,
        headers={"Content-Type": "application/json"},
        timeout=60,
    )


def _refused(answer: httpx.Response, *fragments: str) -> str:
    assert answer.status_code == 400, answer.text
    message = answer.json()["error"]
    for fragment in fragments:
        assert fragment in message, message
    return message


def _deep(depth: int) -> bytes:
    return b"[" * depth + b"0" + b"]" * depth


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("mnist:classify", b'{"examples": [{"image": ' + _deep(500) + b"}]}"),
        (
            "mnist:classify",
            b'{"context": {"image": ' + _deep(500) + b'}, "examples": [{}]}',
        ),
        ("reg:regress", b'{"examples": [{"a": ' + _deep(900) + b"}]}"),
    ],
    ids=["example", "context", "regress-900"],
)
def test_deeply_nested_values_are_refused_naming_the_feature(
    server, path, body
):
    feature = "'a'" if path.startswith("reg") else "'image'"
    _refused(_post(server, path, body), feature, "flat list")


def test_lone_surrogates_are_refused_naming_the_feature(server):
    _refused(
        _post(server, "text:classify", b'{"examples": [{"text": "\\ud800"}]}'),
        "examples[0]: feature 'text'",
        "lone surrogate",
    )
    _refused(
        _post(
            server,
            "text:classify",
            b'{"context": {"text": ["ok", "\\udfff"]}, "examples": [{}]}',
        ),
        "context: feature 'text'",
        "lone surrogate",
    )
    # In a feature's name too (the name is written into the tf.Example).
    _refused(
        _post(
            server,
            "text:classify",
            b'{"examples": [{"text": "hi", "\\ud800": 1}]}',
        ),
        "examples[0]",
        "lone surrogate",
    )


@pytest.mark.parametrize("pixel", [300, 256, -1, 10**12])
def test_pixels_outside_uint8_are_refused_as_predict_refuses_them(
    server, pixel
):
    image = [0] * PIXELS
    image[5] = pixel
    predict = _refused(
        _post(server, "mnist:predict", {"instances": [[image[:28]] * 28]}),
        "uint8",
    )
    assert "[0, 255]" in predict
    _refused(
        _post(server, "mnist:classify", {"examples": [{"image": image}]}),
        "examples[0]: feature 'image'",
        "uint8",
        "[0, 255]",
        str(pixel),
    )
    _refused(
        _post(
            server,
            "mnist:classify",
            {"context": {"image": image}, "examples": [{}]},
        ),
        "context: feature 'image'",
        "[0, 255]",
    )


def test_booleans_are_not_numbers(server):
    _refused(
        _post(
            server, "mnist:classify", {"examples": [{"image": [True] * PIXELS}]}
        ),
        "feature 'image'",
        "uint8",
        "true/false",
    )
    _refused(
        _post(
            server,
            "mnist:classify",
            {"examples": [{"image": [True] + [1] * (PIXELS - 1)}]},
        ),
        "feature 'image'",
        "true/false",
    )
    _refused(
        _post(server, "reg:regress", {"examples": [{"a": [True, 1.5, 2.0]}]}),
        "feature 'a'",
        "true/false",
    )


@pytest.mark.parametrize(
    "values",
    [b"[1e39, 1, 2]", b"[1, -3.5e38, 2]", b"[1, 2, " + b"9" * 400 + b"]"],
    ids=["1e39", "-3.5e38", "400-digit-integer"],
)
def test_floats_beyond_float32_are_refused(server, values):
    _refused(
        _post(server, "reg:regress", b'{"examples": [{"a": ' + values + b"}]}"),
        "examples[0]: feature 'a'",
        "float32",
    )


def test_values_in_range_still_answer(server):
    classify = _post(
        server,
        "mnist:classify",
        {"examples": [{"image": [255] * PIXELS}, {"image": [0] * PIXELS}]},
    )
    assert classify.status_code == 200, classify.text
    assert len(classify.json()["results"]) == 2
    # Whole floats for an integer feature, ints for a float one, and the
    # float32 extremes (and infinity, which is no overflow) still go.
    whole = _post(
        server, "mnist:classify", {"examples": [{"image": [255.0] * PIXELS}]}
    )
    assert whole.status_code == 200, whole.text
    regress = _post(
        server,
        "reg:regress",
        b'{"examples": [{"a": [3.4e38, -1, 2]}, {"a": [Infinity, 0, 1]}]}',
    )
    assert regress.status_code == 200, regress.text
    assert len(regress.json()["results"]) == 2
    text = _post(server, "text:classify", {"examples": [{"text": "héllo"}]})
    assert text.status_code == 200, text.text


# -- the same rules without HTTP ---------------------------------------------


@pytest.mark.parametrize(
    ("value", "kind", "dtype", "message"),
    [
        ([256], "int64", "uint8", r"uint8 values in \[0, 255\]"),
        ([-129], "int64", "int8", r"int8 values in \[-128, 127\]"),
        ([2**31], "int64", "int32", "int32 values in"),
        ([True], "int64", "int32", "true/false"),
        ([1, 0], "int64", "bool", "bool values"),
        ([True, 1], "int64", "bool", "mixes true/false and numbers"),
        ([7e4], "float", "float16", "does not fit in float16"),
        ([1e39], "float", "float64", "does not fit in float32"),
        ([1e39], None, None, "does not fit in float32"),
        ([True], None, None, "true/false"),
        ([[1, 2], [3, 4]], "int64", "uint8", "flat list"),
        ([10**400, 1.5], "int64", "uint8", "whole numbers"),
    ],
    ids=[
        "uint8-256",
        "int8--129",
        "int32-2**31",
        "int32-true",
        "bool-ints",
        "bool-mixed",
        "float16-7e4",
        "float64-1e39",
        "untyped-1e39",
        "untyped-true",
        "nested",
        "huge-and-decimal",
    ],
)
def test_values_are_checked_against_the_input_they_feed(
    value, kind, dtype, message
):
    with pytest.raises(ServingError, match=message) as error:
        serialize_examples(
            [{"x": value}],
            kinds=kind and {"x": kind},
            dtypes=dtype and {"x": dtype},
        )
    assert error.value.status_code == 400
    assert "examples[0]: feature 'x'" in error.value.message


def test_a_deep_list_given_in_python_is_refused_without_recursing():
    deep: list = [0]
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(ServingError, match="flat list"):
        serialize_examples([{"x": deep}])


def test_values_that_fit_are_written_as_before():
    (blob,) = serialize_examples(
        [{"b": [True, False], "p": [0, 255.0], "h": [6e4, -1]}],
        kinds={"b": "int64", "p": "int64", "h": "float"},
        dtypes={"b": "bool", "p": "uint8", "h": "float16"},
    )
    feature = tf.train.Example.FromString(blob).features.feature
    assert feature["b"].int64_list.value == [1, 0]
    assert feature["p"].int64_list.value == [0, 255]
    assert feature["h"].float_list.value == [6e4, -1.0]


def test_the_exports_input_dtypes_reach_the_call(model_root):
    path = model_root / "mnist" / "1" / "assets.extra" / "aiservice_kit.json"
    metadata = json.loads(path.read_text())
    classification = SimpleNamespace(
        inputs={"inputs": SimpleNamespace(dtype="string")},
        outputs={"classes": None, "scores": None},
    )
    call = example_call(
        "classify", "", {"classification": classification}, metadata
    )
    assert call.kinds == {"image": "int64"}
    assert call.dtypes == {"image": "uint8"}


def _proto(**features) -> tf.train.Example:
    example = tf.train.Example()
    for name, (kind, values) in features.items():
        getattr(example.features.feature[name], kind).value.extend(values)
    return example


def test_grpc_example_protos_are_held_to_the_same_ranges():
    call = ExampleCall(
        "classify",
        "classification",
        {"image": "int64", "h": "float", "b": "int64"},
        {"image": "uint8", "h": "float16", "b": "bool"},
    )
    fine = _proto(
        image=("int64_list", [0, 255]),
        h=("float_list", [6e4]),
        b=("int64_list", [0, 7]),  # any integer casts to a bool
    )
    check_example_protos(
        [fine, _proto(), _proto(other=("int64_list", [9]))], call
    )
    with pytest.raises(
        ServingError, match=r"uint8 values in \[0, 255\]"
    ) as error:
        check_example_protos([fine, _proto(image=("int64_list", [256]))], call)
    assert "examples[1]: feature 'image'" in error.value.message
    with pytest.raises(ServingError, match="does not fit in float16"):
        check_example_protos([_proto(h=("float_list", [7e4]))], call)
    # Nothing narrower than the lists: nothing to check.
    check_example_protos(
        [_proto(image=("int64_list", [2**40]))],
        ExampleCall("classify", "classification", {"image": "int64"}, None),
    )


def test_a_context_copied_into_many_examples_is_bounded(server):
    # 40 kB of context in each of 1,000 examples would be 40 MB of
    # serialized examples (and as much model work) from a 48 kB body.
    answer = _post(
        server,
        "text:classify",
        {"context": {"text": "x" * 40_000}, "examples": [{}] * 1000},
    )
    assert answer.status_code == 413, answer.text
    assert "context copied into each" in answer.json()["error"]
