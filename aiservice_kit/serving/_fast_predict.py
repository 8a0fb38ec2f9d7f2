"""The REST Predict route served below FastAPI's routing and dependencies.

`POST /v1/models/M[/versions/N | /labels/L]:predict` is the call a model
server answers most. Through FastAPI it goes by the router's regular
expressions over every route, the exception middleware and the
dependency solver (service, caller, version), about 0.2 ms a call before
`_predict.predict` starts. `FastPredict`, an ASGI middleware inside the
app's own (`_AccessLog`, `_OperatorOnly`, `_BodyLimit`), answers those
calls itself with the same steps as `routes._predict_handler`: the URL
checks, the API key (cached lookups, `Authenticator.aauthenticate`), the
model authorization, the metered pipeline, and the same answers and
headers for every error. Every other request, and a Predict call while
the app has no service or under a `root_path`, goes on to FastAPI, where
the routes (and their OpenAPI entries) stay declared.
"""

import logging
import re
from collections.abc import Callable
from typing import Any

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response

from aiservice_kit.serving import _predict
from aiservice_kit.serving._errors import ServingError
from aiservice_kit.serving.auth import Authenticator
from aiservice_kit.serving.registry import ModelSpec
from aiservice_kit.serving.routes import check_url_part

logger = logging.getLogger("aiservice_kit.serving")

#: The three URL forms of the Predict route, as Starlette matches them
#: (a path parameter is `[^/]+`).
_PREDICT_URL = re.compile(
    r"^/v1/models/(?P<model>[^/]+)"
    r"(?:/versions/(?P<version>[^/]+)|/labels/(?P<label>[^/]+))?:predict$"
)


class _Disconnected(Exception):
    """The client left before sending its whole body."""


def _reader(receive: Callable[..., Any]) -> Callable[[], Any]:
    """`Request.body` for a raw ASGI call: the whole body, read once."""

    async def body() -> bytes:
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                return b"".join(chunks)

    return body


class FastPredict:
    """Answers the REST Predict route without FastAPI (see the module).

    Args:
        app: the ASGI app to call for every other request.
        error_response: callable. `(message, status, headers) -> Response`,
            the app's error answer (`{"error": message}`).
    """

    def __init__(self, app: Any, error_response: Callable[..., Any]) -> None:
        self.app = app
        self.error_response = error_response

    async def __call__(self, scope, receive, send) -> None:
        match = None
        if (
            scope["type"] == "http"
            and scope.get("method") == "POST"
            and not scope.get("root_path")
        ):
            match = _PREDICT_URL.match(scope.get("path", ""))
        service = None
        if match is not None:
            service = getattr(scope["app"].state, "service", None)
        if service is None:
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        try:
            response = await self._predict(
                scope, receive, state, service, match
            )
        except ServingError as error:
            response = self.error_response(
                error.message, error.status_code, error.headers
            )
        except _Disconnected:
            logger.info(
                "client disconnected before sending its whole body on %s",
                scope.get("path", ""),
            )
            response = self.error_response("Client closed the request.", 499)
        await response(scope, receive, send)

    async def _predict(self, scope, receive, state, service, match) -> Response:
        name, version, label = match.group("model", "version", "label")
        # In the order FastAPI solves the route's dependencies: the model
        # name, the key, then the version or label.
        if ":" in name:
            check_url_part(Request(scope), name)
        key = await service.auth.aauthenticate(Headers(scope=scope))
        state["key"] = key  # for the access log
        Authenticator.authorize(key, name)
        if ":" in (version or label or ""):
            check_url_part(Request(scope), version or label)
        spec = ModelSpec(name, version=version, label=label)
        try:
            reply = await _predict.predict(
                service, key, spec, _reader(receive), api="predict"
            )
        except ServingError as error:
            # `predict` counts what it answers or fails to meter (503);
            # the access log counts every other refusal (`app._AccessLog`).
            state["predict_counted"] = error.status_code == 503
            raise
        state["predict_counted"] = True
        return Response(
            reply.content,
            status_code=reply.status,
            media_type="application/json",
            headers=reply.headers,
        )
