"""The CLIC-like silicon-tungsten ECAL, written down once.

Everything that knows the geometry imports it from here: 25 sampling layers (17 x 2.4 mm
tungsten, then 8 x 4.8 mm tungsten, each followed by a 0.5 mm silicon sensor), 5.1 mm x 5.1 mm
pads, a 25 x 25 pad window around the shower axis. Shower arrays are float32 GeV of energy
deposited in the silicon (visible energy), shape ``(N, 25, 25, 25)``, indexed ``[x, y, layer]``.

Material constants are Geant4's (density, radiation length) and PDG-style values for the
critical energy; see ``shared/research/parametric_shower_mc.md`` section 2. The geometry matches
the project's Geant4 samples: no PCB, copper or air gaps (those would change the sampling
fraction by about 20 %, see the research notes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.floating]
"""Any float ndarray; shapes and units are given where it is used."""

N_CELLS_X: Final = 25
N_CELLS_Y: Final = 25
N_LAYERS: Final = 25
SHOWER_SHAPE: Final = (N_CELLS_X, N_CELLS_Y, N_LAYERS)
"""Shape of one shower: ``[x, y, layer]``; the layer axis runs along the beam."""
AXIS_ORDER: Final = ("x", "y", "layer")
ENERGY_UNIT: Final = "GeV"

CELL_SIZE_MM: Final = 5.1
N_THIN_LAYERS: Final = 17
TUNGSTEN_THIN_MM: Final = 2.4
TUNGSTEN_THICK_MM: Final = 4.8
SILICON_MM: Final = 0.5

E_SCALE_MEV: Final = 21.2
"""Multiple-scattering energy E_s of the Moliere radius R_M = E_s X0 / E_c, MeV."""

PRIMARY_ENERGY_LIMITS_GEV: Final = (1.0, 1000.0)
"""Primary energies the physics code accepts at all; the models are trained for 2-500 GeV."""


@dataclass(frozen=True)
class Material:
    """A pure material: Z, A (g/mol), density (g/cm^3), radiation length (g/cm^2),
    critical energy (MeV) and minimum-ionising stopping power (MeV cm^2/g)."""

    name: str
    z: float
    a: float
    density_g_cm3: float
    x0_g_cm2: float
    critical_energy_mev: float
    dedx_mip_mev_cm2_g: float

    @property
    def x0_mm(self) -> float:
        """Radiation length, mm."""
        return 10.0 * self.x0_g_cm2 / self.density_g_cm3


# X0(W) = 3.504 mm and X0(Si) = 93.66 mm are Geant4's printed values (research notes, [G4-out]).
TUNGSTEN: Final = Material("W", 74, 183.84, 19.3, 19.3 * 0.3504, 7.97, 1.145)
SILICON: Final = Material("Si", 14, 28.0855, 2.33, 2.33 * 9.366, 40.19, 1.664)


@dataclass(frozen=True)
class SamplingCell:
    """One absorber plate plus its sensor, reduced to an effective medium (research notes 1.4).

    Attributes
    ----------
    absorber_mm, sensor_mm : float
        Tungsten and silicon thickness, mm.
    """

    absorber_mm: float
    sensor_mm: float = SILICON_MM

    def _mass_fractions(self) -> tuple[float, float]:
        w = TUNGSTEN.density_g_cm3 * self.absorber_mm
        s = SILICON.density_g_cm3 * self.sensor_mm
        return w / (w + s), s / (w + s)

    @property
    def pitch_mm(self) -> float:
        """Thickness of the whole cell, mm."""
        return self.absorber_mm + self.sensor_mm

    @property
    def depth_x0(self) -> float:
        """Thickness of the whole cell in radiation lengths."""
        return self.absorber_mm / TUNGSTEN.x0_mm + self.sensor_mm / SILICON.x0_mm

    @property
    def z_eff(self) -> float:
        """Mass-weighted atomic number."""
        w_w, w_s = self._mass_fractions()
        return w_w * TUNGSTEN.z + w_s * SILICON.z

    @property
    def x0_eff_mm(self) -> float:
        """Effective radiation length, mm."""
        return self.pitch_mm / self.depth_x0

    @property
    def critical_energy_mev(self) -> float:
        """Effective critical energy E_c = X0 sum_i w_i E_c,i / X0_i (all X0 in g/cm^2), MeV."""
        w_w, w_s = self._mass_fractions()
        x0_eff = 1.0 / (w_w / TUNGSTEN.x0_g_cm2 + w_s / SILICON.x0_g_cm2)
        return x0_eff * (
            w_w * TUNGSTEN.critical_energy_mev / TUNGSTEN.x0_g_cm2
            + w_s * SILICON.critical_energy_mev / SILICON.x0_g_cm2
        )

    @property
    def moliere_radius_mm(self) -> float:
        """Effective Moliere radius E_s X0 / E_c, mm."""
        return E_SCALE_MEV * self.x0_eff_mm / self.critical_energy_mev

    @property
    def samplings_per_x0(self) -> float:
        """GFlash F_S: sampling cells per radiation length."""
        return 1.0 / self.depth_x0

    @property
    def e_over_mip(self) -> float:
        """GFlash e/mip ratio 1 / (1 + 0.007 (Z_passive - Z_active)), dimensionless."""
        return 1.0 / (1.0 + 0.007 * (TUNGSTEN.z - SILICON.z))

    @property
    def mip_visible_fraction(self) -> float:
        """Share of a minimum-ionising particle's energy loss that lands in the silicon."""
        w = TUNGSTEN.dedx_mip_mev_cm2_g * TUNGSTEN.density_g_cm3 * self.absorber_mm
        s = SILICON.dedx_mip_mev_cm2_g * SILICON.density_g_cm3 * self.sensor_mm
        return s / (w + s)


THIN_CELL: Final = SamplingCell(TUNGSTEN_THIN_MM)
THICK_CELL: Final = SamplingCell(TUNGSTEN_THICK_MM)
LAYER_CELLS: Final = (THIN_CELL,) * N_THIN_LAYERS + (THICK_CELL,) * (N_LAYERS - N_THIN_LAYERS)
"""The sampling cell of each layer, front to back; the sensor sits behind its plate."""


def layer_back_depth_x0() -> FloatArray:
    """Depth of each layer's silicon sensor (the back of its sampling cell), radiation lengths.

    Returns
    -------
    ndarray, shape (25,)
        Cumulative depth from the calorimeter front face, X0. The last value is about 22.7 X0.
    """
    return np.cumsum([cell.depth_x0 for cell in LAYER_CELLS])


def layer_thickness_x0() -> FloatArray:
    """Thickness of each layer's sampling cell, radiation lengths; shape (25,)."""
    return np.array([cell.depth_x0 for cell in LAYER_CELLS])


def cell_edges_mm(n_cells: int = N_CELLS_X) -> FloatArray:
    """Pad edges along x or y, mm, with the central pad centred on the beam axis; shape (n + 1,)."""
    return (np.arange(n_cells + 1) - n_cells / 2.0) * CELL_SIZE_MM
