"""Two-sample metrics: properties (zero on itself, symmetric, growing with a distortion), energy matching,
and the noise floor's bookkeeping."""

import dataclasses

import numpy as np
import pytest

from app.errors import InvalidRequest
from app.physics.observables import ShowerObservables
from app.validation.metrics import (
    METRICS,
    BinValues,
    EnergyBin,
    EnergyMatching,
    compare_samples,
    match_energies,
    moment_error,
    moment_relative_errors,
    mse_shape,
    noise_floor,
    sampling_fraction_comparison,
    summarise,
)
from tests.validation.conftest import toy_observables


def test_mse_shape_is_zero_on_itself_symmetric_and_grows_with_a_depth_shift(
    reference_obs: ShowerObservables, same_obs: ShowerObservables
) -> None:
    assert mse_shape(reference_obs, reference_obs) == 0.0
    assert mse_shape(reference_obs, same_obs) == mse_shape(same_obs, reference_obs)
    shifted = [mse_shape(toy_observables(200, 50.0, seed=2, depth_shift=s), reference_obs) for s in (0.0, 1.0, 2.0)]
    assert shifted[0] < shifted[1] < shifted[2]
    # a 1-layer shift of the maximum is far above the noise between two samples of 200
    assert shifted[1] > 10 * shifted[0]


def test_mse_shape_ignores_the_energy_scale(reference_obs: ShowerObservables) -> None:
    doubled = dataclasses.replace(
        reference_obs, total_gev=2 * reference_obs.total_gev, projections_gev=2 * reference_obs.projections_gev
    )
    assert mse_shape(doubled, reference_obs) == pytest.approx(0.0, abs=1e-20)


def test_moment_error_is_zero_on_itself_and_grows_with_width(reference_obs: ShowerObservables) -> None:
    assert moment_error(reference_obs, reference_obs) == 0.0
    wider = [moment_error(toy_observables(200, 50.0, seed=2, width_scale=s), reference_obs) for s in (1.0, 1.3)]
    assert wider[1] > 3 * wider[0]
    errors = moment_relative_errors(toy_observables(200, 50.0, seed=2, width_scale=1.3), reference_obs)
    assert errors.shape == (2, 3)
    # the width shows in the transverse second moments, far more than in the barycentres
    assert errors[1, :2].min() > 10 * errors[0, :2].max()


def test_zero_reference_moment_is_skipped_not_divided(reference_obs: ShowerObservables) -> None:
    at_edge = dataclasses.replace(reference_obs, first_moment=reference_obs.first_moment * [0.0, 1.0, 1.0])
    errors = moment_relative_errors(reference_obs, at_edge)  # reference barycentre x = 0
    assert np.isnan(errors[0, 0])
    assert np.isfinite(errors[~np.isnan(errors)]).all()
    assert np.isfinite(moment_error(reference_obs, at_edge))


def test_sampling_fraction_comparison_sees_a_scale_but_not_in_the_resolution(
    reference_obs: ShowerObservables,
) -> None:
    scaled = dataclasses.replace(reference_obs, total_gev=1.1 * reference_obs.total_gev)
    sf = sampling_fraction_comparison(scaled, reference_obs)
    assert sf.mean_rel_diff == pytest.approx(0.1)
    assert sf.resolution_rel_diff == pytest.approx(0.0, abs=1e-12)
    assert sf.mean_ref == pytest.approx(0.025, rel=0.02)
    assert sf.resolution_ref == pytest.approx(0.05, rel=0.2)


def test_fixed_energies_match_in_one_bin_or_are_refused() -> None:
    matching = match_energies(np.full(20, 100.0), np.full(30, 100.0))
    assert matching.mode == "fixed"
    assert [b.label for b in matching.bins] == ["100 GeV"]
    with pytest.raises(InvalidRequest, match="100 GeV but the reference is at 50 GeV"):
        match_energies(np.full(20, 100.0), np.full(20, 50.0))


def test_fixed_against_spectrum_uses_a_window() -> None:
    ref = np.linspace(80.0, 120.0, 81)  # every 0.5 GeV
    matching = match_energies(np.full(20, 100.0), ref)
    assert matching.mode == "window"
    assert matching.bins[0].contains(ref).sum() == 21  # 95..105 GeV inclusive


def test_spectra_are_binned_and_thin_bins_are_skipped_and_listed() -> None:
    gen, ref = np.linspace(2, 499, 200), np.linspace(2, 499, 400)  # flat spectra
    matching = match_energies(gen, ref)
    assert matching.mode == "binned"
    assert [b.label for b in matching.bins][-1] == "400-500 GeV"
    assert [(b.label, n_gen, n_ref) for b, n_gen, n_ref in matching.skipped] == [("1-20 GeV", 8, 15)]
    with pytest.raises(InvalidRequest, match="no energy bin has 10 showers"):
        match_energies(gen[:5], ref)


def test_energy_bin_edges_are_half_open_except_the_last() -> None:
    assert EnergyBin(1.0, 2.0).contains(np.array([1.0, 2.0])).tolist() == [True, False]
    assert EnergyBin(1.0, 2.0, closed=True).contains(np.array([1.0, 2.0])).tolist() == [True, True]


def test_noise_floor_from_halves_splits_each_bin_in_two(reference_obs: ShowerObservables) -> None:
    matching = match_energies(reference_obs.ep_gev, reference_obs.ep_gev)
    floor = noise_floor(reference_obs, matching, seed=0, n_splits=3)
    assert set(floor) == {spec.name for spec in METRICS}
    assert floor["mse_shape"].sizes == [(100, 100)]
    assert 0 < floor["mse_shape"].values[0] < 1e-4
    again = noise_floor(reference_obs, matching, seed=0, n_splits=3)
    assert again["mse_shape"].values == floor["mse_shape"].values  # seeded


def test_noise_floor_with_a_second_reference_compares_the_two(
    reference_obs: ShowerObservables, same_obs: ShowerObservables
) -> None:
    matching = match_energies(reference_obs.ep_gev, reference_obs.ep_gev)
    floor = noise_floor(reference_obs, matching, ref2=same_obs)
    assert floor["mse_shape"].values == [mse_shape(reference_obs, same_obs)]
    assert floor["mse_shape"].sizes == [(200, 200)]


def test_summarise_rescales_the_floor_to_the_comparison_sizes() -> None:
    matching = EnergyMatching("fixed", (EnergyBin(99.9, 100.1, closed=True),))
    values = {spec.name: BinValues([8.0], [(100, 100)]) for spec in METRICS}
    floors = {spec.name: BinValues([4.0], [(50, 50)]) for spec in METRICS}
    summary = {s.name: s for s in summarise(values, floors, matching)}
    # 1/N: (1/100 + 1/100) / (1/50 + 1/50) = 0.5; 1/sqrt(N): sqrt(0.5)
    assert summary["mse_shape"].noise_floor == pytest.approx(2.0)
    assert summary["mse_shape"].ratio == pytest.approx(4.0)
    assert summary["moment_error"].noise_floor == pytest.approx(4.0 * np.sqrt(0.5))
    assert summary["mse_shape"].per_bin[0]["noise_floor_raw"] == 4.0


def test_distorted_sample_stands_far_above_the_floor_and_a_fair_one_does_not(
    reference_obs: ShowerObservables, same_obs: ShowerObservables
) -> None:
    matching = match_energies(same_obs.ep_gev, reference_obs.ep_gev)
    floor = noise_floor(reference_obs, matching, seed=0)

    def ratios(gen: ShowerObservables) -> dict[str, float]:
        return {s.name: s.ratio for s in summarise(compare_samples(gen, reference_obs, matching), floor, matching)}

    fair, shifted = ratios(same_obs), ratios(toy_observables(200, 50.0, seed=2, depth_shift=1.0))
    # Same distribution: the expected ratio is 1; 4 is beyond its spread for 200 showers (seeded, fixed)
    assert fair["mse_shape"] < 4
    assert fair["moment_error"] < 4
    assert shifted["mse_shape"] > 20
    assert shifted["moment_error"] > 3  # diluted: only 2 of its 6 terms see a depth shift


def test_fluctuation_metrics_are_zero_on_itself_and_see_a_generator_without_spread() -> None:
    from app.physics.mc import simulate_showers
    from app.physics.observables import observe
    from app.validation.metrics import (
        cell_spectrum_distance,
        depth_rms_error,
        hit_count_mean_error,
        hit_count_rms_error,
        width_rms_error,
    )

    ep = np.full(60, 50.0)
    cells = simulate_showers(ep, seed=4)
    ref = observe(cells, ep)
    mean_copies = observe(np.repeat(cells.mean(axis=0, keepdims=True), 60, axis=0), ep)  # the v2 failure
    ten_times = observe(10.0 * cells, ep)
    for metric in (hit_count_mean_error, hit_count_rms_error, depth_rms_error, width_rms_error, cell_spectrum_distance):
        assert metric(ref, ref) == 0.0
    assert hit_count_rms_error(mean_copies, ref) == pytest.approx(1.0)  # no spread at all
    assert depth_rms_error(mean_copies, ref) == pytest.approx(1.0)
    assert width_rms_error(mean_copies, ref) == pytest.approx(1.0)
    assert hit_count_mean_error(mean_copies, ref) > 0.1  # the mean shower spreads over more cells
    # Every cell ten times hotter: the spectrum moves by one decade (less the cells pushed over the threshold).
    assert 0.7 < cell_spectrum_distance(ten_times, ref) < 1.05
