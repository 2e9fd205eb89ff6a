"""`train()`: a whole GAN run from settings to ``generator.keras``, with checkpoints, resume, best-epoch choice."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.errors import InvalidRequest
from app.model.architecture import GeneratorConfig, build_generator
from app.model.latent import (
    FULL_TRAINING_RANGE_GEV,
    NARROW_TRAINING_RANGE_GEV,
    latent_vectors,
    training_energies,
)
from app.model.training.config import (
    BEST_WEIGHTS_FILE,
    CHECKPOINT_DIR,
    GENERATOR_FILE,
    METRICS_FILE,
    RUN_CONFIG_FILE,
    STREAM_NOISE,
    STREAM_SCALE,
    SUMMARY_FILE,
    TrainConfig,
    learning_rate,
    seeded_rng,
)
from app.model.training.progress import SilentProgress, TrainingProgress
from app.model.training.response import EnergyResponse, fit_energy_response
from app.model.training.run_files import (
    append_csv,
    atomic_write_text,
    hardware_description,
    mean_losses,
    read_checkpoint,
    save_best_generator,
    truncate_csv,
    write_checkpoint,
)
from app.model.training.selection import ValidationMetric, selection_metric, validate_generator
from app.model.training.sources import ShowerSource, make_source
from app.model.training.trainer import GanTrainer
from app.model.training.warmup import run_warmup
from app.physics.observables import observe

logger = logging.getLogger(__name__)


@dataclass
class TrainingResult:
    """What :func:`train` leaves behind."""

    run_dir: Path
    epochs_done: int
    best_epoch: int
    best_score: float
    showers_seen: int
    wall_s: float
    generator_path: Path
    history: list[dict[str, Any]] = field(default_factory=list)


def refuse_changed_settings(given: TrainConfig, stored: TrainConfig, run_dir: Path) -> None:
    """Raise InvalidRequest naming every setting of ``given`` that differs from the run's ``stored`` ones.

    A resumed run must continue the run it resumes: silently keeping the stored settings would ignore
    what the user asked for, and silently taking the new ones would splice two different runs.
    """
    changed = []
    for name, stored_value in stored.to_dict().items():
        value = getattr(given, name)
        if name == "epochs" or (name == "output_scale" and value is None):
            continue
        if TrainConfig.from_dict({**stored.to_dict(), name: value}) != stored:
            changed.append(f"{name}: run has {stored_value!r}, given {value!r}")
    if changed:
        raise InvalidRequest(f"{run_dir} was started with other settings ({'; '.join(changed)})",
                             allowed="the run's own settings to resume it (only --epochs may be raised), "
                                     "or a new --out folder")


def calibrated_output_scale(config: TrainConfig, response: EnergyResponse, n: int = 64) -> float:
    """The generator output scale at which the untrained network deposits the data's mean energy.

    Builds the generator exactly as :class:`GanTrainer` will (same seed, so the same initial weights)
    with scale 1, runs ``n`` showers at U(2, 500) GeV in the training mode of the run, and returns
    mean(r(Ep) Ep) / mean(sum of cells), rounded to two significant digits. The output is linear in the
    scale (ReLU(s x) = s ReLU(x) for s > 0), so at that scale the mean deposit matches.

    Returns
    -------
    float
        The factor (about 1/130 for the full-width generator).
    """
    import keras

    keras.utils.set_random_seed(config.seed)  # as GanTrainer does, so the probe has the trainer's weights
    probe = build_generator(GeneratorConfig(width=config.width, output_relu=True))
    rng = seeded_rng(config.seed, 0, STREAM_SCALE)
    ep = training_energies(n, rng, FULL_TRAINING_RANGE_GEV)
    cells = np.asarray(probe(latent_vectors(ep, rng), training=config.bn_training))
    deposited_gev = float(np.mean(cells.reshape(n, -1).sum(axis=1)))
    if not deposited_gev > 0:
        return 1.0
    factor = float(np.mean(response.target_sum_gev(ep))) / deposited_gev
    return float(f"{factor:.2g}")


def _initial_generator(path: str, width: float) -> Any:
    """The trained generator ``path`` names (a ``generator.keras`` file or a folder holding one).

    Raises InvalidRequest when it cannot be loaded or its weights do not fit a ``width`` generator."""
    from app.model.loading import ModelLoadError, load_keras_file

    file = Path(path) / GENERATOR_FILE if Path(path).is_dir() else Path(path)
    try:
        model = load_keras_file(file)
    except ModelLoadError as exc:
        raise InvalidRequest(f"--init-generator: {exc}", allowed="a generator.keras file or a folder with one") from exc
    expected = build_generator(GeneratorConfig(width=width, output_relu=True,
                                               output_scale=_output_scale_of(model))).variables
    if [tuple(v.shape) for v in model.variables] != [tuple(v.shape) for v in expected]:
        raise InvalidRequest(f"--init-generator: {file} is not a width-{width:g} generator",
                             allowed="a generator trained with the same --width (or --tiny) as this run")
    return model


def _output_scale_of(generator: Any) -> float:
    """The fixed output factor of a built generator (1.0 when it has no ``output_scale`` layer)."""
    try:
        return float(generator.get_layer("output_scale").get_config()["scale"])
    except ValueError:  # Keras' "no such layer"
        return 1.0


def train(
    config: TrainConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    source: ShowerSource | None = None,
    metric: ValidationMetric = selection_metric,
    strategy: Any | None = None,
    progress: TrainingProgress | None = None,
) -> TrainingResult:
    """Run (or resume) a training and write the run folder.

    Parameters
    ----------
    config : TrainConfig
        The settings. On ``resume`` they must equal the run's stored ones (``output_scale=None``
        matches any), except ``epochs``, which may be raised to extend a finished run.
    run_dir : str or Path
        Output folder: ``run_config.json``, ``metrics.csv``, ``checkpoint/``, ``best_generator.npz``,
        ``summary.json`` and, at the end, ``generator.keras`` (best epoch, output ReLU).
    resume : bool
        Continue from ``run_dir/checkpoint`` instead of starting afresh.
    source : ShowerSource, optional
        Real showers; built from ``config.data`` if omitted.
    metric : ValidationMetric
        Compares generated and held-out showers after each warm-up block and each epoch; its ``score``
        picks the best generator.
    strategy : tf.distribute.Strategy, optional
        E.g. ``MirroredStrategy`` for several GPUs.
    progress : TrainingProgress, optional
        Receives phase, step and epoch events.

    Returns
    -------
    TrainingResult
        Best epoch, its score, showers seen, wall time, path of ``generator.keras``.

    Raises
    ------
    InvalidRequest
        Bad settings, a fresh run into a folder that already holds a run, a resume without a
        checkpoint, or an ``init_generator`` that cannot be loaded or has another width.
    """
    run_dir = Path(run_dir)
    progress = progress or SilentProgress()
    started = time.perf_counter()
    initial = None
    if resume:
        state, arrays = read_checkpoint(run_dir)
        stored = TrainConfig.from_dict(state["config"])
        refuse_changed_settings(config, stored, run_dir)
        config = dataclasses.replace(stored, epochs=max(config.epochs, stored.epochs))
    else:
        used = [run_dir / name for name in (CHECKPOINT_DIR, f"{CHECKPOINT_DIR}.old", RUN_CONFIG_FILE)]
        if any(path.exists() for path in used):
            raise InvalidRequest(f"{run_dir} already holds a training run", allowed="--resume, or a new --out folder")
        initial = _initial_generator(config.init_generator, config.width) if config.init_generator else None
        run_dir.mkdir(parents=True, exist_ok=True)
        state, arrays = {}, {}
    source = source or make_source(config)
    if not resume:
        fit_cells, fit_ep = source.fit_sample(config.fit_showers)
        response = fit_energy_response(fit_cells, fit_ep, config.ecal_fit_degree)
        if initial is not None:
            config = dataclasses.replace(config, output_scale=_output_scale_of(initial))
        elif config.output_scale is None:
            config = dataclasses.replace(config, output_scale=calibrated_output_scale(config, response))
    trainer = GanTrainer(config, strategy)
    val_cells, val_ep = source.validation_sample()
    val_obs = observe(val_cells, val_ep)
    if initial is not None:
        for variable, value in zip(trainer.generator.variables, initial.variables, strict=True):
            variable.assign(value)

    if resume:
        trainer.load_state_arrays(arrays)
        response = EnergyResponse.from_dict(state["energy_response"])
        truncate_csv(run_dir / METRICS_FILE, state["epoch"])
        logger.info("resuming", extra={"run_dir": str(run_dir), "epoch": state["epoch"]})
    else:
        state = {"epoch": 0, "global_step": 0, "showers_seen": 0, "best_epoch": 0, "best_score": None,
                 "wall_s": 0.0, "energy_response": response.to_dict()}
        run_info = {
            "config": config.to_dict(), "data": source.description, "energy_response": response.to_dict(),
            "rng": "numpy SeedSequence([seed, epoch, stream]); Keras seeded from seed",
            "hardware": hardware_description(), "replicas": trainer.replicas,
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        atomic_write_text(run_dir / RUN_CONFIG_FILE, json.dumps(run_info, indent=2))
        if config.warmup_steps:
            # The warmed-up generator competes for "best" too: a short adversarial phase can be worse.
            state["best_score"] = run_warmup(trainer, response, run_dir, metric, progress, fit_cells, fit_ep,
                                          val_obs)
            write_checkpoint(run_dir, trainer, state | {"config": config.to_dict(),
                                                         "wall_s": time.perf_counter() - started})
        del fit_cells, fit_ep
    state["config"] = config.to_dict()

    wall_before = float(state["wall_s"])
    history: list[dict[str, Any]] = []
    for epoch in range(state["epoch"] + 1, config.epochs + 1):
        epoch_start = time.perf_counter()
        relu = epoch >= config.relu_from_epoch
        fake_range = NARROW_TRAINING_RANGE_GEV if epoch <= config.narrow_energy_epochs else FULL_TRAINING_RANGE_GEV
        noise_rng = seeded_rng(config.seed, epoch, STREAM_NOISE)
        progress.phase(f"epoch {epoch}/{config.epochs}", config.steps_per_epoch)
        losses = []
        lr_g = lr_d = 0.0
        for cells, ep in source.batches(epoch, config.steps_per_epoch, config.batch_size):
            lr_g = learning_rate(config.lr_generator, state["showers_seen"], config)
            lr_d = learning_rate(config.lr_discriminator, state["showers_seen"], config)
            trainer.opt_g.learning_rate = lr_g
            trainer.opt_d.learning_rate = lr_d
            batch = trainer.make_batch(cells, ep, noise_rng, response=response, energy_range_gev=fake_range)
            losses.append(trainer.train_step(batch, relu=relu))
            state["global_step"] += 1
            state["showers_seen"] += len(ep)
            progress.step(losses[-1])
        train_s = time.perf_counter() - epoch_start
        scores = validate_generator(trainer, val_obs, config.seed, metric)
        best = state["best_score"] is None or scores["score"] < state["best_score"]
        if best:
            state["best_score"], state["best_epoch"] = scores["score"], epoch
            save_best_generator(run_dir, trainer)
        state["epoch"] = epoch
        state["wall_s"] = wall_before + time.perf_counter() - started
        write_checkpoint(run_dir, trainer, state)
        row = {
            "epoch": epoch, "phase": "adversarial", "steps": len(losses), "showers_seen": state["showers_seen"],
            "wall_s": time.perf_counter() - epoch_start, "showers_per_s": len(losses) * config.batch_size / train_s,
            "lr_generator": lr_g, "lr_discriminator": lr_d, "output_relu": int(relu),
            "fake_emin_gev": fake_range[0], "fake_emax_gev": fake_range[1], "best": int(best),
            **mean_losses(losses), **{f"val_{k}": v for k, v in scores.items()},
        }
        append_csv(run_dir / METRICS_FILE, row)
        history.append(row)
        progress.epoch_done(row)
        logger.info("epoch done", extra={k: row[k] for k in ("epoch", "showers_seen", "val_score")})

    state["wall_s"] = wall_before + time.perf_counter() - started  # also right for a warm-up-only run
    generator_path = _export_best(trainer, run_dir)
    summary = {"epochs_done": state["epoch"], "best_epoch": state["best_epoch"], "best_score": state["best_score"],
               "showers_seen": state["showers_seen"], "wall_s": state["wall_s"], "generator": GENERATOR_FILE,
               "energy_response": state["energy_response"], "data": source.description}
    atomic_write_text(run_dir / SUMMARY_FILE, json.dumps(summary, indent=2))
    return TrainingResult(run_dir, state["epoch"], state["best_epoch"], float(state["best_score"] or math.nan),
                          state["showers_seen"], state["wall_s"], generator_path, history)


def _export_best(trainer: GanTrainer, run_dir: Path) -> Path:
    """Write the best epoch's generator, with its output ReLU, as ``generator.keras``."""
    shipped = build_generator(GeneratorConfig(width=trainer.config.width, output_relu=True,
                                              output_scale=trainer.config.output_scale or 1.0))
    best = run_dir / BEST_WEIGHTS_FILE
    if best.exists():
        with np.load(best) as data:
            values = [data[k] for k in sorted(data.files)]
    else:
        values = [np.asarray(v.numpy()) for v in trainer.generator.variables]
    for variable, value in zip(shipped.variables, values, strict=True):
        variable.assign(value)
    path = run_dir / GENERATOR_FILE
    tmp = run_dir / f"{GENERATOR_FILE}.tmp.keras"
    shipped.save(tmp)
    os.replace(tmp, path)
    return path
