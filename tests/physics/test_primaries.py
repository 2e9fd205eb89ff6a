"""Primary energies: bad input is refused with a message that says what is allowed."""

import math

import numpy as np
import pytest

from app.errors import InvalidRequest
from app.physics.primaries import check_count, check_primary_energies, primary_energies


@pytest.mark.parametrize("bad", [0.0, -5.0, math.nan, math.inf, 0.5, 1001.0, "abc", []])
def test_bad_energies_are_refused(bad: object) -> None:
    with pytest.raises(InvalidRequest, match=r"allowed|GeV"):
        check_primary_energies(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "3"])
def test_bad_counts_are_refused(bad: object) -> None:
    with pytest.raises(InvalidRequest, match="allowed"):
        check_count(bad)  # type: ignore[arg-type]


def test_count_above_the_maximum_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="from 1 to 10"):
        check_count(11, max_n=10)


def test_fixed_energy() -> None:
    assert np.all(primary_energies(5, energy_gev=50.0, rng=np.random.default_rng(0)) == 50.0)


def test_flat_spectrum_stays_inside_its_range() -> None:
    ep = primary_energies(2000, emin_gev=2.0, emax_gev=500.0, rng=np.random.default_rng(0))
    assert ep.min() >= 2.0
    assert ep.max() <= 500.0
    # Uniform: the mean is 251 GeV with a standard error of 144/sqrt(2000) = 3.2 GeV.
    assert ep.mean() == pytest.approx(251.0, abs=5 * 3.2)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"energy_gev": 10.0, "emin_gev": 2.0, "emax_gev": 5.0},
        {"emin_gev": 5.0},
        {"emin_gev": 50.0, "emax_gev": 5.0},
    ],
)
def test_inconsistent_spectrum_requests_are_refused(kwargs: dict) -> None:
    with pytest.raises(InvalidRequest):
        primary_energies(3, rng=np.random.default_rng(0), **kwargs)
