"""The distribution-matching stage: features, energy score, a tiny run, stop-and-resume, refused changes."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.errors import InvalidRequest
from app.model.training.fluctuations import (
    CHECKPOINT_WEIGHTS,
    FluctuationConfig,
    SilentProgress,
    run_fluctuation_training,
    selection_score,
)
from app.model.training.shower_features import FEATURE_GROUPS, N_FEATURES, energy_score, shower_features
from app.physics.mc import simulate_showers
from app.physics.observables import hit_count


@pytest.fixture(scope="module")
def tiny_generator(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from app.model.architecture import GeneratorConfig, build_generator

    path = tmp_path_factory.mktemp("tiny") / "generator.keras"
    build_generator(GeneratorConfig(width=0.1, output_scale=0.006)).save(path)
    return path


def _config(generator: Path, **changes: Any) -> FluctuationConfig:
    settings: dict[str, Any] = {
        "init_generator": str(generator), "steps": 4, "energies_per_step": 2, "generated_per_energy": 2,
        "reference_per_energy": 2, "validate_every": 2, "validation_energies_gev": (50.0,),
        "validation_showers": 10, "scale_showers": 32, "seed": 3,
    }
    return FluctuationConfig(**{**settings, **changes})


def test_features_measure_what_their_names_say() -> None:
    ep = np.full(6, 100.0)
    cells = simulate_showers(ep, seed=2)
    features = np.asarray(shower_features(cells, ep.astype(np.float32)))
    assert features.shape == (6, N_FEATURES)
    total = cells.sum(axis=(1, 2, 3), dtype=np.float64)
    assert features[:, 0] == pytest.approx(np.log(total / ep), rel=1e-4)
    layers = features[:, 1 : 1 + FEATURE_GROUPS["layers"]]
    assert layers.sum(axis=1) == pytest.approx(1.0, abs=1e-4)
    soft_hits = np.expm1(features[:, 1 + 25 + 2 + 4])
    assert soft_hits == pytest.approx(hit_count(cells), rel=0.15)  # sigmoid steps, not hard counts


def test_energy_score_is_lower_for_the_same_distribution_than_for_a_shifted_one() -> None:
    rng = np.random.default_rng(0)
    reference = rng.standard_normal((200, 3)).astype(np.float32)
    same = rng.standard_normal((200, 3)).astype(np.float32)
    narrow = 0.2 * rng.standard_normal((200, 3)).astype(np.float32)  # right mean, no spread: the v2 failure
    assert float(energy_score(same, reference)) < float(energy_score(narrow, reference)) - 0.1


def test_selection_score_is_zero_only_for_perfect_ratios() -> None:
    perfect = dict.fromkeys(("hits_mean", "hits_rms", "sf_mean", "sf_rms", "depth_rms", "width_rms"), 1.0)
    assert selection_score(perfect) == 0.0
    assert selection_score({**perfect, "sf_mean": 1.05}) > selection_score({**perfect, "hits_rms": 1.05})
    assert selection_score(perfect, shape_error=0.1) > selection_score({**perfect, "hits_rms": 1.05})


@pytest.mark.slow
def test_a_run_stopped_by_sigterm_resumes_bit_for_bit(tiny_generator: Path, tmp_path: Path) -> None:
    config = _config(tiny_generator)
    straight = run_fluctuation_training(config, tmp_path / "straight")
    assert straight.finished
    assert straight.steps_done == 4

    class StopAfterTwoSteps(SilentProgress):
        done = 0

        def step(self, losses: dict[str, float]) -> None:
            self.done += 1
            if self.done == 2:
                os.kill(os.getpid(), signal.SIGTERM)

    stopped = run_fluctuation_training(config, tmp_path / "resumed", progress=StopAfterTwoSteps())
    assert not stopped.finished
    assert stopped.steps_done == 2
    assert json.loads((tmp_path / "resumed" / "checkpoint.json").read_text())["step"] == 2
    resumed = run_fluctuation_training(config, tmp_path / "resumed")
    assert resumed.finished
    assert resumed.steps_done == 4
    with np.load(tmp_path / "straight" / CHECKPOINT_WEIGHTS) as a, \
            np.load(tmp_path / "resumed" / CHECKPOINT_WEIGHTS) as b:
        assert sorted(a) == sorted(b)
        for name in a:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    rows = (tmp_path / "resumed" / "metrics.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == ["0", "2", "4"]
    for name in ("generator.keras", "summary.json", "run_config.json"):
        assert (tmp_path / "resumed" / name).is_file()


@pytest.mark.slow
def test_resuming_with_other_settings_is_refused_with_the_difference(tiny_generator: Path, tmp_path: Path) -> None:
    class StopAtOnce(SilentProgress):
        def step(self, losses: dict[str, float]) -> None:
            os.kill(os.getpid(), signal.SIGTERM)

    run_fluctuation_training(_config(tiny_generator), tmp_path / "run", progress=StopAtOnce())
    with pytest.raises(InvalidRequest, match=r"learning_rate: run has 5e-05, given 0\.001"):
        run_fluctuation_training(_config(tiny_generator, learning_rate=1e-3), tmp_path / "run")


def test_bad_settings_are_clear_errors(tiny_generator: Path) -> None:
    with pytest.raises(InvalidRequest, match="generated_per_energy"):
        _config(tiny_generator, generated_per_energy=1)
    with pytest.raises(ValueError, match="unknown feature groups"):
        _config(tiny_generator, feature_weights={"colour": 1.0})


@pytest.mark.slow
def test_a_finished_run_is_packaged_by_export_with_its_stage_settings(tiny_generator: Path, tmp_path: Path) -> None:
    from app.model.export import package_run
    from app.model.loading import load_generator

    run_fluctuation_training(_config(tiny_generator), tmp_path / "run")
    card = package_run(tmp_path / "run", tmp_path / "model", version="t", onnx=False)
    assert card["training"]["settings"]["learning_rate"] == 5e-5  # the stage's own settings
    assert card["training"]["epochs"] == 4
    assert card["training"]["hardware"]["cpu_count"] >= 1
    assert card["validation"]["val_score"] == pytest.approx(card["validation"]["best_score"])
    assert card["architecture"]["config"]["output_scale"] == pytest.approx(0.006)
    assert load_generator(tmp_path / "model").card["version"] == "t"
