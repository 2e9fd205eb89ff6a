"""What defines a training run: :class:`TrainConfig`, the file names of a run folder, the learning-rate schedule."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.errors import InvalidRequest
from app.model.latent import (
    FULL_TRAINING_RANGE_GEV,
)

CELL_THRESHOLD_GEV = 1e-6
"""Cells below this are set to 0 when training data are read (spec 3.4)."""
PAPER_FILE_SHOWERS = 9000
"""Training showers per file in the original recipe (20 files of 10k showers, 90 % for training)."""

RUN_CONFIG_FILE = "run_config.json"
METRICS_FILE = "metrics.csv"
SUMMARY_FILE = "summary.json"
CHECKPOINT_DIR = "checkpoint"
BEST_WEIGHTS_FILE = "best_generator.npz"
GENERATOR_FILE = "generator.keras"

# Streams of SeedSequence([seed, epoch, stream]).
STREAM_DATA, STREAM_NOISE, STREAM_VALIDATION, STREAM_FIT, STREAM_SPLIT, STREAM_SCALE = range(6)


def seeded_rng(seed: int, epoch: int, stream: int) -> np.random.Generator:
    """The generator of one stream of one epoch: the same (seed, epoch, stream) always draws the same."""
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, stream]))


@dataclass
class TrainConfig:
    """Everything that defines a training run; saved as ``run_config.json`` and in each checkpoint.

    Attributes
    ----------
    data : str
        ``"mc"`` (the project's simulator, fresh showers every step) or a 3DGAN HDF5 file or folder.
    epochs, steps_per_epoch, batch_size : int
        An epoch is ``steps_per_epoch`` steps of ``batch_size`` real showers; the warm-up is validated
        every ``steps_per_epoch`` steps too. ``epochs=0`` is a warm-up-only run.
    seed : int
        Seeds everything (data, noise, labels, weights, dropout); with ``init_generator`` the
        generator's weights and dropout states come from that file instead.
    width : float
        Filter multiplier of both networks (1.0 = the paper; about 0.1 for tests).
    lr_generator, lr_discriminator : float
        Adam learning rates before the decay (spec 3.1).
    file_showers : int
        Real showers per "file-equivalent" of the learning-rate schedule (spec 3.2).
    lr_hold_files, lr_decay_per_file : float
        The schedule holds lr0 for this many files, then multiplies by exp(-decay) per file.
    loss_weights : (float, float, float)
        Weights of BCE, AUX (energy, %) and ECAL (sum, %) losses.
    real_label, fake_label, flip_probability : float
        One-sided label smoothing and random label flips (spec 2.4).
    narrow_energy_epochs : int
        Epochs whose fake energies are U(100, 400) GeV instead of U(2, 500).
    relu_from_epoch : int
        First epoch trained with the output ReLU (1 = from the start).
    bn_training : bool
        Run BatchNorm and Dropout in training mode during the steps (False, the default = the authors'
        behaviour, which keeps the energy conditioning; see the module docstring).
    warmup_steps : int
        Supervised generator steps before epoch 1 (0 = none).
    init_generator : str or None
        A ``generator.keras`` file or a folder holding one, whose weights (and output scale) the run
        starts from; None = random initial weights.
    output_scale : float or None
        The generator's fixed output factor (``GeneratorConfig.output_scale``). None: chosen at the
        start of a fresh run so that the untrained generator's mean deposit is r(Ep) Ep (it is
        about 3 x Ep at 1.0, some 130 times too much); 1.0: the paper's raw output.
    val_showers : int
        Validation showers (MC: generated once; HDF5: held out of the file's showers, at most 10 %).
    ecal_fit_degree : int
        Degree of the polynomial in log(Ep / 100 GeV) fitted to sum / Ep.
    fit_showers : int
        Showers used for the ECAL fit and warm-up templates.
    mc_energy_range_gev : (float, float)
        Primary energies of simulated training showers, uniform, GeV.
    run_eagerly : bool
        Skip ``tf.function``. Tracing the full step takes about a minute of CPU (some 19k graph ops),
        which a 2-step test cannot repay; a real run compiles.
    """

    data: str = "mc"
    epochs: int = 30
    steps_per_epoch: int = 100
    batch_size: int = 128
    seed: int = 1
    width: float = 1.0
    lr_generator: float = 5e-4
    lr_discriminator: float = 1e-4
    file_showers: int = PAPER_FILE_SHOWERS
    lr_hold_files: float = 81.0
    lr_decay_per_file: float = 0.012
    loss_weights: tuple[float, float, float] = (6.0, 0.2, 0.1)
    real_label: float = 0.9
    fake_label: float = 0.0
    flip_probability: float = 0.05
    narrow_energy_epochs: int = 2
    relu_from_epoch: int = 3
    bn_training: bool = False
    warmup_steps: int = 0
    init_generator: str | None = None
    output_scale: float | None = None
    val_showers: int = 512
    ecal_fit_degree: int = 2
    fit_showers: int = 2048
    mc_energy_range_gev: tuple[float, float] = FULL_TRAINING_RANGE_GEV
    run_eagerly: bool = False

    def __post_init__(self) -> None:
        self.loss_weights = tuple(float(w) for w in self.loss_weights)  # type: ignore[assignment]
        self.mc_energy_range_gev = tuple(float(e) for e in self.mc_energy_range_gev)  # type: ignore[assignment]
        checks = {
            "epochs": self.epochs >= 1 or (self.epochs == 0 and self.warmup_steps > 0),
            "steps_per_epoch": self.steps_per_epoch >= 1,
            "batch_size": self.batch_size >= 1,
            "width": 0.0 < self.width <= 4.0,
            "lr_generator": self.lr_generator > 0,
            "lr_discriminator": self.lr_discriminator > 0,
            "file_showers": self.file_showers >= 1,
            "flip_probability": 0.0 <= self.flip_probability < 0.5,
            "relu_from_epoch": self.relu_from_epoch >= 1,
            "warmup_steps": self.warmup_steps >= 0,
            "val_showers": self.val_showers >= 2,
            "ecal_fit_degree": 0 <= self.ecal_fit_degree <= 5,
            "fit_showers": self.fit_showers >= 2,
            "loss_weights": len(self.loss_weights) == 3 and min(self.loss_weights) >= 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if self.epochs == 0 and self.warmup_steps == 0:
            raise InvalidRequest("epochs=0 (a warm-up-only run) needs warmup_steps > 0",
                                 allowed="epochs >= 1, or epochs=0 with warmup_steps >= 1")
        if bad:
            values = ", ".join(f"{name}={getattr(self, name)!r}" for name in bad)
            raise InvalidRequest(f"invalid training settings: {values}", allowed="see `calogan train --help`")

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (tuples become lists)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        return cls(**data)


def learning_rate(lr0: float, showers_seen: int, config: TrainConfig) -> float:
    """Learning rate after ``showers_seen`` real showers: the paper's schedule in file-equivalents.

    Returns lr0 while files = showers_seen / file_showers <= lr_hold_files, then
    lr0 exp(-lr_decay_per_file (files - lr_hold_files)) (spec 3.2, made continuous).
    """
    files = showers_seen / config.file_showers
    return lr0 * math.exp(-config.lr_decay_per_file * max(0.0, files - config.lr_hold_files))
