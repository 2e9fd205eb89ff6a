"""Showers per second of the parametric simulator on one core.

    taskset -c 0 .venv/bin/python bench/mc_bench.py --energies 10 100 400 -n 2000

Pins BLAS to one thread (the simulator is numpy-vectorised; its time goes to transcendental
functions and random draws, not BLAS). Reports the best of ``--repeats`` runs per energy, since
other load on the machine can only make a run slower.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # after the thread limits above, which numpy reads at import
import time

import numpy as np

from app.hardware import cpu_description
from app.physics.mc import ShowerSimulator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--energies", type=float, nargs="+", default=[10.0, 100.0, 400.0])
    parser.add_argument("-n", type=int, default=2000, help="showers per timed run")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    simulator = ShowerSimulator()
    rng = np.random.default_rng(0)
    simulator.simulate(np.full(64, 50.0), rng)  # warm-up: imports, allocator
    print(f"# {cpu_description()}, numpy {np.__version__}, affinity {sorted(os.sched_getaffinity(0))}")
    print("| Ep (GeV) | showers | best wall (s) | showers/s |")
    print("|---|---|---|---|")
    for ep in args.energies:
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            simulator.simulate(np.full(args.n, ep), rng)
            times.append(time.perf_counter() - start)
        best = min(times)
        print(f"| {ep:g} | {args.n} | {best:.2f} | {args.n / best:.0f} |")


if __name__ == "__main__":
    main()
