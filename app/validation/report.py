"""The validation report: read two shower files, compute every metric with its noise floor, write PNGs
and ``summary.json``.

:func:`validate_samples` does the arithmetic on in-memory observables (no files), :func:`write_report`
reads the files, calls it, draws the plots and writes the JSON. What ``summary.json`` holds:

- ``samples``: file, label, N, unit note and Ep range of the generated, reference (and second reference)
  samples;
- ``energy_matching``: how energies were matched (mode, bins with their N, skipped bins, a sentence);
- ``metrics``: for each metric ``value``, ``noise_floor``, ``ratio`` (= value / floor; ~1 means
  statistically indistinguishable) and ``per_bin`` details; ``classifier_auc`` has the AUC, its
  uncertainty, the floor AUC, a ratio of excesses over 0.5 and ``single_feature_auc`` (the same test on
  one feature at a time, most separating first);
- ``noise_floor``: how the floor was obtained and how it is rescaled to the comparison's sample sizes;
- ``layer_fractions_per_bin``: mean share of S in each layer, generated and reference, and their ratio;
- ``sampling_fraction_per_bin``, ``observables`` (a few pooled numbers per sample), ``units``, ``plots``,
  ``threshold_gev``, ``seed``, ``calogan_version``, ``created_utc``.

NaN and infinite numbers are written as ``null`` (JSON has no NaN).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from app import __version__
from app.errors import InvalidRequest
from app.physics.io import read_showers
from app.physics.observables import DEFAULT_HIT_THRESHOLD_GEV, ShowerObservables, observe
from app.validation.classifier import CLASSIFIER_FEATURES, MATCH_CELL_REL_WIDTH, samples_auc, single_feature_aucs
from app.validation.metrics import (
    DEFAULT_BIN_EDGES_GEV,
    METRICS,
    EnergyMatching,
    compare_samples,
    fixed_energy,
    match_energies,
    mean_normalised_projections,
    noise_floor,
    sampling_fraction_comparison,
    summarise,
)
from app.validation.plots import save_plots

__all__ = ["SUMMARY_FILE", "ValidationReport", "load_observables", "validate_samples", "write_report"]

logger = logging.getLogger(__name__)

SUMMARY_FILE: Final = "summary.json"

UNITS: Final = {
    "cells": "visible energy deposited in silicon, GeV",
    "ep": "primary electron energy, GeV",
    "sampling_fraction": "S / Ep, dimensionless (S = sum of all 25x25x25 cells)",
    "moments": "first: cell (x, y) or layer index 0..24; second: index units squared",
    "mse_shape": "dimensionless (projections normalised to each shower's S)",
    "relative errors": "dimensionless fractions (0.01 = 1 %)",
    "threshold_gev": "GeV",
}


@dataclass(frozen=True)
class LoadedSample:
    """A file's observables with what the summary says about it."""

    label: str
    path: Path
    observables: ShowerObservables
    unit_note: str

    def describe(self) -> dict[str, Any]:
        """The sample's entry under ``samples`` in summary.json."""
        ep = self.observables.ep_gev
        return {
            "label": self.label,
            "file": str(self.path),
            "n_showers": len(self.observables),
            "unit_note": self.unit_note,
            "ep_gev_min": float(ep.min()),
            "ep_gev_max": float(ep.max()),
            "fixed_energy_gev": fixed_energy(ep),
        }


@dataclass(frozen=True)
class ValidationReport:
    """What :func:`write_report` produced."""

    summary: dict[str, Any]
    summary_path: Path
    plot_paths: list[Path]


def load_observables(
    path: str | Path,
    label: str,
    *,
    threshold_gev: float = DEFAULT_HIT_THRESHOLD_GEV,
    max_showers: int | None = None,
) -> LoadedSample:
    """Read a shower file and reduce it to observables at once, so the cells do not stay in memory.

    Raises
    ------
    ShowerFileError
        Missing file, not HDF5, or not the 3DGAN layout (from :func:`app.physics.io.read_showers`).
    InvalidRequest
        The file holds no showers.
    """
    showers = read_showers(path, max_showers=max_showers)
    if len(showers) == 0:
        raise InvalidRequest(f"{path}: the file holds no showers", allowed="a file with at least one shower")
    obs = observe(showers.cells_gev, showers.ep_gev, threshold_gev=threshold_gev)
    logger.info("read %s", path, extra={"n_showers": len(obs), "unit_note": showers.unit_note})
    return LoadedSample(label, Path(path), obs, showers.unit_note)


def _in_bins(obs: ShowerObservables, matching: EnergyMatching) -> ShowerObservables:
    inside = np.zeros(len(obs), dtype=bool)
    for energy_bin in matching.bins:
        inside |= energy_bin.contains(obs.ep_gev)
    return obs.select(inside)


def _classifier_summary(
    gen: ShowerObservables,
    ref: ShowerObservables,
    ref2: ShowerObservables | None,
    *,
    seed: int,
    n_folds: int,
) -> dict[str, Any]:
    """AUC of generated vs reference, and the same test between two reference samples as its floor."""
    if ref2 is None:
        order = np.random.default_rng(seed).permutation(len(ref))
        floor_a, floor_b = ref.select(np.sort(order[: len(ref) // 2])), ref.select(np.sort(order[len(ref) // 2 :]))
        floor_method = "reference split in two random halves"
    else:
        floor_a, floor_b = ref2, ref
        floor_method = "second reference versus reference"
    entry: dict[str, Any] = {
        "description": "ROC AUC of a HistGradientBoosting classifier, generated vs reference (0.5 = indistinguishable)",
        "features": list(CLASSIFIER_FEATURES),
        "energy_note": (
            f"log10(Ep) is a feature; both samples are first subsampled to equal counts in "
            f"{100 * MATCH_CELL_REL_WIDTH:g} % wide log-energy cells, so Ep alone carries no information"
        ),
        "n_folds": n_folds,
        "noise_floor_method": floor_method,
    }
    try:
        result = samples_auc(gen, ref, seed=seed, n_folds=n_folds)
        floor = samples_auc(floor_a, floor_b, seed=seed, n_folds=n_folds)
    except InvalidRequest as exc:  # too few energy-matched showers: report it, the other metrics still stand
        return {**entry, "value": None, "skipped": str(exc)}
    # The AUC floor is not 0 but 0.5 plus noise, so the ratio compares EXCESSES over 0.5: the generator's
    # excess in units of the floor's (or of its standard error when the floor happens to sit at 0.5).
    floor_excess = max(abs(floor.auc - 0.5), floor.auc_sem)
    return {
        **entry,
        "value": result.auc,
        "uncertainty": result.auc_sem,
        "fold_aucs": list(result.fold_aucs),
        "n_gen": result.n_gen,
        "n_ref": result.n_ref,
        "noise_floor": floor.auc,
        "noise_floor_uncertainty": floor.auc_sem,
        "noise_floor_sizes": [floor.n_gen, floor.n_ref],
        "ratio": (result.auc - 0.5) / floor_excess if floor_excess > 0 else None,
        "ratio_definition": "(AUC - 0.5) / max(|AUC_floor - 0.5|, SEM_floor); AUC not rescaled with N",
        "single_feature_auc": single_feature_aucs(gen, ref, seed=seed, n_folds=n_folds),
    }


def _layer_fractions(gen: ShowerObservables, ref: ShowerObservables, matching: EnergyMatching) -> list[dict[str, Any]]:
    """Mean share of S in each layer per energy bin, generated and reference, and their ratio."""
    rows = []
    for energy_bin in matching.bins:
        gen_mean = mean_normalised_projections(gen.select(energy_bin.contains(gen.ep_gev)))[2]
        ref_mean = mean_normalised_projections(ref.select(energy_bin.contains(ref.ep_gev)))[2]
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = gen_mean / ref_mean
        rows.append(
            {"bin": energy_bin.label, "gen": gen_mean.tolist(), "ref": ref_mean.tolist(), "ratio": ratio.tolist()}
        )
    return rows


def validate_samples(
    gen: ShowerObservables,
    ref: ShowerObservables,
    *,
    ref2: ShowerObservables | None = None,
    seed: int = 0,
    n_splits: int = 5,
    n_folds: int = 5,
    edges_gev: Sequence[float] = DEFAULT_BIN_EDGES_GEV,
) -> tuple[dict[str, Any], EnergyMatching]:
    """Every metric of generated versus reference showers, with its noise floor.

    Parameters
    ----------
    gen, ref : ShowerObservables
        Generated and reference samples.
    ref2 : ShowerObservables, optional
        A second, independent reference sample for the noise floor; without it the reference is split
        into random halves (``n_splits`` times, averaged) within each energy bin.
    seed : int
        Seeds the halves, the energy matching of the classifier, its folds and its trees.
    n_splits, n_folds : int
        Random half-splits for the floor; classifier folds.
    edges_gev : sequence of float
        Energy bin edges for spectra, GeV.

    Returns
    -------
    metrics : dict
        The ``metrics``, ``noise_floor``, ``energy_matching`` and ``sampling_fraction_per_bin`` parts of
        summary.json.
    matching : EnergyMatching
        The bins used.
    """
    matching = match_energies(gen.ep_gev, ref.ep_gev, edges_gev=edges_gev)
    comparison = compare_samples(gen, ref, matching)
    floor = noise_floor(ref, matching, ref2=ref2, seed=seed, n_splits=n_splits)
    metrics: dict[str, Any] = {s.name: s.as_dict() for s in summarise(comparison, floor, matching)}
    metrics["classifier_auc"] = _classifier_summary(
        _in_bins(gen, matching),
        _in_bins(ref, matching),
        None if ref2 is None else _in_bins(ref2, matching),
        seed=seed,
        n_folds=n_folds,
    )
    sampling_per_bin = []
    for energy_bin in matching.bins:
        sf = sampling_fraction_comparison(
            gen.select(energy_bin.contains(gen.ep_gev)), ref.select(energy_bin.contains(ref.ep_gev))
        )
        sampling_per_bin.append(
            {
                "bin": energy_bin.label,
                "mean_gen": sf.mean_gen,
                "mean_ref": sf.mean_ref,
                "mean_rel_diff": sf.mean_rel_diff,
                "resolution_gen": sf.resolution_gen,
                "resolution_ref": sf.resolution_ref,
                "resolution_rel_diff": sf.resolution_rel_diff,
            }
        )
    floor_method = (
        "second reference file versus the reference, in each energy bin"
        if ref2 is not None
        else f"the reference split into two random halves (N/2 each) within each energy bin, {n_splits} "
        "splits averaged; only one reference file was given"
    )
    scaling = "; ".join(
        f"{spec.name} x ((1/N_gen + 1/N_ref) / (1/n_a + 1/n_b))^{spec.size_power:g}" for spec in METRICS
    )
    parts = {
        "energy_matching": {
            "mode": matching.mode,
            "note": matching.note,
            "min_showers_per_bin": matching.min_showers,
            "bins": [
                {
                    "label": b.label,
                    "low_gev": b.low_gev,
                    "high_gev": b.high_gev,
                    "n_gen": int(b.contains(gen.ep_gev).sum()),
                    "n_ref": int(b.contains(ref.ep_gev).sum()),
                }
                for b in matching.bins
            ],
            "skipped_bins": [{"label": b.label, "n_gen": g, "n_ref": r} for b, g, r in matching.skipped],
        },
        "noise_floor": {
            "method": floor_method,
            "scaling": (
                "each per-bin floor is measured on two reference samples of sizes n_a, n_b and rescaled to the "
                f"comparison's sizes: {scaling} (squared differences of means scale as 1/N, absolute ones as "
                "1/sqrt(N)); the raw floor and its sizes are in per_bin. The AUC floor is not rescaled."
            ),
        },
        "metrics": metrics,
        "sampling_fraction_per_bin": sampling_per_bin,
        "layer_fractions_per_bin": _layer_fractions(gen, ref, matching),
    }
    return parts, matching


def _energy_subtitle(matching: EnergyMatching) -> str:
    if matching.mode == "fixed":
        return f" (Ep {matching.bins[0].label})"
    if len(matching.bins) == 1:
        return f" (Ep {matching.bins[0].label})"
    return f" (Ep {matching.bins[0].low_gev:g}-{matching.bins[-1].high_gev:g} GeV)"


def _pooled_numbers(obs: ShowerObservables) -> dict[str, Any]:
    with_deposit = obs.select(obs.total_gev > 0)
    return {
        "n_showers": len(obs),
        "n_empty_showers": len(obs) - len(with_deposit),
        "sampling_fraction_mean": float(obs.sampling_fraction.mean()),
        "hit_count_mean": float(obs.hit_count.mean()),
        "mean_profile_max_layer": obs.mean_profile_max_layer(),
        "core_fraction_mean": float(with_deposit.core_fraction.mean()) if len(with_deposit) else None,
    }


def _json_ready(value: Any) -> Any:
    """Plain JSON types: numpy to Python, NaN and inf to None."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_ready(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_report(
    gen_path: str | Path,
    ref_path: str | Path,
    out_dir: str | Path,
    *,
    ref2_path: str | Path | None = None,
    threshold_gev: float = DEFAULT_HIT_THRESHOLD_GEV,
    seed: int = 0,
    labels: tuple[str, str] = ("GAN", "Geant4"),
    n_splits: int = 5,
    n_folds: int = 5,
    edges_gev: Sequence[float] = DEFAULT_BIN_EDGES_GEV,
    max_showers: int | None = None,
) -> ValidationReport:
    """Validate generated showers against a reference and write the PNGs and ``summary.json``.

    Parameters
    ----------
    gen_path, ref_path : str or Path
        3DGAN-layout HDF5 files (:func:`app.physics.io.read_showers`) of generated and reference showers.
    out_dir : str or Path
        Output folder, created if needed.
    ref2_path : str or Path, optional
        An independent second reference file for the noise floor.
    threshold_gev : float
        Hit threshold, GeV.
    seed : int
        Seeds every random choice (noise-floor halves, classifier).
    labels : (str, str)
        Legend names of the generated and reference samples.
    n_splits, n_folds : int
        Random half-splits for the floor; classifier folds.
    edges_gev : sequence of float
        Energy bin edges for spectra, GeV.
    max_showers : int, optional
        Read at most this many showers per file.

    Raises
    ------
    ShowerFileError
        A file is missing or not a shower file.
    InvalidRequest
        Energies cannot be matched, a bad option, or the output folder cannot be written.
    """
    if not math.isfinite(threshold_gev) or threshold_gev < 0:
        raise InvalidRequest(f"threshold {threshold_gev} GeV is not allowed", allowed="a finite threshold >= 0 GeV")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidRequest(f"cannot create the output folder {out} ({exc.strerror})") from exc
    gen_label, ref_label = labels
    if gen_label == ref_label:
        raise InvalidRequest(f"both samples are labelled {gen_label!r}", allowed="two different labels")
    gen = load_observables(gen_path, gen_label, threshold_gev=threshold_gev, max_showers=max_showers)
    ref = load_observables(ref_path, ref_label, threshold_gev=threshold_gev, max_showers=max_showers)
    ref2 = (
        None
        if ref2_path is None
        else load_observables(ref2_path, f"{ref_label} (2)", threshold_gev=threshold_gev, max_showers=max_showers)
    )
    parts, matching = validate_samples(
        gen.observables,
        ref.observables,
        ref2=None if ref2 is None else ref2.observables,
        seed=seed,
        n_splits=n_splits,
        n_folds=n_folds,
        edges_gev=edges_gev,
    )
    loaded = [s for s in (gen, ref, ref2) if s is not None]
    # Plots show the showers actually compared: those inside the matched energy bins.
    plotted = {s.label: _in_bins(s.observables, matching) for s in loaded}
    try:
        plot_paths = save_plots(out, plotted, matching.bins, subtitle=_energy_subtitle(matching))
    except OSError as exc:
        raise InvalidRequest(f"cannot write plots into {out} ({exc})") from exc
    summary = {
        "calogan_version": __version__,
        "created_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "samples": {
            "gen": gen.describe(),
            "ref": ref.describe(),
            "ref2": None if ref2 is None else ref2.describe(),
        },
        "threshold_gev": float(threshold_gev),
        "seed": seed,
        **parts,
        "observables": {s.label: _pooled_numbers(plotted[s.label]) for s in loaded},
        "units": UNITS,
        "plots": [p.name for p in plot_paths],
    }
    summary = _json_ready(summary)
    summary_path = out / SUMMARY_FILE
    try:
        summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    except OSError as exc:
        raise InvalidRequest(f"cannot write {summary_path} ({exc.strerror})") from exc
    logger.info("validation report written to %s", out, extra={"n_plots": len(plot_paths)})
    return ValidationReport(summary, summary_path, plot_paths)
