"""The Open Inference Protocol (KServe V2) over REST: typed tensors.

An infer request names each input tensor with its `shape`, `datatype`
(`BOOL`, `UINT8` ... `INT64`, `FP16`, `FP32`, `FP64`, `BYTES`) and its
`data`, flattened in row-major order (nested lists are accepted too); the
answer lists the outputs the same way. The binary tensor extension
(Triton's, which `tritonclient` uses by default) is supported both ways:
a request whose `Inference-Header-Content-Length` header gives the size
of its JSON part carries each input with `parameters.binary_data_size`
as raw bytes after it (BYTES elements as a 4-byte little-endian length
and the bytes), and outputs asked for with `binary_data` (or every output,
with the request's `binary_data_output`) come back the same way.

A call runs the version's `serving_default` signature, or the one named
by the request's `parameters.signature_name`. This module decodes and
encodes; `_predict.predict` meters, counts and runs it.
"""

import json
import math
import struct
from typing import Any

import numpy as np

from aiservice_kit._layout import SERVING_SIGNATURE
from aiservice_kit._version import __version__
from aiservice_kit.serving._codec import TensorInfo
from aiservice_kit.serving._codec import check_shape
from aiservice_kit.serving._codec import json_type
from aiservice_kit.serving._codec import parse_json
from aiservice_kit.serving._codec import snippet
from aiservice_kit.serving._errors import ServingError
from aiservice_kit.serving._predict import DecodedRequest
from aiservice_kit.serving.config import MAX_INPUT_AXES

#: The HTTP header giving the size of the JSON part of a binary body.
HEADER_LENGTH = "Inference-Header-Content-Length"
#: What `GET /v2` answers (the binary tensor extension is Triton's name).
SERVER_NAME = "aiservice_kit"
EXTENSIONS = ("binary_tensor_data",)
PLATFORM = "tensorflow_savedmodel"

#: V2 datatypes and numpy dtypes (BYTES: object arrays of bytes).
_NUMPY = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
}
_DATATYPE = {value: key for key, value in _NUMPY.items()}
#: The largest axis numpy can hold (its sizes are `intp`).
_MAX_AXIS = int(np.iinfo(np.intp).max)


def datatype_of(dtype: str) -> str:
    """The V2 datatype of a signature dtype name (`string`: BYTES)."""
    if dtype == "string":
        return "BYTES"
    return _DATATYPE.get(dtype, dtype.upper())


def _shape(info: TensorInfo) -> list[int]:
    if info.shape is None:
        return []
    return [-1 if axis is None else axis for axis in info.shape]


def _tensor_metadata(tensors: dict[str, TensorInfo]) -> list[dict]:
    return [
        {
            "name": name,
            "datatype": datatype_of(info.dtype),
            "shape": _shape(info),
        }
        for name, info in sorted(tensors.items())
    ]


def server_metadata() -> dict[str, Any]:
    """`GET /v2`."""
    return {
        "name": SERVER_NAME,
        "version": __version__,
        "extensions": list(EXTENSIONS),
    }


def model_metadata(name: str, versions: list[int], servable: Any) -> dict:
    """`GET /v2/models/{name}[/versions/{v}]`: `serving_default`'s tensors."""
    signature = servable.signature(SERVING_SIGNATURE)
    return {
        "name": name,
        "versions": [str(version) for version in versions],
        "platform": PLATFORM,
        "inputs": _tensor_metadata(signature.inputs),
        "outputs": _tensor_metadata(signature.outputs),
    }


# -- request ---------------------------------------------------------------


def _split(data: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return data, b""
    try:
        size = int(header_length)
    except ValueError:
        size = -1
    if not 0 <= size <= len(data):
        raise ServingError(
            f"{HEADER_LENGTH} must be the size of the JSON part of the "
            f"body, between 0 and {len(data)}; received "
            f"{snippet(header_length)}."
        )
    return data[:size], data[size:]


def _parse_bytes_elements(name: str, chunk: bytes) -> list[bytes]:
    items, offset = [], 0
    while offset < len(chunk):
        if offset + 4 > len(chunk):
            raise ServingError(
                f"Input '{name}': binary BYTES data ends inside an element's "
                "4-byte length."
            )
        (size,) = struct.unpack_from("<I", chunk, offset)
        offset += 4
        if offset + size > len(chunk):
            raise ServingError(
                f"Input '{name}': binary BYTES element of {size} bytes runs "
                "past the end of its data."
            )
        items.append(chunk[offset : offset + size])
        offset += size
    return items


def _flat(name: str, data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def _to_signature_dtype(
    name: str, array: np.ndarray, datatype: str, info: TensorInfo
) -> np.ndarray:
    if info.dtype == "string":
        if datatype != "BYTES":
            raise ServingError(
                f"Input '{name}' expects datatype BYTES; received {datatype}."
            )
        return array
    if datatype == "BYTES":
        raise ServingError(
            f"Input '{name}' expects datatype {datatype_of(info.dtype)}; "
            "received BYTES."
        )
    target = np.dtype(info.dtype)
    if array.dtype == target:
        return array
    source = array.dtype
    expected = f"Input '{name}' expects datatype {datatype_of(info.dtype)}"
    if (source.kind == "b") != (target.kind == "b"):
        raise ServingError(f"{expected}; received {datatype}.")
    if source.kind == "f" and target.kind in "iu":
        raise ServingError(f"{expected} (whole numbers); received {datatype}.")
    return _cast(name, array, target)


def _limits(dtype: np.dtype) -> tuple[int | float, int | float]:
    """The smallest and largest finite values of a numeric dtype."""
    if dtype.kind in "iu":
        limits = np.iinfo(dtype)
        return int(limits.min), int(limits.max)
    largest = float(np.finfo(dtype).max)
    return -largest, largest


def _unfit(name: str, dtype: np.dtype, value: Any) -> ServingError:
    """The 400 for a value that `dtype` cannot hold (None: not known)."""
    datatype = datatype_of(dtype.name)
    low, high = (
        f"{bound:.8g}" if isinstance(bound, float) else str(bound)
        for bound in _limits(dtype)
    )
    shown = "a value" if value is None else f"the value {snippet(value)}"
    loss = " without loss of precision" if dtype.kind == "f" else ""
    return ServingError(
        f"Input '{name}': {shown} does not fit in {datatype}{loss}; "
        f"{datatype} values must lie in [{low}, {high}]."
    )


def _first_unfit(items: list[Any], dtype: np.dtype) -> Any:
    """The first finite JSON number outside `dtype`'s range (or None)."""
    low, high = _limits(dtype)
    for item in items:
        # NaN compares false; an explicit infinity is no overflow.
        if (item < low or item > high) and item not in (math.inf, -math.inf):
            return item
    return None


def _cast(name: str, array: np.ndarray, target: np.dtype) -> np.ndarray:
    """Converts a numeric array to `target`, refusing (400) a value out of
    an integer target's range or one a float target would turn into an
    infinity, as REST `:predict` does."""
    if np.can_cast(array.dtype, target):
        return array.astype(target, copy=False)
    if target.kind in "iu":
        low, high = _limits(target)
        if array.size and array.min() < low:
            raise _unfit(name, target, array.min().item())
        if array.size and array.max() > high:
            raise _unfit(name, target, array.max().item())
        return array.astype(target)
    with np.errstate(over="ignore"):  # overflow is refused below
        converted = array.astype(target)
    if np.isinf(converted).any():  # one pass when nothing overflowed
        lossy = np.isfinite(array) & np.isinf(converted)
        if lossy.any():
            raise _unfit(name, target, array[lossy][0].item())
    return converted


def _input_array(
    tensor: Any, info: TensorInfo, binary: bytes, offset: int
) -> tuple[np.ndarray, int]:
    name = tensor["name"]
    shape = tensor.get("shape")
    datatype = tensor.get("datatype")
    if not isinstance(datatype, str) or (
        datatype not in _NUMPY and datatype != "BYTES"
    ):
        raise ServingError(
            f"Input '{name}': unknown datatype {snippet(datatype)}; expected "
            "one of " + ", ".join([*_NUMPY, "BYTES"]) + "."
        )
    _check_request_shape(name, shape, info)
    count = math.prod(shape)
    parameters = _parameters(f"Input '{name}'", tensor)
    size = parameters.get("binary_data_size")
    if size is not None:
        if (
            not isinstance(size, int)
            or isinstance(size, bool)
            or size < 0
            or offset + size > len(binary)
        ):
            raise ServingError(
                f"Input '{name}': binary_data_size {snippet(size)} runs past "
                f"the {len(binary) - offset} binary bytes left in the body."
            )
        chunk = binary[offset : offset + size]
        offset += size
        if datatype == "BYTES":
            items: list[Any] = _parse_bytes_elements(name, chunk)
        else:
            width = np.dtype(_NUMPY[datatype]).itemsize
            if size != count * width:
                raise ServingError(
                    f"Input '{name}': {size} binary bytes for shape {shape} "
                    f"of {datatype} (expected {count * width})."
                )
            items = []
            array = np.frombuffer(chunk, dtype=_NUMPY[datatype])
    elif "data" in tensor:
        items = _flat(name, tensor["data"])
    else:
        raise ServingError(f"Input '{name}' has no 'data'.")
    if size is None or datatype == "BYTES":
        if len(items) != count:
            raise ServingError(
                f"Input '{name}': shape {shape} needs {count} values; "
                f"received {len(items)}."
            )
        array = _json_values(name, items, datatype)
    try:
        array = array.reshape(shape)
    except ValueError:  # e.g. [0, 2**62, 2**62]: no values, yet too big
        raise ServingError(
            f"Input '{name}': shape {shape} is larger than one array can "
            f"be; it expects {info.describe()}."
        ) from None
    array = _to_signature_dtype(name, array, datatype, info)
    check_shape(name, array, info)
    return array, offset


def _check_request_shape(name: str, shape: Any, info: TensorInfo) -> None:
    """Refuses a `shape` that is not a list of at most `MAX_INPUT_AXES`
    axes numpy can hold, as REST `:predict` limits its nesting."""
    if not isinstance(shape, list) or not all(
        isinstance(axis, int)
        and not isinstance(axis, bool)
        and 0 <= axis <= _MAX_AXIS
        for axis in shape
    ):
        raise ServingError(
            f"Input '{name}': 'shape' must be a list of non-negative "
            f"integers of at most {_MAX_AXIS}; received {snippet(shape)}."
        )
    if len(shape) > MAX_INPUT_AXES:
        raise ServingError(
            f"Input '{name}': 'shape' has {len(shape)} axes; at most "
            f"{MAX_INPUT_AXES} are accepted (it expects {info.describe()})."
        )


def _json_values(name: str, items: list[Any], datatype: str) -> np.ndarray:
    """The flat array of a tensor's values in its `datatype`: JSON `data`,
    or the elements of binary BYTES data (bytes)."""
    if datatype == "BYTES":
        if not all(isinstance(item, (str, bytes)) for item in items):
            raise ServingError(f"Input '{name}': BYTES data must be strings.")
        array = np.empty(len(items), dtype=object)
        array[:] = [
            _utf8(name, item) if isinstance(item, str) else item
            for item in items
        ]
        return array
    kinds = {type(item) for item in items}
    if not kinds <= {int, float, bool}:
        raise ServingError(
            f"Input '{name}': {datatype} data must be numbers; received "
            + ", ".join(sorted(kind.__name__ for kind in kinds))
            + "."
        )
    if (bool in kinds) != (datatype == "BOOL") and items:
        raise ServingError(
            f"Input '{name}': true/false values are BOOL data only."
        )
    if datatype == "BOOL" and kinds != {bool}:
        raise ServingError(
            f"Input '{name}': BOOL data must be true/false only; received "
            "numbers too."
        )
    if float in kinds and np.dtype(_NUMPY[datatype]).kind in "iu":
        if not all(float(item).is_integer() for item in items):
            raise ServingError(
                f"Input '{name}': {datatype} data must be whole numbers."
            )
    target = np.dtype(_NUMPY[datatype])
    try:
        # Floats are read as float64 (as JSON numbers are), then narrowed
        # with an overflow check; numpy refuses an integer out of range.
        array = np.asarray(
            items, dtype=np.float64 if target.kind == "f" else target
        )
    except (OverflowError, ValueError):
        raise _unfit(name, target, _first_unfit(items, target)) from None
    return _cast(name, array, target)


def _utf8(name: str, text: str) -> bytes:
    """A BYTES element given as a JSON string, as UTF-8."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise ServingError(
            f"Input '{name}': the string {snippet(text)} is not valid "
            "Unicode text (it holds a lone surrogate, e.g. \\ud800); send "
            "arbitrary bytes as binary tensor data (binary_data_size)."
        ) from None


def decoder(header_length: str | None):
    """The `decode` of one V2 infer call.

    Args:
        header_length: str or None. The `Inference-Header-Content-Length`
            header (None: the body is JSON alone).

    Returns:
        `decode(body, servable) -> DecodedRequest` for `_predict.predict`.
    """

    def decode(data: bytes, servable: Any) -> DecodedRequest:
        head, binary = _split(data, header_length)
        document = parse_json(head)
        parameters = _parameters("The request", document)
        request_id = _string_or_none("The request's 'id'", document, "id")
        name = _string_or_none(
            "The request's 'parameters.signature_name'",
            parameters,
            "signature_name",
        )
        signature = servable.signature(name or SERVING_SIGNATURE)
        tensors = document.get("inputs")
        if not isinstance(tensors, list) or not tensors:
            raise ServingError(
                "'inputs' must be a non-empty list of tensors; this model "
                "takes " + ", ".join(sorted(signature.inputs)) + "."
            )
        if not all(
            isinstance(tensor, dict) and isinstance(tensor.get("name"), str)
            for tensor in tensors
        ):
            raise ServingError(
                "Each of 'inputs' must be an object with a string 'name'."
            )
        given = {tensor["name"]: tensor for tensor in tensors}
        if set(given) != set(signature.inputs) or len(given) != len(tensors):
            raise ServingError(
                "'inputs' must name each of the model's inputs once: "
                + ", ".join(sorted(signature.inputs))
                + "; received "
                + snippet([tensor["name"] for tensor in tensors])
                + "."
            )
        arrays, offset = {}, 0
        for tensor in tensors:  # binary data follows the request's order
            name = tensor["name"]
            arrays[name], offset = _input_array(
                tensor, signature.inputs[name], binary, offset
            )
        first = arrays[tensors[0]["name"]]
        instances = int(first.shape[0]) if first.ndim else 1
        state = {
            "id": request_id,
            "model": servable.model_name,
            "version": str(servable.version),
            "outputs": _wanted(document, signature.outputs, parameters),
        }
        return DecodedRequest(signature, arrays, instances, state)

    return decode


def _string_or_none(what: str, holder: dict, key: str) -> str | None:
    """`holder[key]`, which the protocol makes a string, if given.

    The request's `id` is echoed in the answer: refusing anything but a
    string before the model runs keeps the echo from failing after it.
    """
    value = holder.get(key)
    if value is not None and not isinstance(value, str):
        raise ServingError(
            f"{what} must be a string; received {json_type(value)}."
        )
    return value


def _parameters(where: str, holder: dict) -> dict[str, Any]:
    parameters = holder.get("parameters")
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise ServingError(
            f"{where}: 'parameters' must be an object; received "
            f"{type(parameters).__name__}."
        )
    return parameters


def _wanted(document: dict, outputs: dict, parameters: dict) -> dict[str, bool]:
    """The outputs to answer, each with whether it goes as binary."""
    default = bool(parameters.get("binary_data_output", False))
    requested = document.get("outputs")
    if requested is None:
        return {name: default for name in sorted(outputs)}
    if not isinstance(requested, list):
        raise ServingError("'outputs' must be a list of objects.")
    wanted = {}
    for item in requested:
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str) or name not in outputs:
            raise ServingError(
                f"Unknown output {name!r:.80}; this model's outputs: "
                + ", ".join(sorted(outputs))
                + "."
            )
        options = _parameters(f"Output '{name}'", item)
        wanted[name] = bool(options.get("binary_data", default))
    return wanted


# -- response ----------------------------------------------------------------


def _bytes_of(array: np.ndarray) -> bytes:
    if array.dtype == object or array.dtype.kind == "S":
        return b"".join(
            struct.pack("<I", len(item)) + item
            for item in (bytes(value) for value in array.reshape(-1))
        )
    return np.ascontiguousarray(array).tobytes()


def _json_data(array: np.ndarray) -> list[Any]:
    flat = array.reshape(-1)
    if array.dtype == object or array.dtype.kind == "S":
        return [bytes(item).decode("utf-8", "replace") for item in flat]
    return flat.tolist()


def encode(
    outputs: dict[str, Any], decoded: DecodedRequest
) -> tuple[bytes, dict]:
    """The infer answer: JSON, or JSON then binary outputs."""
    state = decoded.state
    described, chunks = [], []
    for name, binary in state["outputs"].items():
        array = np.asarray(outputs[name])
        datatype = (
            "BYTES"
            if array.dtype == object or array.dtype.kind == "S"
            else datatype_of(array.dtype.name)
        )
        tensor: dict[str, Any] = {
            "name": name,
            "datatype": datatype,
            "shape": list(array.shape),
        }
        if binary:
            chunk = _bytes_of(array)
            tensor["parameters"] = {"binary_data_size": len(chunk)}
            chunks.append(chunk)
        else:
            tensor["data"] = _json_data(array)
        described.append(tensor)
    answer: dict[str, Any] = {
        "model_name": state["model"],
        "model_version": state["version"],
        "outputs": described,
    }
    if state["id"] is not None:
        answer["id"] = state["id"]
    head = json.dumps(answer).encode("utf-8")
    if not chunks:
        return head, {}
    return head + b"".join(chunks), {
        HEADER_LENGTH: str(len(head)),
        "Content-Type": "application/octet-stream",
    }
