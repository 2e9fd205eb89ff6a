"""Per-shower observables on hand-built showers with known answers, and on the Geant4 sample's quoted facts."""

from pathlib import Path

import numpy as np
import pytest

from app.physics.detector import SHOWER_SHAPE
from app.physics.io import read_showers
from app.physics.observables import (
    DEFAULT_HIT_THRESHOLD_GEV,
    FEATURE_NAMES,
    MIP_SILICON_GEV,
    cell_energy_histogram,
    cell_energy_spectrum,
    hit_count,
    log_bin_edges,
    max_layer,
    mean_profile_max_layer,
    moments,
    observe,
    parabolic_peak,
    projections,
    sampling_fraction,
    total_deposit,
)

G4_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "g4"
UNIFORM_VARIANCE = (25**2 - 1) / 12  # variance of a uniform distribution over the indices 0..24


def _point_shower(x: int = 3, y: int = 7, layer: int = 11, energy_gev: float = 2.0) -> np.ndarray:
    cells = np.zeros((1, *SHOWER_SHAPE), dtype=np.float32)
    cells[0, x, y, layer] = energy_gev
    return cells


def test_point_deposit_has_exact_observables() -> None:
    cells = _point_shower()
    assert total_deposit(cells) == pytest.approx([2.0])
    assert sampling_fraction(cells, [100.0]) == pytest.approx([0.02])
    proj = projections(cells)
    assert proj.shape == (1, 3, 25)
    for axis, index in enumerate((3, 7, 11)):
        expected = np.zeros(25)
        expected[index] = 2.0
        assert np.array_equal(proj[0, axis], expected)
    first, second = moments(cells)
    assert first[0] == pytest.approx([3, 7, 11])
    assert second[0] == pytest.approx([0, 0, 0])
    assert hit_count(cells).tolist() == [1]
    assert max_layer(cells).tolist() == [11]


def test_uniform_deposit_has_centred_moments_and_uniform_variance() -> None:
    cells = np.full((2, *SHOWER_SHAPE), 1e-3, dtype=np.float32)
    first, second = moments(cells)
    assert first == pytest.approx(np.full((2, 3), 12.0))
    assert second == pytest.approx(np.full((2, 3), UNIFORM_VARIANCE), rel=1e-6)
    assert hit_count(cells).tolist() == [25**3, 25**3]
    assert hit_count(cells, threshold_gev=1e-2).tolist() == [0, 0]
    obs = observe(cells, [50.0, 50.0])
    assert obs.core_fraction == pytest.approx([9 / 625] * 2)  # 3x3 of 25x25 cells
    assert obs.front_fraction == pytest.approx([5 / 25] * 2)
    assert obs.back_fraction == pytest.approx([5 / 25] * 2)


def test_two_layer_deposit_moments_by_hand() -> None:
    cells = np.zeros((1, *SHOWER_SHAPE), dtype=np.float32)
    cells[0, 12, 12, 2] = 1.0
    cells[0, 12, 12, 6] = 3.0
    first, second = moments(cells)
    # barycentre (1*2 + 3*6)/4 = 5; variance (1*(2-5)^2 + 3*(6-5)^2)/4 = 3
    assert first[0, 2] == pytest.approx(5.0)
    assert second[0, 2] == pytest.approx(3.0)
    assert max_layer(cells).tolist() == [6]


def test_empty_shower_gives_nan_moments_without_warnings() -> None:
    # filterwarnings = error: a 0/0 RuntimeWarning would fail this test
    cells = np.concatenate([np.zeros((1, *SHOWER_SHAPE), dtype=np.float32), _point_shower()])
    first, second = moments(cells)
    assert np.isnan(first[0]).all()
    assert np.isnan(second[0]).all()
    assert np.isfinite(first[1]).all()
    assert max_layer(cells).tolist() == [-1, 11]
    features = observe(cells, [10.0, 10.0]).features()
    assert list(features) == list(FEATURE_NAMES)
    assert features["sampling_fraction"][0] == 0.0
    assert np.isnan(features["first_moment_x"][0])
    assert np.isnan(features["max_layer"][0])
    assert np.isnan(features["core_fraction"][0])


def test_hit_threshold_is_strict_and_about_half_a_mip() -> None:
    cells = _point_shower(energy_gev=DEFAULT_HIT_THRESHOLD_GEV)
    assert hit_count(cells).tolist() == [0]
    assert hit_count(cells, threshold_gev=0.5 * DEFAULT_HIT_THRESHOLD_GEV).tolist() == [1]
    assert 0.4 < DEFAULT_HIT_THRESHOLD_GEV / MIP_SILICON_GEV < 0.6


def test_parabolic_peak_recovers_a_vertex_between_bins() -> None:
    k = np.arange(25)
    assert parabolic_peak(100 - (k - 10.3) ** 2) == pytest.approx(10.3)
    assert parabolic_peak(np.exp(-k)) == 0.0  # maximum at the edge: the bin itself
    assert np.isnan(parabolic_peak(np.zeros(25)))


def test_mean_profile_max_layer_of_two_point_showers() -> None:
    # Mean profile: 1 GeV in layers 9 and 11, 2 GeV in layer 10 -> symmetric peak exactly at 10
    cells = np.concatenate([_point_shower(layer=9, energy_gev=2), _point_shower(layer=11, energy_gev=2)])
    cells[:, 12, 12, 10] = 2.0
    assert mean_profile_max_layer(cells) == pytest.approx(10.0)
    assert observe(cells, [50.0, 50.0]).mean_profile_max_layer() == pytest.approx(10.0)


def test_cell_energy_spectrum_counts_non_zero_cells_per_shower() -> None:
    edges = log_bin_edges(1e-3, 10.0, 1)  # decades 1e-3..1e-2..1e-1..1..10
    cells = np.zeros((2, *SHOWER_SHAPE), dtype=np.float32)
    cells[0, 0, 0, 0] = 5e-3
    cells[0, 0, 0, 1] = 2.0
    cells[1, 0, 0, 0] = 10.0  # the last edge is inclusive
    cells[1, 0, 0, 1] = 1e-6  # below the first edge: not counted
    assert cell_energy_histogram(cells, edges).tolist() == [[1, 0, 0, 1], [0, 0, 0, 1]]
    per_shower, back_edges = cell_energy_spectrum(cells, edges)
    assert per_shower == pytest.approx([0.5, 0, 0, 1])
    assert np.array_equal(back_edges, edges)


def test_observe_in_chunks_matches_one_pass() -> None:
    rng = np.random.default_rng(3)
    cells = rng.exponential(1e-3, size=(7, *SHOWER_SHAPE)).astype(np.float32)
    ep = rng.uniform(10, 100, 7)
    small, whole = observe(cells, ep, chunk_size=3), observe(cells, ep)
    assert np.allclose(small.projections_gev, whole.projections_gev)
    assert np.array_equal(small.hit_count, whole.hit_count)
    assert np.array_equal(small.spectrum_counts, whole.spectrum_counts)
    subset = whole.select(np.array([0, 2]))
    assert len(subset) == 2
    assert np.array_equal(subset.ep_gev, ep[[0, 2]])


def test_bad_shapes_are_rejected_with_the_received_shape() -> None:
    with pytest.raises(ValueError, match=r"received \(3, 25, 25\)"):
        total_deposit(np.zeros((3, 25, 25)))
    with pytest.raises(ValueError, match="ep_gev must have shape"):
        sampling_fraction(np.zeros((2, *SHOWER_SHAPE)), [1.0])
    with pytest.raises(ValueError, match="threshold_gev"):
        hit_count(np.zeros((1, *SHOWER_SHAPE)), threshold_gev=-1.0)


@pytest.mark.skipif(not G4_DIR.is_dir(), reason="Geant4 samples (../shared/data/g4) not available")
def test_geant4_50gev_matches_the_facts_quoted_in_its_readme() -> None:
    showers = read_showers(G4_DIR / "g4_e50GeV_n200.h5")
    obs = observe(showers.cells_gev, showers.ep_gev)
    sf = obs.sampling_fraction
    # README: S/Ep 0.0249 with rms/mean 4.9 %; the SEM of 200 showers is 0.35 %, so 1.5 % is > 4 sigma
    assert sf.mean() == pytest.approx(0.0249, rel=0.015)
    assert sf.std() / sf.mean() == pytest.approx(0.049, rel=0.2)
    assert obs.mean_profile_max_layer() == pytest.approx(10.6, abs=0.3)
    assert obs.hit_count.mean() == pytest.approx(452, rel=0.02)
    assert np.nanmean(obs.core_fraction) == pytest.approx(0.87, abs=0.02)
