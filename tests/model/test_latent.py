"""Latent vectors: N(0, 1) x Ep / 100 GeV, deterministic given the generator state."""

from __future__ import annotations

import numpy as np
import pytest

from app.model.latent import FULL_TRAINING_RANGE_GEV, latent_vectors, training_energies


def test_shape_dtype_and_determinism() -> None:
    ep = np.array([2.0, 100.0, 500.0])
    a = latent_vectors(ep, np.random.default_rng(7))
    b = latent_vectors(ep, np.random.default_rng(7))
    assert a.shape == (3, 200)
    assert a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, latent_vectors(ep, np.random.default_rng(8)))


def test_rows_are_standard_normal_times_ep_over_100() -> None:
    n = 4000
    z = latent_vectors(np.full(n, 250.0), np.random.default_rng(9)) / 2.5
    # 800k draws: the sample mean and std are within ~5 sigma of 0 and 1 (sigma ~ 1/sqrt(800k) ~ 1.1e-3).
    assert abs(z.mean()) < 6e-3
    assert abs(z.std() - 1.0) < 6e-3


def test_energy_only_scales_the_noise() -> None:
    low = latent_vectors([10.0], np.random.default_rng(1))
    high = latent_vectors([400.0], np.random.default_rng(1))
    np.testing.assert_allclose(high, 40.0 * low, rtol=1e-6)


def test_training_energies() -> None:
    ep = training_energies(10_000, np.random.default_rng(2))
    assert ep.dtype == np.float32
    assert FULL_TRAINING_RANGE_GEV[0] <= ep.min()
    assert ep.max() <= FULL_TRAINING_RANGE_GEV[1]
    assert abs(ep.mean() - 251.0) < 5.0  # uniform 2-500: mean 251, sigma of the mean ~1.4
    with pytest.raises(ValueError, match="energy range"):
        training_energies(3, np.random.default_rng(2), (10.0, 5.0))
