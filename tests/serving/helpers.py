"""Test doubles and helpers for the service: gated and failing backends, waiting on state, a live server."""

from __future__ import annotations

import asyncio
import contextlib
import io
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import uvicorn
from fastapi import FastAPI

from app.serving.backends import FakeBackend
from app.serving.batcher import seed_streams

GATE_TIMEOUT_S = 30.0  # safety net only: a test that reaches it has failed anyway


class GatedBackend(FakeBackend):
    """A FakeBackend whose calls wait for ``release``; ``entered`` is set when a call begins.

    ``batch_norms`` records each call's per-row latent norms, so tests can tell which request's
    rows (low or high energy) went into which batch.
    """

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()
        self.batch_norms: list[np.ndarray] = []

    def generate(self, latent: Any) -> Any:
        self.batch_norms.append(np.linalg.norm(np.asarray(latent), axis=1))
        self.entered.set()
        if not self.release.wait(GATE_TIMEOUT_S):
            raise TimeoutError("the test never released the gate")
        return super().generate(latent)


class PoisonBackend(FakeBackend):
    """Fails every batch holding a row whose latent norm says Ep > ``limit_gev`` (z has norm ~ sqrt(200))."""

    def __init__(self, limit_gev: float = 300.0) -> None:
        super().__init__()
        self.limit_norm = limit_gev / 100.0 * np.sqrt(200.0) * 1.3

    def generate(self, latent: Any) -> Any:
        if np.linalg.norm(np.asarray(latent), axis=1).max() > self.limit_norm:
            raise RuntimeError("poisoned batch")
        return super().generate(latent)


def expected_showers(ep_gev: Any, seed: int, latent_fn: Callable[..., Any]) -> np.ndarray:
    """What FakeBackend must return for a request, computed in one go without any batching."""
    ep = np.broadcast_to(np.asarray(ep_gev, dtype=np.float64), np.shape(ep_gev) or (1,))
    _, noise_rng = seed_streams(seed)
    return FakeBackend().generate(latent_fn(ep, noise_rng))


def wait_until(predicate: Callable[[], bool], *, timeout_s: float = 10.0, what: str = "condition") -> None:
    """Poll ``predicate`` until true; the deadline is only a safety net against hanging forever."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


async def wait_until_async(predicate: Callable[[], bool], *, timeout_s: float = 10.0, what: str = "condition") -> None:
    """The same on the event loop."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def load_npy(body: bytes) -> np.ndarray:
    """Parse a .npy response body."""
    return np.load(io.BytesIO(body), allow_pickle=False)


@contextlib.contextmanager
def live_server(app: FastAPI) -> Iterator[str]:
    """Run ``app`` with uvicorn in a thread on a free port; yield its base URL; stop it (with lifespan)."""
    sock = socket.create_server(("127.0.0.1", 0))  # the OS picks a free port
    config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=10)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), timeout_s=60, what="server start")
        if not server.started:
            raise RuntimeError("the server did not start (see its log)")
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
