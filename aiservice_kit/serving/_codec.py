"""JSON <-> tensors, following TF Serving's REST rules (`util/json_tensor.cc`).

Requests come in the row format (`instances`) or the columnar format
(`inputs`); binary strings come as `{"b64": ...}`. Responses mirror the
request: `predictions` for rows, `outputs` for columns. Every refusal is a
`ServingError` (HTTP 400) that names the input and what was expected.

JSON is read and written with orjson where it gives what the standard
library would: a body orjson refuses (NaN, Infinity, a lone surrogate,
nesting beyond its limit, bad UTF-8) is parsed again by `json`, whose
rules and error messages hold; a numeric answer is written by orjson with
every number spelled as `json.dumps` spells it (`encode_predict_json`),
any other by `json`.
"""

import base64
import binascii
import dataclasses
import json
import re
from typing import Any

import numpy as np

try:
    import orjson
except ImportError:  # the `serving` extra installs it; `json` is enough
    orjson = None

from aiservice_kit._layout import SERVING_SIGNATURE
from aiservice_kit.serving._errors import ServingError
from aiservice_kit.serving.config import MAX_INPUT_AXES

#: The response key of a row-format answer (TF Serving's REST API).
ROW_RESULT_KEY = "predictions"
#: The response key of a columnar-format answer.
COLUMNAR_RESULT_KEY = "outputs"
ROW = "row"
COLUMNAR = "columnar"
_MAX_JSON_SNIPPET = 200
#: Below this magnitude `json.dumps` writes exponents (`1e-05`).
_SMALLEST_PLAIN_FLOAT = 1e-4
#: orjson's `0.0000ddd` (a number in [1e-5, 1e-4)) in compact JSON.
_SMALL_FLOAT = re.compile(rb"([\[,:-])0\.0000([1-9])(\d*)")
#: orjson's one-digit negative exponent (`1e-7`; `repr` writes `1e-07`).
_SHORT_EXPONENT = re.compile(rb"e-([1-9])(?=[,\]}])")


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """A named signature tensor: dtype name and shape (None = any size).

    Attributes:
        name: str. The key in the signature.
        dtype: str. Numpy-style name (`"uint8"`, `"float32"`, ...) or
            `"string"`.
        shape: tuple. Axes including the batch axis; None for any size.
            None for an unknown rank.
    """

    name: str
    dtype: str
    shape: tuple[int | None, ...] | None

    @property
    def tf_dtype_name(self) -> str:
        """The TensorFlow enum name, e.g. `DT_FLOAT`."""
        names = {
            "float32": "DT_FLOAT",
            "float64": "DT_DOUBLE",
            "float16": "DT_HALF",
            "bfloat16": "DT_BFLOAT16",
            "string": "DT_STRING",
            "bool": "DT_BOOL",
        }
        return names.get(self.dtype, "DT_" + self.dtype.upper())

    def describe(self) -> str:
        """Shape and dtype as text for error messages."""
        return f"dtype {self.dtype} and shape {_shape_text(self.shape)}"


def _shape_text(shape: tuple[int | None, ...] | None) -> str:
    if shape is None:
        return "[?]"
    return "[" + ", ".join("-1" if d is None else str(d) for d in shape) + "]"


def snippet(value: Any) -> str:
    """A client's JSON value, shortened for an error message.

    Args:
        value: any value parsed from JSON (nested beyond the recursion
            limit too).

    Returns:
        Its JSON text, cut after `_MAX_JSON_SNIPPET` characters.
    """
    try:
        text = json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        # Lone surrogates are dumped escaped; only a value nested beyond
        # the recursion limit gets here: name its type and first items.
        text = f"<a deeply nested {json_type(value)}>"
    if len(text) > _MAX_JSON_SNIPPET:
        text = text[:_MAX_JSON_SNIPPET] + "..."
    return text


def json_type(value: Any) -> str:
    """The JSON type of a parsed value, as TF Serving names it in errors."""
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def _is_b64(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and len(value) == 1
        and isinstance(value.get("b64"), str)
    )


def _is_named_object(value: Any) -> bool:
    return isinstance(value, dict) and not _is_b64(value)


def parse_json(body: bytes) -> dict[str, Any]:
    """Parses a request body; NaN and Infinity are accepted as in TF Serving.

    Raises:
        ServingError: 400 for an empty body, bad JSON or a non-object.
    """
    if not body.strip():
        raise ServingError("JSON Parse error: The document is empty")
    try:
        document = _loads(body)
    except RecursionError:
        raise ServingError(
            "JSON Parse error: the document is nested too deeply"
        ) from None
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError
        raise ServingError(f"JSON Parse error: {error}") from None
    if not isinstance(document, dict):
        raise ServingError(f"JSON Value: {snippet(document)} Is not object")
    return document


def _loads(body: bytes) -> Any:
    if orjson is not None:
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass  # TF Serving's extras (NaN, ...) and json's messages
    return json.loads(body)


def signature_name_of(document: dict[str, Any]) -> str:
    """The request's `signature_name` (default `serving_default`)."""
    name = document.get("signature_name", "")
    if not isinstance(name, str):
        raise ServingError(
            f"JSON Value: {snippet(name)} not formatted correctly. "
            "'signature_name' key must be a string value."
        )
    return name or SERVING_SIGNATURE


def string_leaves(name: str, value: Any) -> tuple[list[bytes], list[int]]:
    """Flattens nested lists of strings and `{"b64": ...}` objects.

    Args:
        name: str. The input's name, for error messages.
        value: a string, a b64 object, or nested lists of them.

    Returns:
        `(leaves, shape)`: the UTF-8 or decoded bytes in row-major order,
        and the nesting's shape.

    Raises:
        ServingError: a lone surrogate, a malformed b64 object or bad
            base64, ragged lists or a non-string leaf.
    """
    if isinstance(value, str):
        try:
            return [value.encode("utf-8")], []
        except UnicodeEncodeError:
            raise ServingError(
                f"Input '{name}': the string {snippet(value)} is not valid "
                "Unicode text (it holds a lone surrogate, e.g. \\ud800); "
                'send binary data as {"b64": "<base64>"}.'
            ) from None
    if isinstance(value, dict):
        if not _is_b64(value):
            raise ServingError(
                f"Input '{name}': JSON Value: {snippet(value)} not formatted "
                'correctly for base64 data (expected {"b64": "<base64>"}).'
            )
        try:
            return [base64.b64decode(value["b64"], validate=True)], []
        except (binascii.Error, ValueError):
            raise ServingError(
                f"Input '{name}': unable to base64 decode "
                f"{snippet(value['b64'])}."
            ) from None
    if isinstance(value, list):
        flat: list[bytes] = []
        inner: list[int] | None = None
        for item in value:
            leaves, shape = string_leaves(name, item)
            if inner is None:
                inner = shape
            elif shape != inner:
                raise ServingError(
                    f"Input '{name}': nested lists must be rectangular; "
                    f"found a list of shape {shape} beside {inner}."
                )
            flat.extend(leaves)
        return flat, [len(value), *(inner or [])]
    raise ServingError(
        f"Input '{name}': JSON Value: {snippet(value)} Type: "
        f"{json_type(value)} is not of expected type: string"
    )


def numeric_array(name: str, value: Any, dtype: str) -> np.ndarray:
    """Nested JSON numbers as an array of `dtype`, checked exactly.

    Args:
        name: str. The input's name, for error messages.
        value: nested lists of JSON numbers (or booleans for bool).
        dtype: str. The numpy dtype the input takes.

    Returns:
        A numpy array of `dtype`.

    Raises:
        ServingError: ragged lists, mixed types, or a value `dtype` cannot
            hold (out of range, a fraction for an integer input, a
            boolean for a number), naming the input and the value.
    """
    target = np.dtype(dtype)
    expected = f"Input '{name}' expects {dtype} values"
    try:
        array = np.asarray(value)
    except (ValueError, TypeError, OverflowError):
        raise ServingError(
            f"{expected} in rectangular nested lists; received "
            f"{snippet(value)} (lists of unequal length or mixed types)."
        ) from None
    kind = array.dtype.kind
    if array.size == 0:
        return array.astype(target)  # `[]` parses as float64: no values
    if kind == "b":
        if target.kind != "b":
            raise ServingError(f"{expected}; received true/false values.")
        return array
    if target.kind == "b":
        raise ServingError(f"{expected} (true/false); received {array.dtype}.")
    if kind in "iu" and target.kind in "iu":
        info = np.iinfo(target)
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise ServingError(
                f"{expected} in [{info.min}, {info.max}]; received values "
                f"in [{array.min()}, {array.max()}]."
            )
        return array.astype(target)
    if kind in "iuf":  # into a float input (whole numbers too: 10**5 in
        # float16 would be infinity)
        if kind == "f" and target.kind in "iu":
            raise ServingError(
                f"{expected} (whole numbers); received decimal numbers."
            )
        with np.errstate(over="ignore"):  # overflow is refused below
            converted = array.astype(target)
        lossy = np.isfinite(array) & ~np.isfinite(converted)
        if lossy.any():
            raise ServingError(
                f"{expected}; a value does not fit in {dtype} without loss "
                "of precision."
            )
        return converted
    received = "strings" if kind in "US" else "mixed or non-numeric values"
    raise ServingError(f"{expected}; received {received}: {snippet(value)}")


def to_tensor(name: str, value: Any, info: TensorInfo) -> np.ndarray:
    """Converts a JSON value to a numpy array for one signature input.

    Args:
        name: str. The input's name (for messages).
        value: Any. The decoded JSON value.
        info: TensorInfo. What the signature expects.

    Returns:
        A numpy array (object array of bytes for strings).

    Raises:
        ServingError: 400 naming the input and what was expected.
    """
    axes = _leading_axes(value)
    if axes > MAX_INPUT_AXES:
        raise ServingError(
            f"Input '{name}' is nested {axes} lists deep; at most "
            f"{MAX_INPUT_AXES} axes are accepted"
            + ("" if info.shape is None else f" (it expects {info.describe()})")
            + "."
        )
    try:
        if info.dtype == "string":
            flat, shape = string_leaves(name, value)
            array = np.empty(len(flat), dtype=object)
            array[:] = flat
            array = array.reshape(shape)
        else:
            array = numeric_array(name, value, info.dtype)
    except (RecursionError, ValueError) as error:
        # A ragged value nested deeper further in than its first item, or
        # more axes than numpy holds: a bad input, never a server error.
        raise ServingError(
            f"Input '{name}' expects {info.describe()}; received a value "
            f"numpy cannot hold as one array ({_first_line(error)})."
        ) from None
    check_shape(name, array, info)
    return array


def _leading_axes(value: Any) -> int:
    """How deep the first items nest (the rank of a rectangular value)."""
    axes = 0
    while isinstance(value, list):
        axes += 1
        if not value:
            break
        value = value[0]
    return axes


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def check_shape(name: str, array: np.ndarray, info: TensorInfo) -> None:
    """Checks an array against a signature shape (None axes match any)."""
    wrong = info.shape is not None and (
        array.ndim != len(info.shape)
        or any(
            want is not None and want != got
            for want, got in zip(info.shape, array.shape, strict=False)
        )
    )
    if array.size == 0 and (
        wrong or info.shape is None or not array.ndim or not array.shape[0]
    ):
        raise ServingError(
            f"Input '{name}' is empty (received shape {list(array.shape)}, "
            f"no values); it expects {info.describe()} with at least one "
            "instance."
        )
    if wrong:
        raise ServingError(
            f"Input '{name}' expects shape {_shape_text(info.shape)} "
            f"(-1 = any size; the first axis is the batch) and dtype "
            f"{info.dtype}; received shape {list(array.shape)}."
        )


def decode_predict(
    document: dict[str, Any], inputs: dict[str, TensorInfo]
) -> tuple[dict[str, np.ndarray], str, int]:
    """Turns a predict request into input arrays.

    Args:
        document: dict. The parsed JSON body.
        inputs: dict. The signature's inputs by name.

    Returns:
        `(arrays, format, instances)`: the arrays by input name, `"row"` or
        `"columnar"`, and the number of instances (the batch size).

    Raises:
        ServingError: 400 with TF Serving's wording where it has one.
    """
    has_rows = "instances" in document
    has_columns = "inputs" in document
    if has_rows and has_columns:
        raise ServingError(
            f"JSON Value: {snippet(document)} Not formatted correctly "
            "expecting only one of 'inputs' or 'instances' keys to exist "
        )
    if has_rows:
        arrays = _decode_rows(document["instances"], inputs)
        fmt = ROW
    elif has_columns:
        arrays = _decode_columns(document["inputs"], inputs)
        fmt = COLUMNAR
    else:
        raise ServingError("Missing 'inputs' or 'instances' key")
    first = next(iter(arrays.values()))
    instances = int(first.shape[0]) if first.ndim else 1
    return arrays, fmt, instances


def _decode_rows(
    instances: Any, inputs: dict[str, TensorInfo]
) -> dict[str, np.ndarray]:
    if not isinstance(instances, list):
        raise ServingError(
            f"JSON Value: {snippet(instances)} Excepting 'instances' to be "
            "an list/array"
        )
    if not instances:
        raise ServingError("JSON Value: [] No values in 'instances' array")
    names = sorted(inputs)
    objects = _is_named_object(instances[0])
    if not objects and len(names) > 1:
        raise ServingError(
            "instances is a plain list, but expecting list of objects as "
            "multiple input tensors required as per tensorinfo_map (inputs: "
            + ", ".join(names)
            + ")"
        )
    if not objects:
        for index, item in enumerate(instances):
            if _is_named_object(item):
                raise ServingError(
                    "Expecting value/list but got object at item "
                    f"{index} of input list"
                )
        name = names[0]
        return {name: _rows_to_tensor(name, instances, inputs[name])}
    columns: dict[str, list[Any]] = {name: [] for name in names}
    for index, item in enumerate(instances):
        if not _is_named_object(item):
            raise ServingError(
                f"Expecting object but got list at item {index} of input list"
            )
        if set(item) != set(names):
            raise ServingError(
                f"Failed to process element: {index} of 'instances' list. "
                f"JSON object: {snippet(item)} must only have keys: "
                + ",".join(names)
            )
        for name in names:
            columns[name].append(item[name])
    return {
        name: _rows_to_tensor(name, columns[name], inputs[name])
        for name in names
    }


def _rows_to_tensor(name: str, rows: list[Any], info: TensorInfo) -> np.ndarray:
    try:
        return to_tensor(name, rows, info)
    except ServingError as error:
        if info.shape is None or "rectangular" not in error.message:
            raise
        raise ServingError(
            f"Input '{name}': every instance must have the same shape, "
            f"{_shape_text(info.shape[1:])} (-1 = any size); the instances "
            "differ."
        ) from None


def _decode_columns(
    value: Any, inputs: dict[str, TensorInfo]
) -> dict[str, np.ndarray]:
    names = sorted(inputs)
    if not _is_named_object(value):
        if len(names) > 1:
            raise ServingError(
                "inputs is a plain value/list, but expecting an object as "
                "multiple input tensors required as per tensorinfo_map "
                "(inputs: " + ", ".join(names) + ")"
            )
        return {names[0]: to_tensor(names[0], value, inputs[names[0]])}
    arrays = {}
    for name in names:
        if name not in value:
            raise ServingError(
                f"Missing named input: {name} in 'inputs' object."
            )
        arrays[name] = to_tensor(name, value[name], inputs[name])
    unknown = sorted(set(value) - set(names))
    if unknown:
        # As the row format refuses them: a misspelt input is not dropped.
        raise ServingError(
            f"Unknown named input(s) in 'inputs' object: "
            f"{snippet(unknown)}; this model's inputs: {', '.join(names)}."
        )
    return arrays


def _output_value(name: str, array: np.ndarray) -> Any:
    if array.dtype == object or array.dtype.kind == "S":
        binary = name.endswith("_bytes")

        def convert(item: bytes) -> Any:
            if not binary:
                try:
                    return item.decode("utf-8")
                except UnicodeDecodeError:
                    pass
            return {"b64": base64.b64encode(item).decode("ascii")}

        flat = [convert(item) for item in array.reshape(-1)]
        if array.ndim == 0:
            return flat[0]
        nested = np.empty(len(flat), dtype=object)
        nested[:] = flat
        return nested.reshape(array.shape).tolist()
    return array.tolist()


def _orjson_ready(name: str, array: np.ndarray) -> bool:
    """Whether orjson writes this output as `json.dumps` would (after
    `_python_spelling`): numbers, finite, under an identifier's name (no
    "-" or "." a respelling could match)."""
    kind = array.dtype.kind
    return (
        name.isascii()
        and name.isidentifier()
        and (kind in "iub" or (kind == "f" and bool(np.isfinite(array).all())))
    )


def _small_float(match: re.Match) -> bytes:
    start, first, rest = match.groups()
    return start + first + (b"." + rest if rest else b"") + b"e-05"


def _python_spelling(text: bytes) -> bytes:
    """orjson's spelling of small numbers, as `repr` spells them."""
    if b"0.0000" in text:
        text = _SMALL_FLOAT.sub(_small_float, text)
    if b"e-" in text:
        text = _SHORT_EXPONENT.sub(rb"e-0\1", text)
    return text


def encode_predict_json(outputs: dict[str, np.ndarray], fmt: str) -> bytes:
    """`encode_predict` written as JSON bytes, numbers spelled as
    `json.dumps` (Python's `repr`) spells them, with orjson's speed.

    orjson prints the same shortest digits as `repr`, but writes
    magnitudes in [1e-5, 1e-4) as `0.0000ddd` (`repr`: `d.dde-05`) and
    exponents below without padding (`1e-7`, `repr`: `1e-07`); these two
    spellings are rewritten. Answers with strings, NaN or infinities are
    written by `json` (TF Serving's `NaN`/`Infinity`).

    Args:
        outputs: dict of numpy arrays. The signature's outputs.
        fmt: str. `"row"` or `"columnar"`, as the request came.

    Returns:
        The UTF-8 JSON body.

    Raises:
        ServingError: 400 when row-format outputs disagree on batch size.

    Example:
    ```python
    encode_predict_json({"y": np.array([3.5, 1e-7])}, "row")
    # b'{"predictions":[3.5,1e-07]}'
    ```
    """
    answer = encode_predict(outputs, fmt)
    if orjson is not None and all(
        _orjson_ready(name, array) for name, array in outputs.items()
    ):
        return _python_spelling(orjson.dumps(answer))
    return json.dumps(answer).encode("utf-8")


def encode_predict(outputs: dict[str, np.ndarray], fmt: str) -> dict[str, Any]:
    """Builds the `predictions` (row) or `outputs` (columnar) response.

    One output: its value directly. Several: a list of objects per instance
    (rows) or an object of tensors (columns), as TF Serving does.

    Raises:
        ServingError: 400 when row-format outputs disagree on batch size.
    """
    names = sorted(outputs)
    if fmt == COLUMNAR:
        if len(names) == 1:
            return {
                COLUMNAR_RESULT_KEY: _output_value(names[0], outputs[names[0]])
            }
        return {
            COLUMNAR_RESULT_KEY: {
                name: _output_value(name, outputs[name]) for name in names
            }
        }
    if len(names) == 1:
        return {ROW_RESULT_KEY: _output_value(names[0], outputs[names[0]])}
    batch = None
    values = {}
    for name in names:
        array = outputs[name]
        size = array.shape[0] if array.ndim else None
        if batch is None:
            batch = size
        if size is None or size != batch:
            raise ServingError(
                f"Tensor name: {name} has inconsistent batch size: {size} "
                f"expecting: {batch}"
            )
        values[name] = _output_value(name, array)
    return {
        ROW_RESULT_KEY: [
            {name: values[name][index] for name in names}
            for index in range(batch or 0)
        ]
    }
