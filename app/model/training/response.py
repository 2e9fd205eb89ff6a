"""The energy response r(Ep) = sum / Ep that the ECAL loss and the warm-up aim at, fitted to the training data."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.model.latent import (
    ENERGY_SCALE_GEV,
)
from app.physics.detector import FloatArray


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
