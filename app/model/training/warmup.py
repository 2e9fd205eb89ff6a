"""The supervised warm-up: mean-shower templates per log-Ep bin and the warm-up loop, logged as epoch 0."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.errors import InvalidRequest
from app.model.latent import (
    FULL_TRAINING_RANGE_GEV,
    latent_vectors,
    training_energies,
)
from app.model.training.config import METRICS_FILE, STREAM_NOISE, seeded_rng
from app.model.training.progress import TrainingProgress
from app.model.training.response import EnergyResponse
from app.model.training.run_files import append_csv, mean_losses, save_best_generator
from app.model.training.selection import ValidationMetric, validate_generator
from app.model.training.trainer import GanTrainer
from app.physics.detector import FloatArray
from app.physics.observables import ShowerObservables, observe


@dataclass(frozen=True)
class ShowerTemplates:
    """Mean per-shower-normalised showers of the training data in log-energy bins (warm-up targets).

    Attributes
    ----------
    edges_gev : (n_bins + 1,) array
        Bin edges in Ep, GeV.
    profiles : (n_bins, 3, 25) array
        Mean normalised x, y and layer profiles (each sums to 1).
    volumes : (n_bins, 25, 25, 25) array
        Mean normalised showers (each sums to 1).
    """

    edges_gev: FloatArray
    profiles: FloatArray
    volumes: FloatArray

    def bin_of(self, ep_gev: FloatArray) -> np.ndarray:
        """Index of each energy's bin; energies outside the edges go to the nearest end bin."""
        return _bin_index(self.edges_gev, ep_gev)


def _bin_index(edges_gev: FloatArray, ep_gev: FloatArray) -> np.ndarray:
    return np.clip(np.searchsorted(edges_gev, ep_gev) - 1, 0, len(edges_gev) - 2)


WARMUP_FINAL_LR_FRACTION = 0.05
"""The warm-up's learning rate falls from ``lr_generator`` to this fraction of it (cosine)."""
WARMUP_TEMPLATE_BINS = 12
"""Log-Ep bins of the warm-up's target showers (a factor 1.6 each over 2-500 GeV)."""


def shower_templates(cells_gev: FloatArray, ep_gev: FloatArray,
                     n_bins: int = WARMUP_TEMPLATE_BINS) -> ShowerTemplates:
    """Mean normalised profiles and 3D showers of ``cells_gev`` (N, 25, 25, 25) in ``n_bins`` log-Ep bins.

    A bin without showers (data at a few fixed energies) takes the nearest filled bin's shower.
    """
    obs = observe(cells_gev, ep_gev)
    keep = obs.total_gev > 0
    if not keep.any():
        raise InvalidRequest("no training shower deposits any energy", allowed="showers with non-zero cells")
    ep = obs.ep_gev[keep]
    normalised = (cells_gev[keep] / obs.total_gev[keep, None, None, None]).astype(np.float32)
    edges = np.geomspace(ep.min(), ep.max() * (1 + 1e-9), n_bins + 1)
    index = _bin_index(edges, ep)
    filled = np.unique(index)
    nearest = filled[np.abs(np.arange(n_bins)[:, None] - filled[None, :]).argmin(axis=1)]
    volumes = np.stack([normalised[index == i].mean(axis=0) for i in nearest])
    profiles = np.stack([volumes.sum(axis=(2, 3)), volumes.sum(axis=(1, 3)), volumes.sum(axis=(1, 2))], axis=1)
    return ShowerTemplates(edges, profiles.astype(np.float32), volumes.astype(np.float32))



def run_warmup(trainer: GanTrainer, response: EnergyResponse, run_dir: Path, metric: ValidationMetric,
            progress: TrainingProgress, fit_cells: FloatArray, fit_ep: FloatArray,
            val_obs: ShowerObservables) -> float | None:
    """Supervised generator steps (energy and mean shapes) before epoch 1, logged as epoch 0.

    Every ``steps_per_epoch`` steps (and at the end) the generator is validated, a log row is
    written, and the weights are saved as the best generator when the score improved.

    Energies are drawn uniformly in log(Ep) over 2-500 GeV, narrowed to the training data's range.
    With ``init_generator`` the starting generator is scored first (a row with ``steps`` 0).

    Returns the best finite validation score (lower is better), or None when no score was finite."""
    import keras

    config = trainer.config
    templates = shower_templates(fit_cells, fit_ep)
    energy_range = (max(FULL_TRAINING_RANGE_GEV[0], float(templates.edges_gev[0])),
                    min(FULL_TRAINING_RANGE_GEV[1], float(templates.edges_gev[-1])))
    # Cosine decay to 5 % of lr_generator: at a constant 5e-4 the energy scale still swung by +-10 %
    # between blocks after 500 steps.
    schedule = keras.optimizers.schedules.CosineDecay(config.lr_generator, config.warmup_steps,
                                                      alpha=WARMUP_FINAL_LR_FRACTION)
    with trainer.strategy.scope():
        optimizer = keras.optimizers.Adam(learning_rate=schedule)
    rng = seeded_rng(config.seed, 0, STREAM_NOISE)
    progress.phase("warm-up", config.warmup_steps)
    best_score = math.inf
    losses: list[dict[str, float]] = []
    block_start = time.perf_counter()
    if config.init_generator:
        best_score = _warmup_block_done(trainer, run_dir, 0, [], block_start, val_obs, metric, progress, best_score)
    for step in range(1, config.warmup_steps + 1):
        ep = training_energies(config.batch_size, rng, energy_range, log_uniform=True)
        index = templates.bin_of(ep)
        batch = {"latent": latent_vectors(ep, rng), "sum": response.target_sum_gev(ep),
                 "profiles": templates.profiles[index], "volume": templates.volumes[index]}
        losses.append(trainer.warmup_step(batch, optimizer))
        progress.step(losses[-1])
        if step % config.steps_per_epoch and step != config.warmup_steps:
            continue
        best_score = _warmup_block_done(trainer, run_dir, step, losses, block_start, val_obs, metric, progress,
                                        best_score)
        losses, block_start = [], time.perf_counter()
    return best_score if math.isfinite(best_score) else None


def _warmup_block_done(trainer: GanTrainer, run_dir: Path, step: int, losses: list[dict[str, float]],
                       block_start: float, val_obs: ShowerObservables, metric: ValidationMetric,
                       progress: TrainingProgress, best_score: float) -> float:
    """Validate after a warm-up block, log it, keep the weights if best; returns the best score so far."""
    scores = validate_generator(trainer, val_obs, trainer.config.seed, metric)
    best = scores["score"] < best_score
    if best:
        best_score = scores["score"]
        save_best_generator(run_dir, trainer)
    row = {"epoch": 0, "phase": "warmup", "steps": step, "showers_seen": 0,
           "wall_s": time.perf_counter() - block_start, "output_relu": 1, **mean_losses(losses),
           **{f"val_{k}": v for k, v in scores.items()}, "best": int(best)}
    append_csv(run_dir / METRICS_FILE, row)
    progress.epoch_done(row)
    return best_score
