"""The generator's inputs: latent vectors carrying the primary energy, and training energies.

This is the one place that turns primary energies into generator inputs: the service, the
offline generator and training all call :func:`latent_vectors`, so a model always sees inputs
drawn the way it was trained.

Choice (spec sections 1.1 and 8, item 1): z ~ N(0, 1), 200-dimensional, multiplied by Ep / 100 GeV.
The GRID'2021 paper's text says "200 uniform numbers in [0, 1) multiplied by Ep", but every
version of the authors' code draws a standard normal, and the code is what produced the
published model. The per-epoch validation of the original drew N(0.1, 1); we use N(0, 1)
everywhere (spec 8, item 9).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from app.physics.detector import FloatArray

LATENT_SIZE = 200
"""Length of the generator's input vector (spec 1.1). Defined here, not in ``architecture``, so that
making inputs (the service, with any backend) does not import Keras."""

ENERGY_SCALE_GEV = 100.0
"""The generator input and the discriminator's energy head are in units of 100 GeV (spec 1.1, 2.3)."""

NARROW_TRAINING_RANGE_GEV = (100.0, 400.0)
"""Fake-shower energies of the first epochs in the original recipe (spec 1.1, 3.1)."""
FULL_TRAINING_RANGE_GEV = (2.0, 500.0)
"""Fake-shower energies afterwards: the range the shipped model is trained for."""


def latent_vectors(ep_gev: npt.ArrayLike, rng: np.random.Generator) -> FloatArray:
    """Generator inputs for showers of the given primary energies.

    Parameters
    ----------
    ep_gev : array-like, shape (N,)
        Primary electron energies, GeV. Not range-checked here: callers check user input with
        ``app.physics.primaries.check_primary_energies`` first.
    rng : numpy.random.Generator
        Source of the noise; the same generator state gives the same vectors.

    Returns
    -------
    ndarray, shape (N, 200), float32
        z * Ep / 100 GeV with z ~ N(0, 1) drawn in float32, row i for ``ep_gev[i]``.

    Notes
    -----
    Energy conditioning is multiplicative only: the norm of a row grows linearly with Ep and nothing
    else tells the network the energy (spec 1.1).
    """
    ep = np.asarray(ep_gev, dtype=np.float32).reshape(-1)
    z = rng.standard_normal((ep.size, LATENT_SIZE), dtype=np.float32)
    return z * (ep / np.float32(ENERGY_SCALE_GEV))[:, None]


def training_energies(
    n: int, rng: np.random.Generator, energy_range_gev: tuple[float, float] = FULL_TRAINING_RANGE_GEV,
    *, log_uniform: bool = False,
) -> FloatArray:
    """Primary energies of the fake showers in one training batch, uniform in the given range.

    Parameters
    ----------
    n : int
        Batch size.
    rng : numpy.random.Generator
        Source of the draws.
    energy_range_gev : (float, float)
        Low and high edge, GeV; :data:`NARROW_TRAINING_RANGE_GEV` in the first epochs of the
        original recipe, :data:`FULL_TRAINING_RANGE_GEV` afterwards.
    log_uniform : bool
        Uniform in log(Ep) instead (the supervised warm-up: a flat 2-500 GeV draw puts 1.6 % of the
        showers below 10 GeV, too few to learn the low-energy showers from).

    Returns
    -------
    ndarray, shape (n,), float32
        Energies, GeV.
    """
    low, high = energy_range_gev
    if not 0.0 < low < high:
        raise ValueError(f"energy range must satisfy 0 < low < high GeV. Received: {energy_range_gev}")
    if log_uniform:
        return np.exp(rng.uniform(np.log(low), np.log(high), size=int(n))).astype(np.float32)
    return rng.uniform(low, high, size=int(n)).astype(np.float32)
