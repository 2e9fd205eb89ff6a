"""Backends: what turns a batch of latent vectors into showers, behind one method.

A backend is anything with ``info`` (a :class:`ModelInfo`) and ``generate(latent) -> cells_gev``; the
batcher knows nothing else about it. :func:`load_backends` builds one backend per device from the
settings (``--backend auto|tf|int8|fake``):

- ``tf``: the shipped Keras generator in float32 TensorFlow, on each visible GPU, else on the CPU;
- ``int8``: a quantised CPU model, coming with a later issue; its factory is :func:`_int8_backends`,
  the only function to fill in (the batcher and the API do not change);
- ``auto``: ``tf`` on a GPU; on a CPU-only machine ``int8`` when available, otherwise ``tf`` (logged);
- ``fake``: :class:`FakeBackend`, a cheap deterministic stand-in for tests and smoke tests.

TensorFlow is imported only inside the ``tf`` factory, so importing this module stays cheap.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from app import __version__
from app.config import Settings
from app.errors import ModelLoadError
from app.model.loading import CARD_FILE, GENERATOR_FILE
from app.physics.detector import SHOWER_SHAPE, FloatArray

logger = logging.getLogger(__name__)

N_CELLS = int(np.prod(SHOWER_SHAPE))
_FAKE_CELL_SCALE = 2e-4  # E|z| = 0.8, so 15625 cells sum to ~0.025 Ep


@dataclass(frozen=True)
class ModelInfo:
    """What is being served: the model (from its card) and how it runs."""

    name: str
    version: str
    sha256: str
    backend: str
    device: str
    precision: str
    card: dict[str, Any] = field(default_factory=dict)

    def labels(self) -> dict[str, str]:
        """The fields Prometheus' ``calogan_model_info`` and the response headers carry."""
        return {
            "name": self.name, "version": self.version, "backend": self.backend,
            "device": self.device, "precision": self.precision,
        }


@runtime_checkable
class ShowerBackend(Protocol):
    """Turns latent vectors into showers. Called from one worker thread at a time."""

    info: ModelInfo

    def generate(self, latent: FloatArray) -> FloatArray:
        """Showers for a batch of latent vectors.

        Parameters
        ----------
        latent : ndarray, shape (N, 200), float32
            Generator input, one row per shower (noise already scaled by the primary energy).

        Returns
        -------
        ndarray, shape (N, 25, 25, 25), float32
            Visible energy per cell, GeV, indexed [x, y, layer].
        """
        ...


class FakeBackend:
    """A deterministic stand-in: cell ``k`` of row ``i`` is ``|latent[i, k % L]| * 2e-4`` GeV.

    Cheap, and every output row depends on its own latent row only, so tests can tell showers apart
    and compare them exactly. With latent rows z * Ep / 100, a shower sums to about 2.5 % of Ep, a
    sampling fraction like the detector's, so its files read back as visible GeV. ``batch_sizes``
    records each call's N.
    """

    def __init__(self, info: ModelInfo | None = None) -> None:
        self.info = info or ModelInfo(
            name="fake", version=__version__, sha256="0" * 64, backend="fake", device="cpu", precision="float32"
        )
        self.batch_sizes: list[int] = []
        self._lock = threading.Lock()

    def generate(self, latent: FloatArray) -> FloatArray:
        latent = np.asarray(latent, dtype=np.float32)
        with self._lock:  # tests read batch_sizes from the event-loop thread
            self.batch_sizes.append(len(latent))
        repeats = -(-N_CELLS // latent.shape[1])
        cells = np.tile(np.abs(latent) * np.float32(_FAKE_CELL_SCALE), (1, repeats))[:, :N_CELLS]
        return cells.reshape(len(latent), *SHOWER_SHAPE)


class TensorFlowBackend:
    """A Keras generator run in float32 TensorFlow on one device (``/GPU:i`` or ``/CPU:0``)."""

    def __init__(self, model: Any, *, info: ModelInfo, device: str, latent_size: int) -> None:
        import tensorflow as tf  # heavy, only when this backend is used

        self.info = info
        self._tf = tf
        self._device = device
        # One traced graph for every batch size: avoids re-tracing per N and Keras' per-call overhead.
        self._run = tf.function(
            lambda z: model(z, training=False),
            input_signature=[tf.TensorSpec((None, latent_size), tf.float32)],
            reduce_retracing=True,
        )

    def generate(self, latent: FloatArray) -> FloatArray:
        try:
            with self._tf.device(self._device):
                cells = self._run(self._tf.convert_to_tensor(latent, dtype=self._tf.float32))
        except self._tf.errors.ResourceExhaustedError:
            if len(latent) < 2:
                raise
            # Out of device memory: halve the batch rather than fail its requests (Triton#4023's ask).
            half = len(latent) // 2
            logger.warning("out of memory on %s at batch %d; splitting", self._device, len(latent))
            return np.concatenate([self.generate(latent[:half]), self.generate(latent[half:])])
        return np.asarray(cells, dtype=np.float32).reshape(len(latent), *SHOWER_SHAPE)


def warm_up(backend: ShowerBackend, *, batch_size: int, latent_size: int) -> float:
    """Run the model once at ``batch_size`` and once at 1 row; return showers per second of the big call."""
    import time  # only here

    backend.generate(np.zeros((1, latent_size), dtype=np.float32))
    start = time.perf_counter()
    backend.generate(np.zeros((batch_size, latent_size), dtype=np.float32))
    return batch_size / max(time.perf_counter() - start, 1e-9)


def model_files(model_dir: Path) -> tuple[Path, Path]:
    """The generator and card paths of a shipped model, or ModelLoadError saying what is missing."""
    generator, card = model_dir / GENERATOR_FILE, model_dir / CARD_FILE
    missing = [path.name for path in (generator, card) if not path.is_file()]
    if missing:
        raise ModelLoadError(
            f"no shipped model in {model_dir} (missing {', '.join(missing)}); "
            "export a trained generator there, pass --model-dir, or use --backend fake for a smoke test"
        )
    return generator, card


def _fake_backends(settings: Settings) -> list[ShowerBackend]:
    return [FakeBackend()]


def _int8_backends(settings: Settings) -> list[ShowerBackend]:
    from app.serving.backends_int8 import int8_backends  # imports OpenVINO: only when int8 is asked for

    return int8_backends(settings)


def _tensorflow_backends(settings: Settings) -> list[ShowerBackend]:
    model_files(settings.model_dir)  # one clear line before the seconds-long TensorFlow import
    import tensorflow as tf  # heavy; only when serving a real model

    from app.model.loading import load_generator  # Keras is imported on the first load

    gpus = tf.config.list_logical_devices("GPU")
    if settings.device == "gpu" and not gpus:
        raise ModelLoadError("--device gpu was asked for but TensorFlow sees no GPU")
    devices = [gpu.name for gpu in gpus] if gpus and settings.device != "cpu" else ["/CPU:0"]
    backends: list[ShowerBackend] = []
    for device in devices:  # one model copy, hence one batcher worker, per device
        with tf.device(device):
            loaded = load_generator(settings.model_dir)
        info = ModelInfo(
            name=_card_text(loaded.card, "name", default=settings.model_dir.name),
            version=_card_text(loaded.card, "version", default="unversioned"),
            sha256=loaded.sha256,
            backend="tf",
            device=device,
            precision="float32",
            card=loaded.card,
        )
        latent_size = int(loaded.model.inputs[0].shape[-1])
        backends.append(TensorFlowBackend(loaded.model, info=info, device=device, latent_size=latent_size))
    return backends


def _card_text(card: dict[str, Any], key: str, *, default: str) -> str:
    """A top-level card entry (or the same key under ``model``) as text."""
    value = card.get(key)
    if value is None and isinstance(card.get("model"), dict):
        value = card["model"].get(key)
    return default if value is None else str(value)


_FACTORIES: dict[str, Callable[[Settings], list[ShowerBackend]]] = {
    "tf": _tensorflow_backends,
    "int8": _int8_backends,
    "fake": _fake_backends,
}


def load_backends(settings: Settings) -> Sequence[ShowerBackend]:
    """One backend per device, as ``settings.backend`` asks; ModelLoadError with one clear line if impossible."""
    if settings.backend != "auto":
        return _FACTORIES[settings.backend](settings)
    model_files(settings.model_dir)  # fail on a missing model before trying anything else
    if settings.device != "gpu" and not _gpu_visible(settings):
        try:
            return _int8_backends(settings)
        except ModelLoadError as exc:
            logger.info("backend auto: int8 unavailable (%s); using tf float32", exc)
    return _tensorflow_backends(settings)


def _gpu_visible(settings: Settings) -> bool:
    if settings.device == "cpu":
        return False
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))
