"""Load a shipped generator: a folder with ``generator.keras`` and its ``model.json`` card.

The service imports this module, so it stays light: it never imports ``app.model.training``.
Every problem (missing folder, unreadable card, checksum mismatch, a file Keras cannot load, a model
of the wrong shape) becomes one :class:`~app.errors.ModelLoadError` that says what is wrong and
where; TensorFlow's errors are translated here, once.

Folder layout (written by ``calogan export``, see ``app.model.export``)::

    models/conv2d/
        generator.keras   Keras 3 archive of the generator (custom layers from app.model.architecture)
        generator.onnx    optional, the same network for ONNX Runtime
        model.json        the card: architecture, training, validation, limits, sha256 of each file
        model_card.md     the card for humans
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.config import SHIPPED_MODEL_DIR
from app.errors import ModelLoadError
from app.physics.detector import SHOWER_SHAPE

logger = logging.getLogger(__name__)

DEFAULT_MODEL_DIR = SHIPPED_MODEL_DIR
CARD_FILE = "model.json"
CARD_MARKDOWN_FILE = "model_card.md"
GENERATOR_FILE = "generator.keras"
ONNX_FILE = "generator.onnx"
CARD_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class LoadedGenerator:
    """A generator ready to run, with the card it was shipped with.

    Attributes
    ----------
    model : keras.Model
        Input float32 (N, 200) latent vectors (``app.model.latent``); output float32
        (N, 25, 25, 25) GeV indexed [x, y, layer].
    card : dict
        The parsed ``model.json``.
    folder : Path
        Where it was loaded from.
    sha256 : str
        Checksum of ``generator.keras``, verified against the card.
    """

    model: Any
    card: dict[str, Any]
    folder: Path
    sha256: str


def sha256_file(path: str | Path, *, chunk_bytes: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def parse_card_file(card_path: Path) -> dict[str, Any]:
    """The JSON object in a ``model.json``; ModelLoadError if it cannot be read or is not an object."""
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{card_path}: cannot read the model card ({exc})") from exc
    if not isinstance(card, dict):
        raise ModelLoadError(f"{card_path}: the model card must be a JSON object")
    return card


def read_model_card(folder: str | Path) -> dict[str, Any]:
    """Parse and sanity-check ``model.json`` in ``folder``; raise ModelLoadError if it is unusable."""
    card_path = Path(folder) / CARD_FILE
    if not card_path.is_file():
        raise ModelLoadError(f"{card_path}: model card missing (a model folder needs {CARD_FILE} and {GENERATOR_FILE})")
    card = parse_card_file(card_path)
    files = card.get("files")
    if not isinstance(files, dict) or not isinstance(files.get(GENERATOR_FILE), dict):
        raise ModelLoadError(f"{card_path}: no 'files.{GENERATOR_FILE}' entry with its sha256")
    version = card.get("schema_version")
    if version != CARD_SCHEMA_VERSION:
        raise ModelLoadError(f"{card_path}: card schema_version {version!r}, this calogan reads {CARD_SCHEMA_VERSION}")
    return card


def verify_file(folder: str | Path, name: str, card: dict[str, Any]) -> str:
    """Check ``folder/name`` against the sha256 recorded in the card; return the checksum."""
    path = Path(folder) / name
    entry = card.get("files", {}).get(name)
    if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
        raise ModelLoadError(f"{Path(folder) / CARD_FILE}: no sha256 recorded for {name}")
    if not path.is_file():
        raise ModelLoadError(f"{path}: file missing (listed in {CARD_FILE})")
    actual = sha256_file(path)
    if actual != entry["sha256"]:
        raise ModelLoadError(
            f"{path}: sha256 {actual[:12]}... does not match {entry['sha256'][:12]}... in {CARD_FILE}; "
            "the file is corrupt or was replaced without re-exporting its card"
        )
    return actual


def load_generator(folder: str | Path = DEFAULT_MODEL_DIR) -> LoadedGenerator:
    """Load and check a shipped generator.

    Parameters
    ----------
    folder : str or Path
        A model folder (``models/conv2d`` by default).

    Returns
    -------
    LoadedGenerator
        The Keras model, its card and the verified checksum.

    Raises
    ------
    ModelLoadError
        The folder, card or file is missing, the checksum differs, Keras cannot load the file, or
        the model does not map (N, 200) to (N, 25, 25, 25).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelLoadError(f"{folder}: model folder not found")
    card = read_model_card(folder)
    checksum = verify_file(folder, GENERATOR_FILE, card)
    model = load_keras_file(folder / GENERATOR_FILE)
    logger.info(
        "generator loaded", extra={"path": str(folder / GENERATOR_FILE), "sha256": checksum,
                                   "parameters": int(model.count_params())},
    )
    return LoadedGenerator(model=model, card=card, folder=folder, sha256=checksum)


def load_keras_file(path: Path) -> Any:
    """A generator from a ``.keras`` file, checked to map (N, 200) to (N, 25, 25, 25); no card needed.

    Raises
    ------
    ModelLoadError
        Keras cannot load the file, or the model has another signature.
    """
    model = _load_keras(path)
    _check_signature(model, path)
    return model


def _load_keras(path: Path) -> Any:
    import keras  # heavy: only when a model is actually loaded

    from app.model import architecture  # noqa: F401 - registers the custom layers with Keras

    try:
        return keras.models.load_model(path, compile=False)
    except Exception as exc:  # Keras and TensorFlow raise many types; all mean "cannot load"
        raise ModelLoadError(f"{path}: Keras cannot load the generator ({type(exc).__name__}: {exc})") from exc


def _check_signature(model: Any, path: Path) -> None:
    from app.model.architecture import LATENT_SIZE

    try:
        input_shape = tuple(model.inputs[0].shape)
        output_shape = tuple(model.outputs[0].shape)
    except (AttributeError, IndexError, TypeError) as exc:
        raise ModelLoadError(f"{path}: not a functional model with one input and one output") from exc
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelLoadError(f"{path}: expected one input and one output, found {len(model.inputs)} and "
                             f"{len(model.outputs)}")
    if input_shape[1:] != (LATENT_SIZE,) or output_shape[1:] != SHOWER_SHAPE:
        raise ModelLoadError(
            f"{path}: maps {input_shape} to {output_shape}, expected (None, {LATENT_SIZE}) to (None, 25, 25, 25)"
        )
