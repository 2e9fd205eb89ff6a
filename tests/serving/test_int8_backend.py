"""The int8 CPU backend: loading, showers, model info, and when ``--backend auto`` picks it."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from app.config import Settings
from app.errors import ModelLoadError
from app.physics.detector import SHOWER_SHAPE
from app.serving import backends
from tests.serving.helpers import live_server

pytest.importorskip("openvino")
pytest.importorskip("nncf")


@pytest.fixture(scope="module")
def model_dirs(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``models/conv2d`` (the tiny float32 generator) and ``models/conv2d_int8`` (its full int8) side by side."""
    from app.model import quantize as q
    from app.model.export import export_onnx
    from app.model.latent import latent_vectors
    from app.model.loading import load_generator

    models = tmp_path_factory.mktemp("models")
    float32_dir = models / "conv2d"
    shutil.copytree(tiny_model_dir, float32_dir)
    float32 = q.onnx_to_openvino(export_onnx(load_generator(float32_dir).model, models / "tiny.onnx"))
    rng = np.random.default_rng(8)
    int8 = q.quantize_model(float32, latent_vectors(rng.uniform(2.0, 500.0, 16), rng))
    card = {"name": "conv2d-tiny-int8", "version": "test-1", "accuracy": {"passed": True}}
    q.write_int8_model(int8, q.int8_model_dir(float32_dir), card)
    return float32_dir


def _settings(tiny_settings: Settings, model_dir: Path, backend: str, device: str = "auto") -> Settings:
    return tiny_settings.model_copy(update={"model_dir": model_dir, "backend": backend, "device": device})


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine without a GPU, whatever this one has."""
    monkeypatch.setattr(backends, "_gpu_visible", lambda _settings: False)


@pytest.fixture
def backend_log() -> Iterator[list[logging.LogRecord]]:
    """Records of ``app.serving.backends``, captured on the logger itself (the app logger may not propagate)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("app.serving.backends")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def test_int8_backend_gives_float32_showers_of_the_right_shape(model_dirs: Path, tiny_settings: Settings) -> None:
    from app.model.latent import latent_vectors

    (backend,) = backends.load_backends(_settings(tiny_settings, model_dirs, "int8"))
    latent = latent_vectors(np.array([10.0, 100.0, 400.0]), np.random.default_rng(1))
    cells = backend.generate(latent)
    assert cells.shape == (3, *SHOWER_SHAPE)
    assert cells.dtype == np.float32
    assert np.all(cells >= 0)  # the output ReLU survived quantization
    again = backend.generate(latent[:1])  # the reused request must not hand back the previous buffer
    assert again.shape == (1, *SHOWER_SHAPE)
    np.testing.assert_allclose(cells[0], again[0], rtol=1e-5, atol=1e-7)
    assert backend.info.labels() == {
        "name": "conv2d-tiny-int8", "version": "test-1", "backend": "int8", "device": "cpu", "precision": "int8",
    }


def test_auto_picks_int8_without_a_gpu(model_dirs: Path, tiny_settings: Settings, no_gpu: None) -> None:
    (backend,) = backends.load_backends(_settings(tiny_settings, model_dirs, "auto"))
    assert backend.info.precision == "int8"


def test_auto_uses_tf_on_a_gpu_machine(
    model_dirs: Path, tiny_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backends, "_gpu_visible", lambda _settings: True)
    monkeypatch.setattr(backends, "_tensorflow_backends", lambda _settings: ["tf"])
    assert backends.load_backends(_settings(tiny_settings, model_dirs, "auto")) == ["tf"]


def test_auto_falls_back_to_tf_with_a_log_line_when_int8_is_missing(
    model_dirs: Path, tiny_settings: Settings, tmp_path: Path, no_gpu: None, backend_log: list[logging.LogRecord]
) -> None:
    lone = tmp_path / "conv2d"  # a float32 folder with no conv2d_int8 beside it
    shutil.copytree(model_dirs, lone)
    (backend,) = backends.load_backends(_settings(tiny_settings, lone, "auto"))
    assert backend.info.precision == "float32"
    fallback = [r.getMessage() for r in backend_log if "int8 unavailable" in r.getMessage()]
    assert len(fallback) == 1
    assert "calogan quantize" in fallback[0]  # the line says how to get the int8 model


def test_explicit_int8_without_the_model_is_a_clear_error(model_dirs: Path, tiny_settings: Settings,
                                                           tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no int8 model"):
        backends.load_backends(_settings(tiny_settings, tmp_path / "conv2d", "int8"))


def test_int8_refuses_a_gpu_device(model_dirs: Path, tiny_settings: Settings) -> None:
    with pytest.raises(ModelLoadError, match="runs on the CPU"):
        backends.load_backends(_settings(tiny_settings, model_dirs, "int8", device="gpu"))


def test_a_model_that_failed_acceptance_is_not_served(model_dirs: Path, tiny_settings: Settings,
                                                       tmp_path: Path) -> None:
    from app.model.loading import CARD_FILE

    failed = tmp_path / "conv2d_int8"
    shutil.copytree(model_dirs.with_name("conv2d_int8"), failed)
    card = json.loads((failed / CARD_FILE).read_text())
    card["accuracy"]["passed"] = False
    (failed / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(ModelLoadError, match="failed its physics acceptance"):
        backends.load_backends(_settings(tiny_settings, failed, "int8"))  # --model-dir may name the int8 folder


def test_a_model_with_no_int8_layer_is_not_served_as_int8(model_dirs: Path, tiny_settings: Settings,
                                                          tmp_path: Path) -> None:
    from app.model.loading import CARD_FILE

    all_float = tmp_path / "conv2d_int8"
    shutil.copytree(model_dirs.with_name("conv2d_int8"), all_float)
    card = json.loads((all_float / CARD_FILE).read_text())
    card["quantization"] = {"quantized_layers": 0, "total_layers": 29}
    (all_float / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(ModelLoadError, match="no layer of this model is int8"):
        backends.load_backends(_settings(tiny_settings, all_float, "int8"))


def test_model_info_metric_says_int8(model_dirs: Path, tiny_settings: Settings) -> None:
    from app.serving.api.app import create_app

    settings = _settings(tiny_settings, model_dirs, "int8").model_copy(update={"warmup": False})
    with live_server(create_app(settings)) as url:  # the lifespan loads the int8 model from settings
        metrics = httpx.get(f"{url}/metrics", timeout=30).text
    info = next(line for line in metrics.splitlines() if line.startswith("calogan_model_info{"))
    assert 'precision="int8"' in info
    assert 'backend="int8"' in info
