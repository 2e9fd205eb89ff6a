"""Fit the shower simulator's free constants to Geant4 showers.

Rerun when better Geant4 data arrive, then paste the printed constants into
``app/physics/mc.py`` (``CALIBRATED``) and bump ``MC_VERSION``::

    .venv/bin/python tools/calibrate_mc.py --g4-dir ../shared/data/g4 --out calibration.json

Targets per fixed-energy file: mean sampling fraction, its event-to-event rms/mean, mean hit count
above 1e-4 GeV, and the mean normalised longitudinal and transverse profiles. Each residual is
divided by its statistical uncertainty (Geant4 and MC added in quadrature) and a relative floor
per target group (``GROUPS``) for what the model cannot be expected to match better than that. The MC uses the
same seed in every evaluation (common random numbers), so the objective is smooth enough for a
derivative-free simplex.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

from app.physics.io import read_showers
from app.physics.mc import CALIBRATED, ShowerParameters, ShowerSimulator, with_overrides

FITTED = (
    "visible_scale",
    "thick_visible_scale",
    "spot_energy_gev",
    "start_depth_x0",
    "depth_scale",
    "radius_scale",
    "core_fraction_scale",
    "k4",
    "early_fraction",
    "early_energy_slope",
    "early_depth_x0",
    "primary_track_x0",
    "back_plate_share",
    "tail_fraction",
    "tail_length_x0",
    "tail_energy_slope",
    "early_alpha",
)
HIT_THRESHOLD_GEV = 1e-4
FIXED_ENERGY_FILE = re.compile(r"g4_e(\d+)GeV_n\d+\.h5$")


@dataclass
class Summary:
    """Means and their standard errors of the fit targets for one sample at one energy."""

    values: np.ndarray
    errors: np.ndarray


def summarise(cells_gev: np.ndarray, ep_gev: np.ndarray) -> Summary:
    """Target vector: [sf, rms/mean of sf, hits, 25 layer-profile bins, 25 x-profile bins, central 3x3
    fraction, rms/mean of the layer-0 and layer-1 deposits, layer-0 hits]."""
    n = len(ep_gev)
    total = cells_gev.sum(axis=(1, 2, 3))
    sf = total / ep_gev
    hits = (cells_gev > HIT_THRESHOLD_GEV).sum(axis=(1, 2, 3))
    layer_gev = cells_gev.sum(axis=(1, 2))
    layer = layer_gev / total[:, None]
    transverse = 0.5 * (cells_gev.sum(axis=(2, 3)) + cells_gev.sum(axis=(1, 3))) / total[:, None]
    centre = cells_gev.shape[1] // 2
    core = cells_gev[:, centre - 1 : centre + 2, centre - 1 : centre + 2].sum(axis=(1, 2, 3)) / total
    front_hits = (cells_gev[..., 0] > HIT_THRESHOLD_GEV).sum(axis=(1, 2))
    rel_rms = sf.std() / sf.mean()
    front_rel_rms = layer_gev[:, :2].std(0) / layer_gev[:, :2].mean(0)
    values = np.concatenate([
        [sf.mean(), rel_rms, hits.mean()], layer.mean(0), transverse.mean(0),
        [core.mean()], front_rel_rms, [front_hits.mean()],
    ])
    errors = np.concatenate([
        [sf.std() / np.sqrt(n), rel_rms / np.sqrt(2.0 * n), hits.std() / np.sqrt(n)],
        layer.std(0) / np.sqrt(n), transverse.std(0) / np.sqrt(n),
        [core.std() / np.sqrt(n)], front_rel_rms / np.sqrt(2.0 * n), [front_hits.std() / np.sqrt(n)],
    ])
    return Summary(values, errors)


def load_targets(g4_dir: Path) -> dict[float, Summary]:
    """Summaries of every fixed-energy Geant4 file in the folder, keyed by energy in GeV."""
    targets = {}
    for path in sorted(g4_dir.glob("g4_e*GeV_n*.h5")):
        match = FIXED_ENERGY_FILE.search(path.name)
        if match:
            showers = read_showers(path)
            targets[float(match.group(1))] = summarise(showers.cells_gev, showers.ep_gev)
    if not targets:
        raise SystemExit(f"no g4_e<E>GeV_n<N>.h5 files in {g4_dir}")
    return targets


# Target groups: slice of the summary vector and the relative systematic floor of each residual.
# The sampling fraction and hit count are acceptance figures, so they get tight floors; the 25-bin
# profiles get a loose one, or their many bins would outvote the energy scale.
# The first three and the last layer bins are acceptance figures of their own (within 15 %), so they
# get a group with a tighter floor than the bulk of the profile; the central 3x3 fraction is wanted
# within 0.5 % absolute (floor 0.2 % of ~0.87).
GROUPS = {
    "sf": (slice(0, 1), 0.003),
    "rms": (slice(1, 2), 0.03),
    "hits": (slice(2, 3), 0.03),
    "front_layers": (slice(3, 6), 0.03),
    "layer": (slice(6, 27), 0.08),
    "last_layer": (slice(27, 28), 0.03),
    "x": (slice(28, 53), 0.20),
    "core": (slice(53, 54), 0.001),
    "front_rms": (slice(54, 56), 0.20),
    "front_hits": (slice(56, 57), 0.10),
}


def pulls(
    params: ShowerParameters, targets: dict[float, Summary], n_mc: int, floor_scale: float, seed: int
) -> np.ndarray:
    """Residuals (MC - Geant4) / sigma of every target at every energy, concatenated."""
    simulator = ShowerSimulator(params)
    floors = np.concatenate([np.full(part.stop - part.start, floor) for part, floor in GROUPS.values()])
    out = []
    for i, (ep, target) in enumerate(targets.items()):
        rng = np.random.default_rng(seed + i)
        mc = summarise(simulator.simulate(np.full(n_mc, ep), rng), np.full(n_mc, ep))
        systematic = floor_scale * floors * np.abs(target.values)
        sigma = np.sqrt(target.errors**2 + mc.errors**2 + systematic**2) + 1e-12
        out.append((mc.values - target.values) / sigma)
    return np.concatenate(out)


def chi2_terms(
    params: ShowerParameters, targets: dict[float, Summary], n_mc: int, floor_scale: float, seed: int
) -> dict[str, float]:
    """Per-target-group chi2 of the simulator with ``params``, summed over energies."""
    per_energy = pulls(params, targets, n_mc, floor_scale, seed).reshape(len(targets), -1)
    return {name: float(np.sum(per_energy[:, part] ** 2)) for name, (part, _) in GROUPS.items()}


def fit(targets: dict[float, Summary], n_mc: int, floor_scale: float, seed: int, max_evals: int) -> ShowerParameters:
    """Minimise the total chi2 over the FITTED constants with a simplex (in log space, so they stay positive).

    Derivative-free on purpose: the pulls come from a finite MC sample, and finite-difference
    Jacobians of them (scipy's least_squares) stalled after one or two steps in every attempt.
    """
    start = np.log([getattr(CALIBRATED, name) for name in FITTED])

    def objective(log_values: np.ndarray) -> float:
        params = with_overrides(CALIBRATED, **dict(zip(FITTED, np.exp(log_values), strict=True)))
        return float(np.sum(pulls(params, targets, n_mc, floor_scale, seed) ** 2))

    result = minimize(
        objective, start, method="Nelder-Mead",
        options={"maxfev": max_evals, "xatol": 2e-3, "fatol": 0.5, "initial_simplex": _simplex(start)},
    )
    print(f"fit: {result.message} after {result.nfev} evaluations, chi2 {result.fun:.1f}")
    return with_overrides(CALIBRATED, **dict(zip(FITTED, np.exp(result.x), strict=True)))


def _simplex(start: np.ndarray, step: float = 0.1) -> np.ndarray:
    return np.vstack([start] + [start + step * np.eye(len(start))[i] for i in range(len(start))])


def report(params: ShowerParameters, targets: dict[float, Summary], n_mc: int, seed: int) -> list[dict]:
    """Geant4 vs MC for the acceptance figures, one row per energy."""
    simulator = ShowerSimulator(params)
    rows = []
    for i, (ep, target) in enumerate(targets.items()):
        mc = summarise(simulator.simulate(np.full(n_mc, ep), np.random.default_rng(seed + 1000 + i)), np.full(n_mc, ep))
        rows.append({
            "ep_gev": ep,
            "sf_g4": target.values[0], "sf_mc": mc.values[0],
            "rel_rms_g4": target.values[1], "rel_rms_mc": mc.values[1],
            "hits_g4": target.values[2], "hits_mc": mc.values[2],
            "max_layer_g4": int(np.argmax(target.values[3:28])), "max_layer_mc": int(np.argmax(mc.values[3:28])),
            "layer_ratio_0_1_2_24": [round(float(mc.values[3 + k] / target.values[3 + k]), 3) for k in (0, 1, 2, 24)],
            "core_g4": target.values[53], "core_mc": mc.values[53],
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--g4-dir", type=Path, default=Path("../shared/data/g4"))
    parser.add_argument("--n-mc", type=int, default=300, help="MC showers per energy per evaluation")
    parser.add_argument("--floor-scale", type=float, default=1.0, help="factor on every group's systematic floor")
    parser.add_argument("--max-evals", type=int, default=250)
    parser.add_argument("--seed", type=int, default=20261128)
    parser.add_argument("--out", type=Path, default=Path("calibration.json"))
    args = parser.parse_args()

    targets = load_targets(args.g4_dir)
    start_s = time.perf_counter()
    params = fit(targets, args.n_mc, args.floor_scale, args.seed, args.max_evals)
    rows = report(params, targets, 2 * args.n_mc, args.seed)
    fitted = {name: round(getattr(params, name), 4) for name in FITTED}
    print(json.dumps(fitted, indent=2))
    for row in rows:
        print({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
    terms = chi2_terms(params, targets, args.n_mc, args.floor_scale, args.seed)
    args.out.write_text(json.dumps({
        "fitted": fitted, "chi2_terms": terms, "rows": rows, "g4_dir": str(args.g4_dir),
        "energies_gev": list(targets), "n_mc": args.n_mc, "floor_scale": args.floor_scale,
        "wall_s": round(time.perf_counter() - start_s, 1),
    }, indent=2))


if __name__ == "__main__":
    main()
