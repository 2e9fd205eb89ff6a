"""Shower files in the 3DGAN HDF5 layout (h5py).

Layout, read and written: ``ECAL`` float32 ``(N, 25, 25, 25)`` indexed ``[x, y, layer]`` in GeV of
visible (silicon) energy, and ``energy`` float32 ``(N,)`` primary energy in GeV. The public 3DGAN
files store the primary energy as ``target[:, 1]`` instead, and some variants store cells x50
("Geant is in units of 1/50 GeV") or in MeV; :func:`read_showers` detects the scale from the
ratio sum(ECAL)/Ep (about 0.02 for visible GeV) and converts to visible GeV, saying so in
``Showers.unit_note``.

h5py errors are translated here, once, into :class:`~app.errors.ShowerFileError`.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import h5py
import numpy as np

from app import __version__
from app.errors import ShowerFileError
from app.physics.detector import AXIS_ORDER, CELL_SIZE_MM, ENERGY_UNIT, SHOWER_SHAPE, FloatArray

logger = logging.getLogger(__name__)

CELLS_KEY = "ECAL"
ENERGY_KEY = "energy"
TARGET_KEY = "target"

DETECTOR_DESCRIPTION = (
    "CLIC-like Si-W ECAL: 25 layers (17 x 2.4 mm W, then 8 x 4.8 mm W, each + 0.5 mm Si), "
    f"{CELL_SIZE_MM} mm pads, 25x25 window centred on the beam axis"
)

# sum(ECAL)/Ep of each known storage scale: visible GeV, Geant4 x50 files, visible MeV.
_KNOWN_SCALES = ((0.02, 1.0, "visible GeV"), (1.0, 50.0, "x50 scaled"), (20.0, 1000.0, "visible MeV"))


@dataclass
class Showers:
    """Showers read from a file.

    Attributes
    ----------
    cells_gev : ndarray, shape (N, 25, 25, 25), float32
        Visible energy per cell, GeV, indexed [x, y, layer].
    ep_gev : ndarray, shape (N,), float32
        Primary energy, GeV.
    attrs : dict
        The file's root attributes.
    unit_note : str
        How the stored cell values were converted to visible GeV.
    """

    cells_gev: FloatArray
    ep_gev: FloatArray
    attrs: dict[str, Any] = field(default_factory=dict)
    unit_note: str = "visible GeV"

    def __len__(self) -> int:
        return len(self.ep_gev)


def read_showers(path: str | Path, *, max_showers: int | None = None) -> Showers:
    """Read a 3DGAN-layout file and return its showers in visible GeV.

    Parameters
    ----------
    path : str or Path
        HDF5 file with ``ECAL`` and either ``energy`` or ``target`` (Ep = ``target[:, 1]``).
    max_showers : int, optional
        Read only the first showers.

    Raises
    ------
    ShowerFileError
        The file is missing, not HDF5, or not in the 3DGAN layout.
    """
    path = Path(path)
    if not path.is_file():
        raise ShowerFileError(f"{path}: no such file")
    stop = None if max_showers is None else int(max_showers)
    try:
        with h5py.File(path, "r") as f:
            cells = _read_cells(f, path, stop)
            ep_gev = _read_primary_energy(f, path, stop)
            attrs = {key: _plain(value) for key, value in f.attrs.items()}
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise ShowerFileError(f"{path}: cannot read as a 3DGAN shower file ({exc})") from exc
    if len(ep_gev) != len(cells):
        raise ShowerFileError(f"{path}: {len(cells)} showers in {CELLS_KEY} but {len(ep_gev)} energies")
    scale, unit_note = _detect_scale(cells, ep_gev)
    if scale != 1.0:
        logger.info("%s: cells stored %s, divided by %g", path, unit_note, scale)
        cells = cells / np.float32(scale)
    return Showers(cells, ep_gev, attrs, unit_note)


def _read_cells(f: h5py.File, path: Path, stop: int | None) -> FloatArray:
    if CELLS_KEY not in f:
        raise ShowerFileError(f"{path}: no '{CELLS_KEY}' dataset (found: {sorted(f.keys())})")
    dataset = f[CELLS_KEY]
    if dataset.ndim != 4 or tuple(dataset.shape[1:]) != SHOWER_SHAPE:
        raise ShowerFileError(
            f"{path}: '{CELLS_KEY}' has shape {dataset.shape}, expected (N, {', '.join(map(str, SHOWER_SHAPE))})"
        )
    return np.asarray(dataset[:stop], dtype=np.float32)


def _read_primary_energy(f: h5py.File, path: Path, stop: int | None) -> FloatArray:
    if ENERGY_KEY in f:
        ep = np.asarray(f[ENERGY_KEY][:stop], dtype=np.float32).reshape(-1)
    elif TARGET_KEY in f and f[TARGET_KEY].ndim == 2 and f[TARGET_KEY].shape[1] >= 2:
        ep = np.asarray(f[TARGET_KEY][:stop, 1], dtype=np.float32)
    else:
        raise ShowerFileError(f"{path}: no '{ENERGY_KEY}' dataset and no 2-column '{TARGET_KEY}'")
    if not np.all(np.isfinite(ep)) or np.any(ep <= 0):
        raise ShowerFileError(f"{path}: primary energies must be finite and > 0 GeV")
    return ep


def _detect_scale(cells: FloatArray, ep_gev: FloatArray) -> tuple[float, str]:
    """Pick the known storage scale whose sum/Ep ratio is nearest (in log) to the file's median."""
    if len(cells) == 0:
        return 1.0, "visible GeV"
    ratio = float(np.median(cells.reshape(len(cells), -1).sum(axis=1) / ep_gev))
    if ratio <= 0:
        return 1.0, "visible GeV"
    _, scale, note = min(_KNOWN_SCALES, key=lambda known: abs(np.log(ratio / known[0])))
    return scale, note


def _plain(value: Any) -> Any:
    """HDF5 attribute values as plain Python (bytes to str, numpy scalars to Python)."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def shower_file_attrs(*, producer: str, seed: int | None = None, **extra: Any) -> dict[str, Any]:
    """Self-describing root attributes for a file this project writes."""
    attrs: dict[str, Any] = {
        "units": ENERGY_UNIT,
        "cell_quantity": "visible energy deposited in silicon",
        "axis_order": ",".join(AXIS_ORDER),
        "shape_per_shower": list(SHOWER_SHAPE),
        "detector": DETECTOR_DESCRIPTION,
        "producer": producer,
        "producer_version": __version__,
        "created_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    if seed is not None:
        attrs["seed"] = int(seed)
    attrs.update({key: value for key, value in extra.items() if value is not None})
    return attrs


class ShowerWriter:
    """Append showers to a 3DGAN-layout file, chunk by chunk, so memory does not grow with N.

    Example::

        with ShowerWriter("ref.h5", attrs=shower_file_attrs(producer="calogan-mc", seed=1)) as out:
            for cells_gev, ep_gev in batches:
                out.append(cells_gev, ep_gev)

    Parameters
    ----------
    path : str or Path
        The file.
    attrs : dict, optional
        File attributes of a new file (required unless ``append``).
    compression : str or None
        HDF5 filter of the cell dataset of a new file.
    append : bool
        Open an existing file written by this class (or any file with the same datasets) and add
        showers after the ones it holds; a row written to only one of the two datasets (an
        interrupted append) is cut off.
    """

    def __init__(self, path: str | Path, *, attrs: dict[str, Any] | None = None, compression: str | None = "gzip",
                 append: bool = False) -> None:
        if (attrs is None) != append:
            raise ValueError("attrs are needed for a new shower file (see shower_file_attrs), and only then")
        self.path = Path(path)
        self._attrs = attrs or {}
        self._compression = compression
        self._append = append
        self._file: h5py.File | None = None
        self.n_written = 0

    def __enter__(self) -> Self:
        self._file = self._open_existing() if self._append else self._create()
        return self

    def _h5(self, mode: str, doing: str) -> h5py.File:
        try:
            return h5py.File(self.path, mode)
        except OSError as exc:
            raise ShowerFileError(f"{self.path}: cannot {doing} ({exc})") from exc

    def _create(self) -> h5py.File:
        f = self._h5("w", "create")
        f.attrs.update(self._attrs)
        f.create_dataset(
            CELLS_KEY, shape=(0, *SHOWER_SHAPE), maxshape=(None, *SHOWER_SHAPE), dtype=np.float32,
            chunks=(16, *SHOWER_SHAPE), compression=self._compression, shuffle=self._compression is not None,
        )
        f.create_dataset(ENERGY_KEY, shape=(0,), maxshape=(None,), dtype=np.float32, chunks=(4096,))
        f[CELLS_KEY].attrs.update({"units": ENERGY_UNIT, "axis_order": ",".join(AXIS_ORDER)})
        f[ENERGY_KEY].attrs.update({"units": ENERGY_UNIT, "quantity": "primary electron energy"})
        return f

    def _open_existing(self) -> h5py.File:
        f = self._h5("r+", "open for appending")
        layout = {CELLS_KEY: (None, *SHOWER_SHAPE), ENERGY_KEY: (None,)}
        if any(key not in f or f[key].maxshape != shape for key, shape in layout.items()):
            f.close()
            raise ShowerFileError(f"{self.path}: no extendable {CELLS_KEY!r} (N, 25, 25, 25) and {ENERGY_KEY!r} "
                                  "(N,) datasets to append to")
        self._file = f
        self.truncate(min(len(f[CELLS_KEY]), len(f[ENERGY_KEY])))
        return f

    def append(self, cells_gev: FloatArray, ep_gev: FloatArray) -> None:
        """Add showers ``(n, 25, 25, 25)`` GeV with their primary energies ``(n,)`` GeV."""
        f = self._opened()
        n = len(ep_gev)
        if cells_gev.shape != (n, *SHOWER_SHAPE):
            raise ValueError(f"cells_gev has shape {cells_gev.shape}, expected ({n}, {SHOWER_SHAPE})")
        try:
            for key, data in ((CELLS_KEY, cells_gev), (ENERGY_KEY, ep_gev)):
                dataset = f[key]
                dataset.resize(self.n_written + n, axis=0)
                dataset[self.n_written :] = np.asarray(data, dtype=np.float32)
        except OSError as exc:  # e.g. a full disk
            raise ShowerFileError(f"{self.path}: cannot write showers ({exc})") from exc
        self.n_written += n

    def truncate(self, n: int) -> None:
        """Keep only the first ``n`` showers (``n`` at most the number written)."""
        f = self._opened()
        for key in (CELLS_KEY, ENERGY_KEY):
            f[key].resize(min(n, len(f[key])), axis=0)
        self.n_written = min(n, len(f[ENERGY_KEY]))

    def _opened(self) -> h5py.File:
        if self._file is None:
            raise RuntimeError("ShowerWriter used outside its 'with' block")
        return self._file

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def write_showers(path: str | Path, cells_gev: FloatArray, ep_gev: FloatArray, *, attrs: dict[str, Any]) -> None:
    """Write showers held in memory to a new file; see :class:`ShowerWriter` for large N."""
    with ShowerWriter(path, attrs=attrs) as out:
        out.append(cells_gev, ep_gev)
