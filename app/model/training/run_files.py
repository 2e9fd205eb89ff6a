"""The run folder on disk: atomic writes, checkpoints, the CSV log, the hardware description."""

from __future__ import annotations

import csv
import json
import os
import platform
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from app import __version__
from app.errors import InvalidRequest
from app.hardware import cpu_model_name
from app.model.training.config import BEST_WEIGHTS_FILE, CHECKPOINT_DIR

if TYPE_CHECKING:
    from app.model.training.trainer import GanTrainer


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file whole or not at all (a temporary file, then a rename)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """:func:`atomic_write_text` of indented JSON."""
    atomic_write_text(path, json.dumps(data, indent=2))


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write named arrays whole or not at all."""
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def hardware_description() -> dict[str, Any]:
    """Where a run happened: CPU, core count, devices TensorFlow sees, library versions."""
    import keras
    import tensorflow as tf

    return {
        "machine": platform.machine(),
        "processor": cpu_model_name(),
        "cpu_count": os.cpu_count(),
        "tf_devices": [d.name for d in tf.config.list_logical_devices()],
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "calogan": __version__,
    }


def write_checkpoint(run_dir: Path, trainer: GanTrainer, state: dict[str, Any]) -> None:
    """Replace ``checkpoint/`` with the current state; a crash leaves the old or the new one whole."""
    final, tmp, old = run_dir / CHECKPOINT_DIR, run_dir / f"{CHECKPOINT_DIR}.tmp", run_dir / f"{CHECKPOINT_DIR}.old"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    np.savez(tmp / "variables.npz", **trainer.state_arrays())
    (tmp / "state.json").write_text(json.dumps(state, indent=2), encoding="utf-8")
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def read_checkpoint(run_dir: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    for name in (CHECKPOINT_DIR, f"{CHECKPOINT_DIR}.old"):  # .old: interrupted between the two renames
        folder = run_dir / name
        if (folder / "state.json").is_file() and (folder / "variables.npz").is_file():
            state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
            with np.load(folder / "variables.npz") as data:
                return state, {k: data[k] for k in data.files}
    raise InvalidRequest(f"{run_dir}: no checkpoint to resume from", allowed="a run folder written by calogan train")


def stored_config(run_dir: Path) -> dict[str, Any]:
    """The settings a run's checkpoint was written with (see :func:`read_checkpoint`)."""
    state, _ = read_checkpoint(run_dir)
    return dict(state["config"])


_CSV_FIELDS = (
    "epoch", "phase", "steps", "showers_seen", "wall_s", "showers_per_s", "lr_generator", "lr_discriminator",
    "output_relu", "fake_emin_gev", "fake_emax_gev",
    "d_real_loss", "d_real_bce", "d_real_aux", "d_fake_loss", "d_fake_bce", "d_fake_aux", "d_fake_ecal",
    "g_loss", "g_bce", "g_aux", "g_ecal", "warmup_loss", "warmup_energy", "warmup_shape",
    "val_score", "best",
)


def append_csv(path: Path, row: dict[str, Any]) -> None:
    extra = sorted(k for k in row if k not in _CSV_FIELDS)
    new = not path.exists()
    if not new:
        with open(path, newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), [])
        fields = header or [*_CSV_FIELDS, *extra]
    else:
        fields = [*_CSV_FIELDS, *extra]
    with open(path, "a", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow({k: _csv_value(row.get(k, "")) for k in fields})


def _csv_value(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value


def truncate_csv(path: Path, last_epoch: int) -> None:
    """Drop log rows of epochs after ``last_epoch`` (written after the checkpoint we resume from)."""
    if not path.exists():
        return
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    kept = rows[:1] + [r for r in rows[1:] if r and int(r[0]) <= last_epoch]
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(kept)


def mean_losses(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} if rows else {}


def save_best_generator(run_dir: Path, trainer: GanTrainer) -> None:
    save_npz(run_dir / BEST_WEIGHTS_FILE, {f"{i:04d}": np.asarray(v.numpy())
                                            for i, v in enumerate(trainer.generator.variables)})
