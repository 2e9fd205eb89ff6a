"""Training pipeline: schedule, ECAL refit, step inputs, metric, and `calogan train` end to end with resume."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path

import keras
import numpy as np
import pytest

from app.cli.main import main
from app.errors import InvalidRequest
from app.model.training.config import TrainConfig, learning_rate
from app.model.training.response import EnergyResponse, fit_energy_response
from app.model.training.run import calibrated_output_scale, train
from app.model.training.selection import selection_metric
from app.model.training.sources import FileSource, SimulatorSource
from app.model.training.trainer import GanTrainer
from app.model.training.warmup import shower_templates
from app.physics.mc import simulate_showers
from app.physics.observables import observe
from app.validation.metrics import mse_shape
from tests.model.conftest import TINY_RUN_ARGS, run_cli


def test_learning_rate_follows_the_papers_schedule_in_file_equivalents() -> None:
    config = TrainConfig()
    assert learning_rate(5e-4, 0, config) == 5e-4
    assert learning_rate(5e-4, 81 * 9000, config) == 5e-4  # held for 81 files (spec 3.2)
    assert learning_rate(5e-4, 82 * 9000, config) == pytest.approx(5e-4 * math.exp(-0.012))
    # Last file of epoch 30 (n = 599): lr_G ~ 1.0e-6 and lr_D ~ 2.0e-7 (spec 3.2).
    assert learning_rate(5e-4, 599 * 9000, config) == pytest.approx(1.0e-6, rel=0.02)
    assert learning_rate(1e-4, 599 * 9000, config) == pytest.approx(2.0e-7, rel=0.02)
    short = TrainConfig(file_showers=100)  # a short run compressed onto the same 600 files
    assert learning_rate(5e-4, 599 * 100, short) == pytest.approx(1.0e-6, rel=0.02)


def test_energy_response_fit_recovers_a_known_polynomial() -> None:
    rng = np.random.default_rng(5)
    ep = rng.uniform(2.0, 500.0, 300)
    u = np.log(ep / 100.0)
    fraction = 0.024 - 0.001 * u + 0.0002 * u**2
    cells = np.zeros((300, 25, 25, 25), dtype=np.float32)
    cells[:, 12, 12, 10] = fraction * ep
    response = fit_energy_response(cells, ep, degree=2)
    np.testing.assert_allclose(response.coefficients, [0.024, -0.001, 0.0002], rtol=1e-3, atol=1e-7)
    assert response.target_sum_gev(np.array([100.0]))[0] == pytest.approx(2.4, rel=1e-4)
    # Clamped outside the fitted range: no runaway extrapolation.
    low = response.ep_range_gev[0]
    assert response.fraction(np.array([0.5 * low]))[0] == pytest.approx(response.fraction(np.array([low]))[0])
    assert EnergyResponse.from_dict(response.to_dict()) == response


def test_energy_response_of_a_single_energy_is_constant() -> None:
    cells = simulate_showers(np.full(20, 50.0), seed=2)
    response = fit_energy_response(cells, np.full(20, 50.0), degree=2)
    assert len(response.coefficients) == 1
    assert 0.02 < response.coefficients[0] < 0.03  # the project's sampling fraction near 50 GeV (~0.025)


@pytest.fixture(scope="module")
def tiny_trainer() -> GanTrainer:
    return GanTrainer(TrainConfig(width=0.1, batch_size=4000, run_eagerly=True))


def test_step_inputs_follow_the_recipe(tiny_trainer: GanTrainer) -> None:
    n = 4000
    rng = np.random.default_rng(6)
    response = EnergyResponse((0.025,), (2.0, 500.0))
    cells = np.zeros((n, 25, 25, 25), dtype=np.float32)
    cells[:, 12, 12, 5] = 1.5
    ep = np.full(n, 60.0, dtype=np.float32)
    batch = tiny_trainer.make_batch(cells, ep, rng, response=response, energy_range_gev=(100.0, 400.0))
    np.testing.assert_allclose(batch["real_sum"], 1.5)  # ECAL target of real showers: their own pixel sum
    np.testing.assert_allclose(batch["real_ep100"], 0.6)
    for prefix in ("d", "g"):
        ep100 = batch[f"{prefix}_ep100"][:, 0]
        assert ep100.min() >= 1.0
        assert ep100.max() <= 4.0
        np.testing.assert_allclose(batch[f"{prefix}_sum"][:, 0], 0.025 * 100 * ep100, rtol=1e-5)
        assert batch[f"{prefix}_latent"].shape == (n, 200)
    # Labels: real 0.9 (5 % flipped to 0), fake 0 (5 % flipped to 1), generator step 0.9 (5 % to 0).
    # With n = 4000 a 5 % rate has sigma 0.34 %; 4 sigma bounds.
    for key, value, flipped in (("real_labels", 0.9, 0.0), ("d_labels", 0.0, 1.0), ("g_labels", 0.9, 0.0)):
        labels = batch[key][:, 0]
        assert set(np.unique(labels)) == {np.float32(value), np.float32(flipped)}
        assert abs(np.mean(labels == np.float32(flipped)) - 0.05) < 0.014
    again = tiny_trainer.make_batch(cells, ep, np.random.default_rng(6), response=response,
                                    energy_range_gev=(100.0, 400.0))
    assert all(np.array_equal(batch[k], again[k]) for k in batch)


def test_calibrated_output_scale_starts_the_generator_at_the_data_deposit() -> None:
    config = TrainConfig(width=0.1, seed=4, bn_training=False)
    response = EnergyResponse((0.025,), (2.0, 500.0))
    scale = calibrated_output_scale(config, response, n=32)
    assert 0 < scale < 0.1  # an untrained generator deposits far more than 2.5 % of Ep
    trainer = GanTrainer(dataclasses.replace(config, output_scale=scale))
    ep = np.random.default_rng(9).uniform(2.0, 500.0, 32)
    showers = trainer.generate(ep, np.random.default_rng(10))
    ratio = showers.reshape(32, -1).sum(axis=1).mean() / (0.025 * ep.mean())
    # Other noise and energies than the calibration's, so only roughly 1 (not the x130 of scale 1).
    assert 0.5 < ratio < 2.0


def test_bad_settings_are_refused() -> None:
    with pytest.raises(InvalidRequest, match="batch_size=0"):
        TrainConfig(batch_size=0)
    with pytest.raises(InvalidRequest, match="flip_probability"):
        TrainConfig(flip_probability=0.7)


def test_selection_metric_is_zero_for_identical_samples_and_sees_an_energy_scale_error() -> None:
    ep = np.random.default_rng(1).uniform(10.0, 200.0, 60)
    ref = observe(simulate_showers(ep, seed=4), ep)
    same = selection_metric(ref, ref)
    assert same["score"] == pytest.approx(0.0, abs=1e-12)
    scaled = selection_metric(observe(1.1 * simulate_showers(ep, seed=4), ep), ref)
    assert scaled["sf_rel_error"] == pytest.approx(0.1, rel=1e-6)
    assert scaled["score"] == pytest.approx(0.1, rel=1e-6)  # shapes unchanged by a global scale


def test_validation_metric_sees_a_shape_that_does_not_change_with_energy() -> None:
    # Swap the low- and high-energy showers: the pooled profiles are identical, the per-energy ones are not.
    ep = np.concatenate([np.full(30, 10.0), np.full(30, 400.0)])
    cells = simulate_showers(ep, seed=4)
    ref = observe(cells, ep)
    swapped = np.concatenate([cells[30:] * (10.0 / 400.0), cells[:30] * (400.0 / 10.0)])
    pooled = mse_shape(observe(swapped, ep), ref)
    grouped = selection_metric(observe(swapped, ep), ref)
    assert pooled < 1e-12
    assert grouped["shape_rel_rmse"] > 0.1


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_train_writes_checkpoint_log_and_generator(tiny_run: Path) -> None:
    state = json.loads((tiny_run / "checkpoint" / "state.json").read_text())
    assert state["epoch"] == 1
    assert state["showers_seen"] == 4
    assert (tiny_run / "checkpoint" / "variables.npz").is_file()
    rows = _rows(tiny_run)
    assert [(r["epoch"], r["phase"]) for r in rows] == [("0", "warmup"), ("1", "adversarial")]
    assert all(np.isfinite(float(rows[1][k])) for k in ("d_real_loss", "d_fake_loss", "g_loss", "val_score",
                                                        "val_mse_shape"))
    run_info = json.loads((tiny_run / "run_config.json").read_text())
    assert run_info["config"]["bn_training"] is False  # the default: the authors' inference-mode BN
    assert 0 < run_info["config"]["output_scale"] < 0.1  # calibrated at the start, kept for resume
    assert len(run_info["energy_response"]["coefficients"]) == 3
    generator = keras.models.load_model(tiny_run / "generator.keras")
    assert [layer.name for layer in generator.layers[-2:]] == ["output_scale", "output_relu"]
    assert generator.get_layer("output_scale").scale == run_info["config"]["output_scale"]
    showers = np.asarray(generator(np.ones((2, 200), dtype=np.float32)))
    assert showers.shape == (2, 25, 25, 25)
    assert showers.min() >= 0.0


def test_resume_continues_exactly_where_the_run_stopped(tiny_run: Path, training_file: Path,
                                                        tmp_path: Path) -> None:
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    for item in tiny_run.iterdir():  # a copy, so the shared run stays at epoch 1
        target = resumed / item.name
        if item.is_dir():
            target.mkdir()
            for f in item.iterdir():
                (target / f.name).write_bytes(f.read_bytes())
        else:
            target.write_bytes(item.read_bytes())
    run_cli("train", "--out", str(resumed), "--resume", "--epochs", "2", "--data", str(training_file),
            *TINY_RUN_ARGS)
    state = json.loads((resumed / "checkpoint" / "state.json").read_text())
    assert state["epoch"] == 2
    assert state["showers_seen"] == 8
    assert [r["epoch"] for r in _rows(resumed)] == ["0", "1", "2"]

    straight = tmp_path / "straight"  # the same run without interruption
    config = TrainConfig(data=str(training_file), epochs=2, steps_per_epoch=1, batch_size=4, val_showers=8, seed=3,
                         width=0.1, warmup_steps=1, run_eagerly=True)
    train(config, straight, metric=selection_metric)
    variables = Path("checkpoint") / "variables.npz"
    with np.load(resumed / variables) as a, np.load(straight / variables) as b:
        assert a.files == b.files
        for key in a.files:  # weights, BN statistics, dropout seeds and Adam moments, bit for bit
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_fresh_run_into_a_used_folder_is_a_clear_error(tiny_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--out", str(tiny_run), "--tiny"])
    assert exit_info.value.code == 2
    assert "already holds a training run" in capsys.readouterr().err


def test_resume_with_other_settings_is_refused_naming_them(tiny_run: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--out", str(tiny_run), "--resume", "--lr-generator", "0.001", "--batch-size", "8"])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert "lr_generator: run has 0.0005, given 0.001" in message
    assert "batch_size: run has 4, given 8" in message


def test_resume_without_checkpoint_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--out", str(tmp_path), "--resume"])
    assert exit_info.value.code == 2
    assert "no checkpoint to resume from" in capsys.readouterr().err


def test_simulator_source_is_reproducible_per_epoch() -> None:
    source = SimulatorSource(seed=1, val_showers=4, energy_range_gev=(10.0, 50.0))
    first = list(source.batches(epoch=1, n_batches=2, batch_size=3))
    again = list(source.batches(epoch=1, n_batches=2, batch_size=3))
    other = next(source.batches(epoch=2, n_batches=1, batch_size=3))
    assert len(first) == 2
    cells, ep = first[0]
    assert cells.shape == (3, 25, 25, 25)
    assert cells.dtype == np.float32
    assert ep.min() >= 10.0
    assert ep.max() <= 50.0
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(other[1], ep)
    val_cells, val_ep = source.validation_sample()
    assert val_cells.shape == (4, 25, 25, 25)
    assert not np.isin(val_ep, np.concatenate([e for _, e in first])).any()
    assert (cells[cells > 0] >= 1e-6).all()  # thresholded as the training data of the paper


def test_file_source_holds_out_validation_and_cycles(training_file: Path) -> None:
    source = FileSource(training_file.parent, seed=2, val_showers=100)  # a folder of .h5 files works too
    _, val_ep = source.validation_sample()
    assert len(val_ep) == 4  # at most 10 % of the 40 showers
    seen = np.concatenate([ep for _, ep in source.batches(epoch=1, n_batches=12, batch_size=5)])
    assert len(seen) == 60  # more than one pass over the 36 training showers
    assert not np.isin(val_ep, seen).any()
    again = np.concatenate([ep for _, ep in source.batches(epoch=1, n_batches=12, batch_size=5)])
    np.testing.assert_array_equal(seen, again)


def test_file_source_refuses_too_few_showers(tmp_path: Path) -> None:
    from app.physics.io import shower_file_attrs, write_showers

    path = tmp_path / "few.h5"
    write_showers(path, simulate_showers(np.full(5, 20.0), seed=1), np.full(5, 20.0),
                  attrs=shower_file_attrs(producer="test"))
    with pytest.raises(InvalidRequest, match="too few"):
        FileSource(path, seed=1, val_showers=10)
    with pytest.raises(InvalidRequest, match=r"no \.h5 files"):
        FileSource(_empty_dir(tmp_path), seed=1, val_showers=2)


def _empty_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "empty"
    folder.mkdir()
    return folder


def test_warmed_up_generator_is_kept_when_the_adversarial_epochs_are_worse(training_file: Path, tmp_path: Path) -> None:
    calls = iter(range(100))

    def worse_every_time(gen: object, ref: object) -> dict[str, float]:
        return {"score": float(next(calls))}  # warm-up 0, epoch 1 scores 1, epoch 2 scores 2

    config = TrainConfig(data=str(training_file), epochs=2, steps_per_epoch=1, batch_size=4, val_showers=8, seed=3,
                         width=0.1, warmup_steps=1, run_eagerly=True)
    result = train(config, tmp_path / "run", metric=worse_every_time)
    assert result.best_epoch == 0
    assert [r["best"] for r in _rows(tmp_path / "run")] == ["1", "0", "0"]


def test_warm_up_is_validated_every_block_and_may_be_the_whole_run(training_file: Path, tmp_path: Path) -> None:
    scores = iter([0.5, 0.9])  # the second block is worse: the first one's weights are the result

    def first_is_best(gen: object, ref: object) -> dict[str, float]:
        return {"score": next(scores)}

    config = TrainConfig(data=str(training_file), epochs=0, steps_per_epoch=2, batch_size=4, val_showers=8, seed=3,
                         width=0.1, warmup_steps=3, run_eagerly=True)
    result = train(config, tmp_path / "run", metric=first_is_best)
    rows = _rows(tmp_path / "run")
    assert [(r["phase"], r["steps"], r["best"]) for r in rows] == [("warmup", "2", "1"), ("warmup", "3", "0")]
    assert result.best_epoch == 0
    assert result.best_score == 0.5
    assert result.wall_s > 0
    assert result.generator_path.is_file()
    assert all(np.isfinite(float(rows[0][k])) for k in ("warmup_energy", "warmup_shape"))


def test_epochs_zero_needs_a_warm_up() -> None:
    with pytest.raises(InvalidRequest, match="epochs=0"):
        TrainConfig(epochs=0, warmup_steps=0)


def test_init_generator_starts_from_the_given_weights_and_output_scale(tiny_run: Path, training_file: Path,
                                                                      tmp_path: Path) -> None:
    source = keras.models.load_model(tiny_run / "generator.keras")
    # A negligible learning rate: one warm-up step leaves the loaded weights (to float precision) as they were.
    config = TrainConfig(data=str(training_file), epochs=0, steps_per_epoch=1, batch_size=4, val_showers=8, seed=9,
                         width=0.1, warmup_steps=1, run_eagerly=True, lr_generator=1e-12,
                         init_generator=str(tiny_run))
    result = train(config, tmp_path / "run", metric=selection_metric)
    assert [r["steps"] for r in _rows(tmp_path / "run")] == ["0", "1"]  # the starting point is scored too
    continued = keras.models.load_model(result.generator_path)
    assert continued.get_layer("output_scale").scale == source.get_layer("output_scale").scale
    latent = np.random.default_rng(0).normal(size=(3, 200)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(continued(latent)), np.asarray(source(latent)), rtol=1e-4, atol=1e-9)


def test_init_generator_that_is_not_a_generator_is_a_clear_error(tiny_run: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="--init-generator"):
        train(TrainConfig(epochs=0, warmup_steps=1, width=0.1, init_generator=str(tmp_path / "missing.keras")),
              tmp_path / "run")
    with pytest.raises(InvalidRequest, match=r"not a width-0\.2 generator"):
        train(TrainConfig(epochs=0, warmup_steps=1, width=0.2, init_generator=str(tiny_run)), tmp_path / "run2")


def test_warm_up_only_run_resumes_into_adversarial_epochs(training_file: Path, tmp_path: Path) -> None:
    config = TrainConfig(data=str(training_file), epochs=0, steps_per_epoch=1, batch_size=4, val_showers=8, seed=3,
                         width=0.1, warmup_steps=1, run_eagerly=True)
    run = tmp_path / "run"
    train(config, run, metric=selection_metric)
    assert json.loads((run / "checkpoint" / "state.json").read_text())["epoch"] == 0
    result = train(dataclasses.replace(config, epochs=1), run, resume=True, metric=selection_metric)
    assert result.epochs_done == 1
    assert [(r["epoch"], r["phase"]) for r in _rows(run)] == [("0", "warmup"), ("1", "adversarial")]
    with pytest.raises(InvalidRequest, match="already holds"):
        train(config, run, metric=selection_metric)


def test_shower_templates_are_normalised_mean_showers_per_energy_bin() -> None:
    ep = np.array([10.0, 12.0, 300.0, 400.0])
    cells = simulate_showers(ep, seed=2)
    templates = shower_templates(cells, ep, n_bins=2)
    np.testing.assert_allclose(templates.volumes.sum(axis=(1, 2, 3)), 1.0, rtol=1e-5)
    np.testing.assert_allclose(templates.profiles.sum(axis=2), 1.0, rtol=1e-5)
    low = (cells[:2] / cells[:2].sum(axis=(1, 2, 3), keepdims=True)).mean(axis=0)
    np.testing.assert_allclose(templates.volumes[0], low, rtol=1e-4, atol=1e-9)
    np.testing.assert_array_equal(templates.bin_of(np.array([1.0, 11.0, 350.0, 900.0])), [0, 0, 1, 1])
    # Deeper showers at higher energy: the layer profile's maximum moves back.
    assert np.argmax(templates.profiles[1, 2]) > np.argmax(templates.profiles[0, 2])


def test_cli_continues_a_generator_with_its_own_learning_rate(tiny_run: Path, training_file: Path,
                                                             tmp_path: Path) -> None:
    out = tmp_path / "stage2"
    run_cli("train", "--out", str(out), "--data", str(training_file), "--epochs", "0", "--warmup-steps", "1",
            "--init-generator", str(tiny_run / "generator.keras"), "--lr-generator", "2e-4", *TINY_RUN_ARGS)
    config = json.loads((out / "run_config.json").read_text())["config"]
    assert config["lr_generator"] == 2e-4
    assert config["init_generator"] == str(tiny_run / "generator.keras")
    assert (out / "generator.keras").is_file()
