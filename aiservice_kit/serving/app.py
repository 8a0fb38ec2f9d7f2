"""`create_app`: the ASGI app factory, wiring only. Models load in the lifespan.

The parts live in their own modules: the config and defaults in `config`,
what `models` may be in `_sources`, the TensorFlow runtime in
`_servable`, the version policy in `registry`, the routes in `routes`
and the predict pipeline in `_predict`. This module puts them together
with the middlewares and the error handlers.
"""

import asyncio
import contextlib
import gc
import json
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

import fastapi
from fastapi.exceptions import RequestValidationError
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse

from aiservice_kit._version import __version__
from aiservice_kit.serving._db import database_url
from aiservice_kit.serving._errors import ServingError
from aiservice_kit.serving._fast_predict import FastPredict
from aiservice_kit.serving._servable import load_version
from aiservice_kit.serving._service import Metrics
from aiservice_kit.serving._service import Service
from aiservice_kit.serving._sources import InMemoryExports
from aiservice_kit.serving._sources import model_configs
from aiservice_kit.serving.auth import ADMIN_SCOPE
from aiservice_kit.serving.auth import Authenticator
from aiservice_kit.serving.auth import KeyStore
from aiservice_kit.serving.auth import key_from_headers
from aiservice_kit.serving.batching import BatchingConfig
from aiservice_kit.serving.config import DEFAULT_DB_ENV
from aiservice_kit.serving.config import DEFAULT_DB_FILE
from aiservice_kit.serving.config import DEFAULT_GRPC_PORT
from aiservice_kit.serving.config import DEFAULT_HOST
from aiservice_kit.serving.config import DEFAULT_MAX_BODY_BYTES
from aiservice_kit.serving.config import DEFAULT_POLL_INTERVAL_S
from aiservice_kit.serving.config import ServerConfig
from aiservice_kit.serving.config import load_config
from aiservice_kit.serving.metering import DatabaseMeter
from aiservice_kit.serving.metering import GroupCommitter
from aiservice_kit.serving.metering import Meter
from aiservice_kit.serving.ratelimit import RateLimiter
from aiservice_kit.serving.registry import Registry
from aiservice_kit.serving.routes import router

logger = logging.getLogger("aiservice_kit.serving")
access_logger = logging.getLogger("aiservice_kit.serving.access")


def _error_response(message: str, status: int, headers=None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


#: The verbs of TF Serving's REST model calls (`/v1/models/NAME...:VERB`).
_V1_CALL_VERBS = (":predict", ":classify", ":regress", ":explain")


def _called_model_name(path: str) -> str | None:
    """The model a model call's path names (any protocol: TF Serving's
    `/v1/models/NAME...:predict` and its classify, regress and explain
    verbs, V2's `/v2/models/NAME.../infer`), else None."""
    if path.startswith("/v1/models/") and path.endswith(_V1_CALL_VERBS):
        return path[len("/v1/models/") :].split("/")[0].split(":")[0]
    if path.startswith("/v2/models/") and path.endswith("/infer"):
        return path[len("/v2/models/") :].split("/")[0]
    return None


def _predict_model(scope) -> Any:
    """The served model a POST model call names (`_called_model_name`),
    else None."""
    if scope.get("method") != "POST":
        return None
    name = _called_model_name(scope.get("path", ""))
    service = getattr(scope["app"].state, "service", None)
    if name is None or service is None:
        return None
    return service.registry.models.get(name)


class _BodyLimit:
    """413 for bodies over the limit (declared or streamed); predict bodies
    also hold their bytes against the model's `max_inflight_bytes` until
    the reply (429 when the model has no room)."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = (
            f"Request body too large: the limit is {self.max_bytes} bytes."
        )
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _error_response("Invalid Content-Length.", 400)(
                        scope, receive, send
                    )
                    return
                if declared > self.max_bytes:
                    await _error_response(message, 413)(scope, receive, send)
                    return
        model = _predict_model(scope)
        admission = None if model is None else model.admission
        received = 0
        reserved = 0
        caller = None
        if admission is not None:
            declared = next(
                (
                    max(0, int(v))
                    for k, v in scope["headers"]
                    if k == b"content-length"
                ),
                0,
            )
            try:
                caller = _caller(scope)
                admission.reserve_bytes(declared, caller)
            except ServingError as error:
                await _error_response(
                    error.message, error.status_code, error.headers
                )(scope, receive, send)
                return
            reserved = declared

        async def limited_receive():
            nonlocal received, reserved
            event = await receive()
            if event["type"] == "http.request":
                received += len(event.get("body", b""))
                if received > self.max_bytes:
                    raise ServingError(message, 413)
                if admission is not None and received > reserved:
                    admission.grow_bytes(received - reserved, caller)
                    reserved = received
            return event

        try:
            await self.app(scope, limited_receive, send)
        finally:
            if admission is not None:
                admission.release_bytes(reserved, caller)


def _caller(scope) -> str:
    """Who calls, for `Admission.reserve_bytes`' per-caller share: the
    credential presented (an unknown one is answered 401 before its body
    is read, so it holds nothing for long), else the client's address."""
    key = key_from_headers(Headers(scope=scope))
    if key is not None:
        return "key:" + key
    client = scope.get("client") or ("", 0)
    return "address:" + str(client[0])


#: Pages that describe or watch the server rather than serve models: with
#: auth on, they need an API key with the admin scope.
PROTECTED_PATHS = ("/metrics", "/docs", "/redoc", "/openapi.json")


class _OperatorOnly:
    """With auth required, `PROTECTED_PATHS` need a key with `ADMIN_SCOPE`.

    401 without a key (or with a bad one), 403 naming the scope for a key
    without it. The key is looked up off the event loop.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and (
            path in PROTECTED_PATHS or path.startswith("/docs/")
        ):
            service = getattr(scope["app"].state, "service", None)
            if service is not None and service.auth.required:
                try:
                    key = await service.auth.aauthenticate(Headers(scope=scope))
                    service.auth.require_scope(key, ADMIN_SCOPE, path)
                except ServingError as error:
                    await _error_response(
                        error.message, error.status_code, error.headers
                    )(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def _route_family(path: str) -> str:
    if _called_model_name(path) is not None:
        return "predict"  # every protocol's model calls
    if path.startswith(("/v1/models/", "/v2/models/")):
        return "models"
    if path in ("/v1/usage", "/healthz", "/readyz", "/metrics"):
        return path.strip("/").replace("v1/", "")
    return "other"


class _AccessLog:
    """One JSON line per request; never the API key, never the query."""

    def __init__(self, app: Any, metrics: Metrics, enabled: bool) -> None:
        self.app = app
        self.metrics = metrics
        self.enabled = enabled

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def watched_send(event):
            if event["type"] == "http.response.start":
                status["code"] = event["status"]
            await send(event)

        try:
            await self.app(scope, receive, watched_send)
        finally:
            path = scope.get("path", "")
            family = _route_family(path)
            self.metrics.http.labels(family, str(status["code"])).inc()
            if family == "predict" and not scope.get("state", {}).get(
                "predict_counted"
            ):
                # Refused before or outside the pipeline (401, 403, 413,
                # 429, 499, 500): still a predict call with a status.
                model = _predict_model(scope)
                self.metrics.observe(
                    "_unknown" if model is None else model.name,
                    status["code"],
                    time.perf_counter() - started,
                )
            if self.enabled and access_logger.isEnabledFor(logging.INFO):
                key = scope.get("state", {}).get("key")
                client = scope.get("client") or ("", 0)
                access_logger.info(
                    json.dumps(
                        {
                            "time": time.strftime(
                                "%Y-%m-%dT%H:%M:%SZ", time.gmtime()
                            ),
                            "client": client[0],
                            "method": scope.get("method"),
                            "path": path,
                            "status": status["code"],
                            "latency_ms": round(
                                (time.perf_counter() - started) * 1000, 3
                            ),
                            "key_id": None if key is None else key.id,
                            "key_name": None if key is None else key.name,
                        }
                    )
                )


def _check_grpc(port: Any) -> None:
    """Checks `grpc_port` and that the `grpc` extra is installed."""
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(
            "`grpc_port` must be a port number (0-65535) or None. "
            f"Received: grpc_port={port!r}"
        )
    if not 0 <= port <= 65535:
        raise ValueError(
            "`grpc_port` must be a port number (0-65535) or None. "
            f"Received: grpc_port={port!r}"
        )
    try:
        import aiservice_kit.serving._grpc  # noqa: F401
    except ImportError as error:
        raise ImportError(
            f"gRPC serving needs grpcio and tensorflow-serving-api ({error}): "
            "pip install 'aiservice_kit[grpc]' and then "
            "pip install --no-deps tensorflow-serving-api (it asks for the "
            "`tensorflow` distribution, which would install a second "
            "TensorFlow beside tensorflow-cpu)."
        ) from error


def create_app(
    models: Mapping[str, Any] | str | os.PathLike | Any = None,
    *,
    db: str | os.PathLike | None = None,
    config: ServerConfig | str | os.PathLike | None = None,
    auth: bool = True,
    batching: BatchingConfig | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
    meter: Meter | None = None,
    access_log: bool = True,
    grpc_port: int | None = DEFAULT_GRPC_PORT,
    grpc_host: str = DEFAULT_HOST,
    grpc_reuse_port: bool = False,
) -> fastapi.FastAPI:
    """Builds the TF-Serving-compatible REST app (models load at startup).

    Args:
        models: dict of model name -> a base path holding `<N>/`
            SavedModel version directories, a `ModelConfig`, or a
            `keras.Model` (exported with `export_saved_model` to a temporary
            directory, so a notebook can serve what it just trained). A
            single path, `ModelConfig` or model is served under the name
            `"default"`, as TensorFlow Serving names a lone model. Merged
            with the config file's `[models]`.
        db: str or Path or None. The database of API keys, the usage
            ledger and the shared quota and rate state: a SQLite file (or
            `sqlite:///` URL) or a `postgresql://` URL; default
            `$AISERVICE_KIT_DB` or `./aiservice_kit.db`.
        config: ServerConfig, path of a TOML/JSON config, or None.
            Prices, plans and per-model settings.
        auth: bool. Require an API key on `/v1/` routes. When False,
            calls without a key are anonymous (a key sent is still
            checked and metered). The CLI turns it on whenever the host
            is not loopback.
        batching: BatchingConfig or None. Default batching for models
            given as paths.
        max_body_bytes: int. Larger request bodies get 413.
        poll_interval_s: float. Seconds between scans for new versions.
        meter: Meter or None. Where usage goes; default a `DatabaseMeter`
            on `db` (quotas and rates then hold across replicas).
        access_log: bool. Log one JSON line per request to the
            `aiservice_kit.serving.access` logger.
        grpc_port: int or None. Also serve TF Serving's gRPC API
            (PredictionService, ModelService) on this port (0: any free
            one, see `app.state.grpc.port`), with the same keys, quotas
            and ledger; None: REST only. Needs the `grpc` extra.
        grpc_host: str. The address the gRPC server listens on.
        grpc_reuse_port: bool. Bind `grpc_port` with SO_REUSEPORT, so
            several worker processes share it (`serve --workers`); off,
            a port in use is an error.

    Returns:
        A FastAPI app; run it with uvicorn, or use it in a
        `fastapi.testclient.TestClient` context.

    Raises:
        ValueError: for no models, a missing base path or a bad setting.
        TypeError: for arguments of the wrong type.
        ImportError: for `grpc_port` without the `grpc` extra.

    Example:
    ```python
    import uvicorn
    from aiservice_kit.serving import create_app
    app = create_app({"mnist": "exports/mnist"}, db="service.db")
    uvicorn.run(app, host="127.0.0.1", port=8501)
    # Or straight from a notebook: POST /v1/models/default:predict
    app = create_app(model, auth=False)
    ```
    """
    if not isinstance(config, ServerConfig):
        config = load_config(config)
    batching = batching or BatchingConfig()
    exports = InMemoryExports()
    try:
        served = model_configs(models, config.models, batching, exports)
    except BaseException:
        exports.remove()
        raise
    if isinstance(max_body_bytes, bool) or not isinstance(max_body_bytes, int):
        raise TypeError(
            "`max_body_bytes` must be a positive integer. "
            f"Received: max_body_bytes={max_body_bytes!r}"
        )
    if max_body_bytes < 1:
        raise ValueError(
            "`max_body_bytes` must be a positive integer. "
            f"Received: max_body_bytes={max_body_bytes!r}"
        )
    if grpc_port is not None:
        _check_grpc(grpc_port)
    db_path = database_url(
        db
        if db is not None
        else os.environ.get(DEFAULT_DB_ENV, DEFAULT_DB_FILE)
    )
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: fastapi.FastAPI):
        store = KeyStore(db_path)
        ledger = meter if meter is not None else DatabaseMeter(db_path)
        registry = Registry(
            served,
            load_version,
            poll_interval_s=poll_interval_s,
            on_batch=metrics.batch,
        )
        await asyncio.to_thread(registry.start)
        committer = GroupCommitter(ledger)
        limiter = RateLimiter(config.plans, ledger)
        await asyncio.to_thread(limiter.start)  # releases dead reservations
        app.state.service = Service(
            registry=registry,
            auth=Authenticator(store, required=auth),
            limiter=limiter,
            meter=ledger,
            committer=committer,
            prices=config.prices,
            metrics=metrics,
        )
        active = store.list() if auth else []
        if auth and not active:
            logger.warning(
                "API keys are required but the key store %s holds no "
                "active key: every call will get 401. Create one with "
                "`aiservice-kit keys create --name NAME --plan PLAN`.",
                db_path,
            )
        elif auth and not any(k.has_scope(ADMIN_SCOPE) for k in active):
            logger.warning(
                "No active API key in %s has the '%s' scope: %s answer "
                "403 to every key. Grant it with `aiservice-kit keys grant "
                "NAME %s` (or `keys create ... --%s`).",
                db_path,
                ADMIN_SCOPE,
                ", ".join(PROTECTED_PATHS),
                ADMIN_SCOPE,
                ADMIN_SCOPE,
            )
        logger.info(
            "serving %s (auth %s, ledger %s)",
            ", ".join(f"{n}: {m.versions}" for n, m in registry.models.items()),
            "on" if auth else "off",
            db_path,
        )
        # TensorFlow and the loaded models are millions of objects that live
        # as long as the server; a full collection walking them all stops
        # every thread for ~0.3 s (the c=32 p99, benchmarks/serving_tail.py).
        # Freeze them out of the collector's reach until shutdown.
        gc.collect()
        gc.freeze()
        app.state.grpc = None
        if grpc_port is not None:
            from aiservice_kit.serving._grpc import start_grpc_server

            app.state.grpc = await start_grpc_server(
                app.state.service,
                grpc_host,
                grpc_port,
                max_body_bytes,
                reuse_port=grpc_reuse_port,
            )
        try:
            yield
        finally:
            if app.state.grpc is not None:
                await app.state.grpc.stop()
            committer.close()
            await asyncio.to_thread(limiter.close)
            await asyncio.to_thread(registry.stop)
            if meter is None:
                ledger.close()
            store.close()
            gc.unfreeze()  # what this app held can be collected again

    app = fastapi.FastAPI(
        title="aiservice_kit model server",
        version=__version__,
        description="TensorFlow Serving's REST API with API keys, metering, "
        "pricing and quotas.",
        lifespan=lifespan,
    )
    app.include_router(router)

    @app.exception_handler(ServingError)
    async def serving_error(request, error: ServingError):
        return _error_response(error.message, error.status_code, error.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, error: StarletteHTTPException):
        message, status = str(error.detail), error.status_code
        if status in (404, 405):  # TF Serving: a bad URL is a bad request
            message = f"Malformed request: {request.method} {request.url.path}"
            if request.url.path.startswith("/v1/"):
                status = 400
        return _error_response(message, status, error.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, error: RequestValidationError):
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item.get('loc', ()))}: "
            f"{item.get('msg', '')}"
            for item in error.errors()
        )
        return _error_response(f"Invalid request: {problems}", 400)

    @app.exception_handler(ClientDisconnect)
    async def client_disconnect(request, error: ClientDisconnect):
        # The client left before sending the body it announced: nothing
        # failed here, and nobody reads the answer. 499 as nginx logs it.
        logger.info(
            "client disconnected before sending its whole body on %s",
            request.url.path,
        )
        return _error_response("Client closed the request.", 499)

    @app.exception_handler(Exception)
    async def unexpected_error(request, error: Exception):
        logger.exception("unexpected error on %s", request.url.path)
        return _error_response(f"Internal error: {type(error).__name__}", 500)

    app.add_middleware(FastPredict, error_response=_error_response)
    app.add_middleware(_BodyLimit, max_bytes=max_body_bytes)
    app.add_middleware(_OperatorOnly)
    app.add_middleware(_AccessLog, metrics=metrics, enabled=access_log)
    exports.remove_with(app)
    return app
