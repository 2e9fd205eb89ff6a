"""Ship a trained generator: ONNX export and the model card (``model.json`` + ``model_card.md``).

:func:`package_run` turns a training run folder (``calogan train --out runs/NAME``) into a model
folder that ``app.model.loading.load_generator`` accepts::

    models/conv2d/generator.keras   copied from the run (best epoch, output ReLU)
    models/conv2d/generator.onnx    optional, dynamic batch axis, ONNX Runtime ready
    models/conv2d/model.json        card with the sha256 of each file
    models/conv2d/model_card.md     the same card for humans

ONNX: Keras 3's own ``model.export(format="onnx")``, which converts the traced TensorFlow function
with tf2onnx (a dependency for that reason). The batch axis stays dynamic (named ``batch``), the input
is ``latent`` (N, 200) float32 and the output ``showers`` (N, 25, 25, 25) float32 GeV.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from app import __version__
from app.errors import InvalidRequest
from app.model.architecture import LATENT_SIZE, GeneratorConfig
from app.model.loading import (
    CARD_FILE,
    CARD_MARKDOWN_FILE,
    CARD_SCHEMA_VERSION,
    GENERATOR_FILE,
    ONNX_FILE,
    parse_card_file,
    sha256_file,
)
from app.physics.detector import AXIS_ORDER, ENERGY_UNIT, SHOWER_SHAPE
from app.physics.io import DETECTOR_DESCRIPTION

ONNX_OPSET = 17
TF2ONNX_MAX_PASSES = 8
"""Rounds of tf2onnx's graph optimisers; see :func:`_bounded_tf2onnx_passes`."""
ONNX_INPUT_NAME = "latent"
ONNX_OUTPUT_NAME = "showers"

DEFAULT_KNOWN_LIMITS = (
    "Trained for electrons (e-) at normal incidence (90 degrees) only; no angle or particle conditioning.",
    "Energy range 2-500 GeV; outside it the output is an extrapolation.",
    "Cells are visible (silicon) energy in a 25 x 25 x 25 window of a CLIC-like Si-W ECAL without PCB, "
    "copper or air gaps; a different geometry has a different sampling fraction.",
    "Training data come from a parametric (GFlash-type) simulator calibrated to small Geant4 samples, "
    "not from full Geant4; its accuracy bounds the model's.",
    "Energy conditioning is multiplicative (latent N(0,1) x Ep/100); use app.model.latent.latent_vectors.",
)


def export_onnx(model: Any, path: str | Path, *, opset: int = ONNX_OPSET) -> Path:
    """Write the generator as ONNX with a dynamic batch axis.

    Parameters
    ----------
    model : keras.Model
        A generator from ``app.model.architecture.build_generator`` (or loaded from ``generator.keras``).
    path : str or Path
        Output ``.onnx`` file.
    opset : int
        ONNX opset version.

    Returns
    -------
    Path
        The written file: input ``latent`` float32 (batch, 200), output ``showers`` float32
        (batch, 25, 25, 25) GeV indexed [x, y, layer].

    Raises
    ------
    InvalidRequest
        tf2onnx or onnx is not installed.
    """
    try:
        import onnx
        import tensorflow as tf
        import tf2onnx  # noqa: F401 - Keras' ONNX export needs it; checked here for a clear message
    except ImportError as exc:
        raise InvalidRequest(f"ONNX export needs tf2onnx and onnx ({exc})",
                             allowed="pip install tf2onnx onnx, or export without --onnx") from exc
    path = Path(path)
    signature = [tf.TensorSpec((None, LATENT_SIZE), tf.float32, name=ONNX_INPUT_NAME)]
    with warnings.catch_warnings(), _bounded_tf2onnx_passes():
        # Keras' tf2onnx shim probes the removed np.object and trips numpy's FutureWarning.
        warnings.filterwarnings("ignore", message=".*np.object.*", category=FutureWarning)
        model.export(str(path), format="onnx", input_signature=signature, opset_version=opset, verbose=False)
    graph_model = onnx.load(str(path))
    _name_batch_axis_and_output(graph_model)
    onnx.save(graph_model, str(path))
    return path


@contextmanager
def _bounded_tf2onnx_passes(max_passes: int = TF2ONNX_MAX_PASSES) -> Iterator[None]:
    """Stop tf2onnx's optimiser loop after ``max_passes`` rounds.

    tf2onnx 1.17 repeats all its graph optimisers until none reports a change. On trained Conv2D
    generators its TransposeOptimizer reports a change on every round (it shuffles the NCHW transposes
    around the three permuted views), so the export never ends; an untrained network happens to
    converge. Bounding the rounds keeps every rewrite that converged and the graph stays exact (the
    tests compare ONNX Runtime with Keras). This patches a private table of tf2onnx, restored on exit.
    """
    from tf2onnx import optimizer as passes

    originals = dict(passes._optimizers)

    def bounded(factory: Any) -> Any:
        def make() -> Any:
            optimiser = factory()
            run = optimiser.optimize

            def optimize(graph: Any, iteration: int) -> Any:
                result = run(graph, iteration)
                if iteration + 1 >= max_passes:
                    optimiser.graph_been_opt = False  # "no change": lets the loop end
                return result

            optimiser.optimize = optimize
            return optimiser

        return make

    passes._optimizers.update({name: bounded(factory) for name, factory in originals.items()})
    try:
        yield
    finally:
        passes._optimizers.update(originals)


def _name_batch_axis_and_output(graph_model: Any) -> None:
    """Call the dynamic axis ``batch`` and the output ``showers`` (tf2onnx leaves ``unk__N`` and ``Identity:0``)."""
    graph = graph_model.graph
    old_output = graph.output[0].name
    for node in graph.node:
        node.output[:] = [ONNX_OUTPUT_NAME if name == old_output else name for name in node.output]
        node.input[:] = [ONNX_OUTPUT_NAME if name == old_output else name for name in node.input]
    graph.output[0].name = ONNX_OUTPUT_NAME
    for value in (*graph.input, *graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"


def write_model_card(
    folder: str | Path,
    *,
    name: str = "conv2d",
    version: str,
    generator_config: GeneratorConfig,
    parameters: int,
    conv_layers: int,
    training: dict[str, Any],
    validation: dict[str, Any],
    known_limits: tuple[str, ...] | list[str] = DEFAULT_KNOWN_LIMITS,
    energy_range_gev: tuple[float, float] = (2.0, 500.0),
    particle: str = "e-",
    angle_deg: float = 90.0,
) -> dict[str, Any]:
    """Write ``model.json`` and ``model_card.md`` for the model files already in ``folder``.

    Parameters
    ----------
    folder : str or Path
        Holds ``generator.keras`` (required) and ``generator.onnx`` (optional); their sha256 go into
        the card.
    name, version : str
        Model name and version as the service reports them.
    generator_config : GeneratorConfig
        Width and output activation.
    parameters, conv_layers : int
        Parameter and convolution-layer counts of the generator.
    training : dict
        Training data and its version, epochs, showers seen, wall time, hardware, seed, settings.
    validation : dict
        Validation metrics of the shipped epoch (name -> value) and how they were computed.
    known_limits : sequence of str
        What the model must not be used for.
    energy_range_gev : (float, float)
        Primary energies the model was trained for, GeV.
    particle : str
        Primary particle.
    angle_deg : float
        Incidence angle to the calorimeter face, degrees (90 = normal incidence).

    Returns
    -------
    dict
        The card as written.
    """
    folder = Path(folder)
    if not (folder / GENERATOR_FILE).is_file():
        raise InvalidRequest(f"{folder / GENERATOR_FILE} not found", allowed="a folder holding generator.keras")
    files = {
        file: {"sha256": sha256_file(folder / file), "bytes": (folder / file).stat().st_size}
        for file in (GENERATOR_FILE, ONNX_FILE)
        if (folder / file).is_file()
    }
    card: dict[str, Any] = {
        "schema_version": CARD_SCHEMA_VERSION,
        "name": name,
        "version": version,
        "created_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "calogan_version": __version__,
        "architecture": {
            "name": "Conv2D GAN generator (Rehm, Vallecorsa et al., GRID'2021), three 2D-convolution branches",
            "reference": "shared/research/conv2d_gan_spec.md sections 1-3",
            "config": generator_config.to_dict(),
            "parameters": int(parameters),
            "conv_layers": int(conv_layers),
            "input": {"name": ONNX_INPUT_NAME, "shape": [None, LATENT_SIZE], "dtype": "float32",
                      "meaning": "z ~ N(0, 1) times Ep / 100 GeV (app.model.latent.latent_vectors)"},
            "output": {"name": ONNX_OUTPUT_NAME, "shape": [None, *SHOWER_SHAPE], "dtype": "float32",
                       "unit": ENERGY_UNIT, "axis_order": list(AXIS_ORDER),
                       "quantity": "visible energy deposited in silicon"},
        },
        "particle": particle,
        "angle_deg": angle_deg,
        "energy_range_gev": list(energy_range_gev),
        "detector": DETECTOR_DESCRIPTION,
        "training": training,
        "validation": validation,
        "known_limits": list(known_limits),
        "files": files,
    }
    _write_card_files(folder, card)
    return card


def _write_card_files(folder: Path, card: dict[str, Any]) -> None:
    """``model.json`` and its human-readable twin ``model_card.md``, always written together."""
    (folder / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    (folder / CARD_MARKDOWN_FILE).write_text(_card_markdown(card), encoding="utf-8")


def _card_markdown(card: dict[str, Any]) -> str:
    arch = card["architecture"]
    lines = [
        f"# Model card: {card['name']} {card['version']}",
        "",
        f"{arch['name']}. {arch['parameters']:,} parameters, {arch['conv_layers']} convolution layers, "
        f"width {arch['config']['width']}.",
        "",
        "## Use",
        f"- Particle {card['particle']}, incidence {card['angle_deg']:g} degrees, "
        f"Ep {card['energy_range_gev'][0]:g}-{card['energy_range_gev'][1]:g} GeV.",
        f"- Input `{arch['input']['name']}` float32 (N, {LATENT_SIZE}): {arch['input']['meaning']}.",
        f"- Output `{arch['output']['name']}` float32 (N, 25, 25, 25), {ENERGY_UNIT}, "
        f"indexed [{', '.join(AXIS_ORDER)}]: {arch['output']['quantity']}.",
        f"- Detector: {card['detector']}.",
        "",
        "## Training",
        *[f"- {key}: {_plain(value)}" for key, value in card["training"].items()],
        "",
        "## Validation",
        *[f"- {key}: {_plain(value)}" for key, value in card["validation"].items()],
        "",
        "## Known limits",
        *[f"- {limit}" for limit in card["known_limits"]],
        "",
        "## Files",
        *[f"- `{name}`: sha256 `{entry['sha256']}`, {entry['bytes']:,} bytes" for name, entry in card["files"].items()],
        "",
    ]
    if "physics" in card:
        physics = card["physics"]
        lines += ["## Physics, measured", f"- how: {physics['how']}", *[f"- {line}" for line in physics["summary"]],
                  "- per energy (GeV): " + _plain(physics["energies"]), ""]
    return "\n".join(lines)


def add_physics_to_card(folder: str | Path, physics: dict[str, Any]) -> dict[str, Any]:
    """Store a measured physics verdict in a model folder's ``model.json`` and ``model_card.md``.

    ``physics`` holds ``how`` (the command that measured it), ``summary`` (lines for people) and
    ``energies`` (per-energy figures); ``tools/physics_report.py --update-card`` writes it. The
    files' checksums are untouched: the verdict describes the weights, it does not change them.
    """
    folder = Path(folder)
    card = {**parse_card_file(folder / CARD_FILE), "physics": physics}
    _write_card_files(folder, card)
    return card


def _plain(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def package_run(
    run_dir: str | Path,
    out_dir: str | Path,
    *,
    version: str,
    name: str = "conv2d",
    onnx: bool = True,
    data_version: str | None = None,
    known_limits: tuple[str, ...] | list[str] = DEFAULT_KNOWN_LIMITS,
) -> dict[str, Any]:
    """Copy a run's best generator into a model folder, export ONNX, and write the card.

    Parameters
    ----------
    run_dir : str or Path
        A finished ``calogan train`` or ``calogan finetune`` folder (``generator.keras``, ``run_config.json``,
        ``summary.json``,
        ``metrics.csv``).
    out_dir : str or Path
        The model folder to (re)write, e.g. ``models/conv2d``.
    version : str
        Model version for the card.
    name : str
        Model name for the card.
    onnx : bool
        Also write ``generator.onnx``.
    data_version : str, optional
        Version of the training data (e.g. the simulator's MC_VERSION); read from the run if omitted.
    known_limits : sequence of str
        Limits stated in the card.

    Returns
    -------
    dict
        The card as written.
    """
    import keras

    from app.model.architecture import count_conv_layers

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    needed = [run_dir / f for f in (GENERATOR_FILE, "run_config.json", "summary.json")]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        raise InvalidRequest(f"not a finished training run: missing {', '.join(missing)}",
                             allowed="a folder written by `calogan train`")
    run_info = json.loads((run_dir / "run_config.json").read_text(encoding="utf-8"))
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run_dir / GENERATOR_FILE, out_dir / GENERATOR_FILE)
    model = keras.models.load_model(out_dir / GENERATOR_FILE, compile=False)
    if onnx:
        export_onnx(model, out_dir / ONNX_FILE)
    else:
        (out_dir / ONNX_FILE).unlink(missing_ok=True)  # never ship an ONNX file from another training
    # A fine-tuning run stores what the export needs beside its settings; a `calogan train` run within them.
    config = {**run_info["config"], **run_info.get("export", {})}
    best_row = _metrics_row(run_dir / "metrics.csv", summary["best_epoch"])
    training = {
        "data": summary.get("data", config.get("data")),
        "data_version": data_version or _data_version(summary.get("data", "")),
        "epochs": summary["epochs_done"],
        "best_epoch": summary["best_epoch"],
        "showers_seen": summary["showers_seen"],
        "wall_time_s": round(float(summary["wall_s"]), 1),
        "hardware": run_info.get("hardware", {}),
        "seed": config.get("seed"),
        "settings": config,
        "energy_response_fit": summary.get("energy_response"),
    }
    validation = {
        "selection": "lowest val_score on held-out showers at matched Ep (see the run's metrics.csv)",
        "best_score": summary["best_score"],
        **{k: _number(v) for k, v in best_row.items() if k.startswith("val_")},
    }
    return write_model_card(
        out_dir, name=name, version=version,
        generator_config=GeneratorConfig(width=float(config.get("width", 1.0)), output_relu=True,
                                         output_scale=float(config.get("output_scale") or 1.0)),
        parameters=int(model.count_params()), conv_layers=count_conv_layers(model),
        training=training, validation=validation, known_limits=known_limits,
    )


def _metrics_row(path: Path, epoch: int) -> dict[str, str]:
    import csv

    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        # The row that made the epoch best; a warm-up (epoch 0) logs one row per block, the last best wins.
        rows = [row for row in csv.DictReader(f)
                if row.get("epoch", row.get("step")) == str(epoch) and row.get("best") == "1"]
    return rows[-1] if rows else {}


def _number(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def _data_version(description: str) -> str:
    marker = "MC_VERSION "
    if marker in description:
        return "calogan-mc " + description.split(marker, 1)[1].split(")", 1)[0]
    return "unversioned file data"
