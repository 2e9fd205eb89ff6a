"""Fixtures of the deployment tests: repository paths, external tools, and a live ``/metrics`` exposition.

External tools (hadolint, prometheus, promtool) are skipped with a reason on a developer machine that
lacks them, but CI (``CI=true``) installs them (``.ci/run``, the ``test`` extra), so there a missing
tool fails the test instead of silently skipping it.
"""

from __future__ import annotations

import os
import shutil
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from fastapi import FastAPI

from app.config import Settings
from app.serving.api.app import create_app
from app.serving.backends import FakeBackend

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = REPO / "k8s"
RULES_FILE = DEPLOY / "prometheus" / "rules" / "calogan.rules.yml"
DASHBOARD_FILE = DEPLOY / "grafana" / "dashboards" / "calogan.json"


def in_ci() -> bool:
    """True on the CI machine (``.ci/run`` runs with ``CI=true``)."""
    return os.environ.get("CI", "").lower() == "true"


def required_tool(name: str, *, install_hint: str) -> str:
    """Path of an external program: the venv's bin folder first, then PATH; skip (or fail in CI) if absent."""
    beside_python = Path(sys.executable).parent / name  # .venv/bin is not always on PATH
    found = str(beside_python) if beside_python.is_file() else shutil.which(name)
    if found is None:
        message = f"`{name}` not found ({install_hint})"
        if in_ci():
            pytest.fail(f"{message}; CI must have it", pytrace=False)
        pytest.skip(message)
    return found


def settings_from_env(env: Mapping[str, str]) -> Settings:
    """The Settings a process with the ``CALOGAN_*`` variables of ``env`` would build (and only those).

    Settings ignore unknown variables (``extra="ignore"``), so a misspelt name would be silently
    without effect in a deployment: here it is an error.
    """
    fields = {f"CALOGAN_{name.upper()}" for name in Settings.model_fields}
    unknown = sorted(key for key in env if key.startswith("CALOGAN_") and key not in fields)
    assert not unknown, f"not calogan settings (misspelt?): {unknown}"
    with pytest.MonkeyPatch.context() as patch:
        for name in [name for name in os.environ if name.startswith("CALOGAN_")]:
            patch.delenv(name)
        for key, value in env.items():
            if key.startswith("CALOGAN_"):
                patch.setenv(key, value)
        return Settings(_env_file=None)  # type: ignore[call-arg]


def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    """Every non-empty YAML document of ``path``."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


LATENT_SIZE = 200


def cheap_latent(ep_gev: Any, rng: np.random.Generator) -> Any:
    """Latent vectors without Keras (the real ones import TensorFlow, seconds these tests need not spend)."""
    ep = np.atleast_1d(np.asarray(ep_gev, dtype=np.float32))
    return (rng.standard_normal((len(ep), LATENT_SIZE), dtype=np.float32) * ep[:, None] / 100).astype(np.float32)


def fake_app(settings: Settings) -> FastAPI:
    """The real app on a fake backend and cheap latent vectors: real routes, batcher and metrics."""
    return create_app(
        settings.model_copy(update={"warmup": False}), backend=[FakeBackend()],
        latent_fn=cheap_latent, latent_size=LATENT_SIZE,
    )


@pytest.fixture(scope="session")
def recording_rules() -> dict[str, str]:
    """Recording-rule name -> PromQL expression, from the repo's rules file."""
    groups = yaml.safe_load(RULES_FILE.read_text())["groups"]
    return {rule["record"]: rule["expr"] for group in groups for rule in group["rules"] if "record" in rule}


@pytest.fixture(scope="session")
def live_exposition(tiny_settings: Settings) -> str:
    """``GET /metrics`` of the real app (fake backend) after a few requests, so every histogram has samples."""
    with warnings.catch_warnings():
        # Starlette deprecates its TestClient over httpx in favour of httpx2: not what these tests check.
        warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")
        from fastapi.testclient import TestClient

    with TestClient(fake_app(tiny_settings)) as client:
        assert client.post("/simulate", params={"energy": 50, "n": 3}).status_code == 200
        assert client.post("/simulate", params={"energy": 100, "n": 2, "format": "hdf5"}).status_code == 200
        assert client.post("/simulate", params={"energy": 1e6}).status_code == 422
        response = client.get("/metrics")
    assert response.status_code == 200
    return response.text
