"""Post-training static int8 quantization of the generator for CPUs, accepted on physics, not on MSE.

Runtime: OpenVINO, quantized with NNCF (``docs/int8.md`` says why: on the project's AVX2 CPU it ran the
generator 1.2x faster than ONNX Runtime's int8 and about 2x faster than float32 TensorFlow). The
float32 Keras generator goes through ONNX (Keras' own exporter, or the ``generator.onnx`` shipped next
to it), so layers keep readable names (``branch_xy/b3b``); NNCF inserts FakeQuantize nodes from
activation ranges seen on calibration latents drawn across 2-500 GeV, and OpenVINO's CPU plugin runs
them as int8 kernels.

Acceptance (what "close enough" means, decided before looking at results): at 10, 50, 100, 200 and 400
GeV, on IDENTICAL latent inputs,

- the mean sampling fraction S/Ep of the int8 showers is within 1 % of the float32 showers', and
- the shape metric (``mse_shape``: mean normalised projections) of int8 against a reference sample of
  the project's Monte Carlo is no more than 10 % worse (relative) than float32's against the same sample.

When the fully quantized model fails, layers are ranked by sensitivity (the output error of the
model with only that layer back in float32) and put back into float32 one by one, most sensitive
first, until the model passes (:func:`quantize_with_accuracy_control`).

This module imports ``openvino`` and ``nncf`` only inside functions. The shape metric is passed in
(``app.validation.metrics.mse_shape`` from the CLI), so the model package does not import validation.

Folder written by :func:`write_int8_model` (next to the float32 folder, ``models/conv2d_int8``)::

    generator_int8.xml   OpenVINO IR: topology and FakeQuantize parameters
    generator_int8.bin   weights: int8 for quantized layers, float32 for the layers kept in float32
    model.json           card: source model, runtime, kept layers, calibration, accuracy, speed, sizes
    model_card.md        the same for humans
"""

from __future__ import annotations

import json
import logging
import math
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np

from app.errors import InvalidRequest, ModelLoadError
from app.hardware import cpu_cores
from app.model.loading import (
    CARD_FILE,
    CARD_MARKDOWN_FILE,
    CARD_SCHEMA_VERSION,
    ONNX_FILE,
    parse_card_file,
    sha256_file,
    verify_file,
)
from app.physics.detector import SHOWER_SHAPE, FloatArray
from app.physics.observables import ShowerObservables, observe

logger = logging.getLogger(__name__)

__all__ = [
    "ACCEPTANCE_ENERGIES_GEV",
    "CALIBRATION_RANGE_GEV",
    "INT8_BIN_FILE",
    "INT8_XML_FILE",
    "MSE_SHAPE_RTOL",
    "SAMPLING_FRACTION_RTOL",
    "AcceptanceSample",
    "AccuracyReport",
    "EnergyCheck",
    "Int8Generator",
    "QuantizationResult",
    "acceptance_sample",
    "check_accuracy",
    "compile_cpu",
    "int8_model_dir",
    "load_int8_generator",
    "onnx_to_openvino",
    "quantizable_layers",
    "quantize_model",
    "quantize_with_accuracy_control",
    "rank_layers",
    "read_int8_card",
    "run_compiled",
    "write_int8_model",
]

INT8_XML_FILE: Final = "generator_int8.xml"
INT8_BIN_FILE: Final = "generator_int8.bin"
INT8_DIR_SUFFIX: Final = "_int8"

ACCEPTANCE_ENERGIES_GEV: Final = (10.0, 50.0, 100.0, 200.0, 400.0)
"""Primary energies at which the int8 model must match float32, GeV (those of the Geant4 samples)."""

CALIBRATION_RANGE_GEV: Final = (2.0, 500.0)
"""Calibration latents are drawn for primaries uniform in this range, GeV: the served range."""

SAMPLING_FRACTION_RTOL: Final = 0.01
"""Largest |mean S/Ep int8 / mean S/Ep float32 - 1| accepted at each energy."""

MSE_SHAPE_RTOL: Final = 0.10
"""Largest relative worsening of mse_shape against the reference accepted at each energy."""

_QUANTIZABLE_OPS: Final = ("Convolution", "ConvolutionBackpropData", "MatMul")
_RUN_BATCH: Final = 256  # showers per OpenVINO call when running large samples (bounds memory, ~16 MB out)

ShapeMetric = Callable[[ShowerObservables, ShowerObservables], float]
"""A two-sample shape metric at matched energy, >= 0, 0 when identical (``app.validation.metrics.mse_shape``)."""

GenerateFn = Callable[[FloatArray], FloatArray]
"""Latent (N, 200) float32 -> showers (N, 25, 25, 25) float32 GeV."""


# -- machine -----------------------------------------------------------------------------------------


# -- OpenVINO models ---------------------------------------------------------------------------------


def onnx_to_openvino(onnx_path: str | Path) -> Any:
    """Read an ONNX generator into an OpenVINO model with a dynamic batch axis.

    Parameters
    ----------
    onnx_path : str or Path
        ONNX file mapping ``latent`` (N, 200) float32 to (N, 25, 25, 25) float32 GeV.

    Returns
    -------
    openvino.Model
        Not compiled; node names are those of the ONNX graph.
    """
    import openvino as ov

    try:
        model = ov.Core().read_model(str(onnx_path))
    except RuntimeError as exc:  # OpenVINO reports every parse problem as RuntimeError
        raise ModelLoadError(f"{onnx_path}: OpenVINO cannot read the ONNX generator ({exc})") from exc
    model.reshape({model.inputs[0]: ov.PartialShape([-1, model.inputs[0].get_partial_shape()[1]])})
    return model


def source_onnx(model_dir: Path, keras_model: Any, card: Mapping[str, Any], workdir: Path) -> Path:
    """The float32 generator as ONNX: the shipped ``generator.onnx`` when the card lists it, else exported.

    Going through ONNX (rather than OpenVINO's TensorFlow frontend) keeps the Keras layer names on the
    graph nodes, so the card can say which layers stayed float32.
    """
    if isinstance(card.get("files", {}).get(ONNX_FILE), dict):
        verify_file(model_dir, ONNX_FILE, dict(card))
        return model_dir / ONNX_FILE
    from app.model.export import export_onnx

    return export_onnx(keras_model, workdir / ONNX_FILE)


def compile_cpu(model: Any, threads: int | None = None) -> Any:
    """Compile an OpenVINO model for the CPU: float32 arithmetic outside int8 layers, one stream.

    Parameters
    ----------
    model : openvino.Model
        Float32 or FakeQuantize (int8) generator.
    threads : int, optional
        Inference threads; :func:`cpu_cores` by default (intra-op = cores).

    Notes
    -----
    ``INFERENCE_PRECISION_HINT=f32`` pins the layers kept in float32 to float32: on CPUs with bf16 or
    AMX units OpenVINO would otherwise run them in bf16, which the accuracy check never saw. One
    stream and the latency hint match the service, which runs one batch at a time on one thread.
    """
    import openvino as ov

    config = {
        "INFERENCE_NUM_THREADS": int(threads or cpu_cores()),
        "NUM_STREAMS": 1,
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "f32",
    }
    return ov.Core().compile_model(model, "CPU", config)


def run_compiled(compiled: Any, latent: FloatArray, batch_size: int = _RUN_BATCH) -> FloatArray:
    """Showers from a compiled OpenVINO generator, ``batch_size`` rows per call.

    Parameters
    ----------
    compiled : openvino.CompiledModel
        From :func:`compile_cpu`.
    latent : ndarray, shape (N, 200), float32
        Generator input (``app.model.latent.latent_vectors``).

    Returns
    -------
    ndarray, shape (N, 25, 25, 25), float32
        Visible energy per cell, GeV, indexed [x, y, layer].
    """
    latent = np.ascontiguousarray(latent, dtype=np.float32)
    out = np.empty((len(latent), *SHOWER_SHAPE), dtype=np.float32)
    request = compiled.create_infer_request()
    for start in range(0, len(latent), batch_size):
        chunk = latent[start : start + batch_size]
        result = request.infer({0: chunk})
        out[start : start + len(chunk)] = next(iter(result.values())).reshape(len(chunk), *SHOWER_SHAPE)
    return out


def _readable(node_name: str) -> str:
    """``conv2d_generator_1/branch_xy_1/b3b_1/conv_1/convolution`` -> ``branch_xy/b3b``: the Keras layer path."""
    parts = [re.sub(r"_\d+$", "", part) for part in node_name.split("/")]
    parts = [p for p in parts[1:] if p not in ("conv", "convolution", "conv_transpose", "MatMul")]
    return "/".join(parts) or node_name


def quantizable_layers(model: Any) -> dict[str, str]:
    """The layers NNCF may quantize (dense, conv, transposed conv), in graph order.

    Returns
    -------
    dict of str to str
        Readable Keras layer path (``stem_dense``, ``branch_xy/b1``, ``merge_conv``) to OpenVINO node name.
    """
    layers: dict[str, str] = {}
    for op in model.get_ordered_ops():
        if op.get_type_name() in _QUANTIZABLE_OPS:
            name = op.get_friendly_name()
            layers[_readable(name)] = name
    return layers


def quantize_model(
    model: Any, calibration_latent: FloatArray, keep_float32: Sequence[str] = (), *, batch_size: int = 32
) -> Any:
    """Post-training static int8 quantization with NNCF, some layers left in float32.

    Parameters
    ----------
    model : openvino.Model
        The float32 generator (:func:`onnx_to_openvino`).
    calibration_latent : ndarray, shape (M, 200), float32
        Latent vectors whose activations set the int8 ranges; drawn across the served energies.
    keep_float32 : sequence of str
        Readable layer names (keys of :func:`quantizable_layers`) not to quantize.
    batch_size : int
        Rows per calibration call.

    Returns
    -------
    openvino.Model
        The model with FakeQuantize nodes; compiled for the CPU they run as int8.

    Notes
    -----
    Preset MIXED: symmetric per-channel int8 weights, asymmetric activations. The activations here
    are LeakyReLU outputs followed by batch normalisation, far from symmetric about zero, and the
    symmetric preset lost a third of the range (on a random full-size generator the total deposit moved
    by 12 % instead of 3 %).
    """
    import nncf

    # NNCF logs every ignored node and draws progress bars at INFO; the CLI reports progress itself.
    nncf.set_log_level(logging.WARNING)
    layers = quantizable_layers(model)
    unknown = sorted(set(keep_float32) - set(layers))
    if unknown:
        raise InvalidRequest(f"unknown layers {unknown}", allowed=", ".join(layers))
    latent = np.asarray(calibration_latent, dtype=np.float32)
    batches = [latent[i : i + batch_size] for i in range(0, len(latent), batch_size)]
    return nncf.quantize(
        model,
        nncf.Dataset(batches),
        preset=nncf.QuantizationPreset.MIXED,
        subset_size=len(batches),  # NNCF counts dataset items, here batches
        ignored_scope=nncf.IgnoredScope(names=[layers[name] for name in keep_float32]),
    )


# -- the physics acceptance --------------------------------------------------------------------------


@dataclass(frozen=True)
class AcceptanceSample:
    """The fixed inputs of the accuracy check: identical latents for both precisions, and references.

    Attributes
    ----------
    latent : ndarray, shape (N, 200), float32
        Generator input, ``n_per_energy`` rows per energy, energies in ``energies_gev`` order.
    ep_gev : ndarray, shape (N,)
        Primary energy of each row, GeV.
    energies_gev : tuple of float
        The acceptance energies, GeV.
    float32 : ShowerObservables
        Observables of the float32 generator's showers for ``latent``.
    reference : ShowerObservables
        Observables of an independent reference sample (the project's Monte Carlo) at the same energies.
    """

    latent: FloatArray
    ep_gev: FloatArray
    energies_gev: tuple[float, ...]
    float32: ShowerObservables
    reference: ShowerObservables


def acceptance_sample(
    generate_float32: GenerateFn,
    reference: Callable[[FloatArray, np.random.Generator], FloatArray],
    latent_fn: Callable[[FloatArray, np.random.Generator], FloatArray],
    rng: np.random.Generator,
    *,
    n_per_energy: int,
    energies_gev: Sequence[float] = ACCEPTANCE_ENERGIES_GEV,
) -> AcceptanceSample:
    """Draw the acceptance inputs once and run the float32 generator and the reference on them.

    Parameters
    ----------
    generate_float32 : callable
        The float32 generator: latent (N, 200) -> showers (N, 25, 25, 25) GeV.
    reference : callable
        Reference showers for primaries ``ep_gev`` (N,): ``ShowerSimulator().simulate``.
    latent_fn : callable
        ``app.model.latent.latent_vectors``.
    rng : numpy.random.Generator
        Source of the latents and of the reference sample.
    n_per_energy : int
        Showers per acceptance energy (>= 10).
    energies_gev : sequence of float
        Acceptance energies, GeV.

    Returns
    -------
    AcceptanceSample
    """
    if n_per_energy < 10:
        raise InvalidRequest(f"{n_per_energy} showers per energy is too few for a mean", allowed=">= 10")
    energies = tuple(float(e) for e in energies_gev)
    ep_gev = np.repeat(np.asarray(energies, dtype=np.float64), n_per_energy)
    latent = np.asarray(latent_fn(ep_gev, rng), dtype=np.float32)
    cells_float32 = generate_float32(latent)
    cells_reference = reference(ep_gev, rng)
    return AcceptanceSample(
        latent=latent,
        ep_gev=ep_gev,
        energies_gev=energies,
        float32=observe(cells_float32, ep_gev),
        reference=observe(cells_reference, ep_gev),
    )


@dataclass(frozen=True)
class EnergyCheck:
    """Float32 and int8 at one acceptance energy; means over identical latent inputs."""

    ep_gev: float
    sampling_fraction_float32: float
    sampling_fraction_int8: float
    mse_shape_float32: float
    mse_shape_int8: float

    @property
    def sampling_fraction_rel_diff(self) -> float:
        """mean S/Ep int8 / mean S/Ep float32 - 1, signed; NaN when float32's mean is 0."""
        if self.sampling_fraction_float32 == 0:
            return float("nan")
        return self.sampling_fraction_int8 / self.sampling_fraction_float32 - 1.0

    @property
    def mse_shape_rel_change(self) -> float:
        """mse_shape int8 / mse_shape float32 - 1 against the same reference; > 0 means int8 is worse."""
        if self.mse_shape_float32 == 0:
            return 0.0 if self.mse_shape_int8 == 0 else float("inf")
        return self.mse_shape_int8 / self.mse_shape_float32 - 1.0


@dataclass(frozen=True)
class AccuracyReport:
    """The acceptance verdict: one :class:`EnergyCheck` per energy and the tolerances applied."""

    checks: tuple[EnergyCheck, ...]
    sampling_fraction_rtol: float = SAMPLING_FRACTION_RTOL
    mse_shape_rtol: float = MSE_SHAPE_RTOL

    @property
    def violation(self) -> float:
        """Worst use of a tolerance: max over energies of |dSF| / sf_rtol and d(mse) / mse_rtol.

        Below or at 1 every criterion holds. NaN (an empty sample, a model gone silent) counts as inf.
        """
        worst = 0.0
        for check in self.checks:
            for value in (
                abs(check.sampling_fraction_rel_diff) / self.sampling_fraction_rtol,
                check.mse_shape_rel_change / self.mse_shape_rtol,
            ):
                worst = max(worst, value if math.isfinite(value) else math.inf)
        return worst

    @property
    def passed(self) -> bool:
        """Every energy within both tolerances."""
        return self.violation <= 1.0

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form for the model card."""
        return {
            "passed": self.passed,
            "violation": _finite_or_none(self.violation),
            "criteria": {
                "sampling_fraction": f"|mean S/Ep int8 / float32 - 1| <= {self.sampling_fraction_rtol:g} "
                "at each energy, identical latents",
                "mse_shape": f"mse_shape(int8, reference) <= (1 + {self.mse_shape_rtol:g}) * mse_shape(float32, "
                "reference) at each energy",
            },
            "energies": [
                {
                    **{k: _finite_or_none(v) for k, v in asdict(check).items()},
                    "sampling_fraction_rel_diff": _finite_or_none(check.sampling_fraction_rel_diff),
                    "mse_shape_rel_change": _finite_or_none(check.mse_shape_rel_change),
                }
                for check in self.checks
            ],
        }


def _finite_or_none(value: float) -> float | None:
    """JSON has no NaN or inf: they become null."""
    return float(value) if math.isfinite(value) else None


def check_accuracy(
    cells_int8: FloatArray,
    sample: AcceptanceSample,
    shape_metric: ShapeMetric,
    *,
    sampling_fraction_rtol: float = SAMPLING_FRACTION_RTOL,
    mse_shape_rtol: float = MSE_SHAPE_RTOL,
) -> AccuracyReport:
    """Compare int8 showers with the float32 ones made from the same latents, energy by energy.

    Parameters
    ----------
    cells_int8 : ndarray, shape (N, 25, 25, 25)
        Int8 generator output for ``sample.latent``, GeV.
    sample : AcceptanceSample
        From :func:`acceptance_sample`.
    shape_metric : callable
        ``app.validation.metrics.mse_shape``.
    sampling_fraction_rtol, mse_shape_rtol : float
        Tolerances (see :data:`SAMPLING_FRACTION_RTOL`, :data:`MSE_SHAPE_RTOL`).

    Returns
    -------
    AccuracyReport
    """
    if len(cells_int8) != len(sample.ep_gev):
        raise ValueError(f"{len(cells_int8)} int8 showers for {len(sample.ep_gev)} latent rows")
    int8 = observe(cells_int8, sample.ep_gev)
    checks = []
    for energy in sample.energies_gev:
        mask = sample.ep_gev == energy
        ref_mask = sample.reference.ep_gev == energy
        fp32_e, int8_e, ref_e = sample.float32.select(mask), int8.select(mask), sample.reference.select(ref_mask)
        checks.append(
            EnergyCheck(
                ep_gev=energy,
                sampling_fraction_float32=float(np.mean(fp32_e.sampling_fraction)),
                sampling_fraction_int8=float(np.mean(int8_e.sampling_fraction)),
                mse_shape_float32=float(shape_metric(fp32_e, ref_e)),
                mse_shape_int8=float(shape_metric(int8_e, ref_e)),
            )
        )
    return AccuracyReport(tuple(checks), sampling_fraction_rtol, mse_shape_rtol)


# -- the accuracy-aware loop -------------------------------------------------------------------------


@dataclass(frozen=True)
class QuantizationStep:
    """One model tried by the loop: the layers it kept in float32 and its verdict."""

    keep_float32: tuple[str, ...]
    report: AccuracyReport


@dataclass(frozen=True)
class QuantizationResult:
    """The accepted int8 model (or the last one tried), how it was reached, and the layer ranking."""

    model: Any
    keep_float32: tuple[str, ...]
    report: AccuracyReport
    steps: tuple[QuantizationStep, ...]
    sensitivity: dict[str, float] = field(default_factory=dict)
    layers: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        """The returned model meets the acceptance criteria."""
        return self.report.passed


def rank_layers(
    quantize: Callable[[Sequence[str]], Any],
    run: Callable[[Any, FloatArray], FloatArray],
    layers: Sequence[str],
    latent: FloatArray,
    cells_float32: FloatArray,
) -> dict[str, float]:
    """Sensitivity of each layer: the output error left when only that layer goes back to float32.

    Parameters
    ----------
    quantize : callable
        ``keep_float32 -> int8 model``.
    run : callable
        ``(model, latent) -> showers`` (N, 25, 25, 25) GeV.
    layers : sequence of str
        Candidate layers.
    latent : ndarray, shape (N, 200)
        A small ranking sample (a few showers per acceptance energy is enough).
    cells_float32 : ndarray, shape (N, 25, 25, 25)
        Float32 showers for ``latent``, GeV.

    Returns
    -------
    dict of str to float
        Layer -> relative L2 error ||int8 - float32|| / ||float32|| with that layer in float32,
        sorted most sensitive (smallest remaining error) first.

    Notes
    -----
    One quantization per layer: the cost grows with the layer count (29 here), which is why the loop
    ranks only when the fully quantized model fails. The relative L2 error of the cells is a smooth
    proxy of both acceptance criteria (it moves with the total deposit and with the shape); NNCF's own
    accuracy-control ranking uses the same kind of output distance.
    """
    norm = float(np.linalg.norm(cells_float32)) or 1.0
    errors = {}
    for layer in layers:
        cells = run(quantize([layer]), latent)
        errors[layer] = float(np.linalg.norm(cells - cells_float32)) / norm
    return dict(sorted(errors.items(), key=lambda item: item[1]))


def quantize_with_accuracy_control(
    quantize: Callable[[Sequence[str]], Any],
    run: Callable[[Any, FloatArray], FloatArray],
    layers: Sequence[str],
    sample: AcceptanceSample,
    shape_metric: ShapeMetric,
    float32_model: Any,
    *,
    ranking_rows: int = 20,
    max_float32_layers: int | None = None,
    on_step: Callable[[QuantizationStep], None] | None = None,
) -> QuantizationResult:
    """Quantize everything; while the physics check fails, put the next most sensitive layer back in float32.

    Parameters
    ----------
    quantize : callable
        ``keep_float32 (sequence of layer names) -> int8 model`` (:func:`quantize_model` with its data bound).
    run : callable
        ``(model, latent (N, 200)) -> showers (N, 25, 25, 25)`` GeV.
    layers : sequence of str
        Layers that may be kept in float32 (:func:`quantizable_layers`).
    sample : AcceptanceSample
        Acceptance inputs and references (:func:`acceptance_sample`).
    shape_metric : callable
        ``app.validation.metrics.mse_shape``.
    float32_model : Any
        The unquantized model, as ``run`` takes it (the ranking compares against its showers).
    ranking_rows : int
        Rows per acceptance energy used to rank layers (taken from ``sample``).
    max_float32_layers : int, optional
        Give up after keeping this many layers in float32 (all of them by default).
    on_step : callable, optional
        Called after each model is checked (progress output).

    Returns
    -------
    QuantizationResult
        ``passed`` is False only when ``max_float32_layers`` ran out (or float32 itself fails, which
        would mean the runtime does not reproduce TensorFlow).
    """
    limit = len(layers) if max_float32_layers is None else max(0, min(max_float32_layers, len(layers)))
    steps: list[QuantizationStep] = []

    def attempt(keep: tuple[str, ...]) -> tuple[Any, AccuracyReport]:
        model = quantize(keep)
        report = check_accuracy(run(model, sample.latent), sample, shape_metric)
        step = QuantizationStep(keep, report)
        steps.append(step)
        logger.info(
            "int8 candidate checked",
            extra={"keep_float32": list(keep), "violation": report.violation, "passed": report.passed},
        )
        if on_step is not None:
            on_step(step)
        return model, report

    keep: tuple[str, ...] = ()
    model, report = attempt(keep)
    sensitivity: dict[str, float] = {}
    if not report.passed and limit > 0:
        rows = _ranking_rows(sample, ranking_rows)
        fp32_cells = run(float32_model, sample.latent[rows])
        sensitivity = rank_layers(quantize, run, layers, sample.latent[rows], fp32_cells)
        for layer in list(sensitivity)[:limit]:
            keep = (*keep, layer)
            model, report = attempt(keep)
            if report.passed:
                break
    return QuantizationResult(model, keep, report, tuple(steps), sensitivity, tuple(layers))


def _ranking_rows(sample: AcceptanceSample, per_energy: int) -> np.ndarray:
    """Indices of the first ``per_energy`` rows at each acceptance energy."""
    rows = [np.flatnonzero(sample.ep_gev == energy)[:per_energy] for energy in sample.energies_gev]
    return np.concatenate(rows)


# -- the int8 model folder ---------------------------------------------------------------------------


def int8_model_dir(model_dir: str | Path) -> Path:
    """Where the int8 model of a float32 model folder lives: ``models/conv2d`` -> ``models/conv2d_int8``."""
    folder = Path(model_dir)
    return folder.with_name(folder.name + INT8_DIR_SUFFIX)


def write_int8_model(model: Any, out_dir: str | Path, card: Mapping[str, Any]) -> dict[str, Any]:
    """Save the int8 IR, then its ``model.json`` and ``model_card.md`` with checksums and sizes.

    Parameters
    ----------
    model : openvino.Model
        The quantized generator.
    out_dir : str or Path
        Folder to write; created if needed; the int8 files in it are replaced.
    card : mapping
        Card fields (name, version, source, quantization, accuracy, speed); ``files``,
        ``schema_version``, ``precision`` and ``size_bytes.int8`` are filled in here.

    Returns
    -------
    dict
        The card as written.
    """
    import openvino as ov

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # compress_to_fp16=False: layers kept in float32 must stay float32 on disk too, or the shipped
    # model would differ from the one the accuracy check accepted.
    ov.save_model(model, str(out / INT8_XML_FILE), compress_to_fp16=False)
    files = {
        name: {"sha256": sha256_file(out / name), "bytes": (out / name).stat().st_size}
        for name in (INT8_XML_FILE, INT8_BIN_FILE)
    }
    written = {
        **card,
        "schema_version": CARD_SCHEMA_VERSION,
        "precision": "int8",
        "files": files,
        "size_bytes": {**dict(card.get("size_bytes", {})), "int8": sum(f["bytes"] for f in files.values())},
    }
    (out / CARD_FILE).write_text(json.dumps(written, indent=2) + "\n", encoding="utf-8")
    (out / CARD_MARKDOWN_FILE).write_text(model_card_markdown(written), encoding="utf-8")
    return written


def model_card_markdown(card: Mapping[str, Any]) -> str:
    """The ``model_card.md`` section of an int8 model, from its card."""
    quant = card.get("quantization", {})
    accuracy = card.get("accuracy", {})
    speed = card.get("speed", {})
    sizes = card.get("size_bytes", {})
    kept = quant.get("keep_float32", [])
    lines = [
        f"# {card.get('name', 'generator')} (int8, CPU)",
        "",
        f"Post-training static int8 of `{card.get('source', {}).get('model_dir', '?')}` "
        f"(sha256 `{str(card.get('source', {}).get('sha256', '?'))[:12]}`), for CPUs without a GPU.",
        "",
        "| | |",
        "|---|---|",
        f"| runtime | {quant.get('runtime', '?')} (quantized with {quant.get('tool', '?')}, preset "
        f"{quant.get('preset', '?')}) |",
        f"| layers quantized | {quant.get('quantized_layers', '?')} of {quant.get('total_layers', '?')} |",
        f"| layers kept float32 | {', '.join(kept) if kept else 'none'} |",
        f"| calibration | {quant.get('calibration', {}).get('description', '?')} |",
        f"| size on disk | int8 {_mib(sizes.get('int8'))} vs float32 {_mib(sizes.get('float32'))} |",
        f"| speed | {_speed_line(speed)} |",
        f"| acceptance | {'passed' if accuracy.get('passed') else 'FAILED'} |",
        "",
        "Accuracy against float32 on identical latent inputs (reference for mse_shape: "
        f"{accuracy.get('reference', 'the project Monte Carlo')}):",
        "",
        "| Ep (GeV) | S/Ep float32 | S/Ep int8 | rel. diff | mse_shape float32 | mse_shape int8 | rel. change |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in accuracy.get("energies", []):
        lines.append(
            f"| {row['ep_gev']:g} | {_fmt(row['sampling_fraction_float32'], '.5f')} | "
            f"{_fmt(row['sampling_fraction_int8'], '.5f')} | {_fmt(row['sampling_fraction_rel_diff'], '+.2%')} | "
            f"{_fmt(row['mse_shape_float32'], '.3e')} | {_fmt(row['mse_shape_int8'], '.3e')} | "
            f"{_fmt(row['mse_shape_rel_change'], '+.1%')} |"
        )
    for name, text in accuracy.get("criteria", {}).items():
        lines.append(f"\n- {name}: {text}")
    return "\n".join(lines) + "\n"


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _mib(size: int | None) -> str:
    return "?" if size is None else f"{size / 2**20:.2f} MiB"


def _speed_line(speed: Mapping[str, Any]) -> str:
    if not speed:
        return "not measured"
    return (
        f"{speed['int8_showers_per_s']:.1f} vs {speed['float32_showers_per_s']:.1f} showers/s float32 TF "
        f"(x{speed['speedup']:.2f}; batch {speed['batch_size']}, {speed['threads']} threads, {speed['cpu']})"
    )


def read_int8_card(folder: str | Path) -> dict[str, Any]:
    """Parse an int8 folder's ``model.json`` and verify both IR files against it; ModelLoadError otherwise."""
    folder = Path(folder)
    card_path = folder / CARD_FILE
    if not card_path.is_file():
        raise ModelLoadError(f"no int8 model in {folder} ({CARD_FILE} missing); run `calogan quantize`")
    card = parse_card_file(card_path)
    if card.get("precision") != "int8":
        raise ModelLoadError(f"{card_path}: not an int8 model card (precision {card.get('precision')!r})")
    if card.get("schema_version") != CARD_SCHEMA_VERSION:
        raise ModelLoadError(
            f"{card_path}: card schema_version {card.get('schema_version')!r}, this calogan reads {CARD_SCHEMA_VERSION}"
        )
    for name in (INT8_XML_FILE, INT8_BIN_FILE):
        verify_file(folder, name, card)
    return card


@dataclass(frozen=True)
class Int8Generator:
    """A compiled int8 generator with its card.

    Attributes
    ----------
    compiled : openvino.CompiledModel
        Input float32 (N, 200) latents, output float32 (N, 25, 25, 25) GeV.
    card : dict
        The parsed ``model.json``.
    folder : Path
        Where it was loaded from.
    sha256 : str
        Checksum of the weights file, verified against the card.
    threads : int
        Inference threads it was compiled for.
    """

    compiled: Any
    card: dict[str, Any]
    folder: Path
    sha256: str
    threads: int

    def generate(self, latent: FloatArray) -> FloatArray:
        """Showers (N, 25, 25, 25) float32 GeV for latents (N, 200) float32, in one call."""
        return run_compiled(self.compiled, latent, batch_size=max(1, len(latent)))


def load_int8_generator(folder: str | Path, threads: int | None = None) -> Int8Generator:
    """Load, verify and compile an int8 model folder for this machine's CPU.

    Parameters
    ----------
    folder : str or Path
        A folder written by :func:`write_int8_model` (``models/conv2d_int8``).
    threads : int, optional
        Inference threads; :func:`cpu_cores` by default.

    Raises
    ------
    ModelLoadError
        Folder, card or file missing, checksum mismatch, OpenVINO missing or unable to compile.
    """
    folder = Path(folder)
    card = read_int8_card(folder)
    try:
        import openvino as ov
    except ImportError as exc:
        raise ModelLoadError("the int8 backend needs the openvino package (pip install openvino)") from exc
    threads = int(threads or cpu_cores())
    try:
        model = ov.Core().read_model(str(folder / INT8_XML_FILE))
        compiled = compile_cpu(model, threads)
    except RuntimeError as exc:
        raise ModelLoadError(f"{folder / INT8_XML_FILE}: OpenVINO cannot load the int8 generator ({exc})") from exc
    sha256 = card["files"][INT8_BIN_FILE]["sha256"]
    logger.info("int8 generator loaded", extra={"path": str(folder), "sha256": sha256, "threads": threads})
    return Int8Generator(compiled, card, folder, sha256, threads)


def temporary_workdir() -> tempfile.TemporaryDirectory[str]:
    """A scratch folder for the intermediate ONNX file."""
    return tempfile.TemporaryDirectory(prefix="calogan-quantize-")
