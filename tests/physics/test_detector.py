"""The detector description reproduces the numbers the research notes derive for W/Si."""

import numpy as np
import pytest

from app.physics.detector import (
    CELL_SIZE_MM,
    LAYER_CELLS,
    THICK_CELL,
    THIN_CELL,
    TUNGSTEN,
    cell_edges_mm,
    layer_back_depth_x0,
)


def test_stack_has_17_thin_then_8_thick_layers() -> None:
    assert LAYER_CELLS.count(THIN_CELL) == 17
    assert LAYER_CELLS[17:] == (THICK_CELL,) * 8


def test_total_depth_is_about_22_7_radiation_lengths() -> None:
    # Geant4 sample README: "About 22.6 X0 of tungsten" (+ 25 x 0.5 mm Si = 0.13 X0).
    assert layer_back_depth_x0()[-1] == pytest.approx(22.74, abs=0.05)
    assert np.all(np.diff(layer_back_depth_x0()) > 0)


def test_tungsten_radiation_length_is_geant4s() -> None:
    assert TUNGSTEN.x0_mm == pytest.approx(3.504, rel=1e-6)


def test_effective_medium_is_dominated_by_tungsten() -> None:
    # Mass fraction of W is 97.5 %, so Z_eff, E_c and R_M sit close to pure tungsten's 74, 8.0 MeV, 9.3 mm
    # (R_M grows with the silicon's volume).
    assert THIN_CELL.z_eff == pytest.approx(72.5, abs=0.2)
    assert THIN_CELL.critical_energy_mev == pytest.approx(8.2, abs=0.1)
    assert THIN_CELL.moliere_radius_mm == pytest.approx(10.8, abs=0.1)


def test_mip_visible_fraction_halves_in_thick_layers() -> None:
    ratio = THIN_CELL.mip_visible_fraction / THICK_CELL.mip_visible_fraction
    assert ratio == pytest.approx(1.96, abs=0.02)


def test_cell_edges_centre_the_middle_pad_on_the_axis() -> None:
    edges = cell_edges_mm()
    assert len(edges) == 26
    assert edges[12] == pytest.approx(-CELL_SIZE_MM / 2)
    assert edges[13] == pytest.approx(CELL_SIZE_MM / 2)
