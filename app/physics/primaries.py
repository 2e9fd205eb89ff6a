"""Primary electron energies: checking what users ask for, and drawing fixed or flat spectra (GeV)."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from app.errors import InvalidRequest
from app.physics.detector import PRIMARY_ENERGY_LIMITS_GEV, FloatArray


def check_primary_energies(
    ep_gev: npt.ArrayLike, limits_gev: tuple[float, float] = PRIMARY_ENERGY_LIMITS_GEV
) -> FloatArray:
    """Return the energies as a float64 array of shape (N,), or raise InvalidRequest.

    Parameters
    ----------
    ep_gev : float or array-like, shape (N,)
        Primary electron energies, GeV.
    limits_gev : (float, float)
        Inclusive range accepted, GeV.
    """
    try:
        ep = np.atleast_1d(np.asarray(ep_gev, dtype=np.float64))
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"primary energy must be a number in GeV, received {ep_gev!r}") from exc
    allowed = f"finite energies from {limits_gev[0]:g} to {limits_gev[1]:g} GeV"
    if ep.ndim != 1 or ep.size == 0:
        raise InvalidRequest(f"expected one or more primary energies, received shape {ep.shape}", allowed=allowed)
    bad = ~np.isfinite(ep) | (ep < limits_gev[0]) | (ep > limits_gev[1])
    if bad.any():
        # repr, not :g, so that 500.0001 is not reported as "500 GeV is out of range"
        raise InvalidRequest(f"primary energy {float(ep[bad][0])!r} GeV is out of range", allowed=allowed)
    return ep


def check_count(n: int, *, max_n: int | None = None) -> int:
    """Return ``n`` as an int if it is a usable number of showers (>= 1, <= max_n), else raise."""
    allowed = f"an integer from 1 to {max_n}" if max_n else "an integer >= 1"
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1 or (max_n is not None and n > max_n):
        raise InvalidRequest(f"number of showers {n!r} is not allowed", allowed=allowed)
    return int(n)


def primary_energies(
    n: int,
    *,
    energy_gev: float | None = None,
    emin_gev: float | None = None,
    emax_gev: float | None = None,
    rng: np.random.Generator,
    limits_gev: tuple[float, float] = PRIMARY_ENERGY_LIMITS_GEV,
) -> FloatArray:
    """``n`` primary energies in GeV: all equal to ``energy_gev``, or uniform in [emin_gev, emax_gev].

    Exactly one of ``energy_gev`` or the pair (``emin_gev``, ``emax_gev``) must be given.

    Returns
    -------
    ndarray, shape (n,), float64
        Primary energies, GeV.
    """
    n = check_count(n)
    spectrum = emin_gev is not None or emax_gev is not None
    if (energy_gev is None) == (not spectrum):
        raise InvalidRequest(
            "give either a fixed energy or a spectrum", allowed="energy, or both emin and emax (GeV)"
        )
    if energy_gev is not None:
        return np.full(n, check_primary_energies(energy_gev, limits_gev)[0])
    if emin_gev is None or emax_gev is None:
        raise InvalidRequest("a spectrum needs both emin and emax", allowed="emin < emax, in GeV")
    low, high = check_primary_energies([emin_gev, emax_gev], limits_gev)
    if not low < high or math.isclose(low, high):
        raise InvalidRequest(f"emin {low:g} GeV must be below emax {high:g} GeV", allowed="emin < emax")
    return rng.uniform(low, high, size=n)
