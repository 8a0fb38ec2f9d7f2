"""TF Serving's REST `:classify` and `:regress` bodies, on `_examples`.

Request (TF Serving's REST API):

```
{"signature_name": "...", "context": {"f": value | [values]},
 "examples": [{"f": value | [values], ...}, ...]}
```

where a value is a JSON number, a string or `{"b64": "..."}` (bytes).
Answers are `{"results": [[[label, score], ...], ...]}` (classify) and
`{"results": [value, ...]}` (regress), the keys TF Serving's server
writes (its API page names the key `result` in one place and shows
`results` in its `curl` example; the server sends `results`).
"""

import base64
import binascii
import json
from typing import Any

from aiservice_kit.serving import _examples
from aiservice_kit.serving._codec import parse_json
from aiservice_kit.serving._errors import ServingError
from aiservice_kit.serving._predict import DecodedRequest

#: The answer's key for both APIs.
RESULTS_KEY = "results"


def _plain(where: str, value: Any) -> Any:
    """A JSON feature value with `{"b64": ...}` objects turned to bytes.

    A value is a scalar or a flat list, so one level is walked: a list in
    the list is left for `_examples` to refuse, never recursed into (a body
    nested hundreds of lists deep would exhaust the stack).
    """
    if isinstance(value, list):
        return [
            _bytes(where, item) if isinstance(item, dict) else item
            for item in value
        ]
    if isinstance(value, dict):
        return _bytes(where, value)
    return value


def _bytes(where: str, value: dict[str, Any]) -> bytes:
    """The bytes of a `{"b64": "<base64>"}` feature value."""
    if len(value) != 1 or not isinstance(value.get("b64"), str):
        raise ServingError(
            f"{where}: a feature value must be a number, a string, "
            '{"b64": "<base64>"} or a list of them; received an object '
            f"with keys {sorted(value)[:5]}."
        )
    try:
        return base64.b64decode(value["b64"], validate=True)
    except (binascii.Error, ValueError):
        raise ServingError(
            f"{where}: unable to base64 decode {value['b64']!r:.80}."
        ) from None


def _object(where: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ServingError(
            f"'{where}' must be an object of feature name to value(s); "
            f"received {type(value).__name__}."
        )
    return {
        name: _plain(f"{where}.{name}", item) for name, item in value.items()
    }


def decoder(api: str):
    """The `decode` of a REST `:classify` (or `:regress`) call.

    Args:
        api: str. `"classify"` or `"regress"`.

    Returns:
        `decode(body, servable) -> DecodedRequest` for `_predict.predict`.
    """

    def decode(data: bytes, servable: Any) -> DecodedRequest:
        document = parse_json(data)
        name = document.get("signature_name", "")
        if not isinstance(name, str):
            raise ServingError(
                f"JSON Value: {json.dumps(name)[:80]} not formatted "
                "correctly. 'signature_name' key must be a string value."
            )
        if "examples" not in document:
            raise ServingError("Missing 'examples' key")
        examples = document["examples"]
        if not isinstance(examples, list):
            raise ServingError(
                "'examples' must be a list of objects, one per example; "
                f"received {type(examples).__name__}."
            )
        plain = [
            _object(f"examples[{index}]", example)
            for index, example in enumerate(examples)
        ]
        context = _object("context", document.get("context") or {})
        call = _examples.example_call(
            api, name, servable.signatures, servable.metadata
        )
        signature = servable.signature(call.signature_name)
        serialized = _examples.serialize_examples(
            plain, context, call.kinds, call.dtypes
        )
        arrays = _examples.examples_input(signature, serialized)
        return DecodedRequest(signature, arrays, len(plain), api)

    return decode


def encode(
    outputs: dict[str, Any], decoded: DecodedRequest
) -> tuple[bytes, dict]:
    """`{"results": ...}` for a classify or regress call."""
    if decoded.state == "classify":
        results: Any = [
            [[label, score] for label, score in row]
            for row in _examples.classify_results(outputs)
        ]
    else:
        results = _examples.regress_results(outputs)
    return json.dumps({RESULTS_KEY: results}).encode("utf-8"), {}
