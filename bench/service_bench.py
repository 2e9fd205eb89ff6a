"""Service throughput against raw model throughput, and n=1 latency under load.

    .venv/bin/python bench/service_bench.py --model-dir models/conv2d          # the shipped model
    .venv/bin/python bench/service_bench.py --backend tiny --batch-size 256     # quick check, no model needed

Steps, each reported in one table with the machine it ran on:

1. raw: the backend alone (``generate`` on ready latent vectors at the service batch size, in a
   separate process so it does not hold the GPU while the server runs), median of ``--repeats``;
2. one big request: ``POST /simulate`` with ``--big-n`` showers, streamed and counted;
3. ``--clients`` concurrent clients, each asking ``--client-n`` showers ``--rounds`` times;
4. latency of n=1 requests (p50/p95/p99) while ``--load-clients`` clients keep the model busy.

The server is ``python -m app.cli serve`` in a subprocess, configured through CALOGAN_* variables.
Service throughput counts response bytes received by the client, so it includes latent noise,
batching, encoding and the HTTP transfer over loopback; the target is >= 90 % of raw.
``--backend tiny`` serves an untrained generator at width 0.05 (the real architecture), saved to a
temporary model folder; ``fake`` measures the service without a model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from app.hardware import cpu_description

REPO = Path(__file__).resolve().parents[1]


def memory_gib() -> float:
    try:
        with open("/proc/meminfo") as f:
            return int(next(line.split()[1] for line in f if line.startswith("MemTotal"))) / 2**20
    except (OSError, StopIteration):
        return float("nan")


def gpu_names() -> str:
    if shutil.which("nvidia-smi") is None:
        return "none"
    result = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                            text=True, check=False)
    return ", ".join(result.stdout.split("\n")[:-1]) or "none"


def save_tiny_model(folder: Path) -> None:
    """An untrained width-0.05 generator as a model folder (generator.keras + model.json).

    Runs in its own process (``--make-tiny``) so that this one never initialises a GPU.
    """
    from app.model.architecture import GeneratorConfig, build_generator
    from app.model.loading import CARD_FILE, CARD_SCHEMA_VERSION, GENERATOR_FILE, sha256_file

    build_generator(GeneratorConfig(width=0.05)).save(folder / GENERATOR_FILE)
    card = {"schema_version": CARD_SCHEMA_VERSION, "name": "conv2d-tiny-untrained", "version": "bench",
            "files": {GENERATOR_FILE: {"sha256": sha256_file(folder / GENERATOR_FILE)}}}
    (folder / CARD_FILE).write_text(json.dumps(card))


def raw_throughput(args: argparse.Namespace) -> dict[str, Any]:
    """Run in its own process (``--raw``): time backend.generate at the batch size; print one JSON line."""
    from app.config import load_settings
    from app.model.latent import latent_vectors
    from app.serving.backends import load_backends

    settings = load_settings(backend=args.backend, model_dir=args.model_dir, device=args.device,
                             max_batch_size=args.batch_size)
    backend = load_backends(settings)[0]
    latent = latent_vectors(np.full(args.batch_size, 100.0), np.random.default_rng(0))
    for _ in range(2):  # warm-up: graph tracing, allocator, GPU autotuning
        backend.generate(latent)
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        backend.generate(latent)
        times.append(time.perf_counter() - start)
    versions = {}
    if "tensorflow" in sys.modules:
        versions["tensorflow"] = sys.modules["tensorflow"].__version__
    return {"showers_per_s": args.batch_size / float(np.median(times)),
            "best_showers_per_s": args.batch_size / min(times), **backend.info.labels(), **versions}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def server(env: dict[str, str]) -> Iterator[str]:
    """``calogan serve`` in a subprocess; yields its URL once /readyz says ready (after warm-up)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(port)], cwd=REPO,
                            env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr: list[str] = []
    threading.Thread(target=lambda: stderr.extend(proc.stderr or []), daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while not _ready(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not become ready:\n{''.join(stderr)[-2000:]}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(120)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=30).status_code == 200
    except httpx.TransportError:
        return False


def fetch(client: httpx.Client, n: int, energy_gev: float = 100.0) -> int:
    """One request, streamed; returns the body size after checking it against the npy size."""
    from app.serving.encoders import npy_size_bytes

    size = 0
    with client.stream("POST", "/simulate", params={"energy": energy_gev, "n": n}) as response:
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {response.read()[:200]!r}")
        for block in response.iter_raw(1 << 20):
            size += len(block)
    if size != npy_size_bytes(n):
        raise RuntimeError(f"short body: {size} of {npy_size_bytes(n)} bytes")
    return size


def big_request(url: str, n: int) -> float:
    with httpx.Client(base_url=url, timeout=3600) as client:
        start = time.perf_counter()
        fetch(client, n)
        return n / (time.perf_counter() - start)


def concurrent_clients(url: str, clients: int, n: int, rounds: int) -> float:
    def one_client(index: int) -> None:
        with httpx.Client(base_url=url, timeout=3600) as client:
            for _ in range(rounds):
                fetch(client, n, energy_gev=5.0 + index * 490.0 / clients)

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one_client, range(clients)))
    return clients * n * rounds / (time.perf_counter() - start)


def latency_under_load(url: str, requests: int, load_clients: int, load_n: int) -> np.ndarray:
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=url, timeout=3600) as client:
            while not stop.is_set():
                fetch(client, load_n)

    threads = [threading.Thread(target=load, daemon=True) for _ in range(load_clients)]
    for thread in threads:
        thread.start()
    latencies = []
    try:
        with httpx.Client(base_url=url, timeout=3600) as client:
            fetch(client, 1)
            for _ in range(requests):
                start = time.perf_counter()
                fetch(client, 1)
                latencies.append(time.perf_counter() - start)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    return np.array(latencies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["tf", "int8", "auto", "fake", "tiny"], default="tf")
    parser.add_argument("--model-dir", type=Path, default=Path("models/conv2d"))
    parser.add_argument("--device", choices=["auto", "cpu", "gpu"], default="auto")
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--queue-delay-ms", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=5, help="timed raw batches")
    parser.add_argument("--big-n", type=int, default=None, help="showers of the big request (default 8 batches)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--client-n", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=None, help="requests per client (default: 8 batches in all)")
    parser.add_argument("--latency-requests", type=int, default=50)
    parser.add_argument("--load-clients", type=int, default=4)
    parser.add_argument("--raw", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--make-tiny", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw:
        print(json.dumps(raw_throughput(args)))
        return
    if args.make_tiny:
        save_tiny_model(args.make_tiny)
        return

    big_n = args.big_n or 8 * args.batch_size
    rounds = args.rounds or max(1, -(-8 * args.batch_size // (args.clients * args.client_n)))
    temporary = None
    if args.backend == "tiny":
        temporary = args.model_dir = Path(tempfile.mkdtemp(prefix="calogan-bench-"))
        subprocess.run([sys.executable, __file__, "--make-tiny", str(temporary)], cwd=REPO, check=True,
                       capture_output=True)
        args.backend = "tf"
    try:
        raw_cmd = [sys.executable, __file__, "--raw", "--backend", args.backend, "--model-dir", str(args.model_dir),
                   "--device", args.device, "--batch-size", str(args.batch_size), "--repeats", str(args.repeats)]
        raw_out = subprocess.run(raw_cmd, cwd=REPO, capture_output=True, text=True, check=False)
        if raw_out.returncode != 0:
            sys.exit(f"raw benchmark failed:\n{raw_out.stderr[-2000:]}")
        raw = json.loads(raw_out.stdout.strip().splitlines()[-1])
        limit = str(max(big_n, 65_536))
        env = {
            "CALOGAN_BACKEND": args.backend, "CALOGAN_MODEL_DIR": str(args.model_dir), "CALOGAN_DEVICE": args.device,
            "CALOGAN_MAX_BATCH_SIZE": str(args.batch_size),
            "CALOGAN_MAX_QUEUE_DELAY_MS": str(args.queue_delay_ms), "CALOGAN_MAX_SHOWERS_PER_REQUEST": limit,
            "CALOGAN_MAX_QUEUED_SHOWERS": limit, "CALOGAN_LOG_LEVEL": "WARNING", "CALOGAN_API_TOKENS": "",
        }
        with server(env) as url:
            big = big_request(url, big_n)
            many = concurrent_clients(url, args.clients, args.client_n, rounds)
            latency_ms = 1000 * latency_under_load(url, args.latency_requests, args.load_clients,
                                                   max(1, args.batch_size // 4))
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)

    p50, p95, p99 = np.percentile(latency_ms, [50, 95, 99])
    print(f"# machine: {cpu_description()}, {os.cpu_count()} logical CPUs (affinity {len(os.sched_getaffinity(0))}), "
          f"{memory_gib():.0f} GiB RAM, GPU: {gpu_names()}")
    print(f"# model: {raw['name']} {raw['version']}, backend {raw['backend']} on {raw['device']} "
          f"({raw['precision']}), TensorFlow {raw.get('tensorflow', '-')}, numpy {np.__version__}, "
          f"Python {platform.python_version()}")
    print(f"# service: batch {args.batch_size}, queue delay {args.queue_delay_ms:g} ms, npy float32 over loopback")
    print("| measurement | value | vs raw |")
    print("|---|---|---|")
    print(f"| raw model, batch {args.batch_size} (median of {args.repeats}) | {raw['showers_per_s']:,.0f} showers/s | "
          "100 % |")
    print(f"| one request, n={big_n} | {big:,.0f} showers/s | {100 * big / raw['showers_per_s']:.0f} % |")
    print(f"| {args.clients} clients x {rounds} x n={args.client_n} | {many:,.0f} showers/s | "
          f"{100 * many / raw['showers_per_s']:.0f} % |")
    print(f"| n=1 latency under load ({args.load_clients} clients at n={max(1, args.batch_size // 4)}), "
          f"{len(latency_ms)} requests | p50 {p50:.1f} ms, p95 {p95:.1f} ms, p99 {p99:.1f} ms | |")


if __name__ == "__main__":
    main()
