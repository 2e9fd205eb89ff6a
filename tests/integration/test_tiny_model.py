"""The real path end to end: a shipped-model folder (tiny real architecture) loaded by the tf backend and served."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import httpx
import numpy as np
import pytest

from app.config import Settings
from app.errors import ModelLoadError
from app.model.loading import GENERATOR_FILE, sha256_file
from app.serving.api.app import create_app
from app.serving.backends import load_backends
from tests.serving.helpers import live_server, load_npy

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tiny_url(tiny_settings: Settings, tiny_model_dir: Path) -> Iterator[str]:
    settings = tiny_settings.model_copy(update={"backend": "tf", "model_dir": tiny_model_dir, "device": "cpu"})
    with live_server(create_app(settings)) as url:  # no backend given: the lifespan loads the folder
        yield url


def test_both_formats_from_the_tiny_generator(tiny_url: str, tiny_model_dir: Path, tmp_path: Path) -> None:
    with httpx.Client(base_url=tiny_url, timeout=120) as client:
        npy = client.post("/simulate", params={"energy": 200, "n": 10, "seed": 1})
        hdf5 = client.post("/simulate", params={"energy": 200, "n": 10, "seed": 1, "format": "hdf5"})
        models = client.get("/v1/models").json()
    cells = load_npy(npy.content)
    assert cells.shape == (10, 25, 25, 25)
    assert cells.dtype == np.float32
    assert np.isfinite(cells).all()
    assert (cells >= 0).all()  # the shipped generator ends in a ReLU
    assert npy.headers["x-calogan-model"] == "conv2d-tiny"
    assert npy.headers["x-calogan-model-version"] == "test-1"
    (tmp_path / "t.h5").write_bytes(hdf5.content)
    with h5py.File(tmp_path / "t.h5", "r") as f:
        np.testing.assert_array_equal(f["ECAL"][:], cells)
        assert f.attrs["model_sha256"] == sha256_file(tiny_model_dir / GENERATOR_FILE)
        assert f.attrs["backend"] == "tf"
    card = models["models"][0]
    assert (card["backend"], card["device"], card["precision"]) == ("tf", "/CPU:0", "float32")


def test_same_seed_same_showers_alone_and_among_others(tiny_url: str) -> None:
    params = {"energy": 75, "n": 12, "seed": 21}
    with httpx.Client(base_url=tiny_url, timeout=120) as client:
        alone = load_npy(client.post("/simulate", params=params).content)

        def ask(i: int) -> bytes:
            with httpx.Client(base_url=tiny_url, timeout=120) as c:
                p = params if i == 3 else {"energy": 20 + 40 * i, "n": 30, "seed": i}
                return c.post("/simulate", params=p).content

        with ThreadPoolExecutor(8) as pool:
            busy = load_npy(list(pool.map(ask, range(8)))[3])
    # Same latent rows; the float32 model may round differently at another batch size (oneDNN picks
    # kernels per shape), so compare to float32 precision rather than bit for bit.
    np.testing.assert_allclose(busy, alone, rtol=1e-5, atol=1e-7)


def test_broken_model_folder_is_one_clear_error(tiny_settings: Settings, tmp_path: Path) -> None:
    (tmp_path / GENERATOR_FILE).write_bytes(b"not a keras file")
    (tmp_path / "model.json").write_text('{"schema_version": 1, "files": {"generator.keras": {"sha256": "00"}}}')
    settings = tiny_settings.model_copy(update={"backend": "tf", "model_dir": tmp_path})
    with pytest.raises(ModelLoadError, match="sha256"):
        load_backends(settings)


def test_auto_backend_on_cpu_falls_back_to_tf(
    tiny_settings: Settings, tiny_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = tiny_settings.model_copy(update={"backend": "auto", "model_dir": tiny_model_dir, "device": "cpu"})
    with caplog.at_level("INFO", logger="app.serving.backends"):
        backends = load_backends(settings)
    assert [b.info.backend for b in backends] == ["tf"]
    assert "int8 unavailable" in caplog.text
    latent = np.zeros((3, 200), dtype=np.float32)
    assert backends[0].generate(latent).shape == (3, 25, 25, 25)
