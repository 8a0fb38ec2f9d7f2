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
- `example_signature` picks and checks the signature a call runs, with TF
  Serving's messages for a model that has none.
- `classify_results` and `regress_results` turn the signature's outputs
  into `[[(label, score), ...], ...]` and `[value, ...]`.

The feature kinds an export records (`metadata["signatures"][name]
["features"]`: `string`, `float` or `int64`) decide how a value is
encoded; without them a value's Python type does, as TF Serving does
(str/bytes: `bytes_list`, int/bool: `int64_list`, float: `float_list`).
"""

import dataclasses
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
from aiservice_kit.serving._errors import ServingError

#: The two APIs and the signature an aiservice_kit export names for each.
API_SIGNATURES = {"classify": CLASSIFY_SIGNATURE, "regress": REGRESS_SIGNATURE}
#: Feature kinds (the metadata's words) and their `Feature` field numbers.
_KIND_FIELDS = {"string": 1, "float": 2, "int64": 3}
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


@dataclasses.dataclass(frozen=True)
class ExampleCall:
    """One Classify or Regress call, ready to run.

    Attributes:
        api: str. `"classify"` or `"regress"`.
        signature_name: str. The signature that runs.
        kinds: dict or None. The feature kind of each input, as the
            export recorded them (None: unknown, types decide).
    """

    api: str
    signature_name: str
    kinds: dict[str, str] | None


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
    if isinstance(value, (str, bytes)):
        return "string"
    if isinstance(value, (bool, np.bool_, int, np.integer)):
        return "int64"
    if isinstance(value, (float, np.floating)):
        return "float"
    return None


def _values(
    where: str, name: str, value: Any, kind: str | None
) -> tuple[str, list[Any]]:
    items = value if isinstance(value, (list, tuple)) else [value]
    if isinstance(value, np.ndarray):
        items = value.reshape(-1).tolist()
    found = {_kind_of(item) for item in items}
    if None in found:
        bad = next(item for item in items if _kind_of(item) is None)
        raise ServingError(
            f"{where}: feature '{name}' must be a string, a number or a "
            f"flat list of them; received {type(bad).__name__} {bad!r:.80}."
        )
    if kind is None:  # TF Serving's rule: the JSON type decides
        if found == {"string"}:
            kind = "string"
        elif found == {"int64"}:
            kind = "int64"
        elif found <= {"int64", "float"}:
            kind = "float"
        else:
            raise ServingError(
                f"{where}: feature '{name}' mixes strings and numbers."
            )
    if kind == "string":
        if found - {"string"}:
            raise ServingError(
                f"{where}: feature '{name}' expects strings (a bytes_list); "
                f"received {_describe(found)}."
            )
        return kind, [
            item.encode("utf-8") if isinstance(item, str) else item
            for item in items
        ]
    if "string" in found:
        raise ServingError(
            f"{where}: feature '{name}' expects {kind} numbers; received "
            "a string."
        )
    if kind == "float":
        return kind, [float(item) for item in items]
    if "float" in found and not all(float(item).is_integer() for item in items):
        raise ServingError(
            f"{where}: feature '{name}' expects whole numbers (an "
            "int64_list); received decimal numbers."
        )
    ints = [int(item) for item in items]
    if ints and (min(ints) < _INT64_MIN or max(ints) > _INT64_MAX):
        raise ServingError(
            f"{where}: feature '{name}' has a value outside int64."
        )
    return kind, ints


def _describe(kinds: set[str | None]) -> str:
    return " and ".join(sorted(f"{kind} values" for kind in kinds if kind))


def serialize_examples(
    examples: Sequence[Mapping[str, Any]],
    context: Mapping[str, Any] | None = None,
    kinds: Mapping[str, str] | None = None,
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
    shared: dict[str, tuple[str, list[Any]]] = {}
    for name, value in (context or {}).items():
        shared[name] = _values("context", name, value, kinds.get(name))
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
                f"examples[{index}]", str(name), value, kinds.get(name)
            )
        out[index] = _example(features)
    return out


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
    return ExampleCall(api, name, kinds)


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
