"""The reference MC against the Geant4 samples: the acceptance figures of the reference-MC issues.

    .venv/bin/python tools/mc_vs_geant4.py --g4-dir ../shared/data/g4 --n 1000 --out mc_vs_g4.json

Per fixed energy (10, 50, 100, 200, 400 GeV) it simulates ``--n`` showers with ``calogan mc``'s code
and compares them with the Geant4 file: mean S/Ep, its rms/mean, hits above 1e-4 GeV, the layer of the
mean profile's maximum, the mean share of S in layers 0, 1, 2 and 24, the central 3x3 share, and the
classifier AUC on the high-level features (``app.validation.classifier``) with its floor, the same
test between two random halves of the Geant4 file. For the flat 2-500 GeV files, the floor is the
second Geant4 file against the first. Prints a markdown table; ``--out`` keeps the numbers.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from app.physics.io import read_showers
from app.physics.mc import MC_VERSION, ShowerSimulator
from app.physics.observables import ShowerObservables, observe
from app.validation.classifier import samples_auc, single_feature_aucs

FIXED_FILES = {10: "g4_e10GeV_n300.h5", 50: "g4_e50GeV_n200.h5", 100: "g4_e100GeV_n150.h5",
               200: "g4_e200GeV_n80.h5", 400: "g4_e400GeV_n40.h5"}
FLAT_FILES = ("g4_flat2to500_n300.h5", "g4_flat2to500_n400_b.h5")
EDGE_LAYERS = (0, 1, 2, 24)


def figures(obs: ShowerObservables) -> dict[str, float]:
    """The per-sample acceptance figures."""
    sf = obs.sampling_fraction
    layers = np.nanmean(obs.normalised_projections[:, 2], axis=0)
    return {
        "sf": float(sf.mean()),
        "rel_rms": float(sf.std() / sf.mean()),
        "hits": float(obs.hit_count.mean()),
        "max_layer": int(np.argmax(obs.projections_gev[:, 2].sum(axis=0))),
        "core_3x3": float(np.nanmean(obs.core_fraction)),
        **{f"layer_{k}": float(layers[k]) for k in EDGE_LAYERS},
    }


def halves(obs: ShowerObservables, seed: int) -> tuple[ShowerObservables, ShowerObservables]:
    order = np.random.default_rng(seed).permutation(len(obs))
    return obs.select(np.sort(order[: len(obs) // 2])), obs.select(np.sort(order[len(obs) // 2 :]))


def compare(name: str, mc: ShowerObservables, g4: ShowerObservables, floor_pair: tuple) -> dict:
    f_mc, f_g4 = figures(mc), figures(g4)
    auc = samples_auc(mc, g4, seed=0)
    floor = samples_auc(*floor_pair, seed=0)
    singles = single_feature_aucs(mc, g4)
    return {
        "sample": name, "n_mc": len(mc), "n_g4": len(g4), "mc": f_mc, "g4": f_g4,
        "sf_diff": f_mc["sf"] / f_g4["sf"] - 1, "rel_rms_diff": f_mc["rel_rms"] / f_g4["rel_rms"] - 1,
        "hits_diff": f_mc["hits"] / f_g4["hits"] - 1, "max_layer_diff": f_mc["max_layer"] - f_g4["max_layer"],
        **{f"layer_{k}_ratio": f_mc[f"layer_{k}"] / f_g4[f"layer_{k}"] for k in EDGE_LAYERS},
        "core_diff": f_mc["core_3x3"] - f_g4["core_3x3"],
        "auc": auc.auc, "auc_sem": auc.auc_sem, "auc_floor": floor.auc,
        "most_separating": dict(list(singles.items())[:5]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--g4-dir", type=Path, default=Path("../shared/data/g4"))
    parser.add_argument("--n", type=int, default=1000, help="MC showers per fixed energy (flat: 2n)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    simulator = ShowerSimulator()
    rows = []
    for ep, name in FIXED_FILES.items():
        g4_showers = read_showers(args.g4_dir / name)
        g4 = observe(g4_showers.cells_gev, g4_showers.ep_gev)
        ep_gev = np.full(args.n, float(ep))
        mc = observe(simulator.simulate(ep_gev, np.random.default_rng([args.seed, ep])), ep_gev)
        rows.append(compare(f"{ep} GeV", mc, g4, halves(g4, args.seed)))
    flat = [read_showers(args.g4_dir / name) for name in FLAT_FILES if (args.g4_dir / name).exists()]
    if flat:
        g4_flat = [observe(s.cells_gev, s.ep_gev) for s in flat]
        ep_gev = np.random.default_rng([args.seed, 0]).uniform(2.0, 500.0, 2 * args.n)
        mc = observe(simulator.simulate(ep_gev, np.random.default_rng([args.seed, 1])), ep_gev)
        pair = (g4_flat[1], g4_flat[0]) if len(g4_flat) > 1 else halves(g4_flat[0], args.seed)
        rows.append(compare("flat 2-500 GeV", mc, g4_flat[0], pair))

    print(f"MC_VERSION {MC_VERSION}, {args.n} MC showers per energy (flat: {2 * args.n})")
    print("| sample | S/Ep | rms/mean | hits | max layer MC / G4 | L0 | L1 | L2 | L24 | 3x3 MC - G4 | AUC "
          "| AUC floor |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['sample']} | {100 * r['sf_diff']:+.1f} % | {100 * r['rel_rms_diff']:+.0f} % | "
              f"{100 * r['hits_diff']:+.1f} % | {r['mc']['max_layer']} / {r['g4']['max_layer']} | "
              + " | ".join(f"{r[f'layer_{k}_ratio']:.2f}" for k in EDGE_LAYERS)
              + f" | {100 * r['core_diff']:+.2f} % | {r['auc']:.3f} ± {r['auc_sem']:.3f} | {r['auc_floor']:.3f} |")
    if args.out:
        args.out.write_text(json.dumps({"mc_version": MC_VERSION, "n": args.n, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
