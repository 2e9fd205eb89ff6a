"""Two-sample physics metrics at matched primary energy, each read against a statistical noise floor.

What to use when:

- :func:`match_energies` decides how showers of the two samples are paired by primary energy:
  both at the same fixed energy (one bin), one fixed and one spectrum (a +-5 % window around the fixed
  energy), or both spectra (the wide bins of ``DEFAULT_BIN_EDGES_GEV``; bins with fewer than
  ``MIN_SHOWERS_PER_BIN`` showers in either sample are skipped and listed).
- The metrics compare two :class:`~app.physics.observables.ShowerObservables` in one energy bin; each is
  >= 0 and 0 for identical samples: :func:`mse_shape` (mean normalised projections),
  :func:`moment_error` (the 3DGAN moment metric without its bugs), :func:`sampling_fraction_comparison`
  (mean and resolution of S/Ep), and the fluctuation figures: the hit count's mean and rms
  (:func:`hit_count_mean_error`, :func:`hit_count_rms_error`), the rms of the shower depth and width
  (:func:`depth_rms_error`, :func:`width_rms_error`) and the distance of the cell-energy spectra
  (:func:`cell_spectrum_distance`).
- :func:`compare_samples` runs every metric in every bin, and :func:`noise_floor` runs the same metrics
  between two samples of the REFERENCE (an independent second file, or random halves of the one file),
  so each figure reads as "x times the statistical floor". :func:`summarise` joins both into the
  ``value, noise_floor, ratio`` records of ``summary.json``.

Noise floor scaling. A metric computed on two finite samples of the SAME distribution is not 0. For
statistics of sample means its expectation scales with the sizes: an MSE of mean profiles as
(1/n_a + 1/n_b), an absolute difference of means as sqrt(1/n_a + 1/n_b). The floor is measured on the
reference pair (sizes n_a, n_b: the halves hold N_ref/2 each) and then RESCALED to the sizes of the
actual comparison (N_gen, N_ref) with that law, so that ratio = value / floor is ~1 when the generator
is statistically indistinguishable. Both the raw and the scaled floor are reported.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from app.errors import InvalidRequest
from app.physics.detector import FloatArray
from app.physics.observables import ShowerObservables

__all__ = [
    "DEFAULT_BIN_EDGES_GEV",
    "FIXED_ENERGY_RTOL",
    "FIXED_WINDOW_REL",
    "FLUCTUATION_FIGURES",
    "METRICS",
    "MIN_SHOWERS_PER_BIN",
    "BinValues",
    "EnergyBin",
    "EnergyMatching",
    "MetricSpec",
    "MetricSummary",
    "SamplingFractionComparison",
    "cell_spectrum_distance",
    "compare_samples",
    "depth_rms_error",
    "fixed_energy",
    "fluctuation_figures",
    "hit_count_mean_error",
    "hit_count_rms_error",
    "match_energies",
    "mean_normalised_projections",
    "moment_error",
    "moment_relative_errors",
    "mse_shape",
    "noise_floor",
    "relative_shape_error",
    "sampling_fraction_comparison",
    "summarise",
    "width_rms_error",
]

DEFAULT_BIN_EDGES_GEV: Final = (1.0, 20.0, 50.0, 100.0, 200.0, 300.0, 400.0, 500.0, 1000.0)
"""Energy bins for spectra, GeV. The 3DGAN's +-5 GeV windows around 50, 100, ... 500 GeV keep 2 % of a
flat 2-500 GeV sample each (6 of 300 showers); these bins keep every shower, are narrow at low energy
where shapes change fastest with ln(Ep), and hold about 60 showers per 100 GeV of a 300-shower sample."""

MIN_SHOWERS_PER_BIN: Final = 10
"""Bins with fewer showers in either sample are skipped (and listed): their means are mostly noise."""

FIXED_ENERGY_RTOL: Final = 1e-3
"""A sample is at a fixed energy when max(Ep) / min(Ep) - 1 is below this."""

FIXED_WINDOW_REL: Final = 0.05
"""Half-width of the window, relative to Ep, cut from a spectrum to match a fixed-energy sample."""

Mode = Literal["fixed", "window", "binned"]


@dataclass(frozen=True)
class EnergyBin:
    """A primary-energy interval [low_gev, high_gev), GeV; the last bin of a set is closed."""

    low_gev: float
    high_gev: float
    closed: bool = False

    @property
    def label(self) -> str:
        """A short name: '100 GeV' for a fixed-energy bin, '50-100 GeV' otherwise."""
        if np.isclose(self.low_gev, self.high_gev, rtol=2 * FIXED_ENERGY_RTOL):
            return f"{0.5 * (self.low_gev + self.high_gev):g} GeV"
        return f"{self.low_gev:g}-{self.high_gev:g} GeV"

    def contains(self, ep_gev: FloatArray) -> npt.NDArray[np.bool_]:
        """Boolean mask, shape (N,), of the energies inside the bin."""
        upper = ep_gev <= self.high_gev if self.closed else ep_gev < self.high_gev
        return (ep_gev >= self.low_gev) & upper


@dataclass(frozen=True)
class EnergyMatching:
    """How the two samples are paired by energy: the bins used, the ones skipped, and why."""

    mode: Mode
    bins: tuple[EnergyBin, ...]
    skipped: tuple[tuple[EnergyBin, int, int], ...] = ()
    min_showers: int = MIN_SHOWERS_PER_BIN

    @property
    def note(self) -> str:
        """One sentence for summary.json saying how energies were matched."""
        if self.mode == "fixed":
            return f"both samples at the same fixed energy ({self.bins[0].label}): one bin"
        if self.mode == "window":
            return (
                f"one sample at a fixed energy: the other is cut to a +-{100 * FIXED_WINDOW_REL:g} % window "
                f"({self.bins[0].label})"
            )
        return (
            "both samples span energies: compared bin by bin in wide Ep bins, bins with fewer than "
            f"{self.min_showers} showers in either sample skipped; per-bin metrics are averaged with equal weight"
        )


def fixed_energy(ep_gev: npt.ArrayLike, rtol: float = FIXED_ENERGY_RTOL) -> float | None:
    """The common energy (GeV) when all primary energies agree within ``rtol``, else None."""
    ep = np.asarray(ep_gev, dtype=np.float64)
    if ep.size == 0 or ep.max() > ep.min() * (1.0 + rtol):
        return None
    return float(np.median(ep))


def match_energies(
    gen_ep_gev: npt.ArrayLike,
    ref_ep_gev: npt.ArrayLike,
    *,
    edges_gev: Sequence[float] = DEFAULT_BIN_EDGES_GEV,
    min_showers: int = MIN_SHOWERS_PER_BIN,
) -> EnergyMatching:
    """Choose the energy bins in which the generated and reference samples are compared.

    Parameters
    ----------
    gen_ep_gev, ref_ep_gev : array-like, shape (N,) and (M,)
        Primary energies of the two samples, GeV.
    edges_gev : sequence of float
        Increasing bin edges used when both samples span energies, GeV.
    min_showers : int
        Minimum showers per bin in each sample.

    Returns
    -------
    EnergyMatching
        ``mode`` 'fixed' (same fixed energy, one bin), 'window' (one fixed at E0, the other cut to
        E0 +- 5 %), or 'binned'.

    Raises
    ------
    InvalidRequest
        Fixed energies that differ, bad edges, or no bin with ``min_showers`` in both samples.
    """
    gen_ep = np.asarray(gen_ep_gev, dtype=np.float64)
    ref_ep = np.asarray(ref_ep_gev, dtype=np.float64)
    gen_fixed, ref_fixed = fixed_energy(gen_ep), fixed_energy(ref_ep)
    if gen_fixed is not None and ref_fixed is not None:
        if not np.isclose(gen_fixed, ref_fixed, rtol=FIXED_ENERGY_RTOL):
            raise InvalidRequest(
                f"generated showers are at {gen_fixed:g} GeV but the reference is at {ref_fixed:g} GeV",
                allowed="samples at the same fixed energy, or energy spectra that overlap",
            )
        tol = FIXED_ENERGY_RTOL * gen_fixed
        bins: tuple[EnergyBin, ...] = (EnergyBin(gen_fixed - tol, gen_fixed + tol, closed=True),)
        mode: Mode = "fixed"
    elif gen_fixed is not None or ref_fixed is not None:
        centre = next(energy for energy in (gen_fixed, ref_fixed) if energy is not None)
        bins = (EnergyBin(centre * (1 - FIXED_WINDOW_REL), centre * (1 + FIXED_WINDOW_REL), closed=True),)
        mode = "window"
    else:
        edges = np.asarray(edges_gev, dtype=np.float64)
        if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0):
            raise InvalidRequest(
                f"energy bin edges {list(edges_gev)} are not increasing", allowed="2 or more increasing edges, GeV"
            )
        bins = tuple(
            EnergyBin(float(lo), float(hi), closed=(i == len(edges) - 2))
            for i, (lo, hi) in enumerate(itertools.pairwise(edges))
        )
        mode = "binned"
    used, skipped = [], []
    for energy_bin in bins:
        n_gen, n_ref = int(energy_bin.contains(gen_ep).sum()), int(energy_bin.contains(ref_ep).sum())
        if n_gen >= min_showers and n_ref >= min_showers:
            used.append(energy_bin)
        elif n_gen or n_ref:
            skipped.append((energy_bin, n_gen, n_ref))
    if not used:
        found = ", ".join(f"{b.label}: {g} vs {r}" for b, g, r in skipped) or "no overlap"
        raise InvalidRequest(
            f"no energy bin has {min_showers} showers in both samples ({found})",
            allowed=f"samples with at least {min_showers} showers at matching energies",
        )
    return EnergyMatching(mode, tuple(used), tuple(skipped), min_showers)


def _valid(obs: ShowerObservables) -> ShowerObservables:
    """The non-empty showers: an empty shower has no shape or moments (its NaNs are not averaged)."""
    return obs.select(obs.total_gev > 0)


def mean_normalised_projections(obs: ShowerObservables) -> FloatArray:
    """Mean over showers of each shower's projections divided by its own total deposit.

    Returns
    -------
    ndarray, shape (3, 25)
        Mean share of S per x cell, y cell and layer (each row sums to 1); empty showers are left out;
        NaN when no shower has a deposit.
    """
    valid = _valid(obs)
    if len(valid) == 0:
        return np.full(obs.projections_gev.shape[1:], np.nan)
    return valid.normalised_projections.mean(axis=0)


def mse_shape(gen: ShowerObservables, ref: ShowerObservables) -> float:
    """Shape accuracy: mean squared difference of the mean normalised projections, dimensionless.

    Parameters
    ----------
    gen, ref : ShowerObservables
        The two samples, at matched primary energies.

    Returns
    -------
    float
        MSE_shape = (1/3) sum_{a in x, y, layer} (1/25) sum_k (<p_a^gen(k)> - <p_a^ref(k)>)^2, where
        p_a(k) = P_a(k) / S is one shower's projection divided by its own total deposit and <.> is the
        mean over the sample's non-empty showers. 0 for identical samples; symmetric.

    Notes
    -----
    In the spirit of the GRID'2021 paper's "MSE" on 2-D projections averaged over ~20k showers
    (``conv2d_gan_spec.md`` 5.4; the paper's exact definition is unconfirmed, so do not compare absolute
    values with it). Normalising per shower removes the total-energy scale, which
    :func:`sampling_fraction_comparison` measures instead. Its statistical floor scales as 1/N.
    """
    diff = mean_normalised_projections(gen) - mean_normalised_projections(ref)
    return float(np.mean(diff**2))


def relative_shape_error(gen: ShowerObservables, ref: ShowerObservables) -> float:
    """sqrt(:func:`mse_shape`) over the RMS of the reference's mean normalised projections.

    A fractional error of the mean shower shape (0.1 = the mean profiles differ by 10 % of their
    typical value); inf when a sample has no deposit.
    """
    mse = mse_shape(gen, ref)
    if not np.isfinite(mse):
        return float("inf")
    return float(np.sqrt(mse / np.mean(mean_normalised_projections(ref) ** 2)))


def _mean_moments(obs: ShowerObservables) -> FloatArray:
    valid = _valid(obs)
    if len(valid) == 0:
        return np.full((2, obs.first_moment.shape[1]), np.nan)
    return np.stack([valid.first_moment.mean(axis=0), valid.second_moment.mean(axis=0)])


def moment_relative_errors(gen: ShowerObservables, ref: ShowerObservables) -> FloatArray:
    """Absolute relative error of the sample-mean moments, per moment and axis.

    Returns
    -------
    ndarray, shape (2, 3)
        |<m>_gen - <m>_ref| / |<m>_ref| for the first (row 0) and second (row 1) moment along x, y,
        layer; NaN where the reference mean is 0 (undefined, never divided) or a sample has no deposit.
    """
    gen_mean, ref_mean = _mean_moments(gen), _mean_moments(ref)
    out = np.full(ref_mean.shape, np.nan)
    usable = np.isfinite(gen_mean) & np.isfinite(ref_mean) & (ref_mean != 0)
    out[usable] = np.abs(gen_mean[usable] - ref_mean[usable]) / np.abs(ref_mean[usable])
    return out


def moment_error(gen: ShowerObservables, ref: ShowerObservables) -> float:
    """The 3DGAN moment metric, corrected: mean of the six relative moment errors, dimensionless.

    Returns
    -------
    float
        (1/6) sum over m in {1, 2} and a in {x, y, layer} of :func:`moment_relative_errors`. Unlike the
        original ``validate()`` (spec 5.2) each term is counted once, and zero reference means are
        skipped (the mean is over the defined terms; NaN if none is defined). Its floor scales as 1/sqrt(N).
    """
    errors = moment_relative_errors(gen, ref)
    defined = errors[np.isfinite(errors)]
    return float(defined.mean()) if defined.size else float("nan")


@dataclass(frozen=True)
class SamplingFractionComparison:
    """Mean and resolution (rms/mean) of S/Ep in two samples, and their relative differences."""

    mean_gen: float
    mean_ref: float
    resolution_gen: float
    resolution_ref: float

    @property
    def mean_rel_diff(self) -> float:
        """(mean_gen - mean_ref) / mean_ref, signed."""
        return _rel_diff(self.mean_gen, self.mean_ref)

    @property
    def resolution_rel_diff(self) -> float:
        """(resolution_gen - resolution_ref) / resolution_ref, signed."""
        return _rel_diff(self.resolution_gen, self.resolution_ref)


def _rel_diff(value: float, reference: float) -> float:
    if not np.isfinite(value) or not np.isfinite(reference) or reference == 0:
        return float("nan")
    return (value - reference) / reference


def _mean_and_resolution(values: FloatArray) -> tuple[float, float]:
    if len(values) == 0:
        return float("nan"), float("nan")
    mean = float(values.mean())
    rms = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
    return mean, (rms / mean if mean != 0 else float("nan"))


def sampling_fraction_comparison(gen: ShowerObservables, ref: ShowerObservables) -> SamplingFractionComparison:
    """Compare the sampling fraction S/Ep of two samples at matched energy.

    Returns
    -------
    SamplingFractionComparison
        Means and rms/mean (the energy resolution of the visible deposit, ddof=1) of S/Ep, dimensionless.
    """
    mean_gen, res_gen = _mean_and_resolution(gen.sampling_fraction)
    mean_ref, res_ref = _mean_and_resolution(ref.sampling_fraction)
    return SamplingFractionComparison(mean_gen, mean_ref, res_gen, res_ref)


def _spread_error(values_gen: FloatArray, values_ref: FloatArray) -> float:
    """|rms_gen / rms_ref - 1| of one per-shower quantity (NaN ignored), dimensionless."""
    rms_gen, rms_ref = np.nanstd(values_gen, ddof=1), np.nanstd(values_ref, ddof=1)
    return abs(_rel_diff(float(rms_gen), float(rms_ref)))


def hit_count_mean_error(gen: ShowerObservables, ref: ShowerObservables) -> float:
    """|relative difference| of the mean number of hit cells (cells above the hit threshold)."""
    return abs(_rel_diff(float(gen.hit_count.mean()), float(ref.hit_count.mean())))


def hit_count_rms_error(gen: ShowerObservables, ref: ShowerObservables) -> float:
    """|relative difference| of the shower-to-shower rms of the hit count."""
    return _spread_error(gen.hit_count.astype(np.float64), ref.hit_count.astype(np.float64))


def depth_rms_error(gen: ShowerObservables, ref: ShowerObservables) -> float:
    """|relative difference| of the rms of the shower depth (longitudinal barycentre, layer units)."""
    return _spread_error(gen.first_moment[:, 2], ref.first_moment[:, 2])


def width_rms_error(gen: ShowerObservables, ref: ShowerObservables) -> float:
    """|relative difference| of the rms of the lateral width (sqrt of the x second moment, cell units)."""
    return _spread_error(np.sqrt(gen.second_moment[:, 0]), np.sqrt(ref.second_moment[:, 0]))


def cell_spectrum_distance(gen: ShowerObservables, ref: ShowerObservables) -> float:
    """1-Wasserstein distance between the cell-energy spectra above the hit threshold, in decades.

    Both samples' cells above ``threshold_gev`` are pooled into the (shared) log-spaced bins of
    ``spectrum_counts``; the distance is the area between the two normalised cumulative spectra
    against log10(E / GeV): how far, in decades of cell energy, one spectrum must move to become
    the other. 0 for identical spectra; shape only (the number of hits is :func:`hit_count_mean_error`).
    """
    edges = np.log10(gen.spectrum_edges_gev)
    above = gen.spectrum_edges_gev[:-1] >= gen.threshold_gev

    def cumulative(obs: ShowerObservables) -> FloatArray:
        counts = obs.spectrum_counts[:, above].sum(axis=0).astype(np.float64)
        return np.cumsum(counts) / counts.sum() if counts.sum() else np.full(counts.shape, np.nan)

    widths = np.diff(edges)[above]
    return float(np.sum(np.abs(cumulative(gen) - cumulative(ref)) * widths))


FLUCTUATION_FIGURES: Final = ("hits_mean", "hits_rms", "sf_mean", "sf_rms", "depth_rms", "width_rms")
"""Keys of :func:`fluctuation_figures`, in report order."""


def fluctuation_figures(obs: ShowerObservables) -> dict[str, float]:
    """One sample's spread figures: hit count mean and rms, S/Ep mean and rms, rms of the shower depth
    (layer units) and of the lateral width (cell units); compare two samples by their ratios."""
    sf = obs.sampling_fraction
    return {
        "hits_mean": float(obs.hit_count.mean()),
        "hits_rms": float(obs.hit_count.std()),
        "sf_mean": float(sf.mean()),
        "sf_rms": float(sf.std()),
        "depth_rms": float(np.nanstd(obs.first_moment[:, 2])),
        "width_rms": float(np.nanstd(np.sqrt(obs.second_moment[:, 0]))),
    }


@dataclass(frozen=True)
class MetricSpec:
    """A two-sample metric (>= 0, 0 when identical) with how its noise floor scales with sample size."""

    name: str
    compute: Callable[[ShowerObservables, ShowerObservables], float]
    size_power: float
    """Floor proportional to (1/n_a + 1/n_b) ** size_power: 1 for squared, 0.5 for absolute differences."""
    description: str


METRICS: Final = (
    MetricSpec(
        "mse_shape", mse_shape, 1.0, "MSE of the mean per-shower-normalised x, y, layer projections (dimensionless)"
    ),
    MetricSpec("moment_error", moment_error, 0.5, "mean |relative error| of the 6 mean moments (dimensionless)"),
    MetricSpec(
        "sampling_fraction_mean",
        lambda g, r: abs(sampling_fraction_comparison(g, r).mean_rel_diff),
        0.5,
        "|relative difference| of the mean S/Ep",
    ),
    MetricSpec(
        "sampling_fraction_resolution",
        lambda g, r: abs(sampling_fraction_comparison(g, r).resolution_rel_diff),
        0.5,
        "|relative difference| of rms/mean of S/Ep",
    ),
    MetricSpec("hit_count_mean", hit_count_mean_error, 0.5, "|relative difference| of the mean hit count"),
    MetricSpec("hit_count_rms", hit_count_rms_error, 0.5, "|relative difference| of the rms of the hit count"),
    MetricSpec("depth_rms", depth_rms_error, 0.5, "|relative difference| of the rms of the shower depth"),
    MetricSpec("width_rms", width_rms_error, 0.5, "|relative difference| of the rms of the lateral width"),
    MetricSpec(
        "cell_spectrum_distance",
        cell_spectrum_distance,
        0.5,
        "1-Wasserstein distance of the cell-energy spectra above the hit threshold, decades of GeV",
    ),
)
"""Every metric that :func:`compare_samples` and :func:`noise_floor` compute, in report order."""


@dataclass
class BinValues:
    """One metric's per-bin values and the sample sizes that produced them."""

    values: list[float] = field(default_factory=list)
    sizes: list[tuple[int, int]] = field(default_factory=list)


def compare_samples(gen: ShowerObservables, ref: ShowerObservables, matching: EnergyMatching) -> dict[str, BinValues]:
    """Every metric of ``METRICS`` in every energy bin of ``matching``.

    Returns
    -------
    dict of str to BinValues
        For each metric name, one value per bin (in ``matching.bins`` order) and its (n_gen, n_ref).
    """
    out = {spec.name: BinValues() for spec in METRICS}
    for energy_bin in matching.bins:
        gen_bin, ref_bin = gen.select(energy_bin.contains(gen.ep_gev)), ref.select(energy_bin.contains(ref.ep_gev))
        for spec in METRICS:
            out[spec.name].values.append(spec.compute(gen_bin, ref_bin))
            out[spec.name].sizes.append((len(gen_bin), len(ref_bin)))
    return out


def noise_floor(
    ref: ShowerObservables,
    matching: EnergyMatching,
    *,
    ref2: ShowerObservables | None = None,
    seed: int = 0,
    n_splits: int = 5,
) -> dict[str, BinValues]:
    """The metrics of ``METRICS`` between two samples of the reference distribution, per energy bin.

    Parameters
    ----------
    ref : ShowerObservables
        The reference sample.
    matching : EnergyMatching
        The bins of the actual comparison (so floor and value are computed at the same energies).
    ref2 : ShowerObservables, optional
        An independent second reference sample (e.g. another Geant4 seed). When given, the floor is
        ``ref`` versus ``ref2`` in each bin (NaN in bins where ``ref2`` has fewer than 2 showers).
    seed : int
        Seed of the random halves (used only without ``ref2``).
    n_splits : int
        Without ``ref2``: each bin's reference showers are split ``n_splits`` times into two random
        halves (N/2 and N - N/2) and the metric is averaged over the splits, which makes the floor less
        noisy than a single split.

    Returns
    -------
    dict of str to BinValues
        Raw floors (NOT rescaled) with the sizes (n_a, n_b) of the two reference samples; see
        :func:`summarise` for the rescaling to the comparison's sample sizes.
    """
    if n_splits < 1:
        raise ValueError(f"n_splits must be >= 1, received {n_splits}")
    rng = np.random.default_rng(seed)
    out = {spec.name: BinValues() for spec in METRICS}
    for energy_bin in matching.bins:
        ref_bin = ref.select(energy_bin.contains(ref.ep_gev))
        if ref2 is not None:
            ref2_bin = ref2.select(energy_bin.contains(ref2.ep_gev))
            pairs = [(ref_bin, ref2_bin)] if len(ref2_bin) >= 2 else []
        else:
            half = len(ref_bin) // 2
            pairs = []
            for _ in range(n_splits):
                order = rng.permutation(len(ref_bin))
                pairs.append((ref_bin.select(order[:half]), ref_bin.select(order[half:])))
        for spec in METRICS:
            values = [spec.compute(a, b) for a, b in pairs]
            defined = [v for v in values if np.isfinite(v)]
            out[spec.name].values.append(float(np.mean(defined)) if defined else float("nan"))
            out[spec.name].sizes.append((len(pairs[0][0]), len(pairs[0][1])) if pairs else (0, 0))
    return out


def _size_factor(sizes: tuple[int, int]) -> float:
    n_a, n_b = sizes
    return 1.0 / n_a + 1.0 / n_b if n_a > 0 and n_b > 0 else float("nan")


def _ratio(value: float, floor: float) -> float:
    if not np.isfinite(value) or not np.isfinite(floor) or floor <= 0:
        return float("nan")
    return value / floor


@dataclass(frozen=True)
class MetricSummary:
    """One metric over all bins: value, floor rescaled to the comparison's sizes, and their ratio."""

    name: str
    description: str
    value: float
    noise_floor: float
    ratio: float
    per_bin: tuple[dict[str, object], ...]

    def as_dict(self) -> dict[str, object]:
        """Plain dict for summary.json (NaN is written as null by the report)."""
        return {
            "description": self.description,
            "value": self.value,
            "noise_floor": self.noise_floor,
            "ratio": self.ratio,
            "per_bin": list(self.per_bin),
        }


def summarise(
    comparison: dict[str, BinValues], floor: dict[str, BinValues], matching: EnergyMatching
) -> list[MetricSummary]:
    """Join values and floors: rescale each bin's floor to the comparison's sample sizes, then average.

    For a metric with ``size_power`` p, a bin's floor is
    raw_floor * ((1/N_gen + 1/N_ref) / (1/n_a + 1/n_b)) ** p. The overall value and floor are the
    equal-weight means over the bins where they are defined, and ratio = value / floor.
    """
    summaries = []
    for spec in METRICS:
        values, floors = comparison[spec.name], floor[spec.name]
        per_bin: list[dict[str, object]] = []
        bin_values, bin_floors = [], []
        for i, energy_bin in enumerate(matching.bins):
            value = values.values[i]
            scale = (_size_factor(values.sizes[i]) / _size_factor(floors.sizes[i])) ** spec.size_power
            scaled_floor = floors.values[i] * scale
            per_bin.append(
                {
                    "bin": energy_bin.label,
                    "n_gen": values.sizes[i][0],
                    "n_ref": values.sizes[i][1],
                    "value": value,
                    "noise_floor": scaled_floor,
                    "noise_floor_raw": floors.values[i],
                    "noise_floor_sizes": list(floors.sizes[i]),
                    "ratio": _ratio(value, scaled_floor),
                }
            )
            if np.isfinite(value) and np.isfinite(scaled_floor):
                bin_values.append(value)
                bin_floors.append(scaled_floor)
        value = float(np.mean(bin_values)) if bin_values else float("nan")
        floor_value = float(np.mean(bin_floors)) if bin_floors else float("nan")
        summaries.append(
            MetricSummary(spec.name, spec.description, value, floor_value, _ratio(value, floor_value), tuple(per_bin))
        )
    return summaries
