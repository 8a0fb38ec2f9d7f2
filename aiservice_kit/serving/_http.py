"""HTTP/1.1 limits uvicorn leaves out: read timeouts and header caps.

uvicorn (with httptools) waits forever for a request's headers and body
and accepts any number of headers of any size, so a client sending one
header line a second holds a connection (and its memory) as long as it
likes, and 10,000 headers are parsed and handed to the app. `guarded_http`
builds an `HttpToolsProtocol` subclass that closes such connections:

- headers not complete `header_timeout_s` after the connection opened or
  the request began: 408, connection closed;
- body not complete `body_timeout_s` after the headers: 408, closed (an
  app waiting on the body sees a client disconnect, logged as 499);
- more than `max_header_count` headers, or more than `max_header_bytes`
  of request line and headers: 431, closed.

`serve` passes it to `uvicorn.run(http=...)`; the settings are in
`config` (`DEFAULT_HEADER_TIMEOUT_S` ...).
"""

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from aiservice_kit.serving.config import DEFAULT_BODY_TIMEOUT_S
from aiservice_kit.serving.config import DEFAULT_HEADER_TIMEOUT_S
from aiservice_kit.serving.config import DEFAULT_MAX_HEADER_BYTES
from aiservice_kit.serving.config import DEFAULT_MAX_HEADER_COUNT

logger = logging.getLogger("aiservice_kit.serving")

_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


class _Refused(Exception):
    """Stops the parser once the connection was answered and closed."""


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with read timeouts and header caps.

    Use `guarded_http(...)` to set the limits; the class attributes are
    the defaults.
    """

    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S
    max_header_count: int = DEFAULT_MAX_HEADER_COUNT
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._refused = False
        self._header_count = 0
        self._header_bytes = 0

    # -- timers --------------------------------------------------------------

    def _arm(self, seconds: float, what: str) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expired, what)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self, what: str) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "?"
        logger.info("%s: %s not received in time; closed", client, what)
        cycle = self.cycle
        if (
            cycle is None
            or cycle.response_complete
            or not (cycle.response_started)
        ):
            self._refuse(408, f"The request {what} was not received in time.")
        else:
            self.transport.close()

    def _refuse(self, status: int, message: str) -> None:
        self._refused = True
        self._disarm()
        body = ('{"error": "' + message + '"}').encode("ascii")
        self.transport.write(
            b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status])
            + b"content-type: application/json\r\n"
            + b"content-length: %d\r\n" % len(body)
            + b"connection: close\r\n\r\n"
            + body
        )
        self.transport.close()

    # -- protocol callbacks --------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # noqa: E501
        super().connection_made(transport)
        self._arm(self.header_timeout_s, "headers")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        try:
            super().data_received(data)
        except _Refused:  # pragma: no cover - the parser wraps it
            pass

    def send_400_response(self, msg: str) -> None:
        if not self._refused:  # a refusal already answered and closed
            super().send_400_response(msg)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_count = 0
        self._header_bytes = 0
        self._arm(self.header_timeout_s, "headers")

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.max_header_count:
            self._refuse(
                431,
                f"Too many request headers: the limit is "
                f"{self.max_header_count} (max_header_count).",
            )
            raise _Refused
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _count(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > self.max_header_bytes:
            self._refuse(
                431,
                "Request line and headers too large: the limit is "
                f"{self.max_header_bytes} bytes (max_header_bytes).",
            )
            raise _Refused

    def on_headers_complete(self) -> None:
        self._arm(self.body_timeout_s, "body")
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()


def guarded_http(
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S,
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
    max_header_count: int = DEFAULT_MAX_HEADER_COUNT,
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
) -> type[GuardedHttpProtocol]:
    """A protocol class for `uvicorn.run(http=...)` with these limits.

    Args:
        header_timeout_s: float. Seconds for the request line and headers.
        body_timeout_s: float. Seconds for the body, after the headers.
        max_header_count: int. Most headers per request.
        max_header_bytes: int. Most bytes of request line and headers.

    Returns:
        A `GuardedHttpProtocol` subclass.

    Example:
    ```python
    uvicorn.run(app, http=guarded_http(header_timeout_s=5))
    ```
    """
    return type(
        "GuardedHttpProtocol",
        (GuardedHttpProtocol,),
        {
            "header_timeout_s": float(header_timeout_s),
            "body_timeout_s": float(body_timeout_s),
            "max_header_count": int(max_header_count),
            "max_header_bytes": int(max_header_bytes),
        },
    )
