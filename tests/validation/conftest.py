"""Toy showers for validation tests: cheap, seeded, and with knobs that make samples differ on purpose."""

from pathlib import Path

import numpy as np
import pytest

from app.physics.observables import ShowerObservables, observe

G4_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "g4"


def toy_showers(
    n: int,
    ep_gev: float | np.ndarray,
    *,
    seed: int,
    depth_shift: float = 0.0,
    width_scale: float = 1.0,
    sampling_fraction: float = 0.025,
) -> tuple[np.ndarray, np.ndarray]:
    """(n, 25, 25, 25) GeV showers: a Gaussian longitudinal profile (maximum near layer 10 + ln(Ep/50))
    times exponential transverse profiles, with 5 % deposit and 1-layer depth fluctuations per shower."""
    rng = np.random.default_rng(seed)
    ep = np.broadcast_to(np.asarray(ep_gev, dtype=np.float64), (n,)).copy()
    k = np.arange(25, dtype=np.float64)
    t_max = 10.0 + np.log(ep / 50.0) + depth_shift + rng.normal(0.0, 1.0, n)
    longitudinal = np.exp(-0.5 * ((k[None, :] - t_max[:, None]) / 4.0) ** 2)
    width = width_scale * 1.2 * (1.0 + 0.1 * rng.normal(size=n))
    transverse = np.exp(-np.abs(k[None, :] - 12.0) / width[:, None])
    cells = transverse[:, :, None, None] * transverse[:, None, :, None] * longitudinal[:, None, None, :]
    deposit = sampling_fraction * ep * (1.0 + 0.05 * rng.normal(size=n))
    cells *= (deposit / cells.sum(axis=(1, 2, 3)))[:, None, None, None]
    return cells.astype(np.float32), ep


def toy_observables(n: int, ep_gev: float | np.ndarray, *, seed: int, **knobs: float) -> ShowerObservables:
    """Observables of :func:`toy_showers`."""
    return observe(*toy_showers(n, ep_gev, seed=seed, **knobs))


@pytest.fixture(scope="session")
def reference_obs() -> ShowerObservables:
    """200 toy showers at 50 GeV."""
    return toy_observables(200, 50.0, seed=1)


@pytest.fixture(scope="session")
def same_obs() -> ShowerObservables:
    """200 more toy showers from the same distribution as ``reference_obs`` (another seed)."""
    return toy_observables(200, 50.0, seed=2)


@pytest.fixture
def g4_dir() -> Path:
    """The Geant4 samples, or a clean skip where they are absent."""
    if not G4_DIR.is_dir():
        pytest.skip("Geant4 samples (../shared/data/g4) not available")
    return G4_DIR
