"""ONNX export (dynamic batch) matches Keras, and `calogan export` turns a run into a loadable model folder."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest

from app.model.architecture import GeneratorConfig, build_generator
from app.model.export import ONNX_INPUT_NAME, ONNX_OUTPUT_NAME, add_physics_to_card, export_onnx
from app.model.loading import CARD_FILE, CARD_MARKDOWN_FILE, GENERATOR_FILE, ONNX_FILE, load_generator, sha256_file
from tests.model.conftest import run_cli

ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def onnx_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[keras.Model, Path]:
    generator = build_generator(GeneratorConfig(width=0.1))
    path = export_onnx(generator, tmp_path_factory.mktemp("onnx") / ONNX_FILE)
    return generator, path


def test_onnx_runtime_gives_the_keras_showers(onnx_pair: tuple[keras.Model, Path]) -> None:
    generator, path = onnx_pair
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.shape) == (ONNX_INPUT_NAME, ["batch", 200])
    assert (out.name, out.shape) == (ONNX_OUTPUT_NAME, ["batch", 25, 25, 25])
    for n in (1, 5):  # the batch axis is dynamic
        latent = np.random.default_rng(n).standard_normal((n, 200)).astype(np.float32) * 3.0
        expected = np.asarray(generator(latent, training=False))
        (got,) = session.run(None, {ONNX_INPUT_NAME: latent})
        assert got.shape == (n, 25, 25, 25)
        assert got.dtype == np.float32
        assert expected.max() > 0  # a non-trivial comparison
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * float(np.abs(expected).max()))


def test_export_cli_packages_a_run(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "conv2d"
    run_cli("export", str(tiny_run), "--out", str(out), "--version", "t1", "--known-limit", "Tiny test model.")
    card = json.loads((out / CARD_FILE).read_text())
    assert card["version"] == "t1"
    assert set(card["files"]) == {GENERATOR_FILE, ONNX_FILE}
    assert card["files"][ONNX_FILE]["sha256"] == sha256_file(out / ONNX_FILE)
    assert card["training"]["epochs"] == 1
    assert card["training"]["settings"]["width"] == 0.1
    assert "coefficients" in card["training"]["energy_response_fit"]
    assert "val_score" in card["validation"]
    assert card["validation"]["val_mse_shape"] >= 0  # the best row's metrics, wherever it was logged
    assert card["architecture"]["conv_layers"] == 28
    assert card["known_limits"][-1] == "Tiny test model."
    assert len(card["known_limits"]) > 1  # the standard limits stay
    # The trained network (unlike an untrained one) once sent tf2onnx's optimiser into an endless loop;
    # its ONNX twin must still give the Keras showers.
    loaded = load_generator(out)
    latent = np.random.default_rng(2).standard_normal((3, 200)).astype(np.float32)
    expected = np.asarray(loaded.model(latent, training=False))
    session = ort.InferenceSession(str(out / ONNX_FILE), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {ONNX_INPUT_NAME: latent})
    assert expected.max() > 0
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * float(np.abs(expected).max()))


def test_physics_verdict_goes_into_both_cards_and_keeps_the_checksums(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "conv2d"
    run_cli("export", str(tiny_run), "--out", str(out), "--no-onnx")
    physics = {"how": "tools/physics_report.py --n 3", "summary": ["10 GeV: S/Ep +1.0 %"],
               "energies": {"10": {"sf_gan": 0.026}}}
    add_physics_to_card(out, physics)
    assert json.loads((out / CARD_FILE).read_text())["physics"] == physics
    assert "- 10 GeV: S/Ep +1.0 %" in (out / CARD_MARKDOWN_FILE).read_text()
    load_generator(out)  # the weights' checksum in the card still holds
