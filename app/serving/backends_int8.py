"""The int8 CPU backend: the OpenVINO generator written by ``calogan quantize``, run on every core.

:func:`int8_backends` is the factory behind ``--backend int8`` (and ``auto`` on a machine without a
GPU, see ``app.serving.backends.load_backends``, which falls back to float32 TensorFlow with a log line
when this factory raises ModelLoadError). It looks for the int8 folder next to the float32 one
(``models/conv2d`` -> ``models/conv2d_int8``), or takes ``--model-dir`` itself when that is an int8
folder. A model whose card says it failed the physics acceptance is refused.

Threads: one OpenVINO stream with intra-op threads = the cores this process may use (affinity mask and
cgroup quota, not the host's count), since the batcher runs one batch at a time on one worker thread.
OpenVINO is imported only when this backend is built.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from app.config import Settings
from app.errors import ModelLoadError
from app.hardware import cpu_cores
from app.model.loading import CARD_FILE
from app.model.quantize import Int8Generator, int8_model_dir, load_int8_generator
from app.physics.detector import SHOWER_SHAPE, FloatArray
from app.serving.backends import ModelInfo, ShowerBackend

logger = logging.getLogger(__name__)


class Int8Backend:
    """An int8 OpenVINO generator on the CPU; called from the batcher's one worker thread."""

    def __init__(self, generator: Int8Generator, info: ModelInfo) -> None:
        self.info = info
        self._generator = generator
        # One request reused for every batch: the batcher never calls generate concurrently.
        self._request = generator.compiled.create_infer_request()

    def generate(self, latent: FloatArray) -> FloatArray:
        latent = np.ascontiguousarray(latent, dtype=np.float32)
        result = self._request.infer({0: latent})
        # The output buffer belongs to the request and is overwritten by the next batch: copy it out.
        cells = np.array(next(iter(result.values())), dtype=np.float32, copy=True)
        return cells.reshape(len(latent), *SHOWER_SHAPE)


def int8_folder(model_dir: Path) -> Path:
    """The int8 folder to serve for ``--model-dir``: the folder itself if its card is int8, else ``<dir>_int8``."""
    try:
        card = json.loads((model_dir / CARD_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        card = None  # no readable card here: the float32 folder's sibling is the candidate
    if isinstance(card, dict) and card.get("precision") == "int8":
        return model_dir
    return int8_model_dir(model_dir)


def int8_backends(settings: Settings) -> list[ShowerBackend]:
    """One int8 CPU backend for ``settings.model_dir``; ModelLoadError saying why when there is none."""
    if settings.device == "gpu":
        raise ModelLoadError("the int8 backend runs on the CPU; --device gpu needs --backend tf")
    folder = int8_folder(settings.model_dir)
    threads = cpu_cores()
    generator = load_int8_generator(folder, threads=threads)
    card: dict[str, Any] = generator.card
    if not card.get("accuracy", {}).get("passed", False):
        raise ModelLoadError(f"{folder}: this int8 model failed its physics acceptance check (see model_card.md)")
    if card.get("quantization", {}).get("quantized_layers") == 0:
        # It passed only with every layer kept in float32: serving it would label float32 as int8.
        raise ModelLoadError(f"{folder}: no layer of this model is int8 (all had to stay float32 to pass)")
    info = ModelInfo(
        name=str(card.get("name", folder.name)),
        version=str(card.get("version", "unknown")),
        sha256=generator.sha256,
        backend="int8",
        device="cpu",
        precision="int8",
        card=card,
    )
    logger.info(
        "model loaded",
        extra={"model_dir": str(folder), "sha256": generator.sha256, "backend": "int8", "threads": threads},
    )
    return [Int8Backend(generator, info)]
