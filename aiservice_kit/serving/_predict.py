"""The metered predict pipeline, without HTTP.

`predict(service, key, spec, body)` is one Predict call after the caller
is known: rate check, version resolution, decoding, the quota, the
(batched) run, the ledger record and the reply. The REST route hands it
the request; another protocol (REST `:classify`/`:regress`, KServe V2,
gRPC) hands it the same way with its own `decode` and `encode`: decode
turns the body into a signature, its input arrays and the instance count
(`Decoded`), encode turns the outputs into the answer's bytes. A call is
answered only once its usage record is committed.
"""

import asyncio
import dataclasses
import json
import logging
import time
import uuid
from collections.abc import Awaitable
from collections.abc import Callable
from typing import Any

from aiservice_kit.serving._codec import decode_predict
from aiservice_kit.serving._codec import encode_predict
from aiservice_kit.serving._codec import parse_json
from aiservice_kit.serving._codec import signature_name_of
from aiservice_kit.serving._errors import ServingError
from aiservice_kit.serving._service import Service
from aiservice_kit.serving.auth import ApiKey
from aiservice_kit.serving.config import OFFLOAD_BYTES
from aiservice_kit.serving.metering import UsageRecord
from aiservice_kit.serving.registry import ModelSpec

logger = logging.getLogger("aiservice_kit.serving")

#: The request body, or a coroutine function that reads it (read only once
#: the version is known, so a call to an unknown model never reads it).
Body = bytes | Callable[[], Awaitable[bytes]]


@dataclasses.dataclass(frozen=True)
class PredictReply:
    """The answer to one metered Predict call.

    Attributes:
        status: int. The HTTP status (200, or the error's).
        content: bytes. The JSON body.
        headers: dict of str. `X-Request-ID`, `X-Model-Version` when a
            version was found, and the error's headers.
        instances: int. Instances predicted (0 unless status is 200).
        request_id: str. The id of the ledger record.
    """

    status: int
    content: bytes
    headers: dict[str, str]
    instances: int
    request_id: str


@dataclasses.dataclass(frozen=True)
class Decoded:
    """A request decoded for one signature.

    Attributes:
        signature: Signature. What runs (`_servable.Signature`: `inputs`,
            `outputs`, `predict`).
        arrays: dict of arrays. The signature's inputs.
        instances: int. What the call counts against quotas and meters.
        state: Any. Whatever `encode` needs from the request (the Predict
            format, the outputs a V2 call asked for, ...).
    """

    signature: Any
    arrays: dict[str, Any]
    instances: int
    state: Any = None


#: `decode(body, servable) -> Decoded` (run in a thread for large bodies).
Decode = Callable[[bytes, Any], Decoded]
#: `encode(outputs, decoded) -> (content, headers)`: the answer's bytes and
#: any headers it adds (e.g. its Content-Type).
Encode = Callable[[dict[str, Any], Decoded], tuple[bytes, dict[str, str]]]


def decode_predict_json(data: bytes, servable: Any) -> Decoded:
    """TF Serving's REST Predict body (`instances` or `inputs`)."""
    document = parse_json(data)
    signature = servable.signature(signature_name_of(document))
    arrays, fmt, count = decode_predict(document, signature.inputs)
    return Decoded(signature, arrays, count, fmt)


def encode_predict_json(
    outputs: dict[str, Any], decoded: Decoded
) -> tuple[bytes, dict[str, str]]:
    """`predictions` (rows) or `outputs` (columns), as the request was."""
    payload = encode_predict(outputs, decoded.state)
    return json.dumps(payload).encode("utf-8"), {}


def _error_json(message: str) -> bytes:
    return json.dumps({"error": message}).encode("utf-8")


async def _read(body: Body) -> bytes:
    return body if isinstance(body, bytes) else await body()


async def predict(
    service: Service,
    key: ApiKey | None,
    spec: ModelSpec,
    body: Body,
    decode: Decode = decode_predict_json,
    encode: Encode = encode_predict_json,
    error_body: Callable[[str], bytes] = _error_json,
) -> PredictReply:
    """Runs one Predict call and records it in the ledger.

    Args:
        service: Service. The running server's parts.
        key: ApiKey or None. The authenticated (and authorized) caller;
            None for an anonymous call.
        spec: ModelSpec. The model and version asked for.
        body: bytes, or an async function returning them. The JSON
            request (`instances` or `inputs`), or what `decode` reads.
        decode: callable. `decode(body, servable) -> Decoded`; raises
            `ServingError` (400) for a bad request. Default: Predict JSON.
        encode: callable. `encode(outputs, decoded) -> (bytes, headers)`.
        error_body: callable. The body of an error reply from its message
            (default `{"error": message}`).

    Returns:
        The reply. Errors found after the call was accepted (unknown
        version, bad input, model errors) are replies too, and metered.

    Raises:
        ServingError: 429 (rate or quota) and 413 (body too large) before
            the call is accepted, unmetered; 503 when its usage record
            could not be committed (the call is then not answered).

    Example:
    ```python
    body = b'{"instances": [[1.0, 2.0]]}'
    reply = await predict(service, key, ModelSpec("mnist"), body)
    json.loads(reply.content)["predictions"]
    ```
    """
    started = time.perf_counter()
    arrived = time.time()
    request_id = uuid.uuid4().hex
    service.limiter.check_rate(key)
    known = spec.name in service.registry.models
    metrics_model = spec.name if known else "_unknown"
    status, instances, version_number = 200, 0, None
    data = b""
    headers = {"X-Request-ID": request_id}
    try:
        model, version = spec.resolve(service.registry)
        servable = model.get(version)
        version_number = servable.version
        headers["X-Model-Version"] = str(servable.version)
        data = await _read(body)
        if len(data) > OFFLOAD_BYTES:
            decoded = await asyncio.to_thread(decode, data, servable)
        else:
            decoded = decode(data, servable)
        arrays, count = decoded.arrays, decoded.instances
        service.limiter.check_quota(key, count)
        outputs = await decoded.signature.predict(arrays)
        content, added = encode(outputs, decoded)
        headers.update(added)
        instances = count
    except ServingError as error:
        if error.status_code in (413, 429):
            raise  # refused before it was accepted: not metered
        status = error.status_code
        content = error_body(error.message)
        headers.update(error.headers)
    latency = time.perf_counter() - started
    record = UsageRecord(
        request_id=request_id,
        time=arrived,
        key_id=None if key is None else key.id,
        key_name=None if key is None else key.name,
        model=spec.name,
        version=version_number,
        instances=instances,
        request_bytes=len(data),
        response_bytes=len(content),
        latency_ms=round(latency * 1000, 3),
        status=status,
    )
    try:
        await service.committer.record(record)
    except Exception:
        logger.exception("usage record %s could not be committed", request_id)
        service.metrics.observe(metrics_model, 503, latency)
        raise ServingError(
            "The call could not be metered, so it was not answered; "
            "retry later.",
            503,
        ) from None
    if status == 200:
        service.limiter.add_usage(key, instances)
    service.metrics.observe(metrics_model, status, latency)
    return PredictReply(status, content, headers, instances, request_id)
