"""``calogan validate``: compare generated showers with a reference; PNG plots, summary.json, a short table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from app.errors import InvalidRequest


def _parse_edges(text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError as exc:
        raise InvalidRequest(
            f"bin edges {text!r} are not numbers", allowed="comma-separated GeV, e.g. 1,50,100,500"
        ) from exc


def _number(value: Any, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def _table(summary: dict[str, Any]) -> Table:
    samples = summary["samples"]
    table = Table(
        title=(
            f"{samples['gen']['label']} (N={samples['gen']['n_showers']}) vs "
            f"{samples['ref']['label']} (N={samples['ref']['n_showers']}); "
            f"{len(summary['energy_matching']['bins'])} energy bin(s), {summary['energy_matching']['mode']}"
        )
    )
    for column in ("metric", "value", "noise floor", "ratio"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for name, entry in summary["metrics"].items():
        if name == "classifier_auc":
            value = _number(entry.get("value"), ".3f")
            if entry.get("uncertainty") is not None:
                value += f" ± {entry['uncertainty']:.3f}"
            table.add_row(name, value, _number(entry.get("noise_floor"), ".3f"), _number(entry.get("ratio"), ".1f"))
        else:
            table.add_row(
                name,
                _number(entry["value"], ".3g"),
                _number(entry["noise_floor"], ".3g"),
                _number(entry["ratio"], ".2f"),
            )
    return table


def _discrepancy_table(summary: dict[str, Any], n_features: int = 6) -> Table:
    """The features that separate the samples most on their own, and the edge layers' mean shares."""
    table = Table(title="What gives the samples away: single-feature AUC; mean layer share gen / ref")
    table.add_column("feature", justify="left")
    table.add_column("AUC alone", justify="right")
    singles = summary["metrics"]["classifier_auc"].get("single_feature_auc") or {}
    for name, auc in list(singles.items())[:n_features]:
        table.add_row(name, f"{auc:.3f}")
    for row in summary["layer_fractions_per_bin"]:
        ratios = ", ".join(f"L{k} {_number(row['ratio'][k], '.2f')}" for k in (0, 1, 2, 24))
        table.add_row(f"layer share ratio, {row['bin']}", ratios)
    return table


def validate(
    gen: Annotated[Path, typer.Argument(help="Generated showers, HDF5 (3DGAN layout).")],
    ref: Annotated[Path, typer.Argument(help="Reference showers (e.g. Geant4), HDF5 (3DGAN layout).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the PNGs and summary.json (created).")],
    ref2: Annotated[
        Path | None,
        typer.Option(help="Independent second reference file for the noise floor; default: random halves of REF."),
    ] = None,
    threshold_gev: Annotated[float, typer.Option(help="Hit threshold, GeV (default about half a MIP).")] = 1e-4,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the noise-floor halves and the classifier.")] = 0,
    gen_label: Annotated[str, typer.Option(help="Legend name of the generated sample.")] = "GAN",
    ref_label: Annotated[str, typer.Option(help="Legend name of the reference sample.")] = "Geant4",
    bin_edges_gev: Annotated[
        str | None, typer.Option(help="Energy bin edges for spectra, comma-separated GeV (default 1,20,50,...,1000).")
    ] = None,
    max_showers: Annotated[int | None, typer.Option(min=1, help="Read at most this many showers per file.")] = None,
    folds: Annotated[int, typer.Option(min=2, help="Cross-validation folds of the classifier test.")] = 5,
) -> None:
    """Validate generated showers against a reference: metrics at matched energies, each with its noise floor."""
    # Imported here, not at the top: matplotlib and scikit-learn take seconds to import, and
    # `calogan --help` should not pay for them.
    from app.validation.metrics import DEFAULT_BIN_EDGES_GEV
    from app.validation.report import write_report

    report = write_report(
        gen,
        ref,
        out,
        ref2_path=ref2,
        threshold_gev=threshold_gev,
        seed=seed,
        labels=(gen_label, ref_label),
        n_folds=folds,
        edges_gev=_parse_edges(bin_edges_gev) or DEFAULT_BIN_EDGES_GEV,
        max_showers=max_showers,
    )
    console = Console()
    console.print(_table(report.summary))
    console.print(_discrepancy_table(report.summary))
    console.print(
        f"{report.summary['energy_matching']['note']}; noise floor: {report.summary['noise_floor']['method']}.",
        highlight=False,
    )
    console.print(f"wrote {report.summary_path} and {len(report.plot_paths)} plots", highlight=False)
