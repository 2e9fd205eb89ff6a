"""``calogan quantize``: an int8 CPU generator next to the float32 one, accepted on physics metrics.

Wires the pieces of :mod:`app.model.quantize` together: the float32 generator (``app.model.loading``),
calibration and acceptance latents (``app.model.latent``), the reference Monte Carlo
(``app.physics.mc``) and the shape metric (``app.validation.metrics.mse_shape``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from app.errors import InvalidRequest
from app.model.loading import DEFAULT_MODEL_DIR, GENERATOR_FILE

_SPEED_REPEATS = 3


def quantize(
    model_dir: Annotated[Path, typer.Option(help="Float32 model folder (generator.keras + model.json).")] = (
        DEFAULT_MODEL_DIR
    ),
    out: Annotated[
        Path | None, typer.Option(help="Output folder; default: next to the float32 one, '<name>_int8'.")
    ] = None,
    calib_n: Annotated[int, typer.Option(help="Calibration latents (primaries uniform in 2-500 GeV).")] = 512,
    eval_n: Annotated[int, typer.Option(help="Showers per acceptance energy (10, 50, 100, 200, 400 GeV).")] = 200,
    seed: Annotated[int | None, typer.Option(help="Random seed; drawn and recorded when omitted.")] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads; default: the cores this process may use.")] = None,
    max_float32_layers: Annotated[
        int | None, typer.Option(help="Give up after keeping this many layers in float32 (default: no limit).")
    ] = None,
    speed_batch: Annotated[int, typer.Option(help="Batch size of the speed measurement written to the card.")] = 128,
) -> None:
    """Quantize a generator to int8 for CPUs; layers that hurt the physics stay float32."""
    from app.hardware import cpu_cores
    from app.model.quantize import int8_model_dir

    out_dir = out if out is not None else int8_model_dir(model_dir)
    _check_options(model_dir, out_dir, calib_n, eval_n, threads, max_float32_layers, speed_batch)
    threads = threads or cpu_cores()
    _limit_tensorflow_threads(threads)
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % 2**63)
    card = build_int8_model(
        model_dir, out_dir, calib_n=calib_n, eval_n=eval_n, seed=seed, threads=threads,
        max_float32_layers=max_float32_layers, speed_batch=speed_batch, echo=typer.echo,
    )
    accuracy = card["accuracy"]
    kept = card["quantization"]["keep_float32"]
    verdict = "passed" if accuracy["passed"] else "FAILED"
    typer.echo(
        f"wrote {out_dir} ({verdict}; float32 layers: {', '.join(kept) or 'none'}; "
        f"x{card['speed']['speedup']:.2f} vs float32 TF at batch {speed_batch}, {threads} threads)"
    )
    if accuracy["passed"] and not card["quantization"]["quantized_layers"]:
        raise InvalidRequest(
            f"only the all-float32 model met the acceptance criteria; it was written to {out_dir} for the record "
            "but will not be served as int8",
            allowed="a generator whose activations fit static int8 ranges (see docs/int8.md)",
        )
    if not accuracy["passed"]:
        raise InvalidRequest(
            "no int8 model met the acceptance criteria within --max-float32-layers; the last one tried was written "
            f"to {out_dir} with passed=false and will not be served",
            allowed="a larger --max-float32-layers",
        )


def _check_options(
    model_dir: Path, out_dir: Path, calib_n: int, eval_n: int, threads: int | None,
    max_float32_layers: int | None, speed_batch: int,
) -> None:
    """Bad options become one InvalidRequest line before anything slow starts."""
    if not (model_dir / GENERATOR_FILE).is_file():
        raise InvalidRequest(f"no float32 generator at {model_dir / GENERATOR_FILE}", allowed="a model folder "
                             "written by `calogan export` (generator.keras + model.json)")
    if out_dir.resolve() == model_dir.resolve():
        raise InvalidRequest(f"--out {out_dir} is the float32 model folder", allowed="a separate folder")
    if calib_n < 16:
        raise InvalidRequest(f"--calib-n {calib_n} is too few to set activation ranges", allowed=">= 16")
    if eval_n < 10:
        raise InvalidRequest(f"--eval-n {eval_n} is too few showers per energy for a mean", allowed=">= 10")
    if threads is not None and threads < 1:
        raise InvalidRequest(f"--threads {threads}", allowed=">= 1")
    if max_float32_layers is not None and max_float32_layers < 0:
        raise InvalidRequest(f"--max-float32-layers {max_float32_layers}", allowed=">= 0")
    if speed_batch < 1:
        raise InvalidRequest(f"--speed-batch {speed_batch}", allowed=">= 1")


def _limit_tensorflow_threads(threads: int) -> None:
    import tensorflow as tf

    try:  # only possible before TensorFlow's first op; afterwards the existing pools stay
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass


def build_int8_model(
    model_dir: Path,
    out_dir: Path,
    *,
    calib_n: int,
    eval_n: int,
    seed: int,
    threads: int,
    max_float32_layers: int | None = None,
    speed_batch: int = 128,
    echo: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Quantize ``model_dir``'s generator, check it, measure it and write ``out_dir``; returns the card."""
    import nncf
    import openvino as ov
    import tensorflow as tf

    from app.model import quantize as q
    from app.model.latent import latent_vectors
    from app.model.loading import load_generator
    from app.physics.mc import MC_VERSION, ShowerSimulator
    from app.validation.metrics import mse_shape

    say = echo or (lambda _text: None)
    loaded = load_generator(model_dir)
    keras_model = loaded.model
    run_tf = tf.function(
        lambda z: keras_model(z, training=False),
        input_signature=[tf.TensorSpec((None, int(keras_model.inputs[0].shape[-1])), tf.float32)],
    )

    def generate_float32(latent: np.ndarray, batch_size: int = 256) -> np.ndarray:
        chunks = [run_tf(latent[i : i + batch_size]).numpy() for i in range(0, len(latent), batch_size)]
        return np.concatenate(chunks).astype(np.float32, copy=False)

    def run(model: Any, latent: np.ndarray) -> np.ndarray:
        return q.run_compiled(q.compile_cpu(model, threads), latent)

    def report(step: q.QuantizationStep) -> None:
        kept = ", ".join(step.keep_float32) or "none"
        verdict = "passed" if step.report.passed else "failed"
        say(f"float32 layers: {kept} -> {verdict} (worst use of a tolerance {step.report.violation:.2f})")

    rng = np.random.default_rng(seed)
    calibration = latent_vectors(rng.uniform(*q.CALIBRATION_RANGE_GEV, size=calib_n), rng)
    say(f"acceptance sample: {eval_n} showers at each of {', '.join(f'{e:g}' for e in q.ACCEPTANCE_ENERGIES_GEV)} GeV")
    sample = q.acceptance_sample(generate_float32, ShowerSimulator().simulate, latent_vectors, rng, n_per_energy=eval_n)
    with q.temporary_workdir() as workdir:  # holds the exported ONNX file while OpenVINO reads it
        float32_model = q.onnx_to_openvino(q.source_onnx(model_dir, keras_model, loaded.card, Path(workdir)))
        layers = list(q.quantizable_layers(float32_model))
        result = q.quantize_with_accuracy_control(
            partial(q.quantize_model, float32_model, calibration), run, layers, sample, mse_shape, float32_model,
            max_float32_layers=max_float32_layers, on_step=report,
        )
    speed = _measure_speed(generate_float32, q.compile_cpu(result.model, threads), speed_batch, threads, rng)
    source_bytes = (model_dir / GENERATOR_FILE).stat().st_size
    card = {
        "name": f"{loaded.card.get('name', model_dir.name)}-int8",
        "version": loaded.card.get("version", "unknown"),
        "source": {"model_dir": str(model_dir), "file": GENERATOR_FILE, "sha256": loaded.sha256, "bytes": source_bytes},
        "quantization": {
            "runtime": f"openvino {ov.__version__}",
            "tool": f"nncf {nncf.__version__}",
            "preset": "mixed: symmetric per-channel int8 weights, asymmetric int8 activations",
            "keep_float32": list(result.keep_float32),
            "quantized_layers": len(layers) - len(result.keep_float32),
            "total_layers": len(layers),
            "sensitivity": result.sensitivity,
            "steps": [
                {"keep_float32": list(s.keep_float32), "violation": s.report.to_dict()["violation"],
                 "passed": s.report.passed}
                for s in result.steps
            ],
            "calibration": {
                "n": calib_n, "energy_range_gev": list(q.CALIBRATION_RANGE_GEV), "seed": seed,
                "description": f"{calib_n} latent vectors (z ~ N(0, 1) x Ep / 100 GeV) for Ep uniform in "
                f"{q.CALIBRATION_RANGE_GEV[0]:g}-{q.CALIBRATION_RANGE_GEV[1]:g} GeV, seed {seed}",
            },
        },
        "accuracy": {
            **result.report.to_dict(),
            "n_per_energy": eval_n,
            "reference": f"the project Monte Carlo (app.physics.mc, MC_VERSION {MC_VERSION}), {eval_n} showers per "
            "energy",
            "float32": "the Keras generator in TensorFlow",
        },
        "speed": speed,
        "size_bytes": {"float32": source_bytes},
    }
    return q.write_int8_model(result.model, out_dir, card)


def _measure_speed(
    generate_float32: Any, compiled_int8: Any, batch_size: int, threads: int, rng: np.random.Generator
) -> dict[str, Any]:
    """Showers/s of float32 TensorFlow and int8 OpenVINO at one batch size, after a warm-up call each."""
    from app.hardware import cpu_description
    from app.model.architecture import LATENT_SIZE
    from app.model.quantize import run_compiled

    latent = rng.standard_normal((batch_size, LATENT_SIZE), dtype=np.float32)
    rates = {}
    for name, fn in (
        ("float32", lambda: generate_float32(latent, batch_size)),
        ("int8", lambda: run_compiled(compiled_int8, latent, batch_size)),
    ):
        fn()  # warm-up: first-call allocation and kernel selection
        times = []
        for _ in range(_SPEED_REPEATS):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        rates[name] = batch_size / float(np.median(times))
    return {
        "batch_size": batch_size, "threads": threads, "repeats": _SPEED_REPEATS, "cpu": cpu_description(),
        "float32_showers_per_s": rates["float32"], "int8_showers_per_s": rates["int8"],
        "speedup": rates["int8"] / rates["float32"],
        "note": "median of a few calls in the quantize run; bench/cpu_throughput.py gives the full picture",
    }
