"""Shared fixtures: seeded randomness, tiny service settings, fake and tiny real generators, reference data.

Keep this file to fixtures used by more than one test package; helpers live next to their tests.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.config import Settings
from app.serving.backends import FakeBackend

G4_DATA_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "g4"


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """Async tests run on asyncio only: the service is built on it (uvicorn, run_in_executor)."""
    return "asyncio"


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator; a test that needs another stream makes its own."""
    return np.random.default_rng(20210521)


@pytest.fixture(scope="session")
def tiny_settings() -> Settings:
    """Service settings for tests: fake backend, batches of 64, small limits; CALOGAN_* in the shell ignored."""
    with pytest.MonkeyPatch.context() as patch:
        for name in [name for name in os.environ if name.startswith("CALOGAN_")]:
            patch.delenv(name)
        return Settings(
            _env_file=None,  # type: ignore[call-arg]
            backend="fake",
            model_dir=Path("does-not-exist"),
            max_batch_size=64,
            max_queue_delay_ms=5.0,
            round_robin_showers=16,
            max_showers_per_request=512,
            max_queued_showers=1024,
            request_timeout_s=60.0,
            drain_timeout_s=20.0,
        )


@pytest.fixture
def fake_backend() -> FakeBackend:
    """Deterministic stand-in generator that records its batch sizes."""
    return FakeBackend()


@pytest.fixture(scope="session")
def latent_fn() -> Callable[[Any, np.random.Generator], Any]:
    """The real ``latent_vectors`` (imports Keras once per session)."""
    from app.model.latent import latent_vectors

    return latent_vectors


@pytest.fixture(scope="session")
def tiny_generator() -> Any:
    """The real generator architecture at width 0.05 (untrained), built once per session."""
    from app.model.architecture import GeneratorConfig, build_generator

    return build_generator(GeneratorConfig(width=0.05))


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_generator: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A shipped-model folder (generator.keras + model.json) holding the tiny generator."""
    from app.model.loading import CARD_FILE, CARD_SCHEMA_VERSION, GENERATOR_FILE, sha256_file

    folder = tmp_path_factory.mktemp("tiny_model")
    tiny_generator.save(folder / GENERATOR_FILE)
    card = {
        "schema_version": CARD_SCHEMA_VERSION,
        "name": "conv2d-tiny",
        "version": "test-1",
        "files": {GENERATOR_FILE: {"sha256": sha256_file(folder / GENERATOR_FILE)}},
    }
    (folder / CARD_FILE).write_text(json.dumps(card))
    return folder


@pytest.fixture(scope="session")
def g4_data_dir() -> Path:
    """The shared Geant4 samples; tests using them skip when the folder is absent."""
    if not G4_DATA_DIR.is_dir():
        pytest.skip(f"Geant4 reference samples not found at {G4_DATA_DIR}")
    return G4_DATA_DIR


@pytest.fixture(scope="session")
def reference_showers(g4_data_dir: Path) -> Any:
    """The 50 GeV Geant4 sample (200 showers), read once."""
    from app.physics.io import read_showers

    path = g4_data_dir / "g4_e50GeV_n200.h5"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return read_showers(path)
