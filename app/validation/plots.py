"""Validation plots: profiles, sampling fraction, cell-energy spectrum, hit counts and moments, as PNGs.

The only module of calogan that imports matplotlib. It never touches pyplot (so no global figure state
and no GUI backend): figures are :class:`matplotlib.figure.Figure` objects drawn by the Agg canvas and
written with :func:`save_plots`. Each ``plot_*`` function draws on an ``ax`` it is given and returns None;
samples come as a mapping ``{label: ShowerObservables}`` in legend order (e.g. ``{"GAN": ..., "Geant4": ...}``).
Means carry error bars of one standard error of the mean, so a difference can be read against the noise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Final

import matplotlib as mpl
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter, ScalarFormatter

from app.physics.detector import AXIS_ORDER, CELL_SIZE_MM, N_LAYERS, FloatArray, layer_back_depth_x0
from app.physics.observables import ShowerObservables
from app.validation.metrics import EnergyBin

__all__ = [
    "PLOT_FILES",
    "plot_cell_energy_spectrum",
    "plot_hit_count",
    "plot_longitudinal_profile",
    "plot_moments",
    "plot_sampling_fraction_distribution",
    "plot_sampling_fraction_vs_energy",
    "plot_transverse_profile",
    "save_plots",
]

Samples = Mapping[str, ShowerObservables]

_COLOURS: Final = ("tab:red", "black", "tab:blue", "tab:green")
"""First sample (the generator) red, the reference black, a second reference blue."""

_RC: Final = {
    "font.size": 12,
    "axes.titlesize": 13,
    "axes.labelsize": 12,
    "legend.fontsize": 11,
    "xtick.labelsize": 11,
    "ytick.labelsize": 11,
}

PLOT_FILES: Final = (
    "longitudinal_profile.png",
    "transverse_profiles.png",
    "sampling_fraction.png",
    "cell_energy_spectrum.png",
    "hit_count.png",
    "moments.png",
)
"""The PNGs that :func:`save_plots` writes."""


def _mean_and_sem(values: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Mean and standard error of the mean over axis 0 (SEM 0 for a single shower)."""
    mean = values.mean(axis=0)
    sem = values.std(axis=0, ddof=1) / np.sqrt(len(values)) if len(values) > 1 else np.zeros_like(mean)
    return mean, sem


def _draw_profile(
    ax: Axes, x: FloatArray, samples: Samples, profiles: Callable[[ShowerObservables], FloatArray]
) -> None:
    for (label, obs), colour in zip(samples.items(), _COLOURS, strict=False):
        if len(obs) == 0:
            continue
        mean, sem = _mean_and_sem(profiles(obs))
        ax.errorbar(x, mean, yerr=sem, drawstyle="steps-mid", color=colour, label=f"{label} (N={len(obs)})", lw=1.5)


def _finish(ax: Axes, title: str, xlabel: str, ylabel: str, *, log: bool) -> None:
    if log:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()


def plot_longitudinal_profile(ax: Axes, samples: Samples, *, log: bool = False, subtitle: str = "") -> None:
    """Mean energy per layer (GeV) versus layer, with the depth in X0 on the top axis."""
    _draw_profile(ax, np.arange(N_LAYERS, dtype=np.float64), samples, lambda obs: obs.projections_gev[:, 2])
    depth_x0 = layer_back_depth_x0()
    layers = np.arange(N_LAYERS, dtype=np.float64)
    top = ax.secondary_xaxis(
        "top", functions=(lambda layer: np.interp(layer, layers, depth_x0), lambda x0: np.interp(x0, depth_x0, layers))
    )
    top.set_xticks([0, 5, 10, 15, 20])
    top.set_xlabel("depth of the sensor [X0]")
    _finish(ax, f"Mean longitudinal profile{subtitle}", "layer", "mean energy per layer [GeV]", log=log)


def plot_transverse_profile(
    ax: Axes, samples: Samples, *, axis: str = "x", log: bool = False, subtitle: str = ""
) -> None:
    """Mean energy per cell column (GeV) versus transverse position (mm) along ``axis`` 'x' or 'y'."""
    if axis not in ("x", "y"):
        raise ValueError(f"axis must be 'x' or 'y', received {axis!r}")
    i = AXIS_ORDER.index(axis)
    n_cells = next(iter(samples.values())).projections_gev.shape[-1]
    position_mm = (np.arange(n_cells) - (n_cells - 1) / 2.0) * CELL_SIZE_MM  # 0 mm = centre of cell 12
    _draw_profile(ax, position_mm, samples, lambda obs: obs.projections_gev[:, i])
    _finish(
        ax, f"Mean transverse profile along {axis}{subtitle}", f"{axis} [mm]", "mean energy per cell [GeV]", log=log
    )


def plot_sampling_fraction_vs_energy(
    ax: Axes, samples: Samples, bins: Sequence[EnergyBin], *, subtitle: str = ""
) -> None:
    """Mean S/Ep (with its standard error) in each energy bin, at the bin's mean Ep (GeV)."""
    offsets = np.linspace(-0.01, 0.01, len(samples)) if len(samples) > 1 else np.zeros(1)
    for (label, obs), colour, offset in zip(samples.items(), _COLOURS, offsets, strict=False):
        points = []
        for energy_bin in bins:
            inside = obs.select(energy_bin.contains(obs.ep_gev))
            if len(inside) >= 2:
                mean, sem = _mean_and_sem(inside.sampling_fraction)
                points.append((float(inside.ep_gev.mean()), float(mean), float(sem)))
        if points:
            ep, mean, sem = (np.array(column) for column in zip(*points, strict=True))
            # a small multiplicative offset keeps overlapping error bars apart
            ax.errorbar(ep * (1 + offset), mean, yerr=sem, fmt="o", color=colour, label=label, capsize=3)
    if len(bins) > 1:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())  # 50, 100, 200 rather than 5 x 10^1
        ax.xaxis.set_minor_formatter(NullFormatter())
    _finish(ax, f"Sampling fraction vs primary energy{subtitle}", "primary energy Ep [GeV]", "mean S / Ep", log=False)


def _common_edges(arrays: Sequence[FloatArray], *, integer: bool = False) -> FloatArray:
    """Shared histogram edges over the 0.5-99.5 % range of all samples (a few outliers do not squash the rest).

    About 1.5 sqrt(N) bins for the smallest sample, between 10 and 50, so that a 300-shower sample is not noise.
    """
    finite = [a[np.isfinite(a)] for a in arrays]
    values = np.concatenate(finite)
    smallest = min((len(a) for a in finite if len(a)), default=0)
    n_bins = int(np.clip(1.5 * np.sqrt(smallest), 10, 50))
    if values.size == 0:
        return np.linspace(0.0, 1.0, n_bins + 1)
    low, high = np.percentile(values, [0.5, 99.5])
    if integer:
        step = max(1.0, np.ceil((high - low + 1) / n_bins))
        return np.arange(np.floor(low) - 0.5, high + step + 0.5, step)
    if high <= low:
        low, high = low - 0.5, high + 0.5
    return np.linspace(low, high, n_bins + 1)


def _draw_histograms(
    ax: Axes, samples: Samples, values: Callable[[ShowerObservables], FloatArray], edges: FloatArray
) -> None:
    for (label, obs), colour in zip(samples.items(), _COLOURS, strict=False):
        data = values(obs)
        data = data[np.isfinite(data)]
        if data.size:
            ax.hist(
                data,
                bins=edges,
                weights=np.full(data.size, 1.0 / data.size),
                histtype="step",
                lw=1.5,
                color=colour,
                label=f"{label} (N={data.size})",
            )


def plot_sampling_fraction_distribution(ax: Axes, samples: Samples, *, subtitle: str = "") -> None:
    """Distribution of S/Ep, fraction of showers per bin."""
    edges = _common_edges([obs.sampling_fraction for obs in samples.values()])
    _draw_histograms(ax, samples, lambda obs: obs.sampling_fraction, edges)
    _finish(ax, f"Sampling fraction{subtitle}", "S / Ep", "fraction of showers", log=False)


def plot_cell_energy_spectrum(ax: Axes, samples: Samples, *, subtitle: str = "") -> None:
    """Non-zero cells per shower in log-spaced cell-energy bins, log-log, with the hit threshold marked."""
    threshold_gev = None
    for (label, obs), colour in zip(samples.items(), _COLOURS, strict=False):
        if len(obs) == 0:
            continue
        edges = obs.spectrum_edges_gev
        counts = obs.spectrum_counts.mean(axis=0)
        ax.stairs(np.where(counts > 0, counts, np.nan), edges, color=colour, lw=1.5, label=f"{label} (N={len(obs)})")
        threshold_gev = obs.threshold_gev
    ax.set_xscale("log")
    if threshold_gev:
        ax.axvline(threshold_gev, color="grey", ls="--", lw=1, label=f"hit threshold {threshold_gev:g} GeV")
    _finish(ax, f"Cell-energy spectrum{subtitle}", "cell energy [GeV]", "cells per shower per bin", log=True)


def plot_hit_count(ax: Axes, samples: Samples, *, subtitle: str = "") -> None:
    """Distribution of the number of cells above the hit threshold."""
    edges = _common_edges([obs.hit_count.astype(np.float64) for obs in samples.values()], integer=True)
    _draw_histograms(ax, samples, lambda obs: obs.hit_count.astype(np.float64), edges)
    threshold = next(iter(samples.values())).threshold_gev
    _finish(ax, f"Hit count{subtitle}", f"cells above {threshold:g} GeV", "fraction of showers", log=False)


def plot_moments(axes: Sequence[Axes], samples: Samples, *, subtitle: str = "") -> None:
    """Distributions of the first (barycentre) and second (variance) moments along x, y and layer.

    ``axes`` holds six axes: first moments along x, y, layer, then second moments along x, y, layer.
    """
    if len(axes) != 6:
        raise ValueError(f"plot_moments needs 6 axes, received {len(axes)}")
    for order, name, unit in ((0, "first moment", "[cell]"), (1, "second moment", "[cell$^2$]")):
        for i, axis in enumerate(AXIS_ORDER):
            ax = axes[3 * order + i]
            unit_here = unit.replace("cell", "layer") if axis == "layer" else unit

            def values(obs: ShowerObservables, order: int = order, i: int = i) -> FloatArray:
                return (obs.first_moment if order == 0 else obs.second_moment)[:, i]

            edges = _common_edges([values(obs) for obs in samples.values()])
            _draw_histograms(ax, samples, values, edges)
            _finish(
                ax, f"{name.capitalize()} along {axis}", f"{name} {axis} {unit_here}", "fraction of showers", log=False
            )
            ax.legend(fontsize=9)
    if subtitle:
        axes[0].get_figure().suptitle(f"Shower moments{subtitle}", y=0.995)


def _save(path: Path, n_rows: int, n_cols: int, draw: Callable[[list[Axes]], None], *, top_in: float = 0.6) -> Path:
    """Draw a grid of axes and write it as PNG; ``top_in`` is the top margin in inches (titles, top axes)."""
    width_in, height_in = 6.4 * n_cols, 4.8 * n_rows
    with mpl.rc_context(_RC):
        figure = Figure(figsize=(width_in, height_in))
        FigureCanvasAgg(figure)  # draw with Agg, whatever backend pyplot may have chosen elsewhere
        # Fixed margins in inches instead of a layout engine: constrained layout measured every tick label
        # again and doubled the drawing time; these plots have the same labels every time.
        figure.subplots_adjust(
            left=1.05 / width_in,
            right=1 - 0.25 / width_in,
            bottom=0.65 / height_in,
            top=1 - top_in / height_in,
            wspace=0.28,
            hspace=0.45,
        )
        axes = list(np.atleast_1d(figure.subplots(n_rows, n_cols)).ravel())
        draw(axes)
        figure.savefig(path, dpi=100)
    return path


def save_plots(out_dir: str | Path, samples: Samples, bins: Sequence[EnergyBin], *, subtitle: str = "") -> list[Path]:
    """Write every validation PNG (``PLOT_FILES``) into ``out_dir`` and return their paths.

    Parameters
    ----------
    out_dir : str or Path
        An existing folder.
    samples : mapping of str to ShowerObservables
        The samples in legend order, e.g. ``{"GAN": gen, "Geant4": ref}``.
    bins : sequence of EnergyBin
        Energy bins for the sampling-fraction-versus-Ep plot.
    subtitle : str
        Appended to every title, e.g. ``" (Ep 100 GeV)"``.
    """
    out = Path(out_dir)

    def longitudinal(ax: list[Axes]) -> None:
        plot_longitudinal_profile(ax[0], samples, subtitle=subtitle)
        plot_longitudinal_profile(ax[1], samples, log=True, subtitle=subtitle)

    def transverse(ax: list[Axes]) -> None:
        for row, axis in enumerate(("x", "y")):
            plot_transverse_profile(ax[2 * row], samples, axis=axis, subtitle=subtitle)
            plot_transverse_profile(ax[2 * row + 1], samples, axis=axis, log=True, subtitle=subtitle)

    def sampling(ax: list[Axes]) -> None:
        plot_sampling_fraction_vs_energy(ax[0], samples, bins, subtitle=subtitle)
        plot_sampling_fraction_distribution(ax[1], samples, subtitle=subtitle)

    layout: tuple[tuple[str, int, int, Callable[[list[Axes]], None]], ...] = (
        (PLOT_FILES[0], 1, 2, longitudinal),  # drawn below with a taller top margin for the X0 axis
        (PLOT_FILES[1], 2, 2, transverse),
        (PLOT_FILES[2], 1, 2, sampling),
        (PLOT_FILES[3], 1, 1, lambda ax: plot_cell_energy_spectrum(ax[0], samples, subtitle=subtitle)),
        (PLOT_FILES[4], 1, 1, lambda ax: plot_hit_count(ax[0], samples, subtitle=subtitle)),
        (PLOT_FILES[5], 2, 3, lambda ax: plot_moments(ax, samples, subtitle=subtitle)),
    )
    return [
        _save(out / name, rows, cols, draw, top_in=1.0 if name == PLOT_FILES[0] else 0.6)
        for name, rows, cols, draw in layout
    ]
