"""Classifier two-sample test: AUC near 0.5 for one distribution, near 1 for two, seeded, energy-matched."""

import numpy as np
import pytest

from app.errors import InvalidRequest
from app.physics.observables import ShowerObservables
from app.validation.classifier import (
    CLASSIFIER_FEATURES,
    classifier_auc,
    energy_matched_indices,
    feature_matrix,
    samples_auc,
)
from tests.validation.conftest import toy_observables

# Under the null, one fold's AUC with 40 + 40 test showers has sd sqrt(81 / (12 * 1600)) = 0.065
# (Mann-Whitney); the mean of 5 folds 0.029. 0.12 is 4 of those.
NULL_TOLERANCE_200 = 0.12


def test_same_distribution_gives_auc_near_one_half(
    reference_obs: ShowerObservables, same_obs: ShowerObservables
) -> None:
    result = samples_auc(same_obs, reference_obs, seed=0)
    assert result.n_gen == result.n_ref == 200
    assert abs(result.auc - 0.5) < NULL_TOLERANCE_200
    assert len(result.fold_aucs) == 5
    assert 0 < result.auc_sem < 0.1


def test_clearly_different_showers_give_auc_near_one(reference_obs: ShowerObservables) -> None:
    deeper = toy_observables(200, 50.0, seed=2, depth_shift=3.0)
    assert samples_auc(deeper, reference_obs, seed=0).auc > 0.95


def test_result_is_reproducible_with_a_seed(reference_obs: ShowerObservables, same_obs: ShowerObservables) -> None:
    gen, ref = same_obs.select(slice(0, 60)), reference_obs.select(slice(0, 60))
    assert samples_auc(gen, ref, seed=4, n_folds=3) == samples_auc(gen, ref, seed=4, n_folds=3)


def test_gaussian_features_shifted_by_three_sigma_are_separated() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(150, 3)), rng.normal(size=(150, 3))
    b[:, 0] += 3.0  # a single feature moved by 3 sd: the ideal AUC is Phi(3 / sqrt 2) = 0.983
    assert classifier_auc(a, b, seed=0).auc == pytest.approx(0.98, abs=0.03)


def test_energy_matching_equalises_counts_per_energy_cell() -> None:
    rng = np.random.default_rng(1)
    gen_ep, ref_ep = rng.uniform(10, 500, 300), rng.uniform(10, 100, 300)
    gen_index, ref_index = energy_matched_indices(gen_ep, ref_ep, rng=rng)
    assert len(gen_index) == len(ref_index) > 30  # about 55 generated showers fall in 10-100 GeV
    assert gen_ep[gen_index].max() < 110  # the generator's high energies have no partner
    step = np.log1p(0.1)
    gen_cells = np.floor(np.log(gen_ep[gen_index]) / step)
    ref_cells = np.floor(np.log(ref_ep[ref_index]) / step)
    assert np.array_equal(np.sort(gen_cells), np.sort(ref_cells))


def test_fixed_energies_are_subsampled_to_the_smaller_sample() -> None:
    gen_index, ref_index = energy_matched_indices(np.full(50, 100.0), np.full(30, 100.0), rng=np.random.default_rng(0))
    assert len(gen_index) == len(ref_index) == 30
    assert len(set(gen_index.tolist())) == 30


def test_feature_matrix_columns_include_log_energy(reference_obs: ShowerObservables) -> None:
    x = feature_matrix(reference_obs)
    assert x.shape == (200, len(CLASSIFIER_FEATURES))
    assert x[:, CLASSIFIER_FEATURES.index("log10_ep_gev")] == pytest.approx(np.log10(50.0))


def test_too_few_showers_and_bad_inputs_are_refused() -> None:
    with pytest.raises(InvalidRequest, match="needs 10 showers per sample"):
        classifier_auc(np.zeros((5, 2)), np.zeros((50, 2)))
    with pytest.raises(InvalidRequest, match="same F"):
        classifier_auc(np.zeros((50, 2)), np.zeros((50, 3)))
    with pytest.raises(InvalidRequest, match="unknown classifier features"):
        samples_auc(toy_observables(20, 50.0, seed=0), toy_observables(20, 50.0, seed=1), feature_names=["nope"])
