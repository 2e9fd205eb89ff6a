"""ASGI middleware of the service: the request-body limit, and the per-request metrics of ``/simulate``
(measured at the ASGI edge so streamed bodies are counted to the end)."""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.serving.api.errors import CLIENT_CLOSED_REQUEST, error_response
from app.serving.metrics import ServiceMetrics


class BodySizeLimitMiddleware:
    """Answer 413 to a request whose body is larger than ``max_bytes``, before it is parsed.

    A declared Content-Length over the limit is refused unread; a chunked body is counted while the
    app reads it, and at the limit the app is told the client left and its answer is replaced by the
    413, so a huge JSON body never sits in memory.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope.get("headers", []))
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        received = 0
        too_large = False

        async def limited_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    too_large = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not too_large:  # the app's own answer to a body it could not read whole
                await send(message)

        await self.app(scope, limited_receive, guarded_send)
        if too_large:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(413, "request body too large", allowed=f"at most {self.max_bytes} bytes")
        await response(scope, receive, send)


class SimulateMetricsMiddleware:
    """Count requests by status and format; observe latency (to the last byte) and body size.

    A stream cut short by the client is counted as 499; one cut short by a server error as 500,
    whatever status line had already gone out. A response counts as complete once its last body
    message went out, or once every byte its Content-Length announced did: a client that has read
    the whole file may hang up before the server sends the final empty message, and the stream is
    then cancelled, but the client has its 200.
    """

    def __init__(self, app: ASGIApp, *, metrics: ServiceMetrics, path: str = "/simulate") -> None:
        self.app = app
        self.metrics = metrics
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status: int | None = None
        announced_bytes: int | None = None
        sent_bytes = 0
        complete = False

        async def counting_send(message: Message) -> None:
            nonlocal status, announced_bytes, sent_bytes, complete
            if message["type"] == "http.response.start":
                status = message["status"]
                announced_bytes = _content_length(message.get("headers", []))
            elif message["type"] == "http.response.body":
                sent_bytes += len(message.get("body", b""))
                complete = not message.get("more_body", False) or sent_bytes == announced_bytes
            await send(message)

        failed = False
        try:
            await self.app(scope, receive, counting_send)
        except BaseException:
            failed = not complete
            raise
        finally:
            cut_short = "500" if failed else str(CLIENT_CLOSED_REQUEST)
            label = str(status) if complete and status is not None else cut_short
            fmt = scope.get("state", {}).get("calogan_format", "none")
            self.metrics.requests.labels(status=label, format=fmt).inc()
            self.metrics.request_duration.observe(time.perf_counter() - start)
            self.metrics.response_size.observe(sent_bytes)


def _content_length(headers: Any) -> int | None:
    """The Content-Length among ASGI headers (request scope or response start), or None (a stream)."""
    for name, value in headers:
        if name.lower() == b"content-length":
            return int(value)
    return None
