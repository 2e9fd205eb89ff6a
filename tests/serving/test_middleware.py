"""The /simulate metrics middleware: a response is counted by what the client got, not by how the stream ended."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import pytest

from app.serving.api.middleware import SimulateMetricsMiddleware
from app.serving.metrics import ServiceMetrics

Body = list[tuple[bytes, bool]]


def _app(body: Body, *, then: Callable[[], Awaitable[None]] | None = None) -> Callable:
    async def app(scope: dict, receive: Callable, send: Callable) -> None:
        scope.setdefault("state", {})["calogan_format"] = "hdf5"
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"6")]})
        for chunk, more in body:
            await send({"type": "http.response.body", "body": chunk, "more_body": more})
        if then is not None:
            await then()

    return app


async def _cancelled() -> None:
    raise asyncio.CancelledError  # Starlette cancels the stream when the client hangs up


def _count(metrics: ServiceMetrics, status: str) -> float:
    return metrics.registry.get_sample_value("calogan_requests_total", {"status": status, "format": "hdf5"}) or 0.0


async def _run(app: Callable) -> ServiceMetrics:
    metrics = ServiceMetrics()
    middleware = SimulateMetricsMiddleware(app, metrics=metrics)

    async def send(message: dict) -> None:
        pass

    async def receive() -> dict:
        return {"type": "http.disconnect"}

    with contextlib.suppress(asyncio.CancelledError):
        await middleware({"type": "http", "path": "/simulate"}, receive, send)
    return metrics


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("body", "then", "status"),
    [
        ([(b"abc", True), (b"def", False)], None, "200"),  # the ordinary end of a stream
        ([(b"abc", True), (b"def", True)], _cancelled, "200"),  # every byte sent, client gone before the end
        ([(b"abc", True), (b"def", True)], None, "200"),
        ([(b"abc", True)], None, "499"),  # client gone half-way
        ([(b"abc", True)], _cancelled, "500"),  # server failure half-way
    ],
)
async def test_a_response_is_counted_by_the_bytes_the_client_got(
    body: Body, then: Callable[[], Awaitable[None]] | None, status: str
) -> None:
    metrics = await _run(_app(body, then=then))
    assert _count(metrics, status) == 1.0
