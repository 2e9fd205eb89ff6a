"""Validate a shipped generator against the reference MC and Geant4; tables for docs/physics.md.

    .venv/bin/python tools/physics_report.py --model-dir models/conv2d --work /tmp/physics --n 500

For each of 10, 50, 100, 200, 400 GeV and a flat 2-500 GeV spectrum it generates GAN showers with
``calogan generate`` (the service's code path), simulates two independent reference samples with
``calogan mc`` (held out: seeds the training never uses), runs ``calogan validate`` GAN vs MC (the
second MC sample gives the noise floor) and GAN vs Geant4 where a sample exists, and prints
markdown tables plus the acceptance checks of the GAN issue. Plots land in ``WORK/<name>/``, the
figures in ``WORK/physics.json``; ``--update-card`` also stores them in the model folder's card.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from app.physics.io import read_showers
from app.physics.observables import observe
from app.validation.metrics import fluctuation_figures

ENERGIES_GEV = (10, 50, 100, 200, 400)
G4_FILES = {10: "g4_e10GeV_n300.h5", 50: "g4_e50GeV_n200.h5", 100: "g4_e100GeV_n150.h5",
            200: "g4_e200GeV_n80.h5", 400: "g4_e400GeV_n40.h5", "flat": "g4_flat2to500_n300.h5"}
REFERENCE_SEED_OFFSET = 7_000_000  # MC seeds far from the training run's SeedSequence streams


def calogan(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "app.cli", *args], check=True, stdout=subprocess.DEVNULL)


def spectrum_args(name: int | str) -> list[str]:
    return ["--emin", "2", "--emax", "500"] if name == "flat" else ["--energy", str(name)]


def summary(path: Path) -> dict:
    return json.loads((path / "summary.json").read_text())


def figures(path: Path) -> dict:
    """Mean S/Ep, layer of the mean profile's maximum, central 3x3 energy fraction, NaN/negative counts."""
    showers = read_showers(path)
    cells = showers.cells_gev
    obs = observe(cells, showers.ep_gev)
    return {
        "sf": float(np.mean(obs.sampling_fraction)),
        "max_layer": int(np.argmax(obs.projections_gev[:, 2].sum(axis=0))),
        "core_3x3": float(np.nanmean(obs.core_fraction)),
        "bad_cells": int(np.count_nonzero(~np.isfinite(cells)) + np.count_nonzero(cells < 0)),
        **fluctuation_figures(obs),
    }


FLUCTUATION_TARGETS = {"hits_mean": 0.15, "hits_rms": 0.40, "sf_rms": 0.20, "depth_rms": 0.30, "width_rms": 0.30}
"""The fluctuation issue's acceptance: largest |GAN / MC - 1| of each figure."""


def ratios(f_gan: dict, f_ref: dict) -> dict[str, float]:
    return {name: f_gan[name] / f_ref[name] for name in FLUCTUATION_TARGETS}


def metric_values(s: dict | None, name: str) -> dict:
    """A metric of a summary.json as {'value', 'noise_floor'} (None without a summary)."""
    if s is None:
        return {"value": None, "noise_floor": None}
    return {"value": s["metrics"][name]["value"], "noise_floor": s["metrics"][name].get("noise_floor")}


def metric_cell(s: dict, name: str) -> str:
    """'value (floor F)' for one metric of a summary.json; AUCs with 3 decimals, the rest in e-notation."""
    m = s["metrics"][name]
    text = "{:.3f}" if name in ("classifier_auc", "cell_spectrum_distance") else "{:.2e}"
    floor = m.get("noise_floor")
    return f"{text.format(m['value'])} (floor {text.format(floor) if floor is not None else 'n/a'})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default="models/conv2d")
    parser.add_argument("--backend", default="tf")
    parser.add_argument("--work", type=Path, default=Path("/tmp/physics"))
    parser.add_argument("--n", type=int, default=500, help="showers per fixed energy (flat: 2n)")
    parser.add_argument("--g4-dir", type=Path, default=Path("../shared/data/g4"))
    parser.add_argument("--update-card", action="store_true", help="store the verdict in the model's card")
    parser.add_argument("--compare-with", type=Path, default=None,
                        help="physics.json of an earlier model, stored beside this one's (e.g. the previous version)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)

    rows, checks = [], []
    for name in (*ENERGIES_GEV, "flat"):
        n = str(2 * args.n if name == "flat" else args.n)
        seed = 11 if name == "flat" else int(name)
        gen, ref, ref2 = (args.work / f"{kind}_{name}.h5" for kind in ("gan", "mc", "mc2"))
        calogan("generate", "-o", str(gen), "-n", n, "--seed", str(seed), "--backend", args.backend,
                "--model-dir", args.model_dir, *spectrum_args(name))
        calogan("mc", "-o", str(ref), "-n", n, "--seed", str(REFERENCE_SEED_OFFSET + seed), *spectrum_args(name))
        seed2 = str(2 * REFERENCE_SEED_OFFSET + seed)
        calogan("mc", "-o", str(ref2), "-n", n, "--seed", seed2, *spectrum_args(name))
        calogan("validate", str(gen), str(ref), "--ref2", str(ref2), "--out", str(args.work / f"vs_mc_{name}"),
                "--gen-label", "GAN", "--ref-label", "MC")
        vs_mc = summary(args.work / f"vs_mc_{name}")
        g4_path = args.g4_dir / G4_FILES[name]
        vs_g4 = None
        if g4_path.exists():
            calogan("validate", str(gen), str(g4_path), "--out", str(args.work / f"vs_g4_{name}"),
                    "--gen-label", "GAN", "--ref-label", "Geant4")
            vs_g4 = summary(args.work / f"vs_g4_{name}")
        f_gan, f_mc = figures(gen), figures(ref)
        rows.append((name, f_gan, f_mc, vs_mc, vs_g4))
        if name != "flat":
            layer_diff = f_gan["max_layer"] - f_mc["max_layer"]
            checks.append((name, f_gan["sf"] / f_mc["sf"] - 1, layer_diff, f_gan["bad_cells"]))

    print("| Ep (GeV) | S/Ep GAN | S/Ep MC | diff | max layer GAN / MC | central 3x3 GAN / MC | mse_shape vs MC "
          "| AUC vs MC | mse_shape vs G4 | AUC vs G4 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, f_gan, f_mc, vs_mc, vs_g4 in rows:
        g4_cells = (metric_cell(vs_g4, "mse_shape"), metric_cell(vs_g4, "classifier_auc")) if vs_g4 else ("-", "-")
        print(f"| {name} | {f_gan['sf']:.4f} | {f_mc['sf']:.4f} | {100 * (f_gan['sf'] / f_mc['sf'] - 1):+.1f} % | "
              f"{f_gan['max_layer']} / {f_mc['max_layer']} | {f_gan['core_3x3']:.2f} / {f_mc['core_3x3']:.2f} | "
              f"{metric_cell(vs_mc, 'mse_shape')} | "
              f"{metric_cell(vs_mc, 'classifier_auc')} | {g4_cells[0]} | {g4_cells[1]} |")
    print()
    print("Fluctuations, GAN / reference (targets: hits mean within 15 %, hits rms 40 %, S/Ep rms 20 %, depth and "
          "width rms 30 %); cell-spectrum distance (decades) and AUC vs MC with their floors:")
    print("| Ep (GeV) | reference | hits mean | hits rms | S/Ep rms | depth rms | width rms | spectrum distance "
          "| AUC |")
    print("|---|---|---|---|---|---|---|---|---|")
    fluctuation_lines = []
    for name, f_gan, f_mc, vs_mc, vs_g4 in rows:
        references = [("MC", f_mc, vs_mc)]
        if vs_g4 is not None:
            references.append(("Geant4", figures(args.g4_dir / G4_FILES[name]), vs_g4))
        for label, f_ref, vs in references:
            r = ratios(f_gan, f_ref)
            print(f"| {name} | {label} | " + " | ".join(f"{r[k]:.2f}" for k in FLUCTUATION_TARGETS)
                  + f" | {metric_cell(vs, 'cell_spectrum_distance')} | {metric_cell(vs, 'classifier_auc')} |")
            if label == "MC" and name != "flat":
                missed = [f"{k} {r[k]:.2f}" for k, limit in FLUCTUATION_TARGETS.items() if abs(r[k] - 1) > limit]
                auc = vs["metrics"]["classifier_auc"]["value"]
                if auc is None or auc > 0.90:
                    missed.append(f"AUC {auc:.3f}" if auc is not None else "AUC not computed")
                fluctuation_lines.append(f"{name} GeV vs MC: " + (", ".join(missed) + " out of target" if missed
                                                                    else "all fluctuation targets met"))
    response = [f_gan["sf"] * name for name, f_gan, *_ in rows if name != "flat"]  # mean visible GeV
    monotonic = all(b > a for a, b in itertools.pairwise(response))
    lines = [f"{name} GeV: S/Ep {100 * sf_diff:+.1f} % (target within 5 %), max layer {layer_diff:+d} "
             f"(target within 1), NaN or negative cells: {bad}" for name, sf_diff, layer_diff, bad in checks]
    lines.append(f"mean visible energy vs Ep (GeV): {[round(r, 3) for r in response]}; monotonic: {monotonic}")
    passed = monotonic and all(abs(sf) <= 0.05 and abs(layer) <= 1 and bad == 0 for _, sf, layer, bad in checks)
    lines.append(f"GAN issue acceptance: {'passed' if passed else 'FAILED'}")
    print()
    print("Acceptance (GAN issue):")
    print("\n".join(f"- {line}" for line in lines))
    print("Acceptance (fluctuation issue):")
    print("\n".join(f"- {line}" for line in fluctuation_lines))

    physics = {
        "how": f"tools/physics_report.py --model-dir {args.model_dir} --backend {args.backend} --n {args.n}",
        "summary": lines + fluctuation_lines,
        "energies": {str(name): {
            "sf_gan": round(f_gan["sf"], 5), "sf_mc": round(f_mc["sf"], 5),
            "max_layer_gan": f_gan["max_layer"], "max_layer_mc": f_mc["max_layer"],
            "core_3x3_gan": round(f_gan["core_3x3"], 3), "core_3x3_mc": round(f_mc["core_3x3"], 3),
            "mse_shape_vs_mc": metric_values(vs_mc, "mse_shape"), "auc_vs_mc": metric_values(vs_mc, "classifier_auc"),
            "mse_shape_vs_g4": metric_values(vs_g4, "mse_shape"), "auc_vs_g4": metric_values(vs_g4, "classifier_auc"),
            "fluctuation_ratios_vs_mc": {k: round(v, 3) for k, v in ratios(f_gan, f_mc).items()},
            "cell_spectrum_distance_vs_mc": metric_values(vs_mc, "cell_spectrum_distance"),
            "gan": {k: round(f_gan[k], 5) for k in FLUCTUATION_TARGETS},
            "mc": {k: round(f_mc[k], 5) for k in FLUCTUATION_TARGETS},
        } for name, f_gan, f_mc, vs_mc, vs_g4 in rows},
    }
    if args.compare_with is not None:
        earlier = json.loads(args.compare_with.read_text())
        physics["compared_with"] = {"source": str(args.compare_with), **earlier}
    (args.work / "physics.json").write_text(json.dumps(physics, indent=2) + "\n")
    if args.update_card:
        from app.model.export import add_physics_to_card

        add_physics_to_card(args.model_dir, physics)


if __name__ == "__main__":
    main()
