"""Adversarial training of the Conv2D GAN, following the authors' recipe (spec section 3) on our data.

What one epoch does: ``steps_per_epoch`` times, draw ``batch_size`` real showers, then

1. update D on the real batch (label 0.9, 5 % flipped to 0; energy target Ep/100; ECAL target = the
   real pixel sum, so that loss is 0 there);
2. update D on a fake batch (fresh noise and energies; label 0, 5 % flipped to 1; ECAL target r(Ep) Ep);
3. update G once through D (fresh noise and energies; label 0.9 with 5 % flips), as the Conv2D GPU
   script does (spec 8, item 8).

Each loss is 6 BCE + 0.2 AUX + 0.1 ECAL (spec 2.4). After the epoch the generator makes one shower
per held-out validation shower at the same energy (fixed noise), a physics metric compares them, the
epoch is checkpointed, and the best epoch so far is kept. At the end ``generator.keras`` holds the
best generator, with its output ReLU.

Recipe choices, each recorded in ``run_config.json``:

- Learning rate (spec 3.2): the original holds lr0 for 81 "files" (of about 9,000 training showers
  each) and then multiplies it by exp(-0.012) per file. Here the file index is continuous,
  ``showers_seen / file_showers``, and the rate is set before every step. ``file_showers`` defaults
  to the paper's 9,000; a short run that should go through the paper's whole schedule (600 files)
  sets it to total_showers / 600. Adam keeps its state across files (the original re-created Adam
  per file; spec 8, item 7).
- Output ReLU curriculum (spec 3.3): linear output before ``relu_from_epoch``, ReLU from then on. The
  two generators share every layer, so the weights and Adam state carry over.
- Fake energies: U(100, 400) GeV during the first ``narrow_energy_epochs`` epochs, then U(2, 500).
- BatchNorm and Dropout run in inference mode by default (``bn_training=False``), as in the authors'
  runs, where BN never updated its statistics (spec 1.6, 8 item 2), so each BN is a learned affine
  map. Measured reason, not only fidelity: the energy enters only as the scale of the latent
  (z x Ep/100), and with inference-mode BN, bias-free convs and LeakyReLU the untrained generator is
  nearly homogeneous in Ep (sum/Ep varies by 17 % from 10 to 400 GeV), whereas training-mode BN
  normalises the scale away (sum/Ep 10x higher at 10 GeV than at 400 GeV); a 60-step warm-up then
  reached a 13 % energy-scale error against 70 % after 100 steps with training-mode BN.
  ``bn_training=True`` remains available.
- ECAL target: GetEcalFit describes CERN's data, not ours (spec 2.4), so the run refits
  r(Ep) = sum / Ep as a polynomial in log(Ep / 100 GeV) to its own training data at the start.
- Output scale (``output_scale``): an untrained generator deposits about 3 Ep, some 130 times the
  data's r(Ep) Ep. A fixed, weightless factor after the merge conv (chosen at the start, stored in the
  config and in the shipped model) starts it at the right mean deposit; see :func:`calibrated_output_scale`.
- Optional warm-up: ``warmup_steps`` supervised generator steps before the adversarial phase, pulling
  the total energy to r(Ep) Ep, and the normalised x, y, layer profiles and the normalised 3D shower
  to the training data's mean ones in 12 log-energy bins, with energies uniform in log(Ep), at a
  learning rate that falls from ``lr_generator`` to 5 % of it (cosine). It costs
  about a third of a GAN step and gives the adversarial phase a generator that already makes
  shower-like volumes; it teaches the mean shower per energy, not the shower-to-shower fluctuations.
  It is validated every ``steps_per_epoch`` steps (the best block competes for "best generator");
  ``epochs=0`` makes a warm-up-only run.
- Optional ``init_generator``: start from a trained generator (a ``generator.keras`` or a model
  folder) instead of random weights, with its output scale; it is scored before the first warm-up
  step, so a further stage can only ship something better. The discriminator and the optimizers start
  fresh: a shipped model carries no optimizer state (the authors, for their part, re-created Adam
  for every file).
- The finished warm-up is checkpointed as epoch 0, so ``--resume --epochs N`` turns a warm-up-only
  run into an adversarial one; an interrupted warm-up is not resumable (start it again).

Randomness: every draw comes from a numpy Generator seeded by ``SeedSequence([seed, epoch, stream])``,
so the state at the start of any epoch is known from (seed, epoch) alone and resuming repeats
exactly what an uninterrupted run draws. Weight init and Dropout use Keras' seeded generators, whose
states are model variables and therefore checkpointed.

The train step also runs under ``tf.distribute.MirroredStrategy``: pass a strategy, the batch is
split across replicas and each replica's loss is divided by the replica count (the optimizer sums
gradients over replicas).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import os
import platform
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from app import __version__
from app.errors import InvalidRequest
from app.hardware import cpu_model_name
from app.model.architecture import GeneratorConfig, build_discriminator, build_generator, with_output_relu
from app.model.latent import (
    ENERGY_SCALE_GEV,
    FULL_TRAINING_RANGE_GEV,
    NARROW_TRAINING_RANGE_GEV,
    latent_vectors,
    training_energies,
)
from app.physics.detector import FloatArray
from app.physics.observables import ShowerObservables, observe

logger = logging.getLogger(__name__)

CELL_THRESHOLD_GEV = 1e-6
"""Cells below this are set to 0 when training data are read (spec 3.4)."""
PAPER_FILE_SHOWERS = 9000
"""Training showers per file in the original recipe (20 files of 10k showers, 90 % for training)."""
_EPS = 2e-7  # the original losses' epsilon (spec 2.4)

RUN_CONFIG_FILE = "run_config.json"
METRICS_FILE = "metrics.csv"
SUMMARY_FILE = "summary.json"
CHECKPOINT_DIR = "checkpoint"
BEST_WEIGHTS_FILE = "best_generator.npz"
GENERATOR_FILE = "generator.keras"

# Streams of SeedSequence([seed, epoch, stream]).
_STREAM_DATA, _STREAM_NOISE, _STREAM_VALIDATION, _STREAM_FIT, _STREAM_SPLIT, _STREAM_SCALE = range(6)


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


@dataclass(frozen=True)
class EnergyResponse:
    """The mean visible fraction r(Ep) = sum / Ep, a polynomial in u = log(Ep / 100 GeV).

    Replaces the paper's GetEcalFit, which describes CERN's data (spec 2.4). ``u`` is clamped to the
    fitted range so that fake energies outside the data do not extrapolate the polynomial.

    Attributes
    ----------
    coefficients : tuple of float
        c_0 ... c_d of r = sum_i c_i u^i.
    ep_range_gev : (float, float)
        Primary energies of the showers it was fitted to, GeV.
    """

    coefficients: tuple[float, ...]
    ep_range_gev: tuple[float, float]

    def fraction(self, ep_gev: FloatArray) -> FloatArray:
        """r(Ep), dimensionless, same shape as ``ep_gev`` (GeV)."""
        low, high = self.ep_range_gev
        u = np.log(np.clip(np.asarray(ep_gev, dtype=np.float64), low, high) / ENERGY_SCALE_GEV)
        return np.polynomial.polynomial.polyval(u, self.coefficients)

    def target_sum_gev(self, ep_gev: FloatArray) -> FloatArray:
        """Expected total visible energy r(Ep) Ep, GeV, float32, same shape as ``ep_gev``."""
        ep = np.asarray(ep_gev, dtype=np.float64)
        return (self.fraction(ep) * ep).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {"form": "sum/Ep = polyval(log(Ep/100 GeV), coefficients)", **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EnergyResponse:
        return cls(tuple(data["coefficients"]), tuple(data["ep_range_gev"]))


def fit_energy_response(cells_gev: FloatArray, ep_gev: FloatArray, degree: int = 2) -> EnergyResponse:
    """Least-squares fit of sum / Ep against log(Ep / 100 GeV).

    Parameters
    ----------
    cells_gev : ndarray, shape (N, 25, 25, 25)
        Training showers, GeV.
    ep_gev : ndarray, shape (N,)
        Their primary energies, GeV.
    degree : int
        Polynomial degree; lowered to what the number of distinct energies supports (a single
        energy gives a constant).

    Returns
    -------
    EnergyResponse
        The fitted r(Ep).
    """
    ep = np.asarray(ep_gev, dtype=np.float64)
    fraction = cells_gev.reshape(len(ep), -1).sum(axis=1, dtype=np.float64) / ep
    u = np.log(ep / ENERGY_SCALE_GEV)
    usable_degree = min(degree, len(np.unique(np.round(u, 6))) - 1)
    coefficients = np.polynomial.polynomial.polyfit(u, fraction, max(usable_degree, 0))
    return EnergyResponse(tuple(float(c) for c in coefficients), (float(ep.min()), float(ep.max())))


# --------------------------------------------------------------------------------------------------
# Training data


class ShowerSource(Protocol):
    """Real showers for training and validation."""

    description: str

    def batches(self, epoch: int, n_batches: int, batch_size: int) -> Iterator[tuple[FloatArray, FloatArray]]:
        """Yield ``n_batches`` of (cells_gev (B, 25, 25, 25), ep_gev (B,)); the same for the same epoch."""
        ...

    def validation_sample(self) -> tuple[FloatArray, FloatArray]:
        """Held-out (cells_gev (V, 25, 25, 25), ep_gev (V,)), never used for training."""
        ...

    def fit_sample(self, n: int) -> tuple[FloatArray, FloatArray]:
        """Up to ``n`` training showers for the ECAL fit and the warm-up templates."""
        ...


def _rng(seed: int, epoch: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, stream]))


def _threshold(cells_gev: FloatArray, threshold_gev: float = CELL_THRESHOLD_GEV) -> FloatArray:
    cells = np.asarray(cells_gev, dtype=np.float32)
    return np.where(cells < threshold_gev, np.float32(0.0), cells)


class SimulatorSource:
    """Showers from the project's parametric Monte Carlo, fresh for every step (it costs ~1 % of a step).

    Training batches are uniform in Ep, like the fake energies they are compared with; the validation
    and fit samples (ECAL fit, warm-up templates) are uniform in log(Ep), so that the low energies,
    where the showers change fastest with Ep, are not left with a handful of showers.
    """

    def __init__(self, *, seed: int, val_showers: int, energy_range_gev: tuple[float, float]) -> None:
        from app.physics.mc import MC_VERSION, ShowerSimulator

        self._simulator = ShowerSimulator()
        self._seed = seed
        self._val_showers = val_showers
        self._range = energy_range_gev
        self._validation: tuple[FloatArray, FloatArray] | None = None
        self.description = (f"app.physics.mc ShowerSimulator (MC_VERSION {MC_VERSION}), Ep ~ U{energy_range_gev} "
                            "GeV (validation and fit samples uniform in log Ep)")

    def _draw(self, n: int, rng: np.random.Generator, *, log_uniform: bool = False) -> tuple[FloatArray, FloatArray]:
        ep = training_energies(n, rng, self._range, log_uniform=log_uniform)
        return _threshold(self._simulator.simulate(ep, rng)), ep

    def batches(self, epoch: int, n_batches: int, batch_size: int) -> Iterator[tuple[FloatArray, FloatArray]]:
        rng = _rng(self._seed, epoch, _STREAM_DATA)
        for _ in range(n_batches):
            yield self._draw(batch_size, rng)

    def validation_sample(self) -> tuple[FloatArray, FloatArray]:
        if self._validation is None:
            self._validation = self._draw(self._val_showers, _rng(self._seed, 0, _STREAM_VALIDATION), log_uniform=True)
        return self._validation

    def fit_sample(self, n: int) -> tuple[FloatArray, FloatArray]:
        return self._draw(n, _rng(self._seed, 0, _STREAM_FIT), log_uniform=True)


class FileSource:
    """Showers read from 3DGAN HDF5 files, held in memory; a seeded split holds out the validation showers."""

    def __init__(self, path: str | Path, *, seed: int, val_showers: int) -> None:
        from app.physics.io import read_showers

        path = Path(path)
        files = sorted(path.glob("*.h5")) if path.is_dir() else [path]
        if not files:
            raise InvalidRequest(f"{path}: no .h5 files", allowed="a 3DGAN HDF5 file or a folder of them, or 'mc'")
        parts = [read_showers(f) for f in files]
        cells = _threshold(np.concatenate([p.cells_gev for p in parts]))
        ep = np.concatenate([p.ep_gev for p in parts]).astype(np.float32)
        n_val = min(val_showers, len(ep) // 10)
        if len(ep) < 10 or n_val < 1:
            raise InvalidRequest(f"{path}: {len(ep)} showers is too few to train", allowed="at least 10 showers")
        order = _rng(seed, 0, _STREAM_SPLIT).permutation(len(ep))
        self._val_index, self._train_index = order[:n_val], order[n_val:]
        self._cells, self._ep, self._seed = cells, ep, seed
        self.description = f"{', '.join(str(f) for f in files)} ({len(self._train_index)} train, {n_val} validation)"

    def batches(self, epoch: int, n_batches: int, batch_size: int) -> Iterator[tuple[FloatArray, FloatArray]]:
        rng = _rng(self._seed, epoch, _STREAM_DATA)
        order = rng.permutation(self._train_index)
        position = 0
        for _ in range(n_batches):
            if position + batch_size > len(order):  # one pass done: reshuffle and go on
                order, position = rng.permutation(self._train_index), 0
            index = np.sort(order[position : position + batch_size])
            if len(index) < batch_size:  # fewer training showers than one batch: sample with replacement
                index = rng.choice(self._train_index, size=batch_size)
            position += batch_size
            yield self._cells[index], self._ep[index]

    def validation_sample(self) -> tuple[FloatArray, FloatArray]:
        return self._cells[self._val_index], self._ep[self._val_index]

    def fit_sample(self, n: int) -> tuple[FloatArray, FloatArray]:
        index = self._train_index[:n]
        return self._cells[index], self._ep[index]


def make_source(config: TrainConfig) -> ShowerSource:
    """The source named by ``config.data``: ``"mc"`` or an HDF5 path."""
    if config.data == "mc":
        return SimulatorSource(seed=config.seed, val_showers=config.val_showers,
                               energy_range_gev=config.mc_energy_range_gev)
    return FileSource(config.data, seed=config.seed, val_showers=config.val_showers)


# --------------------------------------------------------------------------------------------------
# Validation metric

ValidationMetric = Callable[[ShowerObservables, ShowerObservables], dict[str, float]]
"""(generated, reference) observables at matched energies -> named values; ``"score"`` (lower is
better) selects the best epoch, every value goes to the CSV log as ``val_<name>``."""


def local_shape_metric(gen: ShowerObservables, ref: ShowerObservables) -> dict[str, float]:
    """A stand-in physics metric that needs nothing beyond ``app.physics``; lower is better.

    Returns
    -------
    dict
        ``profile_rel_rmse``: RMS over the 75 bins of the difference of the mean per-shower-normalised
        x, y, layer profiles, divided by the RMS of the reference's; ``sf_rel_error``:
        |<S/Ep>_gen / <S/Ep>_ref - 1|; ``score``: their sum (both are fractional errors).
        The ``calogan train`` command passes a metric built on ``app.validation.metrics`` instead.
    """
    gen_profiles = _mean_normalised_profiles(gen)
    ref_profiles = _mean_normalised_profiles(ref)
    profile_rel_rmse = float(np.sqrt(np.mean((gen_profiles - ref_profiles) ** 2) / np.mean(ref_profiles**2)))
    sf_rel_error = float(abs(np.mean(gen.sampling_fraction) / np.mean(ref.sampling_fraction) - 1.0))
    return {"score": profile_rel_rmse + sf_rel_error, "profile_rel_rmse": profile_rel_rmse,
            "sf_rel_error": sf_rel_error}


def _mean_normalised_profiles(obs: ShowerObservables) -> FloatArray:
    keep = obs.total_gev > 0
    if not keep.any():  # an all-zero generator: every profile bin is off by the reference's value
        return np.zeros(obs.projections_gev.shape[1:])
    return (obs.projections_gev[keep] / obs.total_gev[keep, None, None]).mean(axis=0)


# --------------------------------------------------------------------------------------------------
# Progress reporting (the CLI draws it with rich; the library stays silent)


class TrainingProgress(Protocol):
    """Told what training is doing; the CLI implements it with a rich progress bar."""

    def phase(self, description: str, total_steps: int) -> None:
        """A phase (warm-up, an epoch, validation) starts with this many steps."""

    def step(self, losses: dict[str, float]) -> None:
        """One step of the current phase is done."""

    def epoch_done(self, row: dict[str, Any]) -> None:
        """An epoch (or the warm-up) is finished; ``row`` is its CSV log line."""


class SilentProgress:
    """A :class:`TrainingProgress` that ignores everything."""

    def phase(self, description: str, total_steps: int) -> None:
        pass

    def step(self, losses: dict[str, float]) -> None:
        pass

    def epoch_done(self, row: dict[str, Any]) -> None:
        pass


# --------------------------------------------------------------------------------------------------
# The trainer


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


class GanTrainer:
    """The networks, their optimizers and the compiled steps of one run.

    Parameters
    ----------
    config : TrainConfig
        The run's settings.
    strategy : tf.distribute.Strategy, optional
        Where to build and run; the default strategy (one device) if omitted.
    """

    def __init__(self, config: TrainConfig, strategy: Any | None = None) -> None:
        import keras
        import tensorflow as tf

        self.config = config
        self._tf = tf
        self.strategy = strategy or tf.distribute.get_strategy()
        self.replicas = int(self.strategy.num_replicas_in_sync)
        if config.batch_size % self.replicas:
            raise InvalidRequest(
                f"batch size {config.batch_size} does not split over {self.replicas} replicas",
                allowed=f"a multiple of {self.replicas}",
            )
        keras.utils.set_random_seed(config.seed)
        with self.strategy.scope():
            self.generator = build_generator(GeneratorConfig(width=config.width, output_relu=False,
                                                             output_scale=config.output_scale or 1.0))
            self.generator_relu = with_output_relu(self.generator)
            self.discriminator = build_discriminator(config.width)
            self.opt_g = keras.optimizers.Adam(learning_rate=config.lr_generator)
            self.opt_d = keras.optimizers.Adam(learning_rate=config.lr_discriminator)
            self.opt_g.build(self.generator.trainable_variables)
            self.opt_d.build(self.discriminator.trainable_variables)
        self._steps: dict[bool, Any] = {}
        self._warmup_step: Any = None

    # -- losses (all tensors are per replica; dividing by the replica count makes the summed
    #    gradients those of the global-batch mean) --

    def _losses(self, outputs: dict[str, Any], labels: Any, ep100: Any, sum_gev: Any) -> dict[str, Any]:
        tf = self._tf
        p = outputs["generation"]
        bce = -tf.reduce_mean(labels * tf.math.log(p + _EPS) + (1.0 - labels) * tf.math.log(1.0 - p + _EPS))
        aux = 100.0 * tf.reduce_mean(tf.abs(ep100 - outputs["auxiliary"]) / (ep100 + _EPS))
        ecal = 100.0 * tf.reduce_mean(tf.abs(sum_gev - outputs["ecal"]) / (sum_gev + _EPS))
        w_bce, w_aux, w_ecal = self.config.loss_weights
        return {"loss": w_bce * bce + w_aux * aux + w_ecal * ecal, "bce": bce, "aux": aux, "ecal": ecal}

    def _replica_step(self, batch: dict[str, Any], relu: bool) -> dict[str, Any]:
        tf = self._tf
        generator = self.generator_relu if relu else self.generator
        d, training, scale = self.discriminator, self.config.bn_training, 1.0 / self.replicas
        d_vars, g_vars = d.trainable_variables, self.generator.trainable_variables
        with tf.GradientTape() as tape:
            real = self._losses(d(batch["real_cells"], training=training), batch["real_labels"],
                                batch["real_ep100"], batch["real_sum"])
            objective = real["loss"] * scale  # inside the tape, or it has no gradient
        self.opt_d.apply_gradients(zip(tape.gradient(objective, d_vars), d_vars, strict=True))
        fake_cells = tf.stop_gradient(generator(batch["d_latent"], training=training))
        with tf.GradientTape() as tape:
            fake = self._losses(d(fake_cells, training=training), batch["d_labels"], batch["d_ep100"],
                                batch["d_sum"])
            objective = fake["loss"] * scale
        self.opt_d.apply_gradients(zip(tape.gradient(objective, d_vars), d_vars, strict=True))
        with tf.GradientTape() as tape:
            gen = self._losses(d(generator(batch["g_latent"], training=training), training=training),
                               batch["g_labels"], batch["g_ep100"], batch["g_sum"])
            objective = gen["loss"] * scale
        self.opt_g.apply_gradients(zip(tape.gradient(objective, g_vars), g_vars, strict=True))
        out = {f"d_real_{k}": v for k, v in real.items()}
        out.update({f"d_fake_{k}": v for k, v in fake.items()})
        out.update({f"g_{k}": v for k, v in gen.items()})
        return {k: v * scale for k, v in out.items()}

    def _distributed(self, fn: Callable[[dict[str, Any]], dict[str, Any]]) -> Any:
        tf, strategy = self._tf, self.strategy

        def step(batch: dict[str, Any]) -> dict[str, Any]:
            per_replica = strategy.run(fn, args=(batch,))
            return {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in per_replica.items()}

        # autograph off: the step has no tensor-dependent Python control flow to convert.
        return step if self.config.run_eagerly else tf.function(step, reduce_retracing=True, autograph=False)

    def _distribute_batch(self, batch: dict[str, FloatArray]) -> Any:
        if self.replicas == 1:
            return {k: self._tf.constant(v) for k, v in batch.items()}
        per_replica = self.config.batch_size // self.replicas

        def value_fn(ctx: Any) -> dict[str, Any]:
            start = ctx.replica_id_in_sync_group * per_replica
            return {k: self._tf.constant(v[start : start + per_replica]) for k, v in batch.items()}

        return self.strategy.experimental_distribute_values_from_function(value_fn)

    def train_step(self, batch: dict[str, FloatArray], *, relu: bool) -> dict[str, float]:
        """One D-real, D-fake and G update on a host batch (see :meth:`make_batch`); returns the losses."""
        if relu not in self._steps:
            self._steps[relu] = self._distributed(lambda b: self._replica_step(b, relu))
        return {k: float(v) for k, v in self._steps[relu](self._distribute_batch(batch)).items()}

    def make_batch(
        self, cells_gev: FloatArray, ep_gev: FloatArray, rng: np.random.Generator, *,
        response: EnergyResponse, energy_range_gev: tuple[float, float],
    ) -> dict[str, FloatArray]:
        """All inputs of one step, drawn on the host from ``rng`` (so a resumed run draws the same).

        Parameters
        ----------
        cells_gev : ndarray, shape (B, 25, 25, 25)
            Real showers, GeV.
        ep_gev : ndarray, shape (B,)
            Their primary energies, GeV.
        """
        c, n = self.config, len(ep_gev)

        def labels(value: float, flipped: float) -> FloatArray:
            flip = rng.random(n) < c.flip_probability
            return np.where(flip, flipped, value).astype(np.float32)[:, None]

        def fake_inputs(prefix: str, label: float, flipped: float) -> dict[str, FloatArray]:
            ep = training_energies(n, rng, energy_range_gev)
            return {
                f"{prefix}_latent": latent_vectors(ep, rng),
                f"{prefix}_ep100": (ep / ENERGY_SCALE_GEV)[:, None].astype(np.float32),
                f"{prefix}_sum": response.target_sum_gev(ep)[:, None],
                f"{prefix}_labels": labels(label, flipped),
            }

        cells = np.asarray(cells_gev, dtype=np.float32)
        batch = {
            "real_cells": cells,
            "real_ep100": (np.asarray(ep_gev, dtype=np.float32) / ENERGY_SCALE_GEV)[:, None],
            "real_sum": cells.reshape(n, -1).sum(axis=1, dtype=np.float64).astype(np.float32)[:, None],
            "real_labels": labels(c.real_label, 0.0),
        }
        batch.update(fake_inputs("d", c.fake_label, 1.0))
        batch.update(fake_inputs("g", c.real_label, 0.0))
        return batch

    # -- warm-up --

    def warmup_step(self, batch: dict[str, FloatArray], optimizer: Any) -> dict[str, float]:
        """One supervised generator step: total energy, normalised profiles and 3D shape towards the templates.

        ``batch`` holds ``latent`` (B, 200), ``sum`` (B,) target deposits in GeV, ``profiles``
        (B, 3, 25) and ``volume`` (B, 25, 25, 25) target mean shapes, each normalised to sum 1.
        """
        if self._warmup_step is None:
            # The ReLU output: a linear output's sum mixes signs, so its energy cannot be pulled to a target.
            tf, g = self._tf, self.generator_relu
            training = self.config.bn_training

            def relative_squared_error(value: Any, target: Any, axes: list[int]) -> Any:
                return tf.reduce_mean(tf.reduce_sum((value - target) ** 2, axis=axes)
                                      / tf.reduce_sum(target**2, axis=axes))

            def replica(b: dict[str, Any]) -> dict[str, Any]:
                with tf.GradientTape() as tape:
                    cells = g(b["latent"], training=training)
                    total = tf.reduce_sum(cells, axis=[1, 2, 3])
                    energy = tf.reduce_mean(tf.abs(total - b["sum"]) / (b["sum"] + _EPS))
                    # Divided by the target deposit, not the generated one: a young generator's sum
                    # can be near 0, which would blow the normalised shapes up.
                    normalised = cells / b["sum"][:, None, None, None]
                    shape = relative_squared_error(normalised, b["volume"], [1, 2, 3])
                    for axis, summed in enumerate(((2, 3), (1, 3), (1, 2))):
                        profile = tf.reduce_sum(normalised, axis=summed)
                        shape += relative_squared_error(profile, b["profiles"][:, axis], [1])
                    loss = energy + shape
                    objective = loss / self.replicas
                grads = tape.gradient(objective, g.trainable_variables)
                optimizer.apply_gradients(zip(grads, g.trainable_variables, strict=True))
                return {"warmup_loss": loss / self.replicas, "warmup_energy": energy / self.replicas,
                        "warmup_shape": shape / self.replicas}

            self._warmup_step = self._distributed(replica)
        return {k: float(v) for k, v in self._warmup_step(self._distribute_batch(batch)).items()}

    # -- inference and state --

    def generate(self, ep_gev: FloatArray, rng: np.random.Generator, batch_size: int = 256) -> FloatArray:
        """Showers (N, 25, 25, 25) GeV from the ReLU generator in inference mode, one per energy."""
        latent = latent_vectors(ep_gev, rng)
        out = [np.asarray(self.generator_relu(latent[i : i + batch_size], training=False))
               for i in range(0, len(latent), batch_size)]
        return np.concatenate(out).astype(np.float32)

    def _groups(self) -> dict[str, list[Any]]:
        # model.variables includes Dropout's seed-generator states, so dropout resumes exactly.
        return {"generator": list(self.generator.variables), "discriminator": list(self.discriminator.variables),
                "opt_g": list(self.opt_g.variables), "opt_d": list(self.opt_d.variables)}

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Every variable of the run (weights, BN statistics, seed states, Adam moments) by name."""
        return {f"{group}/{i:04d}": np.asarray(v.numpy()) for group, vs in self._groups().items()
                for i, v in enumerate(vs)}

    def load_state_arrays(self, arrays: dict[str, np.ndarray], groups: tuple[str, ...] | None = None) -> None:
        """Inverse of :meth:`state_arrays`; shapes must match the current networks."""
        for group, variables in self._groups().items():
            if groups is not None and group not in groups:
                continue
            stored = sorted(k for k in arrays if k.startswith(f"{group}/"))
            if len(stored) != len(variables):
                raise InvalidRequest(f"checkpoint holds {len(stored)} {group} variables, the network has "
                                     f"{len(variables)}", allowed="resume with the run's own settings")
            for key, variable in zip(stored, variables, strict=True):
                if tuple(arrays[key].shape) != tuple(variable.shape):
                    raise InvalidRequest(f"checkpoint {key} has shape {arrays[key].shape}, the network "
                                         f"{tuple(variable.shape)}", allowed="resume with the run's own settings")
                variable.assign(arrays[key])


# --------------------------------------------------------------------------------------------------
# The run: folder layout, checkpoints, log


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def hardware_description() -> dict[str, Any]:
    """Where a run happened: CPU, core count, devices TensorFlow sees, library versions."""
    import keras
    import tensorflow as tf

    return {
        "machine": platform.machine(),
        "processor": cpu_model_name(),
        "cpu_count": os.cpu_count(),
        "tf_devices": [d.name for d in tf.config.list_logical_devices()],
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "calogan": __version__,
    }


def _write_checkpoint(run_dir: Path, trainer: GanTrainer, state: dict[str, Any]) -> None:
    """Replace ``checkpoint/`` with the current state; a crash leaves the old or the new one whole."""
    final, tmp, old = run_dir / CHECKPOINT_DIR, run_dir / f"{CHECKPOINT_DIR}.tmp", run_dir / f"{CHECKPOINT_DIR}.old"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    np.savez(tmp / "variables.npz", **trainer.state_arrays())
    (tmp / "state.json").write_text(json.dumps(state, indent=2), encoding="utf-8")
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def _read_checkpoint(run_dir: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    for name in (CHECKPOINT_DIR, f"{CHECKPOINT_DIR}.old"):  # .old: interrupted between the two renames
        folder = run_dir / name
        if (folder / "state.json").is_file() and (folder / "variables.npz").is_file():
            state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
            with np.load(folder / "variables.npz") as data:
                return state, {k: data[k] for k in data.files}
    raise InvalidRequest(f"{run_dir}: no checkpoint to resume from", allowed="a run folder written by calogan train")


_CSV_FIELDS = (
    "epoch", "phase", "steps", "showers_seen", "wall_s", "showers_per_s", "lr_generator", "lr_discriminator",
    "output_relu", "fake_emin_gev", "fake_emax_gev",
    "d_real_loss", "d_real_bce", "d_real_aux", "d_fake_loss", "d_fake_bce", "d_fake_aux", "d_fake_ecal",
    "g_loss", "g_bce", "g_aux", "g_ecal", "warmup_loss", "warmup_energy", "warmup_shape",
    "val_score", "best",
)


def _append_csv(path: Path, row: dict[str, Any]) -> None:
    extra = sorted(k for k in row if k not in _CSV_FIELDS)
    new = not path.exists()
    if not new:
        with open(path, newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), [])
        fields = header or [*_CSV_FIELDS, *extra]
    else:
        fields = [*_CSV_FIELDS, *extra]
    with open(path, "a", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow({k: _csv_value(row.get(k, "")) for k in fields})


def _csv_value(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value


def _truncate_csv(path: Path, last_epoch: int) -> None:
    """Drop log rows of epochs after ``last_epoch`` (written after the checkpoint we resume from)."""
    if not path.exists():
        return
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    kept = rows[:1] + [r for r in rows[1:] if r and int(r[0]) <= last_epoch]
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(kept)


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} if rows else {}


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
    rng = _rng(config.seed, 0, _STREAM_SCALE)
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
    metric: ValidationMetric = local_shape_metric,
    strategy: Any | None = None,
    progress: TrainingProgress | None = None,
) -> TrainingResult:
    """Run (or resume) a training and write the run folder.

    Parameters
    ----------
    config : TrainConfig
        The settings. On ``resume`` the run's stored settings are used instead, except ``epochs``,
        which may be raised to extend a finished run.
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
        state, arrays = _read_checkpoint(run_dir)
        config = TrainConfig.from_dict({**state["config"], "epochs": max(config.epochs, state["config"]["epochs"])})
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
        _truncate_csv(run_dir / METRICS_FILE, state["epoch"])
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
        _atomic_write_text(run_dir / RUN_CONFIG_FILE, json.dumps(run_info, indent=2))
        if config.warmup_steps:
            # The warmed-up generator competes for "best" too: a short adversarial phase can be worse.
            state["best_score"] = _warmup(trainer, response, run_dir, metric, progress, fit_cells, fit_ep,
                                          val_obs)
            _write_checkpoint(run_dir, trainer, state | {"config": config.to_dict(),
                                                         "wall_s": time.perf_counter() - started})
        del fit_cells, fit_ep
    state["config"] = config.to_dict()

    wall_before = float(state["wall_s"])
    history: list[dict[str, Any]] = []
    for epoch in range(state["epoch"] + 1, config.epochs + 1):
        epoch_start = time.perf_counter()
        relu = epoch >= config.relu_from_epoch
        fake_range = NARROW_TRAINING_RANGE_GEV if epoch <= config.narrow_energy_epochs else FULL_TRAINING_RANGE_GEV
        noise_rng = _rng(config.seed, epoch, _STREAM_NOISE)
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
        scores = _validate(trainer, val_obs, config.seed, metric)
        best = state["best_score"] is None or scores["score"] < state["best_score"]
        if best:
            state["best_score"], state["best_epoch"] = scores["score"], epoch
            _save_best_generator(run_dir, trainer)
        state["epoch"] = epoch
        state["wall_s"] = wall_before + time.perf_counter() - started
        _write_checkpoint(run_dir, trainer, state)
        row = {
            "epoch": epoch, "phase": "adversarial", "steps": len(losses), "showers_seen": state["showers_seen"],
            "wall_s": time.perf_counter() - epoch_start, "showers_per_s": len(losses) * config.batch_size / train_s,
            "lr_generator": lr_g, "lr_discriminator": lr_d, "output_relu": int(relu),
            "fake_emin_gev": fake_range[0], "fake_emax_gev": fake_range[1], "best": int(best),
            **_mean(losses), **{f"val_{k}": v for k, v in scores.items()},
        }
        _append_csv(run_dir / METRICS_FILE, row)
        history.append(row)
        progress.epoch_done(row)
        logger.info("epoch done", extra={k: row[k] for k in ("epoch", "showers_seen", "val_score")})

    state["wall_s"] = wall_before + time.perf_counter() - started  # also right for a warm-up-only run
    generator_path = _export_best(trainer, run_dir)
    summary = {"epochs_done": state["epoch"], "best_epoch": state["best_epoch"], "best_score": state["best_score"],
               "showers_seen": state["showers_seen"], "wall_s": state["wall_s"], "generator": GENERATOR_FILE,
               "energy_response": state["energy_response"], "data": source.description}
    _atomic_write_text(run_dir / SUMMARY_FILE, json.dumps(summary, indent=2))
    return TrainingResult(run_dir, state["epoch"], state["best_epoch"], float(state["best_score"] or math.nan),
                          state["showers_seen"], state["wall_s"], generator_path, history)


def _validate(trainer: GanTrainer, val_obs: ShowerObservables, seed: int, metric: ValidationMetric) -> dict[str, float]:
    """Score one generated shower per held-out shower, at its Ep."""
    # Fixed noise every epoch: epoch-to-epoch changes of the score come from the weights only.
    generated = trainer.generate(val_obs.ep_gev, _rng(seed, 0, _STREAM_VALIDATION + 100))
    return {k: float(v) for k, v in metric(observe(generated, val_obs.ep_gev), val_obs).items()}


def _warmup(trainer: GanTrainer, response: EnergyResponse, run_dir: Path, metric: ValidationMetric,
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
    rng = _rng(config.seed, 0, _STREAM_NOISE)
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
    scores = _validate(trainer, val_obs, trainer.config.seed, metric)
    best = scores["score"] < best_score
    if best:
        best_score = scores["score"]
        _save_best_generator(run_dir, trainer)
    row = {"epoch": 0, "phase": "warmup", "steps": step, "showers_seen": 0,
           "wall_s": time.perf_counter() - block_start, "output_relu": 1, **_mean(losses),
           **{f"val_{k}": v for k, v in scores.items()}, "best": int(best)}
    _append_csv(run_dir / METRICS_FILE, row)
    progress.epoch_done(row)
    return best_score


def _save_best_generator(run_dir: Path, trainer: GanTrainer) -> None:
    _save_npz(run_dir / BEST_WEIGHTS_FILE, {f"{i:04d}": np.asarray(v.numpy())
                                            for i, v in enumerate(trainer.generator.variables)})


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


__all__ = [
    "EnergyResponse",
    "FileSource",
    "GanTrainer",
    "ShowerSource",
    "ShowerTemplates",
    "SimulatorSource",
    "TrainConfig",
    "TrainingProgress",
    "TrainingResult",
    "calibrated_output_scale",
    "fit_energy_response",
    "learning_rate",
    "local_shape_metric",
    "make_source",
    "shower_templates",
    "train",
]
