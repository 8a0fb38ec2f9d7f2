"""The metered predict pipeline, without HTTP.

`predict(service, key, spec, body)` is one Predict call after the caller
is known: an early 429 while the key's rate is known to be spent (no
I/O), version resolution, decoding, the rate token and the quota
reservation (one ledger ask, once the instances are known; a call refused
before it, as bad input or by the admission limits, still takes its
token), the (batched) run, the ledger record (which settles the
reservation) and the reply. The REST route hands it the request; another
protocol (gRPC, KServe V2) can hand it its own decoded request the same
way. A call is answered only once its usage record is committed. Every
database call runs on a thread, never on the event loop.
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

import numpy as np

from aiservice_kit.serving import _explain
from aiservice_kit.serving._admission import count_instances
from aiservice_kit.serving._admission import count_instances_in_json
from aiservice_kit.serving._codec import decode_predict
from aiservice_kit.serving._codec import encode_predict_json
from aiservice_kit.serving._codec import parse_json
from aiservice_kit.serving._codec import signature_name_of
from aiservice_kit.serving._errors import ServingError
from aiservice_kit.serving._ledger import DatabaseBusy
from aiservice_kit.serving._service import Service
from aiservice_kit.serving.auth import ApiKey
from aiservice_kit.serving.config import DB_RETRY_AFTER_S
from aiservice_kit.serving.config import OFFLOAD_BYTES
from aiservice_kit.serving.metering import DEFAULT_API
from aiservice_kit.serving.metering import UsageRecord
from aiservice_kit.serving.ratelimit import RateRefusal
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
        content: bytes. The body: the encoded outputs, or the error as
            JSON `{"error": message}`.
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


#: A reply body and the headers it adds (e.g. a binary V2 answer's
#: `Inference-Header-Content-Length`).
Reply = tuple[bytes, dict[str, str]]
#: What a protocol's decoder returns: the signature to run, its input
#: arrays, the number of instances and how to encode the outputs as the
#: reply.
Decoded = tuple[Any, dict[str, np.ndarray], int, Callable[[Any], Reply]]
#: Reserves a call's instances against the model's admission limits (raises
#: ServingError 413/429); a decoder calls it once it knows the count and
#: before it builds tensors where it can. The pipeline releases them when
#: the call ends.
Admit = Callable[[int], None]
#: A protocol's decoder: `(servable, request bytes, admit) -> Decoded`;
#: raises ServingError for a bad request (answered and metered).
Decoder = Callable[[Any, bytes, Admit], Awaitable[Decoded]]


@dataclasses.dataclass(frozen=True)
class DecodedRequest:
    """A request decoded by a synchronous protocol codec (`_v2`,
    `_rest_examples`), turned into a `Decoder` by `protocol_decoder`.

    Attributes:
        signature: Signature. What runs (`_servable.Signature`).
        arrays: dict of arrays. The signature's inputs.
        instances: int. What the call counts against quotas and meters.
        state: Any. Whatever the codec's `encode` needs from the request.
    """

    signature: Any
    arrays: dict[str, Any]
    instances: int
    state: Any = None


#: `decode(body, servable) -> DecodedRequest` (run in a thread for large
#: bodies).
SyncDecode = Callable[[bytes, Any], DecodedRequest]
#: `encode(outputs, request) -> Reply`.
SyncEncode = Callable[[dict[str, Any], DecodedRequest], Reply]


def protocol_decoder(decode: SyncDecode, encode: SyncEncode) -> Decoder:
    """The pipeline's `Decoder` for a synchronous codec pair.

    Args:
        decode: callable. `decode(body, servable) -> DecodedRequest`;
            raises ServingError (400) for a bad request.
        encode: callable. `encode(outputs, request) -> (bytes, headers)`.

    Returns:
        An async `Decoder` that decodes off the event loop for large
        bodies and admits the request's instances.

    Example:
    ```python
    decoder = protocol_decoder(_v2.decoder(None), _v2.encode)
    reply = await predict(service, key, spec, body, decode=decoder)
    ```
    """

    async def decoder(servable: Any, data: bytes, admit: Admit) -> Decoded:
        if len(data) > OFFLOAD_BYTES:
            request = await asyncio.to_thread(decode, data, servable)
        else:
            request = decode(data, servable)
        admit(request.instances)

        def encode_reply(outputs: dict[str, Any]) -> Reply:
            return encode(outputs, request)

        return (
            request.signature,
            request.arrays,
            request.instances,
            (encode_reply),
        )

    return decoder


async def _read(body: Body) -> bytes:
    return body if isinstance(body, bytes) else await body()


async def decode_json(servable: Any, data: bytes, admit: Admit) -> Decoded:
    """The REST decoder: a JSON Predict body, answered in JSON."""
    return await _decode_rest(servable, data, admit, explain=False)


async def decode_explain_json(
    servable: Any, data: bytes, admit: Admit
) -> Decoded:
    """The REST `:explain` decoder: the `explain` signature, attributions
    beside the predictions in the JSON answer (`_explain`)."""
    return await _decode_rest(servable, data, admit, explain=True)


async def _decode_rest(
    servable: Any, data: bytes, admit: Admit, *, explain: bool
) -> Decoded:
    large = len(data) > OFFLOAD_BYTES
    counted = None
    if large:
        # Counted on the bytes first: a call over the admission limits is
        # refused without building its Python objects (the parse of a
        # 60,000-row body holds the GIL 4x longer than this count).
        counted = await asyncio.to_thread(count_instances_in_json, data)
        if counted is not None:
            admit(counted)
    document = (
        await asyncio.to_thread(parse_json, data) if large else parse_json(data)
    )
    if explain:
        signature = _explain.signature_of(servable, document)
    else:
        signature = servable.signature(signature_name_of(document))
    if counted is None:
        admit(count_instances(document))
    if large:
        arrays, fmt, count = await asyncio.to_thread(
            decode_predict, document, signature.inputs
        )
    else:
        arrays, fmt, count = decode_predict(document, signature.inputs)

    def encode(outputs: dict[str, np.ndarray]) -> Reply:
        if explain:
            return json.dumps(_explain.encode(outputs, fmt)).encode(), {}
        return encode_predict_json(outputs, fmt), {}

    return signature, arrays, count, encode


#: Weight of the newest call in `Service.mean_calls_in_flight`.
_SMOOTHING = 0.2
#: A call runs alone (`_alone`) while the calls in flight average below
#: this: a single client. Calls run on the event loop never yield, so
#: under load they would see themselves alone, one after the other, with
#: no batching (25% less throughput at concurrency 8): a call first lets
#: the requests that came in with it start, and the average must agree.
_ALONE_BELOW = 1.5


def _alone(service: Service) -> bool:
    """Whether this call is alone on the server, and calls lately were."""
    return (
        service.calls_in_flight == 1
        and service.mean_calls_in_flight < _ALONE_BELOW
    )


def _drop(asking: asyncio.Future, service: Service) -> None:
    """Undoes a ledger ask whose call ends without its answer: cancelled
    while in flight (`Ledger.admit` then releases a late reservation),
    or released now if it was granted."""
    if not asking.done():
        asking.cancel()
    elif not asking.cancelled() and asking.exception() is None:
        service.limiter.release(asking.result())


async def _run_beside_ask(
    service: Service,
    key: ApiKey | None,
    count: int,
    signature: Any,
    arrays: dict[str, np.ndarray],
) -> tuple[Any, dict[str, np.ndarray] | None, ServingError | None]:
    """Runs the model while the ledger answers the call's ask.

    One ledger ask for the rate token and the reservation, once the
    instances are known; the model runs meanwhile (both off the event
    loop), and a refused call's outputs are dropped. A key last found
    over its quota waits for the answer first (no free model runs).

    Returns:
        `(reservation, outputs, model error or None)`.

    Raises:
        ServingError: 429/503 when the ask is refused.
    """
    asking = asyncio.ensure_future(service.limiter.admit(key, count))
    outputs = None
    try:
        if not service.limiter.may_run_ahead(key):
            await asyncio.wait([asking])  # the answer first
        if not asking.done() or asking.exception() is None:
            outputs = await signature.predict(arrays)
    except ServingError as error:
        failed: ServingError | None = error
    except BaseException:
        _drop(asking, service)
        raise
    else:
        failed = None
    try:
        reservation = await asking  # 429/503 when refused
    except ServingError:
        raise
    except BaseException:
        _drop(asking, service)
        raise
    return reservation, outputs, failed


async def predict(
    service: Service,
    key: ApiKey | None,
    spec: ModelSpec,
    body: Body,
    *,
    decode: Decoder | None = None,
    api: str = DEFAULT_API,
) -> PredictReply:
    """Runs one Predict call and records it in the ledger.

    Args:
        service: Service. The running server's parts.
        key: ApiKey or None. The authenticated (and authorized) caller;
            None for an anonymous call.
        spec: ModelSpec. The model and version asked for.
        body: bytes, or an async function returning them. The JSON
            request (`instances` or `inputs`), or the request `decode`
            reads.
        decode: Decoder or None. How another protocol (gRPC) turns the
            body into a signature's inputs and its outputs into the
            reply's bytes; None: TF Serving's REST JSON (`decode_json`).
        api: str. `"predict"`, or `"explain"` (`_explain`: the `explain`
            signature, attributions in the reply); recorded in the ledger.

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
    service.calls_in_flight += 1
    service.mean_calls_in_flight += _SMOOTHING * (
        service.calls_in_flight - service.mean_calls_in_flight
    )
    try:
        return await _metered_call(service, key, spec, body, decode, api)
    finally:
        service.calls_in_flight -= 1


async def _metered_call(
    service: Service,
    key: ApiKey | None,
    spec: ModelSpec,
    body: Body,
    decode: Decoder | None,
    api: str,
) -> PredictReply:
    """`predict`'s work."""
    started = time.perf_counter()
    arrived = time.time()
    request_id = uuid.uuid4().hex
    known = spec.name in service.registry.models
    metrics_model = spec.name if known else "_unknown"
    status, instances, version_number = 200, 0, None
    data = b""
    headers = {"X-Request-ID": request_id}
    reservation = None
    asked = False  # the ledger asked for the call's token and instances
    admission, admitted = None, 0
    try:
        # 429 at once, before the body is read, while the ledger's last
        # answer for this key says no token is back yet.
        service.limiter.refuse_early(key)
        model, version = spec.resolve(service.registry)
        servable = model.get(version)
        version_number = servable.version
        headers["X-Model-Version"] = str(servable.version)
        data = await _read(body)
        if decode is None:
            decode = (
                decode_explain_json
                if api == _explain.EXPLAIN_API
                else decode_json
            )
        admission = model.admission

        def admit(asked: int) -> None:
            # Counted before any tensor is built: 413/429 here.
            nonlocal admitted
            admission.reserve_instances(asked)
            admitted += asked

        signature, arrays, count, encode = await decode(servable, data, admit)
        # One ledger ask for the rate token and the reservation, once the
        # instances are known (a bad request takes its token below).
        asked = True
        if _alone(service):
            # Calls whose requests came in with this one start first (a
            # call run here never yields, and would keep them waiting).
            await asyncio.sleep(0)
        if _alone(service):
            # Alone on the server: the ask, then the model, then (below)
            # the settle run here on the event loop when each is free,
            # without the threads' hand-offs; the threads, which batch
            # and group concurrent calls, take over once another comes.
            reservation = await service.limiter.admit(
                key, count, now_if_free=True
            )
            outputs = await signature.predict(arrays, now_if_free=True)
        else:
            reservation, outputs, failed = await _run_beside_ask(
                service, key, count, signature, arrays
            )
            if failed is not None:
                raise failed
        content, added = encode(outputs)
        headers.update(added)
        instances = count
    except ServingError as error:
        if not asked and not isinstance(error, RateRefusal):
            # Refused before its ledger ask (bad input, unknown version,
            # admission limits): it still takes its token, so a flood of
            # bad or oversized calls is rate-limited like good ones
            # (429 here replaces its error).
            await service.limiter.acheck_rate(key)
        if error.status_code in (413, 429) or isinstance(error, DatabaseBusy):
            # refused before it was accepted (limits, a busy database):
            # not metered
            service.limiter.release(reservation)
            raise
        status = error.status_code
        content = json.dumps({"error": error.message}).encode("utf-8")
        headers.update(error.headers)
    except BaseException:
        service.limiter.release(reservation)
        raise
    finally:
        if admission is not None and admitted:
            admission.release_instances(admitted)
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
        api=api,
    )
    reservation_id = None
    if reservation is not None and reservation.shared:
        reservation_id = reservation.id
    try:
        await service.committer.record(
            record,
            reservation_id,
            now_if_free=_alone(service),
        )
    except BaseException as error:
        service.limiter.release(reservation)
        if not isinstance(error, Exception):
            raise
        logger.exception("usage record %s could not be committed", request_id)
        service.metrics.observe(metrics_model, 503, latency)
        raise ServingError(
            "The call could not be metered, so it was not answered; "
            "retry later.",
            503,
            {"Retry-After": str(DB_RETRY_AFTER_S)},
        ) from None
    service.limiter.settled(reservation, instances)
    service.metrics.observe(metrics_model, status, latency)
    return PredictReply(status, content, headers, instances, request_id)
