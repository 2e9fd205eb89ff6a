"""``calogan validate`` end to end on small files, its clear errors, and two Geant4 files against each other."""

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from app.cli.main import main
from app.errors import InvalidRequest
from app.physics.io import read_showers, shower_file_attrs, write_showers
from app.physics.observables import ShowerObservables, observe
from app.validation.metrics import METRICS
from app.validation.plots import PLOT_FILES
from app.validation.report import SUMMARY_FILE, validate_samples, write_report
from tests.validation.conftest import toy_showers


def _write(path: Path, n: int, ep_gev: float, seed: int, **knobs: float) -> Path:
    cells, ep = toy_showers(n, ep_gev, seed=seed, **knobs)
    write_showers(path, cells, ep, attrs=shower_file_attrs(producer="test", seed=seed))
    return path


def _run(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_info:  # typer's standalone mode always ends in sys.exit
        main(argv)
    return int(exit_info.value.code or 0)


def test_validate_writes_summary_and_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gen = _write(tmp_path / "gen.h5", 60, 50.0, seed=1, depth_shift=2.0)
    ref = _write(tmp_path / "ref.h5", 80, 50.0, seed=2)
    ref2 = _write(tmp_path / "ref2.h5", 70, 50.0, seed=3)
    out = tmp_path / "report"
    argv = ["validate", str(gen), str(ref), "--out", str(out), "--ref2", str(ref2), "--seed", "3", "--folds", "3"]
    assert _run(argv) == 0
    assert "mse_shape" in capsys.readouterr().out  # the rich table
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert {"calogan_version", "samples", "energy_matching", "noise_floor", "metrics", "units", "plots"} <= set(summary)
    assert [summary["samples"][key]["n_showers"] for key in ("gen", "ref", "ref2")] == [60, 80, 70]
    assert summary["samples"]["ref"]["file"].endswith("ref.h5")
    assert summary["energy_matching"]["mode"] == "fixed"
    assert summary["energy_matching"]["bins"][0]["label"] == "50 GeV"
    assert summary["noise_floor"]["method"].startswith("second reference")
    for name in [spec.name for spec in METRICS] + ["classifier_auc"]:
        assert {"value", "noise_floor", "ratio"} <= set(summary["metrics"][name]), name
    assert summary["metrics"]["mse_shape"]["per_bin"][0]["noise_floor_sizes"] == [80, 70]
    # the generator's maximum is two layers too deep (twice its shower-to-shower spread): far above the
    # floor, and an ideal classifier on that one feature alone would reach Phi(2 / sqrt 2) = 0.92
    assert summary["metrics"]["mse_shape"]["ratio"] > 5
    assert summary["metrics"]["classifier_auc"]["value"] > 0.8
    assert summary["plots"] == list(PLOT_FILES)
    for name in PLOT_FILES:
        png = out / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert png.stat().st_size > 10_000, name  # something was drawn


def test_without_second_reference_the_floor_comes_from_random_halves(
    reference_obs: ShowerObservables, same_obs: ShowerObservables
) -> None:
    parts, matching = validate_samples(same_obs, reference_obs, seed=0, n_folds=3)
    assert matching.mode == "fixed"
    assert "random halves" in parts["noise_floor"]["method"]
    assert parts["metrics"]["mse_shape"]["per_bin"][0]["noise_floor_sizes"] == [100, 100]
    assert parts["metrics"]["classifier_auc"]["noise_floor_sizes"] == [100, 100]


def test_missing_file_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref = _write(tmp_path / "ref.h5", 20, 50.0, seed=2)
    assert _run(["validate", str(tmp_path / "nope.h5"), str(ref), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "nope.h5: no such file" in err
    assert "Traceback" not in err


def test_wrong_layout_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.h5"
    with h5py.File(bad, "w") as f:
        f["ECAL"] = np.zeros((3, 25, 25))
    ref = _write(tmp_path / "ref.h5", 20, 50.0, seed=2)
    assert _run(["validate", str(bad), str(ref), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "expected (N, 25, 25, 25)" in err
    assert "Traceback" not in err


def test_unmatched_energies_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gen = _write(tmp_path / "gen.h5", 20, 100.0, seed=1)
    ref = _write(tmp_path / "ref.h5", 20, 50.0, seed=2)
    assert _run(["validate", str(gen), str(ref), "--out", str(tmp_path / "o")]) == 2
    assert "100 GeV but the reference is at 50 GeV" in capsys.readouterr().err


def test_two_geant4_files_are_statistically_compatible(g4_dir: Path) -> None:
    first, second = (read_showers(g4_dir / name) for name in ("g4_flat2to500_n300.h5", "g4_flat2to500_n400_b.h5"))
    parts, matching = validate_samples(
        observe(first.cells_gev, first.ep_gev), observe(second.cells_gev, second.ep_gev), seed=0
    )
    assert matching.mode == "binned"
    assert len(matching.bins) >= 5
    metrics = parts["metrics"]
    # Two Geant4 seeds: every ratio's expectation is 1. A single-seed spread of up to about 2 is normal
    # for these 300 + 400 showers; 3 would mean a broken floor or metric.
    for spec in METRICS:
        assert metrics[spec.name]["ratio"] < 3, spec.name
    # AUC: fold sd ~0.07 for ~55 + 55 test showers, mean of 5 ~0.03; 0.12 is 4 of those
    assert abs(metrics["classifier_auc"]["value"] - 0.5) < 0.12


def test_geant4_showers_of_another_energy_stand_out(g4_dir: Path) -> None:
    at_50, at_100 = read_showers(g4_dir / "g4_e50GeV_n200.h5"), read_showers(g4_dir / "g4_e100GeV_n150.h5")
    # 100 GeV showers labelled as 50 GeV: a stand-in for a generator that ignores its energy
    impostor = observe(at_100.cells_gev, np.full(len(at_100), 50.0))
    parts, _ = validate_samples(impostor, observe(at_50.cells_gev, at_50.ep_gev), seed=0)
    assert parts["metrics"]["mse_shape"]["ratio"] > 5
    assert parts["metrics"]["sampling_fraction_mean"]["ratio"] > 50  # S doubles while Ep stays
    assert parts["metrics"]["classifier_auc"]["value"] > 0.95


def test_same_labels_are_refused(tmp_path: Path) -> None:
    ref = _write(tmp_path / "ref.h5", 20, 50.0, seed=2)
    with pytest.raises(InvalidRequest, match="both samples are labelled"):
        write_report(ref, ref, tmp_path / "o", labels=("G4", "G4"))
