"""The distribution-matching stage: teach a trained generator the shower-to-shower fluctuations.

Why a separate stage. The supervised warm-up regresses each generated shower onto its Ep bin's mean,
E||y - mu||^2 = ||E y - mu||^2 + tr Cov(y), so it charges the generator for every bit of variance and
the best generator ignores its noise. This stage instead scores *sets*: every step draws a few primary
energies, simulates fresh reference showers at exactly those energies with the parametric MC, generates
showers at the same energies, and minimises the energy score between the two sets of per-shower
features (:mod:`app.model.training.shower_features`): a strictly proper scoring rule, minimal only when the
generated conditional distribution equals the reference one. Two anchors keep the mean physics of the
starting generator: the batch mean of the standardised features towards the reference mean at that
Ep, and the batch-mean normalised 3D shower towards the reference mean shower of its Ep bin.

The generator's architecture is untouched (the paper's 2,055,324 parameters); BatchNorm runs in
inference mode and Dropout is off, so all variance must come from the latent noise.

Runs survive interruptions: SIGINT/SIGTERM finish the current step and write a checkpoint; the same
command resumes it bit for bit (every step draws its data from ``default_rng([seed, step])``, TensorFlow
runs with op determinism, the optimizer state is saved); different settings for an existing run are
refused. May import TensorFlow/Keras, ``app.physics`` and ``app.model``; never ``app.serving``.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import logging
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

import numpy as np

from app.errors import InvalidRequest
from app.model.latent import latent_vectors
from app.model.training.run_files import hardware_description, save_npz, write_json
from app.model.training.shower_features import (
    N_FEATURES,
    FeatureScale,
    energy_score,
    group_weights,
    shower_features,
    std_floors,
)
from app.physics.detector import SHOWER_SHAPE, FloatArray
from app.physics.mc import MC_VERSION, ShowerSimulator
from app.physics.observables import ShowerObservables, observe
from app.validation.metrics import FLUCTUATION_FIGURES, fluctuation_figures, relative_shape_error

logger = logging.getLogger(__name__)

RUN_CONFIG_FILE: Final = "run_config.json"
SUMMARY_FILE: Final = "summary.json"
METRICS_FILE: Final = "metrics.csv"
GENERATOR_FILE: Final = "generator.keras"
CHECKPOINT_WEIGHTS: Final = "checkpoint.npz"
CHECKPOINT_STATE: Final = "checkpoint.json"
BEST_WEIGHTS: Final = "best_generator.npz"


@dataclass(frozen=True)
class FluctuationConfig:
    """Settings of one distribution-matching run; stored with the run and compared on resume.

    Attributes
    ----------
    init_generator : str
        Model folder or ``.keras`` file to start from.
    steps : int
        Optimizer steps.
    energies_per_step : int
        Primary energies per step, log-uniform in ``energy_range_gev``.
    generated_per_energy, reference_per_energy : int
        Generated and fresh MC showers per energy and step.
    learning_rate : float
        Adam learning rate (betas 0.5, 0.9, as for GAN generators).
    anchor_weight, shape_weight : float
        Weights of the feature-mean anchor and the 3D mean-shower anchor, relative to the energy score.
    energy_anchor_weight : float
        Extra quadratic weight on the batch-mean log(S / Ep) offset: the energy scale is the one mean
        a fluctuation gain must never buy (without it the scale drifted by +40 % in 150 steps).
    spread_weight : float
        Weight of the spread term: each standardised feature's standard deviation over the showers
        generated at one Ep, pulled to the reference's (1 after standardisation).
    feature_weights : dict of str to float
        Weight of each feature group in the distances (see ``shower_features.FEATURE_GROUPS``).
    energy_range_gev : tuple of float
        Training energies, GeV.
    validate_every : int
        Steps between validations (and checkpoints).
    validation_energies_gev : tuple of float
        Energies of the fixed validation sample, GeV.
    validation_showers : int
        Generated and MC showers per validation energy.
    scale_showers : int
        MC showers (log-uniform Ep) that set the feature standardisation and the mean-shower templates.
    seed : int
        Seeds every draw of the run.
    """

    init_generator: str = "models/conv2d"
    steps: int = 1500
    energies_per_step: int = 4
    generated_per_energy: int = 8
    reference_per_energy: int = 8
    learning_rate: float = 5e-5
    anchor_weight: float = 1.0
    shape_weight: float = 1.0
    energy_anchor_weight: float = 20.0
    spread_weight: float = 3.0
    feature_weights: dict[str, float] = field(
        default_factory=lambda: {"energy": 2.0, "layers": 2.0, "depth": 3.0, "lateral": 0.5, "hits": 1.0,
                                 "spectrum": 1.0}
    )
    energy_range_gev: tuple[float, float] = (2.0, 500.0)
    validate_every: int = 100
    validation_energies_gev: tuple[float, ...] = (10.0, 100.0, 400.0)
    validation_showers: int = 128
    scale_showers: int = 1536
    seed: int = 1

    def __post_init__(self) -> None:
        positive = ("steps", "energies_per_step", "reference_per_energy", "validate_every", "validation_showers",
                    "scale_showers")
        for name in positive:
            if getattr(self, name) < 1:
                raise InvalidRequest(f"{name} must be >= 1, received {getattr(self, name)}", allowed="an integer >= 1")
        if self.generated_per_energy < 2:
            raise InvalidRequest(
                f"generated_per_energy must be >= 2, received {self.generated_per_energy}",
                allowed="an integer >= 2 (the energy score compares generated showers with each other)",
            )
        low, high = self.energy_range_gev
        if not 0 < low < high:
            raise InvalidRequest(f"energy_range_gev must be increasing and positive, received {self.energy_range_gev}")
        group_weights(self.feature_weights)  # raises on unknown groups

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings (tuples as lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


class Progress(Protocol):
    """What the run reports while it goes (the CLI shows a bar with an ETA)."""

    def start(self, total_steps: int, done_steps: int) -> None: ...

    def step(self, losses: dict[str, float]) -> None: ...

    def validated(self, row: dict[str, Any]) -> None: ...


class SilentProgress:
    """A :class:`Progress` that reports nothing (tests, library use)."""

    def start(self, total_steps: int, done_steps: int) -> None:
        """Nothing to show."""

    def step(self, losses: dict[str, float]) -> None:
        """Nothing to show."""

    def validated(self, row: dict[str, Any]) -> None:
        """Nothing to show."""


# -- reference statistics -------------------------------------------------------------------------


@dataclass(frozen=True)
class ReferenceStatistics:
    """What the anchors and the standardisation need from the MC, computed once per run.

    Attributes
    ----------
    scale : FeatureScale
        Per-Ep-bin feature standard deviations (and bin means, for information).
    mean_coefficients : ndarray, shape (4, N_FEATURES)
        Cubic in ln(Ep / GeV) giving each feature's reference mean (highest power first).
    templates : ndarray, shape (K, 25, 25, 25)
        Mean normalised reference shower of each Ep bin (sums to 1).
    """

    scale: FeatureScale
    mean_coefficients: np.ndarray
    templates: np.ndarray

    def feature_mean(self, ep_gev: FloatArray) -> FloatArray:
        """Reference feature means at these energies; shape (N, N_FEATURES)."""
        log_e = np.log(np.asarray(ep_gev, dtype=np.float64))
        powers = np.stack([log_e**3, log_e**2, log_e, np.ones_like(log_e)], axis=1)
        return (powers @ self.mean_coefficients).astype(np.float32)


def reference_statistics(
    simulator: ShowerSimulator, config: FluctuationConfig, rng: np.random.Generator, n_bins: int = 16
) -> ReferenceStatistics:
    """Simulate ``config.scale_showers`` showers log-uniform in Ep and summarise them per Ep bin."""
    low, high = config.energy_range_gev
    edges = np.geomspace(low, high, n_bins + 1)
    per_bin = max(config.scale_showers // n_bins, 8)
    ep = np.concatenate([np.exp(rng.uniform(np.log(a), np.log(b), per_bin)) for a, b in itertools.pairwise(edges)])
    features = np.empty((len(ep), N_FEATURES), dtype=np.float64)
    templates = np.zeros((n_bins, *SHOWER_SHAPE), dtype=np.float64)
    for start in range(0, len(ep), 256):
        chunk = ep[start : start + 256]
        cells = simulator.simulate(chunk, rng)
        features[start : start + len(chunk)] = np.asarray(shower_features(cells, chunk.astype(np.float32)))
        bins = np.clip(np.searchsorted(edges, chunk, side="right") - 1, 0, n_bins - 1)
        normalised = cells / cells.sum(axis=(1, 2, 3), keepdims=True)
        np.add.at(templates, bins, normalised)
    templates /= templates.sum(axis=(1, 2, 3), keepdims=True)
    bins = np.repeat(np.arange(n_bins), per_bin)
    mean = np.stack([features[bins == k].mean(axis=0) for k in range(n_bins)])
    std = np.stack([features[bins == k].std(axis=0) for k in range(n_bins)])
    std = np.maximum(std, std_floors())
    coefficients = np.polyfit(np.log(ep), features, deg=3)
    return ReferenceStatistics(FeatureScale(edges, mean, std), coefficients, templates.astype(np.float32))


# -- the trainer ----------------------------------------------------------------------------------


class FluctuationTrainer:
    """The generator, its optimizer and the compiled training step."""

    def __init__(self, generator: Any, config: FluctuationConfig, stats: ReferenceStatistics) -> None:
        import keras
        import tensorflow as tf

        self._tf = tf
        self.config = config
        self.stats = stats
        self.generator = generator
        # The same layers and weights without the final ReLU: the soft hit count needs the sign of a cell.
        self.pre_relu = keras.Model(generator.inputs, generator.get_layer("output_relu").input)
        self.optimizer = keras.optimizers.Adam(learning_rate=config.learning_rate, beta_1=0.5, beta_2=0.9)
        self.optimizer.build(self.generator.trainable_variables)
        self._column_weights = tf.constant(group_weights(config.feature_weights))
        self._step = tf.function(self._train_step, reduce_retracing=True)

    def _train_step(self, batch: dict[str, Any]) -> dict[str, Any]:
        tf, c = self._tf, self.config
        k, n_gen, n_ref = c.energies_per_step, c.generated_per_energy, c.reference_per_energy
        with tf.GradientTape() as tape:
            pre = self.pre_relu(batch["latent"], training=False)
            cells = tf.nn.relu(pre)
            gen = self._standardised(shower_features(cells, batch["gen_ep"], pre_relu_gev=pre), batch, n_gen)
            ref = self._standardised(shower_features(batch["ref_cells"], batch["ref_ep"]), batch, n_ref)
            gen = tf.reshape(gen, (k, n_gen, N_FEATURES))
            ref = tf.reshape(ref, (k, n_ref, N_FEATURES))
            score = tf.add_n([energy_score(gen[i], ref[i]) for i in range(k)]) / k
            # Pseudo-Huber: quadratic near the reference mean, linear far from it, so one feature many
            # standard deviations off does not outweigh the energy score.
            offset = tf.reduce_mean(gen, axis=1)
            anchor = tf.reduce_mean(tf.reduce_sum(tf.sqrt(1.0 + offset**2) - 1.0, axis=-1))
            anchor += c.energy_anchor_weight * tf.reduce_mean(offset[:, 0] ** 2)  # column 0 is log(S / Ep)
            spread = self._spread_error(gen)
            shape = self._shape_error(cells, batch["templates"], n_gen)
            loss = score + c.anchor_weight * anchor + c.spread_weight * spread + c.shape_weight * shape
        variables = self.generator.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        return {"loss": loss, "energy_score": score, "anchor": anchor, "spread": spread, "shape": shape}

    def _standardised(self, features: Any, batch: dict[str, Any], per_energy: int) -> Any:
        """(features - reference mean at Ep) / reference std of the Ep bin, times the group weights."""
        tf = self._tf
        mean = tf.repeat(batch["feature_mean"], per_energy, axis=0)
        std = tf.repeat(batch["feature_std"], per_energy, axis=0)
        return (features - mean) / std * self._column_weights

    def _spread_error(self, gen: Any) -> Any:
        """Sum over features of (std of the generated showers at one Ep - reference std)^2, both in
        weighted standardised units (the reference std is the column weight); mean over the energies.

        The energy score alone rewards spread in whatever direction is cheapest while the means are
        still far off (its within-sample term); this term asks for the reference spread feature by
        feature, which is what the fluctuation figures measure."""
        tf = self._tf
        n = tf.cast(tf.shape(gen)[1], tf.float32)
        variance = tf.reduce_sum((gen - tf.reduce_mean(gen, axis=1, keepdims=True)) ** 2, axis=1) / (n - 1.0)
        std = tf.sqrt(variance + 1e-8)
        return tf.reduce_mean(tf.reduce_sum((std - self._column_weights) ** 2, axis=-1))

    def _shape_error(self, cells: Any, templates: Any, per_energy: int) -> Any:
        """Relative squared error of each energy's batch-mean normalised shower against its template."""
        tf = self._tf
        normalised = cells / (tf.reduce_sum(cells, axis=[1, 2, 3], keepdims=True) + 1e-12)
        batch_mean = tf.reduce_mean(tf.reshape(normalised, (-1, per_energy, *normalised.shape[1:])), axis=1)
        squared = tf.reduce_sum((batch_mean - templates) ** 2, axis=[1, 2, 3])
        error = squared / tf.reduce_sum(templates**2, axis=[1, 2, 3])
        return tf.reduce_mean(error)

    def make_batch(self, simulator: ShowerSimulator, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """All inputs of one step, drawn from ``rng`` on the host."""
        c, stats = self.config, self.stats
        low, high = c.energy_range_gev
        energies = np.exp(rng.uniform(np.log(low), np.log(high), c.energies_per_step))
        ref_ep = np.repeat(energies, c.reference_per_energy)
        gen_ep = np.repeat(energies, c.generated_per_energy).astype(np.float32)
        bins = [stats.scale.bin_of(e) for e in energies]
        return {
            "latent": latent_vectors(gen_ep, rng),
            "gen_ep": gen_ep,
            "ref_cells": simulator.simulate(ref_ep, rng),
            "ref_ep": ref_ep.astype(np.float32),
            "feature_mean": stats.feature_mean(energies),
            "feature_std": stats.scale.std[bins].astype(np.float32),
            "templates": stats.templates[bins],
        }

    def train_step(self, batch: dict[str, np.ndarray]) -> dict[str, float]:
        """One optimizer step; returns the loss terms."""
        return {name: float(value) for name, value in self._step(batch).items()}

    def generate(self, ep_gev: FloatArray, rng: np.random.Generator, batch_size: int = 128) -> FloatArray:
        """Showers (N, 25, 25, 25) GeV in inference mode."""
        latent = latent_vectors(ep_gev, rng)
        parts = [np.asarray(self.generator(latent[i : i + batch_size], training=False))
                 for i in range(0, len(latent), batch_size)]
        return np.concatenate(parts).astype(np.float32)

    def _weights(self) -> list[Any]:
        # Dropout's seed-generator counters advance whenever the model is traced or called, even with
        # dropout off; they carry no information here, so they are neither saved nor compared.
        return [v for v in self.generator.variables if "seed_generator" not in v.path]

    def state(self) -> dict[str, np.ndarray]:
        """Generator weights (BatchNorm statistics included) and optimizer variables, for a checkpoint."""
        arrays = {f"g{i}": np.asarray(v) for i, v in enumerate(self._weights())}
        arrays.update({f"o{i}": np.asarray(v) for i, v in enumerate(self.optimizer.variables)})
        return arrays

    def load_state(self, arrays: dict[str, np.ndarray], *, optimizer: bool = True) -> None:
        """Inverse of :meth:`state` (``optimizer=False``: the generator only, e.g. the best weights)."""
        for i, variable in enumerate(self._weights()):
            variable.assign(arrays[f"g{i}"])
        if optimizer:
            for i, variable in enumerate(self.optimizer.variables):
                variable.assign(arrays[f"o{i}"])


# -- validation -----------------------------------------------------------------------------------

MEAN_SHAPE_WEIGHT: Final = 3.0
"""Weight of the mean-shape error in :func:`selection_score`."""


def selection_score(ratios: dict[str, float], shape_error: float = 0.0) -> float:
    """The one number that picks the best step (lower is better).

    Mean |ln(ratio)| of the fluctuation figures, with the mean energy response counted five times,
    plus ``MEAN_SHAPE_WEIGHT`` x the relative error of the mean shower shape
    (:func:`app.validation.metrics.relative_shape_error`):
    a fluctuation gained at the cost of the scale or of the mean shape is no gain. (Without the shape
    term a 2,500-step run traded the central 3x3 share from 0.87 to 0.75 for hits.)
    """
    weights = {name: (5.0 if name == "sf_mean" else 1.0) for name in FLUCTUATION_FIGURES}
    total = sum(weights[name] * abs(np.log(max(ratios[name], 1e-6))) for name in FLUCTUATION_FIGURES)
    return float(total / sum(weights.values()) + MEAN_SHAPE_WEIGHT * shape_error)


def _validate(trainer: FluctuationTrainer, reference: dict[float, ShowerObservables], seed: int) -> dict[str, Any]:
    row: dict[str, Any] = {}
    scores = []
    for i, (ep, ref_obs) in enumerate(reference.items()):
        ep_gev = np.full(len(ref_obs), ep)
        gen_obs = observe(trainer.generate(ep_gev, np.random.default_rng([seed, 10**6, i])), ep_gev)
        gen, ref = fluctuation_figures(gen_obs), fluctuation_figures(ref_obs)
        ratios = {name: gen[name] / ref[name] for name in FLUCTUATION_FIGURES}
        shape = relative_shape_error(gen_obs, ref_obs)
        row.update({f"{name}_ratio_{ep:g}gev": round(value, 4) for name, value in ratios.items()})
        row[f"shape_error_{ep:g}gev"] = round(shape, 4)
        scores.append(selection_score(ratios, shape))
    row["val_score"] = float(np.mean(scores))
    return row


# -- the run --------------------------------------------------------------------------------------


@contextmanager
def _stop_requests() -> Iterator[Callable[[], bool]]:
    """SIGINT and SIGTERM set a flag instead of killing the process; yields a function that reads it."""
    requested: list[int] = []
    handlers = {}

    def on_signal(signum: int, _frame: Any) -> None:
        requested.append(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        handlers[signum] = signal.signal(signum, on_signal)
    try:
        yield lambda: bool(requested)
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


def _check_same_settings(run_dir: Path, config: FluctuationConfig) -> None:
    stored = json.loads((run_dir / RUN_CONFIG_FILE).read_text(encoding="utf-8"))["config"]
    changed = {k: (stored.get(k), v) for k, v in config.to_dict().items() if stored.get(k) != v}
    if changed:
        listed = "; ".join(f"{k}: run has {old!r}, given {new!r}" for k, (old, new) in changed.items())
        raise InvalidRequest(
            f"{run_dir} holds a run with other settings ({listed})",
            allowed="the run's own settings to resume it, or a new --out folder for a new run",
        )


def _load_generator(path: str) -> Any:
    from app.model.loading import GENERATOR_FILE as MODEL_FILE
    from app.model.loading import load_keras_file

    source = Path(path)
    return load_keras_file(source / MODEL_FILE if source.is_dir() else source)


@dataclass(frozen=True)
class FluctuationResult:
    """Where a finished (or stopped) run stands."""

    run_dir: Path
    steps_done: int
    finished: bool
    best_step: int
    best_score: float


def run_fluctuation_training(
    config: FluctuationConfig, run_dir: str | Path, *, progress: Progress | None = None
) -> FluctuationResult:
    """Run (or resume) the distribution-matching stage in ``run_dir``.

    Writes ``run_config.json``, ``metrics.csv`` (one row per validation), a checkpoint at every
    validation and on SIGINT/SIGTERM, and at the end ``generator.keras`` (the best validated weights)
    and ``summary.json``, in the layout ``calogan export`` packages.
    """
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()
    progress = progress or SilentProgress()
    run_dir = Path(run_dir)
    resuming = (run_dir / CHECKPOINT_STATE).is_file()
    if resuming:
        _check_same_settings(run_dir, config)
    elif (run_dir / RUN_CONFIG_FILE).is_file():
        raise InvalidRequest(f"{run_dir} holds a run without a checkpoint", allowed="a new --out folder")
    run_dir.mkdir(parents=True, exist_ok=True)

    simulator = ShowerSimulator()
    stats = reference_statistics(simulator, config, np.random.default_rng([config.seed, 1]))
    reference = {}
    for i, ep in enumerate(config.validation_energies_gev):
        ep_gev = np.full(config.validation_showers, ep)
        reference[ep] = observe(simulator.simulate(ep_gev, np.random.default_rng([config.seed, 2, i])), ep_gev)
    trainer = FluctuationTrainer(_load_generator(config.init_generator), config, stats)
    if resuming:
        state = json.loads((run_dir / CHECKPOINT_STATE).read_text(encoding="utf-8"))
        with np.load(run_dir / CHECKPOINT_WEIGHTS) as arrays:
            trainer.load_state(dict(arrays))
        logger.info("resuming", extra={"run_dir": str(run_dir), "step": state["step"]})
    else:
        write_json(run_dir / RUN_CONFIG_FILE, _run_info(config))
        state = {"step": 0, "wall_s": 0.0, "best_step": 0, "best_score": None}
        row = {"step": 0, **_validate(trainer, reference, config.seed)}
        _record(run_dir, trainer, state, row, progress)

    progress.start(config.steps, state["step"])
    started = time.perf_counter() - state["wall_s"]
    with _stop_requests() as stop_requested:
        while state["step"] < config.steps and not stop_requested():
            batch = trainer.make_batch(simulator, np.random.default_rng([config.seed, 0, state["step"]]))
            losses = trainer.train_step(batch)
            state["step"] += 1
            progress.step(losses)
            if state["step"] % config.validate_every == 0 or state["step"] == config.steps:
                state["wall_s"] = time.perf_counter() - started
                row = {"step": state["step"], **losses, **_validate(trainer, reference, config.seed)}
                _record(run_dir, trainer, state, row, progress)
        state["wall_s"] = time.perf_counter() - started
    finished = state["step"] >= config.steps
    if finished:  # the last step was validated, so its checkpoint is written
        _finish(run_dir, trainer, config, state)
    else:
        _checkpoint(run_dir, trainer, state)
        logger.info("stopped by a signal; checkpoint written", extra={"run_dir": str(run_dir), "step": state["step"]})
    return FluctuationResult(run_dir, state["step"], finished, state["best_step"], state["best_score"])


def _record(run_dir: Path, trainer: FluctuationTrainer, state: dict[str, Any], row: dict[str, Any],
            progress: Progress) -> None:
    """Log a validation row, keep the best weights, write a checkpoint."""
    arrays = trainer.state()
    best = state["best_score"] is None or row["val_score"] < state["best_score"]
    if best:
        state["best_score"], state["best_step"] = row["val_score"], row["step"]
        save_npz(run_dir / BEST_WEIGHTS, arrays)
    row = {**row, "best": int(best), "wall_s": round(state["wall_s"], 1)}
    path = run_dir / METRICS_FILE
    new_file = not path.is_file()
    columns = ["step", "loss", "energy_score", "anchor", "spread", "shape", "val_score", "best", "wall_s"]
    columns += sorted(k for k in row if "_ratio_" in k or k.startswith("shape_error_"))
    with open(path, "a", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore", restval="")
        if new_file:
            writer.writeheader()
        writer.writerow(row)
    _checkpoint(run_dir, trainer, state, arrays)
    progress.validated(row)


def _checkpoint(run_dir: Path, trainer: FluctuationTrainer, state: dict[str, Any],
                arrays: dict[str, np.ndarray] | None = None) -> None:
    """Weights first, then the state that points at them: a kill between the two loses one step, never
    pairs a state with the wrong weights. ``arrays``: :meth:`FluctuationTrainer.state`, if already taken."""
    save_npz(run_dir / CHECKPOINT_WEIGHTS, trainer.state() if arrays is None else arrays)
    write_json(run_dir / CHECKPOINT_STATE, state)


def _run_info(config: FluctuationConfig) -> dict[str, Any]:
    """What ``run_config.json`` records: the settings, the reference MC's version and the machine."""
    return {"config": config.to_dict(), "mc_version": MC_VERSION, "hardware": hardware_description()}


def _finish(run_dir: Path, trainer: FluctuationTrainer, config: FluctuationConfig, state: dict[str, Any]) -> None:
    """Save the best validated weights as generator.keras and the summary ``calogan export`` reads."""
    with np.load(run_dir / BEST_WEIGHTS) as arrays:
        trainer.load_state(dict(arrays), optimizer=False)
    trainer.generator.save(run_dir / GENERATOR_FILE)
    scale_layer = trainer.generator.get_layer("output_scale")
    shots = config.energies_per_step * (config.generated_per_energy + config.reference_per_energy)
    write_json(run_dir / RUN_CONFIG_FILE, {
        **_run_info(config), "export": {"width": 1.0, "output_scale": float(scale_layer.scale)},
    })
    write_json(run_dir / SUMMARY_FILE, {
        "stage": "distribution matching (energy score on per-shower features)",
        "data": f"calogan mc (parametric simulator, MC_VERSION {MC_VERSION})",
        "epochs_done": state["step"],
        "best_epoch": state["best_step"],
        "best_score": state["best_score"],
        "showers_seen": state["step"] * shots,
        "wall_s": state["wall_s"],
    })
