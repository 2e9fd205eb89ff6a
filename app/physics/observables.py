"""Per-shower observables: deposits, projections, moments, hit counts and the cell-energy spectrum.

Every function takes showers as ``cells_gev`` of shape ``(N, 25, 25, 25)``, visible GeV indexed
``[x, y, layer]`` (see :mod:`app.physics.detector`), and returns one value (or one profile) per shower.
The definitions follow the 3DGAN analysis conventions (``shared/research/conv2d_gan_spec.md`` 5.1):
projections P_a(k) sum the other two axes; moments along an axis use the bin index k = 0..24 as the
coordinate and the total deposit S as the denominator.

What to use when:

- one quantity on raw showers: :func:`total_deposit`, :func:`sampling_fraction`, :func:`projections`,
  :func:`moments`, :func:`hit_count`, :func:`max_layer`, :func:`cell_energy_spectrum`;
- everything at once, for validation (chunked, so temporaries stay small): :func:`observe`, which
  returns a :class:`ShowerObservables` that can be sliced by energy bin and turned into the classifier
  features (:meth:`ShowerObservables.features`, :func:`high_level_features`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from app.physics.detector import AXIS_ORDER, N_LAYERS, SHOWER_SHAPE, SILICON, SILICON_MM, FloatArray

__all__ = [
    "CORE_HALF_WIDTH_CELLS",
    "DEFAULT_HIT_THRESHOLD_GEV",
    "DEFAULT_SPECTRUM_EDGES_GEV",
    "FEATURE_NAMES",
    "FRONT_LAYERS",
    "MIP_SILICON_GEV",
    "ShowerObservables",
    "cell_energy_histogram",
    "cell_energy_spectrum",
    "high_level_features",
    "hit_count",
    "log_bin_edges",
    "max_layer",
    "mean_profile_max_layer",
    "moments",
    "observe",
    "parabolic_peak",
    "projections",
    "sampling_fraction",
    "total_deposit",
]

Axis = Literal["x", "y", "layer"]
IntArray = npt.NDArray[np.integer]

MIP_SILICON_GEV: Final = SILICON.dedx_mip_mev_cm2_g * SILICON.density_g_cm3 * (SILICON_MM / 10.0) * 1e-3
"""Mean energy a minimum-ionising particle leaves in one 0.5 mm silicon sensor, GeV (about 0.19 MeV)."""

DEFAULT_HIT_THRESHOLD_GEV: Final = 1e-4
"""Cell energy above which a cell counts as hit, GeV; about half a MIP (see :func:`hit_count`)."""

FRONT_LAYERS: Final = 5
"""Layers summed for the front (and back) energy fraction: the first five are about 3.5 X0 deep."""

CORE_HALF_WIDTH_CELLS: Final = 1
"""The core is the central (2 * 1 + 1) x (2 * 1 + 1) = 3 x 3 cells around the beam axis (cell 12)."""


def log_bin_edges(low_gev: float, high_gev: float, bins_per_decade: int) -> FloatArray:
    """Logarithmically spaced bin edges from ``low_gev`` to ``high_gev``, GeV; shape (n + 1,)."""
    if not 0.0 < low_gev < high_gev or bins_per_decade < 1:
        raise ValueError(
            f"need 0 < low_gev < high_gev and bins_per_decade >= 1, received {low_gev}, {high_gev}, {bins_per_decade}"
        )
    n_bins = max(1, round(np.log10(high_gev / low_gev) * bins_per_decade))
    return np.logspace(np.log10(low_gev), np.log10(high_gev), n_bins + 1)


DEFAULT_SPECTRUM_EDGES_GEV: Final = log_bin_edges(1e-8, 10.0, 8)
"""72 log bins from 1e-8 to 10 GeV: Geant4 cells reach down to 1e-10 GeV and up to about 1 GeV at 500 GeV."""


def _check_cells(cells_gev: FloatArray) -> FloatArray:
    cells = np.asarray(cells_gev)
    if cells.ndim != 4 or cells.shape[1:] != SHOWER_SHAPE:
        raise ValueError(f"cells_gev must have shape (N, {', '.join(map(str, SHOWER_SHAPE))}), received {cells.shape}")
    return cells


def _check_ep(ep_gev: npt.ArrayLike, n_showers: int) -> FloatArray:
    ep = np.asarray(ep_gev, dtype=np.float64)
    if ep.shape != (n_showers,):
        raise ValueError(f"ep_gev must have shape ({n_showers},) to match the showers, received {ep.shape}")
    if not np.all(np.isfinite(ep)) or np.any(ep <= 0):
        raise ValueError("ep_gev must be finite and > 0 GeV")
    return ep


def total_deposit(cells_gev: FloatArray) -> FloatArray:
    """Visible energy of each shower, summed over all 25 x 25 x 25 cells.

    Parameters
    ----------
    cells_gev : ndarray, shape (N, 25, 25, 25)
        Visible energy per cell, GeV, indexed [x, y, layer].

    Returns
    -------
    ndarray, shape (N,), float64
        Total deposit S, GeV.
    """
    cells = _check_cells(cells_gev)
    return cells.reshape(len(cells), -1).sum(axis=1, dtype=np.float64)


def sampling_fraction(cells_gev: FloatArray, ep_gev: npt.ArrayLike) -> FloatArray:
    """Visible energy over primary energy, one dimensionless value per shower.

    Parameters
    ----------
    cells_gev : ndarray, shape (N, 25, 25, 25)
        Visible energy per cell, GeV, indexed [x, y, layer].
    ep_gev : array-like, shape (N,)
        Primary electron energy, GeV (> 0).

    Returns
    -------
    ndarray, shape (N,), float64
        S / Ep; about 0.025 for the project's Geant4 samples at 50 GeV.
    """
    cells = _check_cells(cells_gev)
    return total_deposit(cells) / _check_ep(ep_gev, len(cells))


def projections(cells_gev: FloatArray) -> FloatArray:
    """Energy profiles along x, y and layer (the other two axes summed).

    Parameters
    ----------
    cells_gev : ndarray, shape (N, 25, 25, 25)
        Visible energy per cell, GeV, indexed [x, y, layer].

    Returns
    -------
    ndarray, shape (N, 3, 25), float64
        ``[:, 0]`` = P_x, ``[:, 1]`` = P_y (transverse profiles), ``[:, 2]`` = P_layer (longitudinal
        profile), GeV per cell or layer, in the order of ``detector.AXIS_ORDER``.
    """
    cells = _check_cells(cells_gev)
    return np.stack(
        [
            cells.sum(axis=(2, 3), dtype=np.float64),
            cells.sum(axis=(1, 3), dtype=np.float64),
            cells.sum(axis=(1, 2), dtype=np.float64),
        ],
        axis=1,
    )


def _moments_from_projections(proj_gev: FloatArray) -> tuple[FloatArray, FloatArray]:
    """First and second moments (N, 3) from projections (N, 3, 25) GeV; NaN for empty showers."""
    index = np.arange(proj_gev.shape[-1], dtype=np.float64)
    total = proj_gev.sum(axis=-1)  # the same S for the three axes
    # An empty shower has no barycentre: 0/0 gives NaN on purpose (not an invented 0 or 12), and the
    # metrics skip NaN showers explicitly; errstate only silences the expected warning.
    with np.errstate(invalid="ignore", divide="ignore"):
        first = (proj_gev @ index) / total
        second = (proj_gev * (index - first[..., None]) ** 2).sum(axis=-1) / total
    return first, second


def moments(cells_gev: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Barycentre and spread of each shower along x, y and layer.

    Parameters
    ----------
    cells_gev : ndarray, shape (N, 25, 25, 25)
        Visible energy per cell, GeV, indexed [x, y, layer].

    Returns
    -------
    first : ndarray, shape (N, 3), float64
        mu_a = sum_k k P_a(k) / S, in cell (x, y) or layer index units (0..24), axes in AXIS_ORDER.
    second : ndarray, shape (N, 3), float64
        sum_k (k - mu_a)^2 P_a(k) / S, the variance about the barycentre, index units squared.

    Notes
    -----
    S is the total deposit, the 3DGAN convention. Empty showers (S = 0) give NaN in both.
    """
    return _moments_from_projections(projections(cells_gev))


def hit_count(cells_gev: FloatArray, threshold_gev: float = DEFAULT_HIT_THRESHOLD_GEV) -> IntArray:
    """Number of cells above a threshold in each shower.

    Parameters
    ----------
    cells_gev : ndarray, shape (N, 25, 25, 25)
        Visible energy per cell, GeV, indexed [x, y, layer].
    threshold_gev : float
        A cell counts when its energy is strictly above this, GeV (>= 0). The default 1e-4 GeV is about
        half of a minimum-ionising particle's mean loss in the 0.5 mm silicon sensor (1.66 MeV cm^2/g x
        2.33 g/cm^3 x 0.05 cm = 0.19 MeV, see ``MIP_SILICON_GEV``), a usual noise cut for silicon pads;
        it also ignores the tiny positive values a ReLU generator leaves everywhere.

    Returns
    -------
    ndarray, shape (N,), int64
        Hit cells per shower (Geant4 at 50 GeV: about 450).
    """
    cells = _check_cells(cells_gev)
    if not np.isfinite(threshold_gev) or threshold_gev < 0:
        raise ValueError(f"threshold_gev must be finite and >= 0, received {threshold_gev}")
    return np.count_nonzero((cells > threshold_gev).reshape(len(cells), -1), axis=1).astype(np.int64)


def cell_energy_histogram(cells_gev: FloatArray, edges_gev: FloatArray = DEFAULT_SPECTRUM_EDGES_GEV) -> IntArray:
    """Histogram of the non-zero cell energies of each shower.

    Parameters
    ----------
    cells_gev : ndarray, shape (N, 25, 25, 25)
        Visible energy per cell, GeV, indexed [x, y, layer].
    edges_gev : ndarray, shape (B + 1,)
        Increasing bin edges, GeV, usually from :func:`log_bin_edges`. Cells outside the edges and
        empty cells (<= 0) are not counted.

    Returns
    -------
    ndarray, shape (N, B), int64
        Number of cells per bin, per shower.
    """
    cells = _check_cells(cells_gev)
    edges = np.asarray(edges_gev, dtype=np.float64)
    if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError(f"edges_gev must be 1-D and strictly increasing, received shape {edges.shape}")
    n_bins = len(edges) - 1
    shower, *_ = np.nonzero(cells > 0)
    values = cells[cells > 0]
    bin_index = np.searchsorted(edges, values, side="right") - 1
    # The last edge is inclusive, as in np.histogram.
    bin_index[values == edges[-1]] = n_bins - 1
    inside = (bin_index >= 0) & (bin_index < n_bins)
    flat = shower[inside] * n_bins + bin_index[inside]
    return np.bincount(flat, minlength=len(cells) * n_bins).reshape(len(cells), n_bins).astype(np.int64)


def cell_energy_spectrum(
    cells_gev: FloatArray, edges_gev: FloatArray = DEFAULT_SPECTRUM_EDGES_GEV
) -> tuple[FloatArray, FloatArray]:
    """Cell-energy spectrum of a sample: non-zero cells per shower in log-spaced energy bins.

    Parameters
    ----------
    cells_gev : ndarray, shape (N, 25, 25, 25)
        Visible energy per cell, GeV, indexed [x, y, layer].
    edges_gev : ndarray, shape (B + 1,)
        Bin edges, GeV (default: 8 per decade from 1e-8 to 10 GeV).

    Returns
    -------
    cells_per_shower : ndarray, shape (B,), float64
        Mean number of cells per shower in each bin (so samples of different N compare directly).
    edges_gev : ndarray, shape (B + 1,)
        The bin edges, GeV.
    """
    histogram = cell_energy_histogram(cells_gev, edges_gev)
    return histogram.mean(axis=0) if len(histogram) else np.zeros(histogram.shape[1]), np.asarray(edges_gev)


def max_layer(cells_gev: FloatArray) -> IntArray:
    """Layer holding the maximum of each shower's longitudinal profile.

    Returns
    -------
    ndarray, shape (N,), int64
        Layer index 0..24; -1 for an empty shower (no maximum).
    """
    return _max_layer_from_profile(projections(cells_gev)[:, 2])


def _max_layer_from_profile(layer_profile_gev: FloatArray) -> IntArray:
    peak = np.argmax(layer_profile_gev, axis=1).astype(np.int64)
    peak[layer_profile_gev.max(axis=1, initial=0.0) <= 0] = -1
    return peak


def parabolic_peak(profile: npt.ArrayLike) -> float:
    """Position of a profile's maximum, refined by a parabola through the highest bin and its neighbours.

    Parameters
    ----------
    profile : array-like, shape (K,)
        Values at bin indices 0..K-1 (e.g. the mean longitudinal profile, GeV per layer).

    Returns
    -------
    float
        Peak position in index units. The vertex of the parabola through (k-1, k, k+1) is
        k + (y[k-1] - y[k+1]) / (2 (y[k-1] - 2 y[k] + y[k+1])); at the first or last bin, or when the
        three points are collinear, it is the bin index k itself. NaN for an all-zero or empty profile.
    """
    y = np.asarray(profile, dtype=np.float64)
    if y.ndim != 1 or y.size == 0 or not np.any(y > 0):
        return float("nan")
    k = int(np.argmax(y))
    if k == 0 or k == len(y) - 1:
        return float(k)
    curvature = y[k - 1] - 2.0 * y[k] + y[k + 1]
    if curvature >= 0:  # flat top: no parabola opens downwards
        return float(k)
    return float(k + 0.5 * (y[k - 1] - y[k + 1]) / curvature)


def mean_profile_max_layer(cells_gev: FloatArray) -> float:
    """Depth of the maximum of the sample's MEAN longitudinal profile, in layers (a float).

    Parameters
    ----------
    cells_gev : ndarray, shape (N, 25, 25, 25)
        Visible energy per cell, GeV, indexed [x, y, layer].

    Returns
    -------
    float
        Layer index of the maximum of the mean profile, refined by :func:`parabolic_peak` (Geant4 at
        50 GeV: about 10.6). It is a layer index, not a depth in X0: layers 17-24 are twice as thick.
    """
    return parabolic_peak(projections(cells_gev)[:, 2].mean(axis=0))


# Classifier features: dimensionless or index-unit shape variables, so that HistGradientBoosting can
# compare showers of any energy; Ep itself is added (or not) by the classifier, where the choice is made.
FEATURE_NAMES: Final = (
    "sampling_fraction",
    *(f"first_moment_{axis}" for axis in AXIS_ORDER),
    *(f"second_moment_{axis}" for axis in AXIS_ORDER),
    "hit_count",
    "max_layer",
    "front_fraction",
    "back_fraction",
    "core_fraction",
    *(f"layer_fraction_{layer:02d}" for layer in range(N_LAYERS)),
)


@dataclass(frozen=True)
class ShowerObservables:
    """Everything validation needs from a sample, one row per shower; the cells themselves are dropped.

    Attributes
    ----------
    ep_gev : ndarray, shape (N,)
        Primary energy, GeV.
    total_gev : ndarray, shape (N,)
        Total visible deposit S, GeV.
    projections_gev : ndarray, shape (N, 3, 25)
        Profiles along x, y, layer (AXIS_ORDER), GeV.
    first_moment, second_moment : ndarray, shape (N, 3)
        Barycentre (index units) and variance about it (index units squared); NaN for empty showers.
    hit_count : ndarray, shape (N,)
        Cells above ``threshold_gev``.
    max_layer : ndarray, shape (N,)
        Layer of the longitudinal maximum; -1 for empty showers.
    core_fraction : ndarray, shape (N,)
        Share of S in the central 3 x 3 cells (all layers); NaN for empty showers.
    spectrum_counts : ndarray, shape (N, B)
        Non-zero cells per bin of ``spectrum_edges_gev``.
    spectrum_edges_gev : ndarray, shape (B + 1,)
        Cell-energy bin edges, GeV (shared by all showers).
    threshold_gev : float
        Hit threshold used, GeV.
    """

    ep_gev: FloatArray
    total_gev: FloatArray
    projections_gev: FloatArray
    first_moment: FloatArray
    second_moment: FloatArray
    hit_count: IntArray
    max_layer: IntArray
    core_fraction: FloatArray
    spectrum_counts: IntArray
    spectrum_edges_gev: FloatArray
    threshold_gev: float

    def __len__(self) -> int:
        return len(self.ep_gev)

    @property
    def sampling_fraction(self) -> FloatArray:
        """S / Ep per shower, shape (N,)."""
        return self.total_gev / self.ep_gev

    @property
    def normalised_projections(self) -> FloatArray:
        """Each shower's projections divided by its own S, shape (N, 3, 25); NaN rows for empty showers."""
        with np.errstate(invalid="ignore", divide="ignore"):  # empty shower: 0/0 = NaN, skipped later
            return self.projections_gev / self.total_gev[:, None, None]

    def _layer_fraction(self, layers: slice) -> FloatArray:
        with np.errstate(invalid="ignore", divide="ignore"):  # empty shower: 0/0 = NaN
            return self.projections_gev[:, 2, layers].sum(axis=1) / self.total_gev

    @property
    def front_fraction(self) -> FloatArray:
        """Share of S in the first ``FRONT_LAYERS`` layers (about 3.5 X0), shape (N,)."""
        return self._layer_fraction(slice(0, FRONT_LAYERS))

    @property
    def back_fraction(self) -> FloatArray:
        """Share of S in the last ``FRONT_LAYERS`` layers (leakage side), shape (N,)."""
        return self._layer_fraction(slice(N_LAYERS - FRONT_LAYERS, N_LAYERS))

    def select(self, which: npt.ArrayLike | slice) -> ShowerObservables:
        """The showers picked by a boolean mask, an index array or a slice, as a new ShowerObservables."""
        index = which if isinstance(which, slice) else np.asarray(which)
        picked = {
            f.name: getattr(self, f.name)[index]
            for f in fields(self)
            if f.name not in ("spectrum_edges_gev", "threshold_gev")
        }
        return ShowerObservables(**picked, spectrum_edges_gev=self.spectrum_edges_gev, threshold_gev=self.threshold_gev)

    def mean_profile_max_layer(self) -> float:
        """Layer of the maximum of the mean longitudinal profile (parabolic interpolation), a float."""
        return parabolic_peak(self.projections_gev[:, 2].mean(axis=0)) if len(self) else float("nan")

    def features(self) -> dict[str, FloatArray]:
        """High-level features per shower, keyed by ``FEATURE_NAMES``, each shape (N,) float64.

        Sampling fraction, the six moments, hit count, layer of the maximum, energy fractions in the
        first and last five layers, in the 3 x 3 core and in each of the 25 layers. NaN marks undefined
        values (empty showers).
        """
        columns: dict[str, FloatArray] = {"sampling_fraction": self.sampling_fraction}
        for i, axis in enumerate(AXIS_ORDER):
            columns[f"first_moment_{axis}"] = self.first_moment[:, i]
        for i, axis in enumerate(AXIS_ORDER):
            columns[f"second_moment_{axis}"] = self.second_moment[:, i]
        columns["hit_count"] = self.hit_count.astype(np.float64)
        columns["max_layer"] = np.where(self.max_layer >= 0, self.max_layer, np.nan)
        columns["front_fraction"] = self.front_fraction
        columns["back_fraction"] = self.back_fraction
        columns["core_fraction"] = self.core_fraction
        for layer, fraction in enumerate(self.normalised_projections[:, 2].T):
            columns[f"layer_fraction_{layer:02d}"] = fraction
        return {name: np.asarray(columns[name], dtype=np.float64) for name in FEATURE_NAMES}


def observe(
    cells_gev: FloatArray,
    ep_gev: npt.ArrayLike,
    *,
    threshold_gev: float = DEFAULT_HIT_THRESHOLD_GEV,
    spectrum_edges_gev: FloatArray = DEFAULT_SPECTRUM_EDGES_GEV,
    chunk_size: int = 512,
) -> ShowerObservables:
    """Compute every per-shower observable of a sample in one pass, chunk by chunk.

    Parameters
    ----------
    cells_gev : ndarray, shape (N, 25, 25, 25)
        Visible energy per cell, GeV, indexed [x, y, layer].
    ep_gev : array-like, shape (N,)
        Primary energy, GeV (> 0).
    threshold_gev : float
        Hit threshold, GeV (see :func:`hit_count`).
    spectrum_edges_gev : ndarray, shape (B + 1,)
        Cell-energy bin edges, GeV.
    chunk_size : int
        Showers processed at a time; bounds the temporaries (about 8 MB of booleans per 512 showers).

    Returns
    -------
    ShowerObservables
        N rows; the cells are not kept.
    """
    cells = _check_cells(cells_gev)
    ep = _check_ep(ep_gev, len(cells))
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, received {chunk_size}")
    core = slice(SHOWER_SHAPE[0] // 2 - CORE_HALF_WIDTH_CELLS, SHOWER_SHAPE[0] // 2 + CORE_HALF_WIDTH_CELLS + 1)
    parts: dict[str, list[np.ndarray]] = {"proj": [], "hits": [], "core": [], "spectrum": []}
    for start in range(0, max(len(cells), 1), chunk_size):
        chunk = cells[start : start + chunk_size]
        parts["proj"].append(projections(chunk))
        parts["hits"].append(hit_count(chunk, threshold_gev))
        parts["core"].append(chunk[:, core, core, :].reshape(len(chunk), -1).sum(axis=1, dtype=np.float64))
        parts["spectrum"].append(cell_energy_histogram(chunk, spectrum_edges_gev))
    proj = np.concatenate(parts["proj"])
    total = proj[:, 2].sum(axis=1)
    first, second = _moments_from_projections(proj)
    with np.errstate(invalid="ignore", divide="ignore"):  # empty shower: 0/0 = NaN
        core_fraction = np.concatenate(parts["core"]) / total
    return ShowerObservables(
        ep_gev=ep,
        total_gev=total,
        projections_gev=proj,
        first_moment=first,
        second_moment=second,
        hit_count=np.concatenate(parts["hits"]),
        max_layer=_max_layer_from_profile(proj[:, 2]),
        core_fraction=core_fraction,
        spectrum_counts=np.concatenate(parts["spectrum"]),
        spectrum_edges_gev=np.asarray(spectrum_edges_gev, dtype=np.float64),
        threshold_gev=float(threshold_gev),
    )


def high_level_features(
    cells_gev: FloatArray, ep_gev: npt.ArrayLike, *, threshold_gev: float = DEFAULT_HIT_THRESHOLD_GEV
) -> dict[str, FloatArray]:
    """High-level features per shower for the classifier test, keyed by ``FEATURE_NAMES``.

    Parameters
    ----------
    cells_gev : ndarray, shape (N, 25, 25, 25)
        Visible energy per cell, GeV, indexed [x, y, layer].
    ep_gev : array-like, shape (N,)
        Primary energy, GeV.
    threshold_gev : float
        Hit threshold, GeV.

    Returns
    -------
    dict of str to ndarray, shape (N,) each
        See :meth:`ShowerObservables.features`.
    """
    return observe(cells_gev, ep_gev, threshold_gev=threshold_gev).features()
