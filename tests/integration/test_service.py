"""Acceptance tests of the running service (uvicorn in a thread, gated fake backend): batching under load,
reproducibility inside busy batches, disconnects, backpressure, timeouts and failing batches."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import httpx
import numpy as np
import pytest

from app.config import Settings
from app.serving.api.app import create_app
from app.serving.api.deps import ServiceState
from app.serving.backends import FakeBackend
from tests.serving.helpers import GatedBackend, PoisonBackend, expected_showers, live_server, load_npy, wait_until

pytestmark = pytest.mark.integration


@contextmanager
def running(settings: Settings, backend: Any, **changes: Any) -> Iterator[tuple[str, ServiceState]]:
    app = create_app(settings.model_copy(update={"warmup": False, **changes}), backend)
    with live_server(app) as url:
        yield url, app.state.service


def post(url: str, **params: Any) -> httpx.Response:
    with httpx.Client(base_url=url, timeout=60) as client:
        return client.post("/simulate", params=params)


@contextmanager
def in_thread(call: Callable[[], httpx.Response]) -> Iterator[list[httpx.Response]]:
    """Run a blocking request in a thread; the list gets its response once the block exits."""
    result: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: result.append(call()), daemon=True)
    thread.start()
    try:
        yield result
    finally:
        thread.join(60)


def metric(url: str, line_start: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=30).text
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start)]
    return values[0] if values else 0.0


def test_32_concurrent_clients_share_batches_and_get_their_own_showers(
    tiny_settings: Settings, latent_fn: Callable[..., Any]
) -> None:
    gated = GatedBackend()
    settings = {"max_batch_size": 512, "round_robin_showers": 64, "max_queued_showers": 4096}
    with running(tiny_settings, gated, **settings) as (url, state), \
            in_thread(lambda: post(url, energy=300, n=8, seed=999)) as blocker:
        assert gated.entered.wait(30)  # batch 1 (8 showers) holds the model
        energies = np.linspace(5.0, 495.0, 32)
        with ThreadPoolExecutor(32) as pool:
            futures = [pool.submit(post, url, energy=float(e), n=64, seed=i) for i, e in enumerate(energies)]
            wait_until(lambda: state.batcher is not None and state.batcher.queued_requests == 32,
                       what="32 queued requests")
            gated.release.set()
            responses = [future.result() for future in futures]
        for seed, (energy, response) in enumerate(zip(energies, responses, strict=True)):
            assert response.status_code == 200
            np.testing.assert_array_equal(
                load_npy(response.content), expected_showers(np.full(64, energy), seed, latent_fn)
            )
        # The same request alone gives the same showers it got inside a busy batch.
        alone = post(url, energy=float(energies[7]), n=64, seed=7)
        np.testing.assert_array_equal(load_npy(alone.content), load_npy(responses[7].content))
        # Batches of 8 (blocker) and 64 (alone); the 32 clients' rows went in four merged batches of 512.
        assert metric(url, 'calogan_batch_size_showers_bucket{le="256.0"}') == 2
        assert metric(url, 'calogan_batch_size_showers_bucket{le="512.0"}') == 6
    assert blocker[0].status_code == 200
    assert gated.batch_sizes == [8, 512, 512, 512, 512, 64]  # 32 x 64 rows merged into four full batches


def test_client_disconnect_frees_its_queued_work(tiny_settings: Settings) -> None:
    gated = GatedBackend()
    with running(tiny_settings, gated) as (url, state), in_thread(lambda: post(url, energy=50, n=8)) as blocker:
        assert gated.entered.wait(30)
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"POST /simulate?energy=50&n=400&seed=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
            wait_until(lambda: state.batcher is not None and state.batcher.queued_showers == 400, what="queued")
        wait_until(lambda: state.batcher is not None and state.batcher.queued_showers == 0, what="queue freed")
        gated.release.set()
    assert blocker[0].status_code == 200
    assert gated.batch_sizes == [8]  # the 400 showers of the departed client were never computed


def test_full_queue_answers_503_with_retry_after(tiny_settings: Settings) -> None:
    gated = GatedBackend()
    limits = {"max_queued_showers": 100, "max_showers_per_request": 100}
    with running(tiny_settings, gated, **limits) as (url, state), \
            in_thread(lambda: post(url, energy=50, n=8)) as blocker:
        assert gated.entered.wait(30)
        with in_thread(lambda: post(url, energy=50, n=100)) as waiting:
            wait_until(lambda: state.batcher is not None and state.batcher.queued_showers == 100, what="queued")
            refused = post(url, energy=50, n=1)
            assert refused.status_code == 503
            assert int(refused.headers["retry-after"]) >= 1
            assert "queue full" in refused.json()["detail"]
            gated.release.set()
    assert blocker[0].status_code == 200
    assert load_npy(waiting[0].content).shape == (100, 25, 25, 25)


def test_request_past_its_timeout_gets_504(tiny_settings: Settings) -> None:
    gated = GatedBackend()
    with running(tiny_settings, gated, request_timeout_s=0.5) as (url, _), \
            in_thread(lambda: post(url, energy=50, n=8)) as blocker:
        assert gated.entered.wait(30)
        late = post(url, energy=50, n=8)  # waits behind the gated batch past its deadline
        assert late.status_code == 504
        assert "within 0.5 s" in late.json()["detail"]
        gated.release.set()
    assert blocker[0].status_code in (200, 504)


def test_failing_batch_gives_500_and_the_service_keeps_serving(tiny_settings: Settings) -> None:
    with running(tiny_settings, PoisonBackend(limit_gev=300.0)) as (url, _):
        failed = post(url, energy=450, n=4)
        assert failed.status_code == 500
        assert "poisoned batch" in failed.json()["detail"]
        assert post(url, energy=20, n=4).status_code == 200
        assert metric(url, 'calogan_batches_total{outcome="failed"}') == 1


def test_failure_after_streaming_began_cuts_the_body_short(tiny_settings: Settings) -> None:
    energies = [10.0] * 100 + [450.0] * 100  # rows 100-199 poison the second batch of 64
    with running(tiny_settings, PoisonBackend(limit_gev=300.0)) as (url, _), httpx.Client(base_url=url) as client:
        with pytest.raises(httpx.RemoteProtocolError):  # status 200 was sent; only the length can tell
            client.post("/simulate", json=energies)
        wait_until(lambda: metric(url, 'calogan_requests_total{format="npy",status="500"}') == 1, what="counted")
        assert client.post("/simulate", params={"energy": 20, "n": 4}).status_code == 200


def test_readiness_is_false_until_the_model_is_warm(tiny_settings: Settings) -> None:
    gated = GatedBackend()  # warm-up runs generate(), which waits at the gate
    with live_server(create_app(tiny_settings.model_copy(update={"warmup": True}), gated)) as url:
        assert httpx.get(f"{url}/healthz").status_code == 200
        not_yet = httpx.get(f"{url}/readyz")
        assert not_yet.status_code == 503
        assert not_yet.json()["reason"] == "warming up"
        gated.release.set()
        wait_until(lambda: httpx.get(f"{url}/readyz").status_code == 200, what="ready")


def test_fake_backend_is_deterministic() -> None:
    latent = np.random.default_rng(1).standard_normal((3, 200)).astype(np.float32)
    np.testing.assert_array_equal(FakeBackend().generate(latent), FakeBackend().generate(latent))
