"""The grid client: retries honouring Retry-After, verification, reproducible resumable pulls, token discovery."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h5py
import httpx
import numpy as np
import pytest

from app.config import Settings
from app.errors import InvalidRequest, ShowerFileError
from app.physics.io import read_showers, write_showers
from app.serving.api.app import create_app
from app.serving.backends import FakeBackend
from app.serving.client import ServiceError, ShowerClient, chunk_seed, discover_token
from app.serving.encoders import npy_block, npy_header
from tests.serving.helpers import expected_showers, live_server


def npy_body(n: int, seed: int, energy: float, latent_fn: Callable[..., Any]) -> bytes:
    return npy_header(n) + npy_block(expected_showers(np.full(n, energy), seed, latent_fn))


class Script:
    """A MockTransport handler that answers from a list of canned responses, recording the requests."""

    def __init__(self, *answers: Callable[[httpx.Request], httpx.Response]) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answers[min(len(self.requests), len(self.answers)) - 1](request)


def ok(latent_fn: Callable[..., Any]) -> Callable[[httpx.Request], httpx.Response]:
    def answer(request: httpx.Request) -> httpx.Response:
        n, seed = int(request.url.params["n"]), int(request.url.params["seed"])
        body = npy_body(n, seed, float(request.url.params["energy"]), latent_fn)
        headers = {"x-calogan-showers": str(n), "x-calogan-seed": str(seed), "x-calogan-model-sha256": "ab"}
        return httpx.Response(200, content=body, headers=headers)

    return answer


def status(code: int, **headers: str) -> Callable[[httpx.Request], httpx.Response]:
    return lambda request: httpx.Response(code, json={"detail": f"status {code}", "allowed": "x"}, headers=headers)


def client_for(script: Script, sleeps: list[float], retries: int = 3) -> ShowerClient:
    return ShowerClient("http://calogan.test", transport=httpx.MockTransport(script), sleep=sleeps.append,
                        max_retries=retries, backoff_s=0.01)


def test_retries_after_503_no_sooner_than_retry_after(latent_fn: Callable[..., Any]) -> None:
    script, sleeps = Script(status(503, **{"retry-after": "7"}), ok(latent_fn)), []
    with client_for(script, sleeps) as client:
        cells = client.simulate(energy_gev=50.0, n=4, seed=3)
    np.testing.assert_array_equal(cells, expected_showers(np.full(4, 50.0), 3, latent_fn))
    assert len(script.requests) == 2
    assert sleeps[0] >= 7.0


def test_retry_after_is_capped(latent_fn: Callable[..., Any]) -> None:
    script, sleeps = Script(status(503, **{"retry-after": "86400"}), ok(latent_fn)), []
    client = ShowerClient("http://calogan.test", transport=httpx.MockTransport(script), sleep=sleeps.append,
                          backoff_s=0.01, max_retry_after_s=30.0)
    with client:
        client.simulate(energy_gev=50.0, n=4, seed=3)
    assert sleeps == [30.0]


def test_no_retry_starts_after_the_deadline() -> None:
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    script = Script(status(503, **{"retry-after": "40"}))
    client = ShowerClient("http://calogan.test", transport=httpx.MockTransport(script), sleep=sleep,
                          clock=lambda: now[0], backoff_s=0.01, deadline_s=100.0, max_retries=8)
    with client, pytest.raises(ServiceError, match="deadline of 100 s would pass"):
        client.simulate(energy_gev=50.0, n=4, seed=3)
    assert sleeps == [40.0, 40.0]  # a third wait would end at 120 s
    assert len(script.requests) == 3


def test_a_pull_pins_the_model_of_its_first_chunk(latent_fn: Callable[..., Any], tmp_path: Path) -> None:
    script, sleeps = Script(ok(latent_fn)), []
    with client_for(script, sleeps) as client:
        client.pull(tmp_path / "p.h5", energy_gev=50.0, n=6, seed=1, chunk_showers=2)
    pins = [request.url.params.get("model") for request in script.requests]
    assert pins == [None, "sha256:ab", "sha256:ab"]  # the mock serves sha "ab"


def test_cut_short_body_is_retried(latent_fn: Callable[..., Any]) -> None:
    def short(request: httpx.Request) -> httpx.Response:
        full = ok(latent_fn)(request)
        return httpx.Response(200, content=full.content[:-1000], headers=full.headers)

    script, sleeps = Script(short, ok(latent_fn)), []
    with client_for(script, sleeps) as client:
        assert client.simulate(energy_gev=50.0, n=4, seed=3).shape == (4, 25, 25, 25)
    assert len(sleeps) == 1


def test_client_errors_are_not_retried() -> None:
    script, sleeps = Script(status(422)), []
    with client_for(script, sleeps) as client, pytest.raises(InvalidRequest, match="status 422"):
        client.simulate(energy_gev=5000.0, n=4, seed=3)
    assert sleeps == []


def test_gives_up_after_the_retries() -> None:
    script, sleeps = Script(status(502)), []
    with client_for(script, sleeps, retries=2) as client, pytest.raises(ServiceError, match="3 attempts"):
        client.simulate(energy_gev=50.0, n=4, seed=3)
    assert len(sleeps) == 2
    assert sleeps[1] > sleeps[0] / 2  # backoff grows (with jitter in [0.5, 1])


def test_wrong_shape_or_seed_is_refused(latent_fn: Callable[..., Any]) -> None:
    def other_seed(request: httpx.Request) -> httpx.Response:
        response = ok(latent_fn)(request)
        return httpx.Response(200, content=response.content, headers={**response.headers, "x-calogan-seed": "1"})

    with client_for(Script(other_seed), []) as client, pytest.raises(ServiceError, match="x-calogan-seed"):
        client.simulate(energy_gev=50.0, n=4, seed=3)


def test_chunk_seeds_are_distinct_and_stable() -> None:
    seeds = [chunk_seed(7, k) for k in range(100)]
    assert len(set(seeds)) == 100
    assert all(0 <= s < 2**63 for s in seeds)
    assert seeds == [chunk_seed(7, k) for k in range(100)]
    assert chunk_seed(8, 0) != seeds[0]


def test_token_discovery_order(tmp_path: Path) -> None:
    token_file = tmp_path / "tok"
    token_file.write_text("from-file\n")
    assert discover_token("explicit", {"BEARER_TOKEN": "env"}) == "explicit"
    assert discover_token(None, {"BEARER_TOKEN": " env ", "BEARER_TOKEN_FILE": str(token_file)}) == "env"
    assert discover_token(None, {"BEARER_TOKEN_FILE": str(token_file)}) == "from-file"
    xdg = tmp_path / "xdg"
    xdg.mkdir()
    (xdg / f"bt_u{os.getuid()}").write_text("from-xdg")
    assert discover_token(None, {"XDG_RUNTIME_DIR": str(xdg)}) == "from-xdg"


@pytest.fixture(scope="module")
def service_url(tiny_settings: Settings) -> Iterator[str]:
    with live_server(create_app(tiny_settings, FakeBackend())) as url:
        yield url


class FailAfter(httpx.HTTPTransport):
    """A real transport that drops the network after ``calls`` requests (an interrupted grid job)."""

    def __init__(self, calls: int) -> None:
        super().__init__()
        self.calls_left = calls

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.calls_left -= 1
        if self.calls_left < 0:
            raise httpx.ConnectError("network down", request=request)
        return super().handle_request(request)


@pytest.mark.integration
def test_interrupted_pull_resumes_to_the_same_file(
    service_url: str, tmp_path: Path, latent_fn: Callable[..., Any]
) -> None:
    reference, resumed = tmp_path / "ref.h5", tmp_path / "resumed.h5"
    with ShowerClient(service_url) as client:
        result = client.pull(reference, energy_gev=60.0, n=250, seed=11, chunk_showers=100)
    assert result.n_showers == 250
    with ShowerClient(service_url, transport=FailAfter(2), max_retries=0) as flaky, pytest.raises(ServiceError):
        flaky.pull(resumed, energy_gev=60.0, n=250, seed=11, chunk_showers=100)
    assert len(read_showers(resumed).ep_gev) == 200
    with h5py.File(resumed, "r+") as f:  # a chunk half written when the job died
        for key in ("ECAL", "energy"):
            f[key].resize(230, axis=0)
    progress: list[int] = []
    with ShowerClient(service_url) as client:
        again = client.pull(resumed, energy_gev=60.0, n=250, chunk_showers=100,
                            progress=lambda done, total: progress.append(done))
    assert again.resumed
    assert again.seed == 11  # taken from the file
    assert again.n_fetched == 50
    assert progress == [200, 250]
    first, second = read_showers(reference), read_showers(resumed)
    np.testing.assert_array_equal(first.cells_gev, second.cells_gev)
    assert second.attrs["seed"] == 11
    assert second.attrs["model_name"] == "fake"
    np.testing.assert_array_equal(first.cells_gev[100:200], expected_showers(np.full(100, 60.0), chunk_seed(11, 1),
                                                                             latent_fn))


@pytest.mark.integration
def test_resume_refuses_other_arguments_or_foreign_files(service_url: str, tmp_path: Path) -> None:
    path = tmp_path / "p.h5"
    with ShowerClient(service_url) as client:
        client.pull(path, energy_gev=60.0, n=10, seed=1, chunk_showers=5)
        with pytest.raises(InvalidRequest, match="energy_gev"):
            client.pull(path, energy_gev=70.0, n=10, seed=1, chunk_showers=5)
        with pytest.raises(InvalidRequest, match="seed"):
            client.pull(path, energy_gev=60.0, n=10, seed=2, chunk_showers=5)
        foreign = tmp_path / "mc.h5"
        write_showers(foreign, np.zeros((1, 25, 25, 25), np.float32), np.ones(1), attrs={"producer": "calogan-mc"})
        with pytest.raises(ShowerFileError, match="not written by calogan pull"):
            client.pull(foreign, energy_gev=60.0, n=10, chunk_showers=5)
