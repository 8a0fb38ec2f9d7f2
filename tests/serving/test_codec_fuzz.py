"""Property-based fuzzing of the JSON codec: any input is decoded or refused.

Beside the schemathesis run over HTTP (`test_fuzz.py`), hypothesis feeds
the codec itself arbitrary JSON values (lone surrogates, deep and ragged
nesting, huge and non-finite numbers, b64 objects) for inputs of every
dtype the server meets. Every outcome must be arrays of the signature's
dtype or a `ServingError` with status 400; any other exception would be a
500 from the server.
"""

import json

import hypothesis
import numpy as np
import pytest
from hypothesis import strategies as st

from aiservice_kit.serving._admission import count_instances
from aiservice_kit.serving._admission import count_instances_in_json
from aiservice_kit.serving._codec import TensorInfo
from aiservice_kit.serving._codec import decode_predict
from aiservice_kit.serving._codec import parse_json
from aiservice_kit.serving._codec import to_tensor
from aiservice_kit.serving._errors import ServingError
from aiservice_kit.serving.config import MAX_INPUT_AXES

SIGNATURES = {
    "float": {"x": TensorInfo("x", "float32", (None, 3))},
    "int": {"ids": TensorInfo("ids", "int64", (None, None))},
    "uint8": {"image": TensorInfo("image", "uint8", (None, 2, 2))},
    "bool": {"flag": TensorInfo("flag", "bool", (None,))},
    "string": {"text": TensorInfo("text", "string", (None,))},
    "bytes": {"image_bytes": TensorInfo("image_bytes", "string", (None,))},
    "unknown_rank": {"x": TensorInfo("x", "float32", None)},
    "multi": {
        "tag": TensorInfo("tag", "string", (None,)),
        "signal": TensorInfo("signal", "float32", (None, 2)),
    },
}

SETTINGS = hypothesis.settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)

# Text including lone surrogates (category Cs), which JSON can carry as
# "\ud800" escapes and UTF-8 cannot encode.
_text = st.text(st.characters(codec=None), max_size=8)
_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    _text,
    st.builds(lambda s: {"b64": s}, st.sampled_from(["", "AAEC", "@@", "a"])),
)
_json = st.recursive(
    _leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(["x", "tag", "signal", "b64"]), inner),
    ),
    max_leaves=30,
)


def _deep(depth: int, leaf) -> list:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def _check(document, inputs) -> None:
    try:
        arrays, fmt, count = decode_predict(document, inputs)
    except ServingError as error:
        assert error.status_code == 400
        assert error.message
        json.dumps({"error": error.message})  # the reply can be written
        return
    assert fmt in ("row", "columnar")
    assert count >= 1
    for name, array in arrays.items():
        want = inputs[name].dtype
        assert array.dtype == (object if want == "string" else np.dtype(want))


@pytest.mark.parametrize("signature", sorted(SIGNATURES))
@SETTINGS
@hypothesis.given(value=_json, key=st.sampled_from(["instances", "inputs"]))
def test_any_json_value_is_decoded_or_refused_with_400(signature, value, key):
    _check({key: value}, SIGNATURES[signature])


@SETTINGS
@hypothesis.given(body=st.binary(max_size=64))
def test_any_body_bytes_parse_or_are_refused_with_400(body):
    try:
        document = parse_json(body)
    except ServingError as error:
        assert error.status_code == 400
        return
    assert isinstance(document, dict)


@pytest.mark.parametrize("signature", sorted(SIGNATURES))
@pytest.mark.parametrize("depth", [MAX_INPUT_AXES + 1, 65, 960, 5000])
@pytest.mark.parametrize("leaf", ["a", 1, 0.5, {"b64": "AA=="}])
def test_deep_nesting_is_refused_with_400_naming_the_input(
    signature, depth, leaf
):
    inputs = SIGNATURES[signature]
    with pytest.raises(ServingError) as caught:
        decode_predict({"instances": _deep(depth, leaf)}, inputs)
    assert caught.value.status_code == 400
    message = caught.value.message
    assert "nested" in message or "instances" in message


def test_ragged_nesting_deep_inside_is_refused_with_400():
    for info in (SIGNATURES["float"], SIGNATURES["string"]):
        name = next(iter(info))
        document = {"inputs": [[1], _deep(5000, 1)]}
        with pytest.raises(ServingError) as caught:
            decode_predict(document, info)
        assert caught.value.status_code == 400
        assert f"'{name}'" in caught.value.message


def test_a_lone_surrogate_is_refused_with_400_naming_the_input():
    document = parse_json(b'{"instances": ["\\ud800"]}')
    with pytest.raises(ServingError) as caught:
        decode_predict(document, SIGNATURES["string"])
    assert caught.value.status_code == 400
    assert "'text'" in caught.value.message
    assert "surrogate" in caught.value.message


@pytest.mark.parametrize(
    ("signature", "value"),
    [("int", []), ("float", [[]]), ("int", {"ids": []}), ("uint8", [[[]]])],
)
def test_an_empty_input_is_refused_as_empty(signature, value):
    with pytest.raises(ServingError) as caught:
        decode_predict({"inputs": value}, SIGNATURES[signature])
    assert "empty" in caught.value.message
    assert "decimal" not in caught.value.message


# -- Counting instances on the raw bytes -------------------------------------

# Keys that matter to the count, keys that look like them, and b64.
_key = st.sampled_from(
    ["instances", "inputs", "x", "b64", "in\\u0070uts", 'a"b', "[", "a,b:"]
)
_request = st.dictionaries(
    _key,
    st.one_of(
        _json,
        st.dictionaries(_key, _json, max_size=3),
        st.lists(_json, max_size=6),
    ),
    max_size=4,
)


def _spellings(document) -> list[bytes]:
    """The document as clients write it: compact, spaced and indented."""
    return [
        json.dumps(document, separators=(",", ":")).encode(),
        json.dumps(document, ensure_ascii=False).encode(
            "utf-8", "surrogatepass"
        ),
        json.dumps(document, indent=2).encode(),
    ]


@SETTINGS
@hypothesis.given(document=_request)
def test_the_count_on_raw_bytes_equals_the_count_after_parsing(document):
    """What admits (or refuses) a large body before its parse must be the
    count the parsed document gives; when the bytes don't say, None."""
    for body in _spellings(document):
        try:
            parsed = parse_json(body)
        except ServingError:
            continue  # a lone surrogate written raw: refused by the parse
        counted = count_instances_in_json(body)
        if counted is not None:
            assert counted == count_instances(parsed), body


@pytest.mark.parametrize(
    ("body", "count"),
    [
        (b'{"instances": [[1, 2], [3, 4]]}', 2),
        (b' {"instances" : [ ] } ', 0),
        (b'{"instances": ["a,b", "[", "\\"]"]}', 3),
        (b'{"inputs": {"x": [1, 2, 3], "y": [4]}}', 3),
        (b'{"inputs": [[0]], "instances": [[1], [2]]}', 2),
        (b'{"instances": [1], "instances": [1, 2, 3]}', 3),
        (b'{"signature_name": "a\\\\", "instances": [{"b64": "AA"}, 1]}', 2),
        # Not said by the bytes: counted after the parse instead.
        (b'{"instances": 5}', None),
        (b'{"inputs": {"b64": "AA=="}}', None),
        (b'{"inst\\u0061nces": [1, 2]}', None),
        (b'{"instances": [1, 2]', None),
        (b'[{"instances": [1, 2]}]', None),
        (b'{"instances": "[1, 2]}', None),
        (b"", None),
    ],
)
def test_the_count_on_raw_bytes(body, count):
    assert count_instances_in_json(body) == count


def test_whole_numbers_that_a_float16_input_cannot_hold_are_refused():
    info = TensorInfo("x", "float16", (None,))
    assert to_tensor("x", [65504, 1], info).tolist() == [65504.0, 1.0]
    with pytest.raises(ServingError, match="does not fit in float16"):
        to_tensor("x", [100000], info)  # would be infinity
