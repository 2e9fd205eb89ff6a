"""int8 quantization: the physics acceptance, the greedy float32 fallback, and a tiny generator end to end."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.errors import InvalidRequest, ModelLoadError
from app.model import quantize as q
from app.physics.detector import SHOWER_SHAPE
from app.physics.mc import ShowerSimulator
from app.validation.metrics import mse_shape

ENERGIES_GEV = (10.0, 100.0, 400.0)
N_PER_ENERGY = 12


def _latent_stub(ep_gev: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Latent rows that carry their energy, so the stub generator below can read it back."""
    z = rng.standard_normal((len(ep_gev), 200)).astype(np.float32)
    z[:, 0] = np.asarray(ep_gev, dtype=np.float32)
    return z


@pytest.fixture(scope="module")
def mc_showers() -> dict[float, np.ndarray]:
    """Monte Carlo showers per energy, used as the 'float32 generator' output in the loop tests."""
    sim, rng = ShowerSimulator(), np.random.default_rng(5)
    return {e: sim.simulate(np.full(N_PER_ENERGY, e), rng) for e in ENERGIES_GEV}


@pytest.fixture(scope="module")
def sample(mc_showers: dict[float, np.ndarray]) -> q.AcceptanceSample:
    """An acceptance sample whose float32 output is a fixed MC sample and whose reference is another."""

    def float32(latent: np.ndarray) -> np.ndarray:
        return _float32_cells(latent, mc_showers)

    return q.acceptance_sample(
        float32, ShowerSimulator().simulate, _latent_stub, np.random.default_rng(6),
        n_per_energy=N_PER_ENERGY, energies_gev=ENERGIES_GEV,
    )


def _float32_cells(latent: np.ndarray, mc_showers: dict[float, np.ndarray]) -> np.ndarray:
    out = np.empty((len(latent), *SHOWER_SHAPE), dtype=np.float32)
    for energy, cells in mc_showers.items():
        rows = np.flatnonzero(latent[:, 0] == np.float32(energy))
        out[rows] = cells[: len(rows)]
    return out


def test_identical_showers_pass_with_zero_violation(sample: q.AcceptanceSample, mc_showers: dict) -> None:
    report = q.check_accuracy(_float32_cells(sample.latent, mc_showers), sample, mse_shape)
    assert report.passed
    assert report.violation == pytest.approx(0.0, abs=1e-9)
    assert [c.ep_gev for c in report.checks] == list(ENERGIES_GEV)


@pytest.mark.parametrize(("scale", "passed"), [(1.005, True), (0.995, True), (1.02, False), (0.97, False)])
def test_sampling_fraction_tolerance_is_one_percent(
    sample: q.AcceptanceSample, mc_showers: dict, scale: float, passed: bool
) -> None:
    # A global scale changes S/Ep only (mse_shape uses per-shower normalised profiles).
    report = q.check_accuracy(_float32_cells(sample.latent, mc_showers) * np.float32(scale), sample, mse_shape)
    assert report.passed is passed
    assert report.checks[0].sampling_fraction_rel_diff == pytest.approx(scale - 1.0, rel=1e-4)
    assert report.violation == pytest.approx(abs(scale - 1.0) / q.SAMPLING_FRACTION_RTOL, rel=1e-3)


def test_a_shape_change_fails_on_mse_shape(sample: q.AcceptanceSample, mc_showers: dict) -> None:
    cells = _float32_cells(sample.latent, mc_showers)
    shifted = np.roll(cells, 2, axis=3)  # two layers deeper: same energy, another longitudinal shape
    report = q.check_accuracy(shifted, sample, mse_shape)
    assert all(abs(c.sampling_fraction_rel_diff) < 1e-6 for c in report.checks)
    assert max(c.mse_shape_rel_change for c in report.checks) > q.MSE_SHAPE_RTOL
    assert not report.passed


def test_silent_model_fails(sample: q.AcceptanceSample) -> None:
    report = q.check_accuracy(np.zeros((len(sample.latent), *SHOWER_SHAPE), np.float32), sample, mse_shape)
    assert not report.passed
    assert report.to_dict()["violation"] is None  # inf is not JSON


def test_acceptance_sample_refuses_too_few_showers() -> None:
    with pytest.raises(InvalidRequest, match=">= 10"):
        q.acceptance_sample(lambda z: z, ShowerSimulator().simulate, _latent_stub, np.random.default_rng(1),
                            n_per_energy=3)


# -- the greedy loop, with a stand-in quantizer: each quantized layer scales the output by (1 + error) --

LAYER_ERRORS = {"a": 0.001, "b": 0.02, "c": 0.003}


def _stub_quantize(keep: Sequence[str]) -> tuple[str, ...]:
    return tuple(keep)


def _stub_run(mc_showers: dict) -> Any:
    def run(keep: tuple[str, ...], latent: np.ndarray) -> np.ndarray:
        factor = 1.0 + sum(err for layer, err in LAYER_ERRORS.items() if layer not in keep)
        return _float32_cells(latent, mc_showers) * np.float32(factor)

    return run


def test_loop_keeps_the_most_sensitive_layer_in_float32(sample: q.AcceptanceSample, mc_showers: dict) -> None:
    steps = []
    result = q.quantize_with_accuracy_control(
        _stub_quantize, _stub_run(mc_showers), list(LAYER_ERRORS), sample, mse_shape, tuple(LAYER_ERRORS),
        ranking_rows=4, on_step=steps.append,
    )
    assert next(iter(result.sensitivity)) == "b"  # the 2 % layer: reverting it leaves the least error
    assert result.keep_float32 == ("b",)
    assert result.passed
    assert [s.keep_float32 for s in result.steps] == [(), ("b",)] == [s.keep_float32 for s in steps]
    assert not result.steps[0].report.passed


def test_loop_stops_when_full_int8_passes(sample: q.AcceptanceSample, mc_showers: dict) -> None:
    run = _stub_run(mc_showers)
    result = q.quantize_with_accuracy_control(
        lambda keep: ("b", *keep), run, list(LAYER_ERRORS), sample, mse_shape, tuple(LAYER_ERRORS)
    )
    assert result.keep_float32 == ()
    assert result.passed
    assert result.sensitivity == {}  # no ranking needed


def test_loop_reports_failure_when_out_of_budget(sample: q.AcceptanceSample, mc_showers: dict) -> None:
    result = q.quantize_with_accuracy_control(
        _stub_quantize, _stub_run(mc_showers), list(LAYER_ERRORS), sample, mse_shape, tuple(LAYER_ERRORS),
        max_float32_layers=0,
    )
    assert not result.passed
    assert len(result.steps) == 1


def test_int8_folder_sits_next_to_the_float32_one() -> None:
    assert q.int8_model_dir(Path("models/conv2d")) == Path("models/conv2d_int8")


# -- a real generator (width 0.1, random weights) through ONNX, NNCF and OpenVINO --------------------------

@pytest.fixture(scope="module")
def small_generator(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any, Path]:
    """A width-0.1 generator, its float32 OpenVINO model, and a folder for the int8 model."""
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    import keras

    from app.model.architecture import GeneratorConfig, build_generator
    from app.model.export import export_onnx

    keras.utils.set_random_seed(2)
    model = build_generator(GeneratorConfig(width=0.1))
    folder = tmp_path_factory.mktemp("quantize")
    float32 = q.onnx_to_openvino(export_onnx(model, folder / "generator.onnx"))
    return model, float32, folder


@pytest.fixture(scope="module")
def int8_folder(small_generator: tuple[Any, Any, Path]) -> Path:
    """Full int8 of the small generator, written with a card, as ``calogan quantize`` does."""
    from app.model.latent import latent_vectors

    _, float32, folder = small_generator
    rng = np.random.default_rng(3)
    calibration = latent_vectors(rng.uniform(*q.CALIBRATION_RANGE_GEV, 32), rng)
    model = q.quantize_model(float32, calibration)
    out = folder / "int8"
    card = {"name": "small-int8", "version": "test", "accuracy": {"passed": True}, "size_bytes": {"float32": 1}}
    q.write_int8_model(model, out, card)
    return out


@pytest.mark.slow
def test_openvino_float32_reproduces_keras(small_generator: tuple[Any, Any, Path]) -> None:
    from app.model.latent import latent_vectors

    model, float32, _ = small_generator
    rng = np.random.default_rng(4)
    latent = latent_vectors(np.array([10.0, 100.0, 400.0]), rng)
    expected = model(latent, training=False).numpy()
    np.testing.assert_allclose(q.run_compiled(q.compile_cpu(float32, 1), latent), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_int8_model_loads_and_stays_close_to_float32(
    small_generator: tuple[Any, Any, Path], int8_folder: Path
) -> None:
    from app.model.latent import latent_vectors

    model, _, _ = small_generator
    generator = q.load_int8_generator(int8_folder, threads=1)
    latent = latent_vectors(np.repeat([50.0, 200.0, 400.0], 4), np.random.default_rng(7))
    cells = generator.generate(latent)
    assert cells.shape == (12, *SHOWER_SHAPE)
    assert cells.dtype == np.float32
    expected = model(latent, training=False).numpy()
    # Loose on purpose: random weights at width 0.1 (2-6 channels per layer) quantize far worse than a trained
    # full-width network; this catches a broken or silent model (relative error ~1), not a 1 % drift.
    assert np.linalg.norm(cells - expected) / np.linalg.norm(expected) < 0.5
    assert cells.sum() / expected.sum() == pytest.approx(1.0, abs=0.25)
    card = generator.card
    assert card["precision"] == "int8"
    assert card["size_bytes"]["int8"] == sum(f["bytes"] for f in card["files"].values())
    assert "small-int8" in (int8_folder / "model_card.md").read_text()


@pytest.mark.slow
def test_unknown_layer_names_are_refused(small_generator: tuple[Any, Any, Path]) -> None:
    _, float32, _ = small_generator
    assert "merge_conv" in q.quantizable_layers(float32)
    assert len(q.quantizable_layers(float32)) == 29  # 21 conv + 6 transposed conv + merge conv + dense
    with pytest.raises(InvalidRequest, match="unknown layers"):
        q.quantize_model(float32, np.zeros((4, 200), np.float32), ["no_such_layer"])


@pytest.mark.slow
def test_a_tampered_int8_file_is_refused(int8_folder: Path, tmp_path: Path) -> None:
    copy = tmp_path / "int8"
    shutil.copytree(int8_folder, copy)
    with (copy / q.INT8_BIN_FILE).open("r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02\x03")
    with pytest.raises(ModelLoadError, match="sha256"):
        q.load_int8_generator(copy)


def test_missing_or_foreign_card_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="calogan quantize"):
        q.read_int8_card(tmp_path)
    (tmp_path / "model.json").write_text(json.dumps({"schema_version": 1, "precision": "float32"}))
    with pytest.raises(ModelLoadError, match="not an int8 model card"):
        q.read_int8_card(tmp_path)


# -- the command line --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--model-dir", "no/such/folder"), "no float32 generator"),
        (("--calib-n", "0"), "--calib-n 0"),
        (("--eval-n", "3"), "--eval-n 3"),
        (("--threads", "0"), "--threads 0"),
    ],
)
def test_quantize_bad_input_is_one_clear_line(
    args: tuple[str, ...], message: str, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.cli.main import main

    argv = ["quantize", "--model-dir", str(tiny_model_dir), *args]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_quantize_refuses_to_overwrite_the_float32_folder(
    tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(["quantize", "--model-dir", str(tiny_model_dir), "--out", str(tiny_model_dir)])
    assert exit_info.value.code == 2
    assert "float32 model folder" in capsys.readouterr().err
