"""Real showers for training and validation: fresh simulator showers or 3DGAN HDF5 files, seeded per epoch."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import numpy as np

from app.errors import InvalidRequest
from app.model.latent import (
    training_energies,
)
from app.model.training.config import (
    CELL_THRESHOLD_GEV,
    STREAM_DATA,
    STREAM_FIT,
    STREAM_SPLIT,
    STREAM_VALIDATION,
    TrainConfig,
    seeded_rng,
)
from app.physics.detector import FloatArray


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
        rng = seeded_rng(self._seed, epoch, STREAM_DATA)
        for _ in range(n_batches):
            yield self._draw(batch_size, rng)

    def validation_sample(self) -> tuple[FloatArray, FloatArray]:
        if self._validation is None:
            rng = seeded_rng(self._seed, 0, STREAM_VALIDATION)
            self._validation = self._draw(self._val_showers, rng, log_uniform=True)
        return self._validation

    def fit_sample(self, n: int) -> tuple[FloatArray, FloatArray]:
        return self._draw(n, seeded_rng(self._seed, 0, STREAM_FIT), log_uniform=True)


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
        order = seeded_rng(seed, 0, STREAM_SPLIT).permutation(len(ep))
        self._val_index, self._train_index = order[:n_val], order[n_val:]
        self._cells, self._ep, self._seed = cells, ep, seed
        self.description = f"{', '.join(str(f) for f in files)} ({len(self._train_index)} train, {n_val} validation)"

    def batches(self, epoch: int, n_batches: int, batch_size: int) -> Iterator[tuple[FloatArray, FloatArray]]:
        rng = seeded_rng(self._seed, epoch, STREAM_DATA)
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
