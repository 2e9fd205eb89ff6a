"""Showers per second on the CPU: float32 TensorFlow vs the int8 OpenVINO model, by batch size.

The CPU counterpart of the paper's Figure 1. Each (runtime, cores) configuration runs in its own
subprocess, pinned to the first k usable cores with ``os.sched_setaffinity`` and with the runtime's
threads set to k (TensorFlow's pools can be sized only before its first op, hence the subprocesses).
Configurations: 1 core and all usable cores, for both runtimes, all in one run, so ratios compare
like with like even on a shared machine.

Usage (after ``calogan quantize``)::

    python bench/cpu_throughput.py --model-dir models/conv2d            # full sweep, writes results
    python bench/cpu_throughput.py --random-width 1.0 --quick           # smoke run on a random generator

Writes ``<out>.md`` (table), ``<out>.png`` (plot) and ``<out>.json`` (raw numbers).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FULL_BATCHES = (1, 8, 32, 128, 512, 2048)
QUICK_BATCHES = (1, 32, 128)
RUNTIMES = ("tf_float32", "int8")
MIN_TIMED_SHOWERS = 256  # small batches repeat until about this many showers were timed


def _usable_cores() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def _worker(args: argparse.Namespace) -> None:
    """One configuration: pin, set threads, load, time every batch size; print one JSON line."""
    cores = _usable_cores()[: args.cores]
    os.sched_setaffinity(0, cores)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from app.model.latent import latent_vectors

    if args.worker == "tf_float32":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(len(cores))
        tf.config.threading.set_inter_op_parallelism_threads(1)
        from app.model.loading import load_generator

        model = load_generator(args.model_dir).model
        fn = tf.function(lambda z: model(z, training=False),
                         input_signature=[tf.TensorSpec((None, 200), tf.float32)])

        def generate(latent: np.ndarray) -> np.ndarray:
            return fn(latent).numpy()
    else:
        from app.model.quantize import load_int8_generator

        generate = load_int8_generator(args.int8_dir, threads=len(cores)).generate

    rng = np.random.default_rng(0)
    results = {}
    for batch in args.batch_sizes:
        latent = latent_vectors(rng.uniform(2.0, 500.0, batch), rng)
        generate(latent)  # warm-up: allocation, kernel choice for this shape
        repeats = max(args.repeats, math.ceil(MIN_TIMED_SHOWERS / batch)) if batch < MIN_TIMED_SHOWERS else args.repeats
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            generate(latent)
            times.append(time.perf_counter() - start)
        results[batch] = {"showers_per_s": batch / float(np.median(times)), "repeats": repeats}
        print(f"  {args.worker} {len(cores)} core(s) batch {batch}: {results[batch]['showers_per_s']:.1f} showers/s",
              file=sys.stderr, flush=True)
    print(json.dumps({"runtime": args.worker, "cores": len(cores), "results": results}))


def _random_models(width: float, folder: Path) -> tuple[Path, Path]:
    """A random generator of the real architecture and its full int8 (no accuracy loop): smoke runs only."""
    import keras

    from app.model import quantize as q
    from app.model.architecture import GeneratorConfig, build_generator
    from app.model.export import export_onnx
    from app.model.latent import latent_vectors
    from app.model.loading import CARD_FILE, CARD_SCHEMA_VERSION, GENERATOR_FILE, sha256_file

    keras.utils.set_random_seed(0)
    model = build_generator(GeneratorConfig(width=width))
    float32_dir = folder / "conv2d"
    float32_dir.mkdir()
    model.save(float32_dir / GENERATOR_FILE)
    card = {"schema_version": CARD_SCHEMA_VERSION, "name": f"random-w{width}", "version": "random",
            "files": {GENERATOR_FILE: {"sha256": sha256_file(float32_dir / GENERATOR_FILE)}}}
    (float32_dir / CARD_FILE).write_text(json.dumps(card))
    float32 = q.onnx_to_openvino(export_onnx(model, folder / "generator.onnx"))
    rng = np.random.default_rng(1)
    int8 = q.quantize_model(float32, latent_vectors(rng.uniform(2.0, 500.0, 128), rng))
    int8_dir = q.int8_model_dir(float32_dir)
    q.write_int8_model(int8, int8_dir, {"name": f"random-w{width}-int8", "accuracy": {"passed": False}})
    return float32_dir, int8_dir


def _table(runs: list[dict], batches: list[int], cpu: str) -> str:
    by = {(r["runtime"], r["cores"]): r["results"] for r in runs}
    core_counts = sorted({r["cores"] for r in runs})
    head = "| batch |" + "".join(
        f" TF fp32 {c}c | int8 {c}c | int8/fp32 {c}c |" for c in core_counts
    )
    lines = [f"CPU: {cpu}; showers/s (median), each configuration pinned to its cores.", "", head,
             "|---:|" + "---:|" * 3 * len(core_counts)]
    for batch in batches:
        row = f"| {batch} |"
        for c in core_counts:
            tf_rate = by[("tf_float32", c)][str(batch)]["showers_per_s"]
            int8_rate = by[("int8", c)][str(batch)]["showers_per_s"]
            row += f" {tf_rate:.1f} | {int8_rate:.1f} | x{int8_rate / tf_rate:.2f} |"
        lines.append(row)
    return "\n".join(lines) + "\n"


def _plot(runs: list[dict], batches: list[int], cpu: str, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for run in runs:
        rates = [run["results"][str(b)]["showers_per_s"] for b in batches]
        style = "-" if run["runtime"] == "int8" else "--"
        label = f"{'int8 OpenVINO' if run['runtime'] == 'int8' else 'float32 TensorFlow'}, {run['cores']} core(s)"
        ax.plot(batches, rates, style, marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size (showers per call)")
    ax.set_ylabel("showers / s")
    ax.set_title(f"Conv2D generator on the CPU\n{cpu}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=Path("models/conv2d"))
    parser.add_argument("--int8-dir", type=Path, default=None, help="default: <model-dir>_int8")
    parser.add_argument("--random-width", type=float, default=None,
                        help="benchmark a random generator of this width instead (smoke runs before training)")
    parser.add_argument("--quick", action="store_true", help=f"batches {QUICK_BATCHES}, 2 repeats")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("bench/results/cpu_throughput"))
    parser.add_argument("--worker", choices=RUNTIMES, help=argparse.SUPPRESS)
    parser.add_argument("--cores", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.batch_sizes = args.batch_sizes or list(QUICK_BATCHES if args.quick else FULL_BATCHES)
    args.repeats = args.repeats or (2 if args.quick else 3)
    if args.worker:
        _worker(args)
        return

    from app.hardware import cpu_description
    from app.model.quantize import int8_model_dir

    with tempfile.TemporaryDirectory(prefix="calogan-bench-") as scratch:
        if args.random_width is not None:
            print(f"building a random width-{args.random_width} generator and its int8 ...", file=sys.stderr)
            args.model_dir, args.int8_dir = _random_models(args.random_width, Path(scratch))
        int8_dir = args.int8_dir or int8_model_dir(args.model_dir)
        all_cores = len(_usable_cores())
        runs = []
        for cores in sorted({1, all_cores}):
            for runtime in RUNTIMES:
                cmd = [sys.executable, __file__, "--worker", runtime, "--cores", str(cores),
                       "--model-dir", str(args.model_dir), "--int8-dir", str(int8_dir),
                       "--repeats", str(args.repeats), "--batch-sizes", *map(str, args.batch_sizes)]
                done = subprocess.run(cmd, check=True, capture_output=True, text=True,
                                      env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
                runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else runtime, file=sys.stderr)
    cpu = cpu_description()
    for run in runs:  # JSON keys are strings; keep them so for both the file and the table
        run["results"] = {str(k): v for k, v in run["results"].items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table = _table(runs, args.batch_sizes, cpu)
    note = " (random weights: speed only)" if args.random_width is not None else ""
    args.out.with_suffix(".md").write_text(f"# CPU throughput{note}\n\n{table}")
    args.out.with_suffix(".json").write_text(json.dumps({"cpu": cpu, "quick": args.quick, "runs": runs}, indent=2))
    _plot(runs, args.batch_sizes, cpu, args.out.with_suffix(".png"))
    print(table)


if __name__ == "__main__":
    main()
