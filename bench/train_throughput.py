"""Training throughput of the Conv2D GAN: real showers per second for a full D-real + D-fake + G step.

    .venv/bin/python bench/train_throughput.py --batch-sizes 32 128 --steps 3

For each batch size: build the networks (full width unless ``--width``), run one untimed step (it
traces and optimises the graph: about a minute of CPU for the full model), then time ``--steps``
steps on a fixed batch of simulated showers. Reports the best and the median step, since other
load on the machine can only make a step slower. Prints the machine, the load average and the
library versions beside the numbers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from app.model.training.config import TrainConfig
from app.model.training.response import EnergyResponse
from app.model.training.run_files import hardware_description
from app.model.training.trainer import GanTrainer
from app.physics.mc import simulate_showers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per batch size")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--bn-inference", action="store_true", help="BatchNorm/Dropout in inference mode")
    args = parser.parse_args()

    info = hardware_description()
    print(f"# {info['processor']}, {info['cpu_count']} CPUs, TF {info['tensorflow']}, Keras {info['keras']}")
    response = EnergyResponse((0.025,), (2.0, 500.0))
    for batch_size in args.batch_sizes:
        rng = np.random.default_rng(batch_size)
        ep_gev = rng.uniform(2.0, 500.0, batch_size)
        cells = simulate_showers(ep_gev, seed=batch_size)
        trainer = GanTrainer(TrainConfig(batch_size=batch_size, width=args.width, bn_training=not args.bn_inference))
        batch = trainer.make_batch(cells, ep_gev, rng, response=response, energy_range_gev=(2.0, 500.0))
        start = time.perf_counter()
        trainer.train_step(batch, relu=True)
        first_s = time.perf_counter() - start
        times = []
        for _ in range(args.steps):
            start = time.perf_counter()
            trainer.train_step(batch, relu=True)
            times.append(time.perf_counter() - start)
        best, median = min(times), statistics.median(times)
        print(
            f"batch {batch_size:4d}: first step (trace) {first_s:6.1f} s; step best {best:6.2f} s, median "
            f"{median:6.2f} s -> {batch_size / best:5.2f} real showers/s (median {batch_size / median:5.2f}); "
            f"load average {os.getloadavg()[0]:.1f}"
        )


if __name__ == "__main__":
    main()
