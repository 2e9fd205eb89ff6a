"""The HTTP API on a real uvicorn server (fake backend): formats, negotiation, bodies, errors, probes, auth."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h5py
import httpx
import numpy as np
import pytest

from app import __version__
from app.config import Settings
from app.serving.api.app import create_app
from app.serving.backends import FakeBackend
from app.serving.batcher import spectrum_energies
from tests.serving.helpers import expected_showers, live_server, load_npy

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client(tiny_settings: Settings) -> Iterator[httpx.Client]:
    with live_server(create_app(tiny_settings, FakeBackend())) as url, httpx.Client(base_url=url, timeout=30) as c:
        yield c


def test_npy_response_is_the_seeded_showers(client: httpx.Client, latent_fn: Callable[..., Any]) -> None:
    response = client.post("/simulate", params={"energy": 150, "n": 100, "seed": 42})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-npy"
    assert response.headers["x-calogan-seed"] == "42"
    assert response.headers["x-calogan-showers"] == "100"
    assert response.headers["x-calogan-model"] == "fake"
    assert "x-calogan-model-version" in response.headers
    cells = load_npy(response.content)
    assert cells.shape == (100, 25, 25, 25)
    assert cells.dtype == np.float32
    np.testing.assert_array_equal(cells, expected_showers(np.full(100, 150.0), 42, latent_fn))


def test_float16_npy(client: httpx.Client) -> None:
    response = client.post("/simulate", params={"energy": 150, "n": 3, "seed": 42, "dtype": "float16"})
    full = load_npy(client.post("/simulate", params={"energy": 150, "n": 3, "seed": 42}).content)
    cells = load_npy(response.content)
    assert cells.dtype == np.float16
    np.testing.assert_array_equal(cells, full.astype(np.float16))


def test_hdf5_response_has_layout_and_metadata(client: httpx.Client, tmp_path: Path) -> None:
    response = client.post("/simulate", params={"energy": 80, "n": 20, "seed": 5, "format": "hdf5"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-hdf5"
    path = tmp_path / "r.h5"
    path.write_bytes(response.content)
    with h5py.File(path, "r") as f:
        assert f["ECAL"].shape == (20, 25, 25, 25)
        assert f["ECAL"].dtype == np.float32
        np.testing.assert_array_equal(f["energy"][:], np.full(20, 80.0, dtype=np.float32))
        attrs = dict(f.attrs)
    assert attrs["seed"] == 5
    assert attrs["units"] == "GeV"
    assert attrs["axis_order"] == "x,y,layer"
    assert attrs["model_name"] == "fake"
    assert attrs["model_sha256"] == "0" * 64
    assert attrs["service_version"] == __version__
    assert "model_version" in attrs


def test_accept_header_picks_the_format(client: httpx.Client) -> None:
    hdf5 = client.post("/simulate", params={"energy": 80}, headers={"accept": "application/x-hdf5"})
    assert hdf5.headers["content-type"] == "application/x-hdf5"
    npy = client.post(
        "/simulate", params={"energy": 80}, headers={"accept": "application/x-hdf5;q=0.5, application/x-npy"}
    )
    assert npy.headers["content-type"] == "application/x-npy"
    refused = client.post("/simulate", params={"energy": 80}, headers={"accept": "application/json"})
    assert refused.status_code == 406
    assert "application/x-npy" in refused.json()["allowed"]


def test_body_with_a_list_of_energies(client: httpx.Client, latent_fn: Callable[..., Any]) -> None:
    energies = [10.0, 250.0, 480.0]
    response = client.post("/simulate", params={"seed": 3}, json=energies)
    assert response.status_code == 200
    np.testing.assert_array_equal(load_npy(response.content), expected_showers(np.array(energies), 3, latent_fn))


def test_body_with_a_spectrum_gives_hdf5_with_its_energies(
    client: httpx.Client, tiny_settings: Settings, tmp_path: Path
) -> None:
    spectrum = {"emin": 20.0, "emax": 60.0, "n": 30}
    response = client.post("/simulate", params={"seed": 8, "format": "hdf5"}, json=spectrum)
    assert response.status_code == 200
    (tmp_path / "s.h5").write_bytes(response.content)
    with h5py.File(tmp_path / "s.h5", "r") as f:
        energies = f["energy"][:]
    drawn = spectrum_energies(30, emin_gev=20.0, emax_gev=60.0, seed=8, limits_gev=tiny_settings.energy_limits_gev)
    np.testing.assert_allclose(energies, drawn, rtol=1e-6)
    as_npy = client.post("/simulate", params={"seed": 8}, json=spectrum)
    assert as_npy.status_code == 422
    assert "hdf5" in as_npy.json()["allowed"]


@pytest.mark.parametrize(
    ("params", "body", "status", "fragment"),
    [
        ({"energy": 0}, None, 422, "out of range"),
        ({"energy": -10}, None, 422, "out of range"),
        ({"energy": "nan"}, None, 422, "out of range"),
        ({"energy": "inf"}, None, 422, "out of range"),
        ({"energy": 501}, None, 422, "out of range"),
        ({"energy": 500.0001}, None, 422, "500.0001 GeV is out of range"),
        ({"energy": 100, "n_showers": 1000}, None, 422, "unknown query parameter(s) n_showers"),
        ({"energy": [100, 200]}, None, 422, "energy given more than once"),
        ({"energy": "abc"}, None, 422, "energy"),
        ({"energy": 100, "n": 0}, None, 422, "number of showers"),
        ({"energy": 100, "n": 513}, None, 422, "number of showers"),
        ({"energy": 100, "n": 1.5}, None, 422, "n"),
        ({"energy": 100, "format": "csv"}, None, 422, "format"),
        ({"energy": 100, "dtype": "float64"}, None, 422, "dtype"),
        ({"energy": 100, "format": "hdf5", "dtype": "float16"}, None, 422, "float16"),
        ({"energy": 100, "seed": -1}, None, 422, "seed"),
        ({}, None, 422, "no energy"),
        ({"energy": 100}, [10.0], 422, "both"),
        ({}, [], 422, "energies"),
        ({}, [10.0, float("nan")], 422, "out of range"),
        ({}, {"emin": 30, "emax": 20, "n": 5}, 422, "emin"),
        ({}, b"[1, 2", 400, "malformed JSON"),
    ],
)
def test_bad_input_gets_a_clear_4xx_and_the_server_keeps_serving(
    client: httpx.Client, params: dict[str, Any], body: Any, status: int, fragment: str
) -> None:
    kwargs: dict[str, Any] = {"params": {**params, "format": params.get("format", "hdf5")}}
    if isinstance(body, bytes):
        kwargs["content"], kwargs["headers"] = body, {"content-type": "application/json"}
    elif body is not None:
        kwargs["json"] = body
    if "nan" in str(body):  # strict JSON has no NaN; send what Python's json writes
        kwargs.pop("json")
        kwargs["content"], kwargs["headers"] = b"[10.0, NaN]", {"content-type": "application/json"}
    response = client.post("/simulate", **kwargs)
    assert response.status_code == status
    error = response.json()
    assert fragment in error["detail"]
    assert error["allowed"]
    assert client.post("/simulate", params={"energy": 100, "n": 2}).status_code == 200


def test_probes_models_and_metrics(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["ready"] is True
    models = client.get("/v1/models").json()
    assert models["models"][0]["name"] == "fake"
    assert models["limits"]["energy_max_gev"] == 500.0
    client.post("/simulate", params={"energy": 100, "n": 3})
    text = client.get("/metrics").text
    for name in ("calogan_requests_total", "calogan_showers_total", "calogan_batch_size_showers_bucket",
                 "calogan_queue_wait_seconds", "calogan_request_duration_seconds", "calogan_response_size_bytes",
                 "calogan_queued_showers", "calogan_inflight_batches", "calogan_model_info"):
        assert name in text, name
    assert 'calogan_requests_total{format="npy",status="200"}' in text


def test_openapi_documents_limits_and_examples(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    assert "2-500 GeV" in spec["info"]["description"]
    operation = spec["paths"]["/simulate"]["post"]
    assert {"application/x-npy", "application/x-hdf5"} <= set(operation["responses"]["200"]["content"])
    assert "examples" in operation["requestBody"]["content"]["application/json"]
    # This replica runs without tokens: the document must not ask clients for a bearer token.
    assert "securitySchemes" not in spec.get("components", {})
    assert "security" not in operation


@pytest.mark.parametrize(("page", "asset"), [("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")])
def test_api_docs_load_their_assets_from_the_service_not_a_cdn(client: httpx.Client, page: str, asset: str) -> None:
    html = client.get(page)
    assert html.status_code == 200
    assert "cdn." not in html.text
    path = next(part.split('"')[0] for part in html.text.split('src="')[1:] if asset in part.split('"')[0])
    script = client.get(path)
    assert script.status_code == 200
    assert len(script.content) > 100_000  # the whole bundle, served locally


def test_a_request_can_pin_the_model_and_gets_409_for_another(client: httpx.Client) -> None:
    served = client.get("/v1/models").json()["models"][0]
    for pin in (served["name"], f"{served['name']}:{served['version']}", f"sha256:{served['sha256'][:12]}"):
        assert client.post("/simulate", params={"energy": 50, "model": pin}).status_code == 200, pin
    other = client.post("/simulate", params={"energy": 50, "model": f"{served['name']}:999"})
    assert other.status_code == 409
    assert f"{served['name']}:{served['version']}" in other.json()["allowed"]
    assert client.post("/simulate", params={"energy": 50, "model": "sha256:zz"}).status_code == 422


def test_tokens_guard_simulate_but_not_probes(tiny_settings: Settings) -> None:
    settings = tiny_settings.model_copy(update={"api_tokens": [*map(_secret, ("alpha", "beta"))]})
    with live_server(create_app(settings, FakeBackend())) as url, httpx.Client(base_url=url, timeout=30) as c:
        assert c.post("/simulate", params={"energy": 50}).status_code == 401
        wrong = c.post("/simulate", params={"energy": 50}, headers={"authorization": "Bearer gamma"})
        assert wrong.status_code == 401
        assert wrong.headers["www-authenticate"] == "Bearer"
        right = c.post("/simulate", params={"energy": 50}, headers={"authorization": "Bearer beta"})
        assert right.status_code == 200
        assert c.get("/v1/models").status_code == 401
        assert c.get("/healthz").status_code == 200
        assert c.get("/readyz").status_code == 200
        assert c.get("/metrics").status_code == 200
        spec = c.get("/openapi.json").json()
        assert "HTTPBearer" in spec["components"]["securitySchemes"]
        assert spec["paths"]["/simulate"]["post"]["security"] == [{"HTTPBearer": []}]


def _secret(value: str) -> Any:
    from pydantic import SecretStr

    return SecretStr(value)


def test_serving_imports_neither_training_nor_tensorflow() -> None:
    code = (
        "import sys, app.serving.api.app, app.serving.client;"
        "bad = [m for m in ('app.model.training', 'tensorflow', 'keras') if m in sys.modules];"
        "sys.exit(f'imported: {bad}' if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_a_body_over_the_limit_is_refused_with_413_declared_or_chunked(client: httpx.Client) -> None:
    limit = 1 << 20
    huge = b"[" + b"100.0, " * (limit // 7 + 10) + b"100.0]"
    declared = client.post("/simulate", content=huge, headers={"content-type": "application/json"})
    assert declared.status_code == 413
    assert declared.json()["allowed"] == f"at most {limit} bytes"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the server must count
        for start in range(0, len(huge), 65536):
            yield huge[start : start + 65536]

    chunked = client.post("/simulate", content=chunks(), headers={"content-type": "application/json"})
    assert chunked.status_code == 413
    assert client.post("/simulate", params={"energy": 100, "n": 2}).status_code == 200
