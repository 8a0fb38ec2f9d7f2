"""TF Serving's Classify and Regress, without JSON or gRPC: the shared core.

A Classify or Regress call hands a signature a [batch] string vector of
serialized `tf.Example`s (`EXAMPLES_INPUT`) and reads `classes`/`scores`
or `outputs` back. This module does both ends for every protocol that
speaks those APIs (REST `:classify`/`:regress`, gRPC `Classify`/`Regress`):

- `serialize_examples` turns examples given as plain values (one mapping
  of feature name to a value or a list per example, plus an optional
  shared `context`) into serialized `tf.Example`s. The protobuf is written
  here by hand (a `tf.Example` is three nested messages), so the server
  needs no TensorFlow to build it; `tf.train.Example.FromString` reads it
  back (tested).
- `check_example_protos` holds `tf.Example`s given as protos (gRPC's) to
  the same ranges, before they run.
- `example_signature` picks and checks the signature a call runs, with TF
  Serving's messages for a model that has none.
- `classify_results` and `regress_results` turn the signature's outputs
  into `[[(label, score), ...], ...]` and `[value, ...]`.

The feature kinds an export records (`metadata["signatures"][name]
["features"]`: `string`, `float` or `int64`) decide how a value is
encoded; without them a value's Python type does, as TF Serving does
(str/bytes: `bytes_list`, int: `int64_list`, float: `float_list`). The
values are refused as `:predict` refuses them (with `_codec`'s checks and
messages) for the dtype they end up in: the model input's, which the
signature casts the parsed feature to, where the export recorded it, and
always the list's own (int64, float32). So a pixel of 256 for a uint8
input, `true` for a number, a float beyond float32, a lone surrogate or
a nested list get a 400 naming the feature, never a wrapped value, an
infinity or a 500.
"""

import dataclasses
import reprlib
import sys
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import numpy as np

from aiservice_kit._layout import CLASSES_OUTPUT
from aiservice_kit._layout import CLASSIFY_SIGNATURE
from aiservice_kit._layout import REGRESS_OUTPUT
from aiservice_kit._layout import REGRESS_SIGNATURE
from aiservice_kit._layout import SCORES_OUTPUT
from aiservice_kit._layout import SERVING_SIGNATURE
from aiservice_kit.serving import _codec
from aiservice_kit.serving._errors import ServingError
from aiservice_kit.serving.config import MAX_MERGED_EXAMPLES_BYTES

#: The two APIs and the signature an aiservice_kit export names for each.
API_SIGNATURES = {"classify": CLASSIFY_SIGNATURE, "regress": REGRESS_SIGNATURE}
#: Feature kinds (the metadata's words) and their `Feature` field numbers.
_KIND_FIELDS = {"string": 1, "float": 2, "int64": 3}
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
#: The feature kind of each plain type (`_kind_of` for their subclasses).
_KINDS_OF_TYPES = {
    str: "string",
    bytes: "string",
    bool: "bool",
    int: "int64",
    float: "float",
}
#: Model input dtypes an `int64_list` feature may be cast to.
_INTEGER_DTYPES = frozenset(
    {"bool", "int8", "int16", "int32", "int64"}
    | {"uint8", "uint16", "uint32", "uint64"}
)


@dataclasses.dataclass(frozen=True)
class ExampleCall:
    """One Classify or Regress call, ready to run.

    Attributes:
        api: str. `"classify"` or `"regress"`.
        signature_name: str. The signature that runs.
        kinds: dict or None. The feature kind of each input, as the
            export recorded them (None: unknown, types decide).
        dtypes: dict or None. The dtype of the model input each feature
            feeds, as the export recorded them (None: unknown).
    """

    api: str
    signature_name: str
    kinds: dict[str, str] | None
    dtypes: dict[str, str] | None = None


# -- protobuf wire format (tf.Example) ---------------------------------------


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64 values: ten bytes, as protobuf
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _feature(kind: str, values: list[Any]) -> bytes:
    if kind == "string":
        body = b"".join(_field(1, value) for value in values)
    elif kind == "float":
        with np.errstate(over="ignore"):  # beyond float32: inf, as TF
            packed = np.asarray(values, dtype="<f4").tobytes()
        body = _field(1, packed)
    else:
        body = _field(1, b"".join(_varint(value) for value in values))
    return _field(_KIND_FIELDS[kind], body) if values else b""


def _example(features: Mapping[str, tuple[str, list[Any]]]) -> bytes:
    entries = b"".join(
        _field(
            1,
            _field(1, name.encode("utf-8")) + _field(2, _feature(kind, values)),
        )
        for name, (kind, values) in sorted(features.items())
    )
    return _field(1, entries)


# -- plain values -> features -------------------------------------------------


def _kind_of(value: Any) -> str | None:
    kind = _KINDS_OF_TYPES.get(type(value))  # the common case, quickly
    if kind is not None:
        return kind
    if isinstance(value, (str, bytes)):
        return "string"
    if isinstance(value, (bool, np.bool_)):  # before int: a bool is an int
        return "bool"
    if isinstance(value, (int, np.integer)):
        return "int64"
    if isinstance(value, (float, np.floating)):
        return "float"
    return None


def _values(
    where: str, name: str, value: Any, kind: str | None, dtype: str | None
) -> tuple[str, list[Any]]:
    """One feature's kind and values, refused as `:predict` refuses them.

    Args:
        where: str. `"examples[i]"` or `"context"`, for messages.
        name: str. The feature's name.
        value: Any. A value, or a flat list (or array) of them.
        kind: str or None. The feature's kind; None: the values' types
            decide (TF Serving's rule).
        dtype: str or None. The dtype of the model input the feature feeds
            (None: unknown; only the feature list's own range is checked).

    Returns:
        `(kind, values)`: bytes for a string feature, Python numbers else.

    Raises:
        ServingError: 400 naming the example and the feature.
    """
    _check_name(where, name)
    items = value if isinstance(value, (list, tuple)) else [value]
    if isinstance(value, np.ndarray):
        items = value.reshape(-1).tolist()
    found = {_kind_of(item) for item in items}
    if None in found:
        bad = next(item for item in items if _kind_of(item) is None)
        # reprlib shows a list nested thousands deep without recursing.
        raise ServingError(
            f"{where}: feature '{name}' must be a string, a number or a "
            f"flat list of them; received {type(bad).__name__} "
            f"{reprlib.repr(bad)}."
        )
    if kind is None:  # TF Serving's rule: the JSON type decides
        if found == {"string"}:
            kind = "string"
        elif "string" in found:
            raise ServingError(
                f"{where}: feature '{name}' mixes strings and numbers."
            )
        else:
            kind = "int64" if found in ({"int64"}, {"bool"}) else "float"
    if kind == "string":
        if found - {"string"}:
            raise ServingError(
                f"{where}: feature '{name}' expects strings (a bytes_list); "
                f"received {_describe(found)}."
            )
        return kind, [_utf8(where, name, item) for item in items]
    if "string" in found:
        raise ServingError(
            f"{where}: feature '{name}' expects {kind} numbers; received "
            "a string."
        )
    if "bool" in found and found != {"bool"}:
        raise ServingError(
            f"{where}: feature '{name}' mixes true/false and numbers."
        )
    if kind == "int64" and "float" in found:
        decimals = (item for item in items if _kind_of(item) == "float")
        if not all(float(item).is_integer() for item in decimals):
            raise ServingError(
                f"{where}: feature '{name}' expects whole numbers (an "
                "int64_list); received decimal numbers."
            )
    return kind, _numbers(where, name, items, kind, dtype)


def _numbers(
    where: str, name: str, items: list[Any], kind: str, dtype: str | None
) -> list[Any]:
    """An `int64_list` or `float_list` feature's values, checked by
    `_codec` as a `:predict` input of the dtype they end up in.

    The values are written into the feature's list (int64 or float32) and
    the signature casts the parsed feature to the model input's dtype:
    unchecked, an integer outside that dtype would wrap (256 as uint8 is
    0), a float beyond float32 (float16) would become infinity and `true`
    would be 1. `items` are all booleans or all numbers.
    """
    if not items:
        return []
    booleans = isinstance(items[0], (bool, np.bool_))
    if booleans:
        numbers = items  # `_codec` refuses them unless the input is bool
    elif kind == "float":
        numbers = [_as_float(item) for item in items]
    else:  # whole numbers (`_values` refused decimals)
        numbers = [int(item) for item in items]
        if min(numbers) < _INT64_MIN or max(numbers) > _INT64_MAX:
            raise ServingError(
                f"{where}: feature '{name}' has a value outside int64."
            )
    try:
        _codec.numeric_array(name, numbers, _checked_dtype(kind, dtype))
    except ServingError as error:
        raise _for_feature(where, name, error) from None
    return [int(item) for item in numbers] if booleans else numbers


def _checked_dtype(kind: str, dtype: str | None) -> str:
    """The dtype whose range a feature's values must fit: the model
    input's where it is narrower than the feature's list, else the list's
    (bfloat16 spans float32's range; a float64 input still gets float32)."""
    if kind == "float":
        return "float16" if dtype == "float16" else "float32"
    return dtype if dtype in _INTEGER_DTYPES else "int64"


def _as_float(item: Any) -> float:
    """A number as a float; an integer beyond every float becomes the
    largest float of its sign, which `_codec` refuses as an overflow."""
    try:
        return float(item)
    except OverflowError:
        return sys.float_info.max if item > 0 else -sys.float_info.max


def _utf8(where: str, name: str, item: str | bytes) -> bytes:
    """A string value's UTF-8 bytes (bytes pass as they are); a lone
    surrogate gets `_codec`'s refusal."""
    if isinstance(item, bytes):
        return item
    try:
        (encoded,), _ = _codec.string_leaves(name, item)
    except ServingError as error:
        raise _for_feature(where, name, error) from None
    return encoded


def _check_name(where: str, name: str) -> None:
    """Refuses a feature name UTF-8 cannot write (a lone surrogate)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise ServingError(
            f"{where}: the feature name {_codec.snippet(name)} is not valid "
            "Unicode text (it holds a lone surrogate, e.g. \\ud800)."
        ) from None


def _for_feature(where: str, name: str, error: ServingError) -> ServingError:
    """`_codec`'s refusal of input `name`, reworded for this feature."""
    message = error.message.replace(
        f"Input '{name}'", f"{where}: feature '{name}'", 1
    )
    return ServingError(message, error.status_code)


def _describe(kinds: set[str | None]) -> str:
    return " and ".join(sorted(f"{kind} values" for kind in kinds if kind))


def serialize_examples(
    examples: Sequence[Mapping[str, Any]],
    context: Mapping[str, Any] | None = None,
    kinds: Mapping[str, str] | None = None,
    dtypes: Mapping[str, str] | None = None,
) -> np.ndarray:
    """Serializes examples of plain values as `tf.Example` protos.

    Args:
        examples: list of dicts. One per example: feature name to a value
            (str, bytes, int, float, bool) or a flat list of them.
        context: dict or None. Features shared by every example (TF
            Serving's `context`; an example's own feature wins, as in
            `ExampleListWithContext`).
        kinds: dict or None. The feature kind (`"string"`, `"float"`,
            `"int64"`) of each name; values are converted to it. Names
            not in it take the kind of their values.
        dtypes: dict or None. The dtype of the model input each name feeds
            (`ExampleCall.dtypes`); values must fit it as a `:predict`
            input of that dtype must (a uint8 pixel in [0, 255]).

    Returns:
        A 1-D object array of serialized `tf.Example` bytes.

    Raises:
        ServingError: 400 naming the example and feature of a bad value.

    Example:
    ```python
    blobs = serialize_examples([{"x": 1.0}, {"x": 2.0}])
    # tf.train.Example.FromString(blobs[0]).features.feature["x"]
    ```
    """
    if not isinstance(examples, (list, tuple)) or not examples:
        raise ServingError(
            "'examples' must be a non-empty list of objects, one per "
            f"example; received {type(examples).__name__}."
        )
    kinds = dict(kinds or {})
    dtypes = dict(dtypes or {})
    shared: dict[str, tuple[str, list[Any]]] = {}
    for name, value in (context or {}).items():
        shared[name] = _values(
            "context", str(name), value, kinds.get(name), dtypes.get(name)
        )
    context_bytes = len(_example(shared)) if shared else 0
    merged_bytes = 0
    out = np.empty(len(examples), dtype=object)
    for index, example in enumerate(examples):
        if not isinstance(example, Mapping):
            raise ServingError(
                f"examples[{index}] must be an object of feature name to "
                f"value(s); received {type(example).__name__}."
            )
        features = dict(shared)
        for name, value in example.items():
            features[name] = _values(
                f"examples[{index}]",
                str(name),
                value,
                kinds.get(name),
                dtypes.get(name),
            )
        out[index] = _example(features)
        merged_bytes += len(out[index])
        if shared:
            # Checked as they are built, before the rest is copied.
            check_merged_size(
                context_bytes, len(examples) - index - 1, merged_bytes
            )
    return out


def check_merged_size(
    context_bytes: int, count: int, examples_bytes: int
) -> None:
    """Refuses examples that would outgrow `MAX_MERGED_EXAMPLES_BYTES`
    once the context is copied into each (TF Serving's flattening): a
    1 MB context and 1,024 empty examples would otherwise be 1 GB of
    serialized examples, and as much model work.

    Args:
        context_bytes: int. The serialized context's size.
        count: int. The examples.
        examples_bytes: int. The examples' own serialized size, together.

    Raises:
        ServingError: 413 with the size it would have.
    """
    merged = context_bytes * count + examples_bytes
    if merged > MAX_MERGED_EXAMPLES_BYTES:
        raise ServingError(
            f"The {count} examples with the context copied into each would "
            f"be {merged} bytes; at most {MAX_MERGED_EXAMPLES_BYTES} are "
            "accepted. Send fewer examples per call, or a smaller context.",
            413,
        )


def check_example_protos(examples: Sequence[Any], call: ExampleCall) -> None:
    """Refuses `tf.Example` protos (gRPC's) the signature's cast would
    change, with `serialize_examples`' messages.

    A proto's lists cannot hold a lone surrogate, a boolean or a float
    beyond float32, but an `int64_list` can hold a pixel of 256 for a
    uint8 input (the cast wraps it to 0) and a `float_list` a value beyond
    a float16 input; those are refused as `:predict` refuses them. A bool
    input takes any integer (nonzero is true, as TF casts).

    Args:
        examples: list of `tf.Example` messages, the context merged in.
        call: ExampleCall. The call (its `dtypes`; None: nothing known).

    Raises:
        ServingError: 400 naming the example and the feature.
    """
    narrow = {
        name: dtype
        for name, dtype in (call.dtypes or {}).items()
        if dtype in _INTEGER_DTYPES - {"bool", "int64"} or dtype == "float16"
    }
    for index, example in enumerate(examples if narrow else ()):
        features = example.features.feature
        for name, dtype in narrow.items():
            if name not in features:  # `features[name]` would add it
                continue
            feature = features[name]
            kind = feature.WhichOneof("kind")
            if kind == "int64_list" and dtype != "float16":
                values = list(feature.int64_list.value)
                _numbers(f"examples[{index}]", name, values, "int64", dtype)
            elif kind == "float_list" and dtype == "float16":
                values = list(feature.float_list.value)
                _numbers(f"examples[{index}]", name, values, "float", dtype)


# -- the signature -----------------------------------------------------------


def example_call(
    api: str,
    signature_name: str,
    available: Mapping[str, Any],
    metadata: Mapping[str, Any] | None,
) -> ExampleCall:
    """The signature a Classify or Regress call runs.

    TF Serving runs the named signature, `serving_default` when none is
    named. An aiservice_kit export serves Predict there and Classify or
    Regress under `classification`/`regression`, so an unnamed call runs
    that one when `serving_default` is not of this API.

    Args:
        api: str. `"classify"` or `"regress"`.
        signature_name: str. The name in the request ("" for none).
        available: dict. The version's signatures by name (each with
            `inputs` and `outputs` dicts).
        metadata: dict or None. The export's metadata.

    Returns:
        The `ExampleCall`.

    Raises:
        ServingError: 400, in TF Serving's words where it has them, for a
            missing signature or one that is not of this API.
    """
    name = signature_name
    if not name:
        name = SERVING_SIGNATURE
        fallback = API_SIGNATURES[api]
        if not _fits(api, available.get(name)) and fallback in available:
            name = fallback
    signature = available.get(name)
    if signature is None:
        raise ServingError(
            f"No signature was found with the name: {name} (this model's "
            f"signatures: {', '.join(sorted(available))})"
        )
    if not _fits(api, signature):
        wanted = (
            f"'{CLASSES_OUTPUT}' and/or '{SCORES_OUTPUT}'"
            if api == "classify"
            else f"'{REGRESS_OUTPUT}'"
        )
        raise ServingError(
            f"Expected {api} signature '{name}' to take one string input "
            f"(serialized tf.Examples) and return {wanted}; it takes "
            f"{sorted(signature.inputs)} and returns "
            f"{sorted(signature.outputs)}."
        )
    recorded = ((metadata or {}).get("signatures") or {}).get(name) or {}
    features = recorded.get("features")
    kinds = (
        {key: value["dtype"] for key, value in features.items()}
        if isinstance(features, dict)
        else None
    )
    return ExampleCall(api, name, kinds, _input_dtypes(kinds, metadata))


def _input_dtypes(
    kinds: Mapping[str, str] | None, metadata: Mapping[str, Any] | None
) -> dict[str, str] | None:
    """The dtype of the model input each feature feeds: an export's
    features are its model's inputs, by the same names, and the metadata's
    `inputs` records their dtypes (`uint8` where the feature is `int64`)."""
    inputs = (metadata or {}).get("inputs")
    if kinds is None or not isinstance(inputs, dict):
        return None
    return {
        name: inputs[name]["dtype"]
        for name in kinds
        if isinstance(inputs.get(name), dict)
        and isinstance(inputs[name].get("dtype"), str)
    }


def _fits(api: str, signature: Any) -> bool:
    if signature is None or len(signature.inputs) != 1:
        return False
    (info,) = signature.inputs.values()
    if info.dtype != "string":
        return False
    if api == "classify":
        return bool({CLASSES_OUTPUT, SCORES_OUTPUT} & set(signature.outputs))
    return REGRESS_OUTPUT in signature.outputs


def examples_input(signature: Any, serialized: np.ndarray) -> dict:
    """The signature's inputs: its one string input, the examples."""
    (name,) = signature.inputs
    return {name: serialized}


# -- results -----------------------------------------------------------------


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def classify_results(
    outputs: Mapping[str, np.ndarray],
) -> list[list[tuple[str, float]]]:
    """`classes` and `scores` as one list of (label, score) per example.

    A missing `classes` gives empty labels, a missing `scores` zero scores
    (TF Serving leaves them unset).

    Raises:
        ServingError: 500 when the two disagree in shape.
    """
    classes = outputs.get(CLASSES_OUTPUT)
    scores = outputs.get(SCORES_OUTPUT)
    reference = scores if scores is not None else classes
    if reference.ndim == 1:
        reference = reference.reshape(-1, 1)
    if reference.ndim != 2:
        raise ServingError(
            "Model error: classify outputs must be [batch, num_classes]; "
            f"received shape {list(reference.shape)}.",
            500,
        )
    if scores is not None:
        scores = scores.reshape(reference.shape)
    if classes is not None:
        if classes.size != reference.size:
            raise ServingError(
                f"Model error: '{CLASSES_OUTPUT}' has shape "
                f"{list(classes.shape)} but '{SCORES_OUTPUT}' "
                f"{list(reference.shape)}.",
                500,
            )
        classes = classes.reshape(reference.shape)
    return [
        [
            (
                "" if classes is None else _text(classes[row, column]),
                0.0 if scores is None else float(scores[row, column]),
            )
            for column in range(reference.shape[1])
        ]
        for row in range(reference.shape[0])
    ]


def regress_results(outputs: Mapping[str, np.ndarray]) -> list[float]:
    """`outputs` as one float per example.

    Raises:
        ServingError: 500 when the signature gives more than one value
            per example.
    """
    values = np.asarray(outputs[REGRESS_OUTPUT])
    if values.ndim > 2 or (values.ndim == 2 and values.shape[1] != 1):
        raise ServingError(
            f"Model error: '{REGRESS_OUTPUT}' must be one value per example; "
            f"it has shape {list(values.shape)}.",
            500,
        )
    return [float(value) for value in values.reshape(-1)]
