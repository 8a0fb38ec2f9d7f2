"""TF Serving's REST routes, plus usage, health, readiness and metrics.

Each route family is one `APIRouter` with its shared tags and error
responses. The caller (`Depends(model_caller)`: authenticated, and
authorized for the model) and the version a URL names (`Depends` on one
of `latest`, `by_version`, `by_label`, each giving a `ModelSpec`) are
dependencies, so the predict, status and metadata handlers are written
once and declared for the three URL forms TF Serving has: `/v1/models/M`,
`/v1/models/M/versions/N` and `/v1/models/M/labels/L`.
"""

import datetime
import json
from collections.abc import Callable
from typing import Annotated
from typing import Any

import fastapi
from fastapi import Depends
from fastapi import Request
from fastapi import Response

from aiservice_kit.serving import _explain
from aiservice_kit.serving import _predict
from aiservice_kit.serving import _rest_examples
from aiservice_kit.serving import _v2
from aiservice_kit.serving import schemas
from aiservice_kit.serving._errors import ServingError
from aiservice_kit.serving._service import Service
from aiservice_kit.serving.auth import ApiKey
from aiservice_kit.serving.auth import Authenticator
from aiservice_kit.serving.registry import ModelSpec

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


_EXAMPLES_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": schemas.ExamplesRequest.model_json_schema()
            }
        },
    }
}
# V2Tensor, which the request refers to, is in the spec's components (the
# response model uses it).
_V2_REQUEST = schemas.V2InferRequest.model_json_schema(
    ref_template="#/components/schemas/{model}"
)
_V2_REQUEST.pop("$defs", None)
_V2_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": _V2_REQUEST}},
    }
}
_POST_BODIES = {
    ":predict": _PREDICT_BODY,
    ":classify": _EXAMPLES_BODY,
    ":regress": _EXAMPLES_BODY,
}


def _json(payload: Any, status_code: int = 200, headers=None) -> Response:
    return Response(
        json.dumps(payload).encode("utf-8"),
        status_code=status_code,
        media_type="application/json",
        headers=headers,
    )


# -- Dependencies -------------------------------------------------------------


def service_of(request: Request) -> Service:
    """The running server's parts (set by `create_app`'s lifespan)."""
    return request.app.state.service


async def get_service(request: Request) -> Service:
    """The dependency form of `service_of` (async: no thread hop)."""
    return service_of(request)


def check_url_part(request: Request, value: str) -> None:
    """Refuses a URL part holding a `:verb` as TF Serving does (400).

    `GET /v1/models/M:predict` matches the status route with a model
    named "M:predict"; TF Serving answers such a URL as malformed.
    """
    if ":" in value:
        raise ServingError(
            f"Malformed request: {request.method} {request.url.path}", 400
        )


async def model_caller(request: Request, model_name: str) -> ApiKey | None:
    """The calling key (None: anonymous), allowed to use `model_name`.

    Raises:
        ServingError: 400 for a name with a `:verb` the method does not
            take (`GET .../M:predict`), 401 for a missing (when required)
            or unknown key, 403 for a key that may not use the model.
    """
    check_url_part(request, model_name)
    key = await service_of(request).auth.aauthenticate(request.headers)
    request.state.key = key  # for the access log
    Authenticator.authorize(key, model_name)
    return key


async def key_caller(request: Request) -> ApiKey:
    """The calling key; 401 without one, even when auth is optional."""
    auth = service_of(request).auth
    key = await auth.aauthenticate(request.headers, required=True)
    request.state.key = key
    return key


async def latest(model_name: str) -> ModelSpec:
    """`/v1/models/{model_name}`: the latest version."""
    return ModelSpec(model_name)


async def by_version(
    request: Request, model_name: str, version: str
) -> ModelSpec:
    """`/v1/models/{model_name}/versions/{version}`."""
    check_url_part(request, version)
    return ModelSpec(model_name, version=version)


async def by_label(request: Request, model_name: str, label: str) -> ModelSpec:
    """`/v1/models/{model_name}/labels/{label}`."""
    check_url_part(request, label)
    return ModelSpec(model_name, label=label)


ServiceDep = Annotated[Service, Depends(get_service)]
ModelCaller = Annotated[ApiKey | None, Depends(model_caller)]

# -- Predict, status and metadata: one handler each, three URL forms --------


async def _metered(
    request: Request,
    service: Any,
    key: Any,
    spec: ModelSpec,
    **options: Any,
) -> Response:
    """One call through the metered pipeline (`_predict.predict`), answered
    as it replies; `options` pick the protocol (`api=`, `decode=`)."""
    try:
        reply = await _predict.predict(
            service, key, spec, request.body, **options
        )
    except ServingError as error:
        # `predict` counts what it answers or fails to meter (503);
        # the access log counts every other refusal (`app._AccessLog`).
        request.state.predict_counted = error.status_code == 503
        raise
    request.state.predict_counted = True
    return Response(
        reply.content,
        status_code=reply.status,
        media_type="application/json",
        headers=reply.headers,
    )


def _predict_handler(
    selector: Callable[..., Any], api: str = "predict"
) -> Callable[..., Any]:
    async def handler(
        request: Request,
        service: ServiceDep,
        key: ModelCaller,
        spec: Annotated[ModelSpec, Depends(selector)],
    ) -> Response:
        return await _metered(request, service, key, spec, api=api)

    return handler


def _explain_handler(selector: Callable[..., Any]) -> Callable[..., Any]:
    return _predict_handler(selector, api=_explain.EXPLAIN_API)


def _examples_handler(api: str, selector: Callable[..., Any]) -> Callable:
    decode = _predict.protocol_decoder(
        _rest_examples.decoder(api), _rest_examples.encode
    )

    async def handler(
        request: Request,
        service: ServiceDep,
        key: ModelCaller,
        spec: Annotated[ModelSpec, Depends(selector)],
    ) -> Response:
        return await _metered(request, service, key, spec, decode=decode)

    return handler


def _classify_handler(selector: Callable[..., Any]) -> Callable[..., Any]:
    return _examples_handler("classify", selector)


def _regress_handler(selector: Callable[..., Any]) -> Callable[..., Any]:
    return _examples_handler("regress", selector)


def _status_handler(selector: Callable[..., Any]) -> Callable[..., Any]:
    def handler(
        service: ServiceDep,
        key: ModelCaller,
        spec: Annotated[ModelSpec, Depends(selector)],
    ) -> Response:
        model, version = spec.resolve(service.registry)
        rows = model.status(version)
        return _json({"model_version_status": [r.to_json() for r in rows]})

    return handler


def _metadata_handler(selector: Callable[..., Any]) -> Callable[..., Any]:
    def handler(
        service: ServiceDep,
        key: ModelCaller,
        spec: Annotated[ModelSpec, Depends(selector)],
    ) -> Response:
        model, version = spec.resolve(service.registry)
        servable = model.get(version)
        metadata: dict[str, Any] = {
            "signature_def": {"signature_def": servable.signature_defs}
        }
        if servable.metadata is not None:
            metadata["aiservice_kit"] = servable.metadata
        return _json(
            {
                "model_spec": {
                    "name": spec.name,
                    "signature_name": "",
                    "version": str(servable.version),
                },
                "metadata": metadata,
            }
        )

    return handler


#: The URL forms naming a version: (path suffix, dependency, route name
#: prefix).
_SELECTORS = {
    "latest": ("", latest),
    "version": ("/versions/{version}", by_version),
    "label": ("/labels/{label}", by_label),
}

predict_router = fastapi.APIRouter(tags=["predict"], responses=_ERRORS)
models_router = fastapi.APIRouter(tags=["models"], responses=_ERRORS)

# (router, method, handler factory, selector, URL tail, route name,
#  response model, summary, description)
_MODEL_ROUTES = (
    (predict_router, "POST", _predict_handler, "latest", ":predict",
     "predict", schemas.PredictResponse,
     "Predict with the latest version",
     "TF Serving's Predict: `instances` (rows) or `inputs` (columns)."),
    (predict_router, "POST", _predict_handler, "version", ":predict",
     "predict_version", schemas.PredictResponse,
     "Predict with a given version",
     "TF Serving's Predict on version `version`."),
    (predict_router, "POST", _predict_handler, "label", ":predict",
     "predict_label", schemas.PredictResponse,
     "Predict with the version a label names",
     "TF Serving's Predict on the version labelled `label`."),
    *(
        (predict_router, "POST", _explain_handler, selector, ":explain",
         "explain" + suffix, schemas.ExplainResponse,
         "Predict and explain" + text,
         "KServe V1's `:explain` verb on the Predict request: the answer "
         "of `:predict` plus `attributions` (integrated gradients, shaped "
         "like each input) from the model's `explain` signature "
         "(`export_saved_model(..., explain=True)`). Metered and priced "
         "as API `explain`.")
        for selector, suffix, text in (
            ("latest", "", " with the latest version"),
            ("version", "_version", " with a given version"),
            ("label", "_label", " with the version a label names"),
        )
    ),
    (predict_router, "POST", _classify_handler, "latest", ":classify",
     "classify", schemas.ResultsResponse,
     "Classify tf.Examples with the latest version",
     "TF Serving's Classify: `examples` (and `context`) in, "
     "`results` of [label, score] pairs out."),
    (predict_router, "POST", _classify_handler, "version", ":classify",
     "classify_version", schemas.ResultsResponse,
     "Classify with a given version",
     "TF Serving's Classify on version `version`."),
    (predict_router, "POST", _classify_handler, "label", ":classify",
     "classify_label", schemas.ResultsResponse,
     "Classify with the version a label names",
     "TF Serving's Classify on the version labelled `label`."),
    (predict_router, "POST", _regress_handler, "latest", ":regress",
     "regress", schemas.ResultsResponse,
     "Regress tf.Examples with the latest version",
     "TF Serving's Regress: `examples` in, one value per example out."),
    (predict_router, "POST", _regress_handler, "version", ":regress",
     "regress_version", schemas.ResultsResponse,
     "Regress with a given version",
     "TF Serving's Regress on version `version`."),
    (predict_router, "POST", _regress_handler, "label", ":regress",
     "regress_label", schemas.ResultsResponse,
     "Regress with the version a label names",
     "TF Serving's Regress on the version labelled `label`."),
    (models_router, "GET", _status_handler, "latest", "",
     "model_status", schemas.ModelStatusResponse,
     "Status of every version",
     "TF Serving's GetModelStatus for all versions."),
    (models_router, "GET", _status_handler, "version", "",
     "version_status", schemas.ModelStatusResponse,
     "Status of one version",
     "TF Serving's GetModelStatus for one version."),
    (models_router, "GET", _status_handler, "label", "",
     "label_status", schemas.ModelStatusResponse,
     "Status of the version a label names",
     "TF Serving's GetModelStatus for the version labelled `label`."),
    (models_router, "GET", _metadata_handler, "latest", "/metadata",
     "model_metadata", schemas.ModelMetadataResponse,
     "Signatures of the latest version",
     "TF Serving's GetModelMetadata (signature defs), plus export "
     "metadata."),
    (models_router, "GET", _metadata_handler, "version", "/metadata",
     "version_metadata", schemas.ModelMetadataResponse,
     "Signatures of one version",
     "TF Serving's GetModelMetadata for one version."),
    (models_router, "GET", _metadata_handler, "label", "/metadata",
     "label_metadata", schemas.ModelMetadataResponse,
     "Signatures of the version a label names",
     "TF Serving's GetModelMetadata for the version labelled `label`."),
)  # fmt: skip

for (
    _router,
    _method,
    _factory,
    _selector,
    _tail,
    _name,
    _model,
    _summary,
    _description,
) in _MODEL_ROUTES:
    _suffix, _dependency = _SELECTORS[_selector]
    _router.add_api_route(
        "/v1/models/{model_name}" + _suffix + _tail,
        _factory(_dependency),
        methods=[_method],
        name=_name,
        response_model=_model,
        summary=_summary,
        description=_description,
        openapi_extra=_POST_BODIES.get(_tail) if _method == "POST" else None,
    )

# -- Usage and operations -----------------------------------------------------

usage_router = fastapi.APIRouter(tags=["usage"], responses=_ERRORS)
operations_router = fastapi.APIRouter(tags=["operations"])


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


@usage_router.get(
    "/v1/usage",
    response_model=schemas.UsageResponse,
    summary="The calling key's own usage and charges",
)
def usage(
    service: ServiceDep,
    key: Annotated[ApiKey, Depends(key_caller)],
    since: str | None = None,
    until: str | None = None,
) -> Response:
    """Usage of the calling API key in `[since, until)`, priced."""
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


@operations_router.get(
    "/healthz",
    response_model=schemas.HealthResponse,
    summary="Liveness: the process is up",
)
async def healthz() -> Response:
    """Always 200 while the process serves HTTP (on the event loop: no
    thread, no database)."""
    return _json({"status": "ok"})


@operations_router.get(
    "/readyz",
    response_model=schemas.HealthResponse,
    responses={503: {"model": schemas.ErrorResponse}},
    summary="Readiness: every model has a loaded version, the database answers",
)
def readyz(service: ServiceDep) -> Response:
    """200 when every model serves a version and the database answers."""
    registry = service.registry
    models = {name: model.versions for name, model in registry.models.items()}
    problem = service.limiter.database_problem()  # no I/O: the heartbeat's
    if problem is not None:
        return _json({"error": f"Not ready: {problem}", "models": models}, 503)
    problems = {
        name: model.problem
        for name, model in registry.models.items()
        if model.problem
    }
    if registry.ready:
        payload: dict[str, Any] = {"status": "ready", "models": models}
        if problems:  # still serving what is loaded
            payload["problems"] = problems
        return _json(payload)
    missing = sorted(name for name, versions in models.items() if not versions)
    return _json(
        {
            "error": "Not ready: no version loaded yet for "
            + ", ".join(missing),
            "models": models,
        },
        503,
    )


@operations_router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
)
def metrics(service: ServiceDep) -> Response:
    """Requests, latency, batch sizes and errors per model."""
    body, content_type = service.metrics.render()
    return Response(body, media_type=content_type)


# -- Open Inference Protocol (KServe V2) -------------------------------------

v2_router = fastapi.APIRouter(tags=["v2"], responses=_ERRORS)


@v2_router.get("/v2", summary="Server metadata (V2)")
def v2_server() -> Response:
    """Name, version and extensions (`binary_tensor_data`)."""
    return _json(_v2.server_metadata())


@v2_router.get("/v2/health/live", summary="Liveness (V2)")
def v2_live() -> Response:
    """Always 200 while the process serves HTTP."""
    return _json({"live": True})


@v2_router.get("/v2/health/ready", summary="Readiness (V2)")
def v2_ready(service: ServiceDep) -> Response:
    """200 when every model serves a version, else 503."""
    ready = service.registry.ready
    return _json({"ready": ready}, 200 if ready else 503)


def _v2_metadata_handler(selector: Callable[..., Any]) -> Callable[..., Any]:
    def handler(
        service: ServiceDep,
        key: ModelCaller,
        spec: Annotated[ModelSpec, Depends(selector)],
    ) -> Response:
        model, version = spec.resolve(service.registry)
        return _json(
            _v2.model_metadata(spec.name, model.versions, model.get(version))
        )

    return handler


def _v2_ready_handler(selector: Callable[..., Any]) -> Callable[..., Any]:
    def handler(
        service: ServiceDep,
        key: ModelCaller,
        spec: Annotated[ModelSpec, Depends(selector)],
    ) -> Response:
        model, version = spec.resolve(service.registry)
        model.get(version)
        return _json({"name": spec.name, "ready": True})

    return handler


def _v2_infer_handler(selector: Callable[..., Any]) -> Callable[..., Any]:
    async def handler(
        request: Request,
        service: ServiceDep,
        key: ModelCaller,
        spec: Annotated[ModelSpec, Depends(selector)],
    ) -> Response:
        decode = _predict.protocol_decoder(
            _v2.decoder(request.headers.get(_v2.HEADER_LENGTH)), _v2.encode
        )
        return await _metered(request, service, key, spec, decode=decode)

    return handler


for _selector_name, _suffix in (
    ("latest", ""),
    ("version", "/versions/{version}"),
):
    _dependency = _SELECTORS[_selector_name][1]
    _base = "/v2/models/{model_name}" + _suffix
    _tag = "" if _selector_name == "latest" else "_version"
    v2_router.add_api_route(
        _base,
        _v2_metadata_handler(_dependency),
        methods=["GET"],
        name="v2_model_metadata" + _tag,
        summary="Model metadata (V2)",
    )
    v2_router.add_api_route(
        _base + "/ready",
        _v2_ready_handler(_dependency),
        methods=["GET"],
        name="v2_model_ready" + _tag,
        summary="Model readiness (V2)",
    )
    v2_router.add_api_route(
        _base + "/infer", _v2_infer_handler(_dependency), methods=["POST"],
        name="v2_infer" + _tag, summary="Inference with typed tensors (V2)",
        response_model=schemas.V2InferResponse, openapi_extra=_V2_BODY,
    )  # fmt: skip

#: Every route of the server, in the order the OpenAPI spec lists them.
router = fastapi.APIRouter()
for _included in (predict_router, models_router, usage_router, v2_router):
    router.include_router(_included)
router.include_router(operations_router)
