"""TF Serving's REST routes, plus usage, health, readiness and metrics."""

import asyncio
import datetime
import json
import logging
import time
import uuid
from typing import Any

import fastapi
from fastapi import Request
from fastapi import Response

from aiservice_kit.serving import schemas
from aiservice_kit.serving._codec import decode_predict
from aiservice_kit.serving._codec import encode_predict
from aiservice_kit.serving._codec import parse_json
from aiservice_kit.serving._codec import signature_name_of
from aiservice_kit.serving._errors import ServingError
from aiservice_kit.serving.auth import Authenticator
from aiservice_kit.serving.metering import UsageRecord

logger = logging.getLogger("aiservice_kit.serving")

router = fastapi.APIRouter()

#: Bodies larger than this are decoded off the event loop.
_OFFLOAD_BYTES = 64 * 1024

_ERRORS = {
    code: {"model": schemas.ErrorResponse, "description": text}
    for code, text in (
        (400, "Malformed JSON, unknown signature, or an input of the wrong "
              "shape or dtype (the message names it)"),
        (401, "Missing or unknown API key"),
        (403, "The key may not use this model"),
        (404, "Unknown model or version"),
        (413, "Request body too large"),
        (429, "Rate limit or monthly quota exceeded (see Retry-After)"),
    )
}  # fmt: skip

_PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": schemas.PredictRequest.model_json_schema()
            }
        },
    }
}


def _json(payload: Any, status_code: int = 200, headers=None) -> Response:
    return Response(
        json.dumps(payload).encode("utf-8"),
        status_code=status_code,
        media_type="application/json",
        headers=headers,
    )


def _version_number(text: str | None) -> int | None:
    if text is None:
        return None
    if not text.isdigit() or len(text) > 18:
        raise ServingError(
            f"Failed to convert version: {text} to numeric.", 400
        )
    return int(text)


def _service(request: Request) -> Any:
    return request.app.state.service


def _caller(request: Request, model: str | None = None):
    service = _service(request)
    key = service.auth.authenticate(request.headers)
    request.state.key = key
    if model is not None:
        Authenticator.authorize(key, model)
    return key


def _resolve(
    service: Any, model_name: str, version_text: str | None, label: str | None
) -> tuple[Any, int | None]:
    """(the model's registry, the version asked for: None for the latest)."""
    version = _version_number(version_text)
    model = service.registry.get_model(model_name, version)
    if label is not None:
        version = model.config.version_of(label)
    return model, version


async def _predict(
    request: Request, model_name: str, version_text, version_label=None
):
    service = _service(request)
    started = time.perf_counter()
    arrived = time.time()
    request_id = uuid.uuid4().hex
    key = _caller(request, model_name)
    service.limiter.check_rate(key)
    known = model_name in service.registry.models
    metrics_model = model_name if known else "_unknown"
    status, instances, version_number = 200, 0, None
    body = b""
    headers = {"X-Request-ID": request_id}
    try:
        model, version = _resolve(
            service, model_name, version_text, version_label
        )
        servable = model.get(version)
        version_number = servable.version
        headers["X-Model-Version"] = str(servable.version)
        body = await request.body()
        document = (
            await asyncio.to_thread(parse_json, body)
            if len(body) > _OFFLOAD_BYTES
            else parse_json(body)
        )
        signature = servable.signature(signature_name_of(document))
        if len(body) > _OFFLOAD_BYTES:
            arrays, fmt, count = await asyncio.to_thread(
                decode_predict, document, signature.inputs
            )
        else:
            arrays, fmt, count = decode_predict(document, signature.inputs)
        service.limiter.check_quota(key, count)
        outputs = await signature.predict(arrays)
        payload = encode_predict(outputs, fmt)
        content = json.dumps(payload).encode("utf-8")
        instances = count
    except ServingError as error:
        if error.status_code in (413, 429):
            raise  # refused before it was accepted: not metered
        status = error.status_code
        content = json.dumps({"error": error.message}).encode("utf-8")
        headers.update(error.headers)
    latency = time.perf_counter() - started
    record = UsageRecord(
        request_id=request_id,
        time=arrived,
        key_id=None if key is None else key.id,
        key_name=None if key is None else key.name,
        model=model_name,
        version=version_number,
        instances=instances,
        request_bytes=len(body),
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
    return Response(
        content,
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


@router.post(
    "/v1/models/{model_name}:predict",
    response_model=schemas.PredictResponse,
    responses=_ERRORS,
    openapi_extra=_PREDICT_BODY,
    tags=["predict"],
    summary="Predict with the latest version",
)
async def predict(request: Request, model_name: str) -> Response:
    """TF Serving's Predict: `instances` (rows) or `inputs` (columns)."""
    return await _predict(request, model_name, None)


@router.post(
    "/v1/models/{model_name}/versions/{version}:predict",
    response_model=schemas.PredictResponse,
    responses=_ERRORS,
    openapi_extra=_PREDICT_BODY,
    tags=["predict"],
    summary="Predict with a given version",
)
async def predict_version(
    request: Request, model_name: str, version: str
) -> Response:
    """TF Serving's Predict on version `version`."""
    return await _predict(request, model_name, version)


@router.post(
    "/v1/models/{model_name}/labels/{label}:predict",
    response_model=schemas.PredictResponse,
    responses=_ERRORS,
    openapi_extra=_PREDICT_BODY,
    tags=["predict"],
    summary="Predict with the version a label names",
)
async def predict_label(
    request: Request, model_name: str, label: str
) -> Response:
    """TF Serving's Predict on the version labelled `label`."""
    return await _predict(request, model_name, None, label)


def _status(
    request: Request, model_name: str, version_text, version_label=None
) -> Response:
    _caller(request, model_name)
    model, version = _resolve(
        _service(request), model_name, version_text, version_label
    )
    rows = model.status(version)
    return _json({"model_version_status": [row.to_json() for row in rows]})


@router.get(
    "/v1/models/{model_name}",
    response_model=schemas.ModelStatusResponse,
    responses=_ERRORS,
    tags=["models"],
    summary="Status of every version",
)
def model_status(request: Request, model_name: str) -> Response:
    """TF Serving's GetModelStatus for all versions."""
    return _status(request, model_name, None)


@router.get(
    "/v1/models/{model_name}/versions/{version}",
    response_model=schemas.ModelStatusResponse,
    responses=_ERRORS,
    tags=["models"],
    summary="Status of one version",
)
def version_status(request: Request, model_name: str, version: str) -> Response:
    """TF Serving's GetModelStatus for one version."""
    return _status(request, model_name, version)


@router.get(
    "/v1/models/{model_name}/labels/{label}",
    response_model=schemas.ModelStatusResponse,
    responses=_ERRORS,
    tags=["models"],
    summary="Status of the version a label names",
)
def label_status(request: Request, model_name: str, label: str) -> Response:
    """TF Serving's GetModelStatus for the version labelled `label`."""
    return _status(request, model_name, None, label)


def _metadata(
    request: Request, model_name: str, version_text, version_label=None
) -> Response:
    _caller(request, model_name)
    model, version = _resolve(
        _service(request), model_name, version_text, version_label
    )
    servable = model.get(version)
    metadata: dict[str, Any] = {
        "signature_def": {"signature_def": servable.signature_defs}
    }
    if servable.metadata is not None:
        metadata["aiservice_kit"] = servable.metadata
    return _json(
        {
            "model_spec": {
                "name": model_name,
                "signature_name": "",
                "version": str(servable.version),
            },
            "metadata": metadata,
        }
    )


@router.get(
    "/v1/models/{model_name}/metadata",
    response_model=schemas.ModelMetadataResponse,
    responses=_ERRORS,
    tags=["models"],
    summary="Signatures of the latest version",
)
def model_metadata(request: Request, model_name: str) -> Response:
    """TF Serving's GetModelMetadata (signature defs), plus export metadata."""
    return _metadata(request, model_name, None)


@router.get(
    "/v1/models/{model_name}/versions/{version}/metadata",
    response_model=schemas.ModelMetadataResponse,
    responses=_ERRORS,
    tags=["models"],
    summary="Signatures of one version",
)
def version_metadata(
    request: Request, model_name: str, version: str
) -> Response:
    """TF Serving's GetModelMetadata for one version."""
    return _metadata(request, model_name, version)


@router.get(
    "/v1/models/{model_name}/labels/{label}/metadata",
    response_model=schemas.ModelMetadataResponse,
    responses=_ERRORS,
    tags=["models"],
    summary="Signatures of the version a label names",
)
def label_metadata(request: Request, model_name: str, label: str) -> Response:
    """TF Serving's GetModelMetadata for the version labelled `label`."""
    return _metadata(request, model_name, None, label)


def _date(name: str, text: str | None) -> datetime.datetime | None:
    if text is None:
        return None
    try:
        value = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ServingError(
            f"`{name}` must be an ISO-8601 date or time, e.g. 2026-11-01. "
            f"Received: {name}={text!r}",
            400,
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.timezone.utc)
    return value


@router.get(
    "/v1/usage",
    response_model=schemas.UsageResponse,
    responses=_ERRORS,
    tags=["usage"],
    summary="The calling key's own usage and charges",
)
def usage(
    request: Request, since: str | None = None, until: str | None = None
) -> Response:
    """Usage of the calling API key in `[since, until)`, priced."""
    service = _service(request)
    key = service.auth.authenticate(request.headers, required=True)
    request.state.key = key
    start, end = _date("since", since), _date("until", until)
    bill = service.prices.bill(service.meter.summarize(key.id, start, end))
    plan = service.limiter.plans.get(key.plan)
    return _json(
        {
            "key": {"id": key.id, "name": key.name, "plan": key.plan},
            "plan": None if plan is None else plan.to_json(),
            "since": None if start is None else start.isoformat(),
            "until": None if end is None else end.isoformat(),
            "currency": bill.currency,
            "lines": [
                {
                    name: line.to_json()[name]
                    for name in schemas.UsageLine.model_fields
                }
                for line in bill.lines
            ],
            "total": str(bill.total),
            "used_this_month": service.limiter.used_this_month(key),
        }
    )


@router.get(
    "/healthz",
    response_model=schemas.HealthResponse,
    tags=["operations"],
    summary="Liveness: the process is up",
)
def healthz() -> Response:
    """Always 200 while the process serves HTTP."""
    return _json({"status": "ok"})


@router.get(
    "/readyz",
    response_model=schemas.HealthResponse,
    responses={503: {"model": schemas.ErrorResponse}},
    tags=["operations"],
    summary="Readiness: every model has a loaded version",
)
def readyz(request: Request) -> Response:
    """200 when every configured model serves a version, else 503."""
    registry = _service(request).registry
    models = {name: model.versions for name, model in registry.models.items()}
    if registry.ready:
        return _json({"status": "ready", "models": models})
    missing = sorted(name for name, versions in models.items() if not versions)
    return _json(
        {
            "error": "Not ready: no version loaded yet for "
            + ", ".join(missing),
            "models": models,
        },
        503,
    )


@router.get(
    "/metrics",
    tags=["operations"],
    summary="Prometheus metrics",
    response_class=Response,
)
def metrics(request: Request) -> Response:
    """Requests, latency, batch sizes and errors per model."""
    body, content_type = _service(request).metrics.render()
    return Response(body, media_type=content_type)
