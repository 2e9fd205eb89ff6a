"""3DGAN HDF5 files: round trip, the public layouts (target, x50 scale) and clear errors."""

from pathlib import Path

import h5py
import numpy as np
import pytest

from app.errors import ShowerFileError
from app.physics.detector import SHOWER_SHAPE
from app.physics.io import ShowerWriter, read_showers, shower_file_attrs, write_showers


def _showers(n: int, sf: float = 0.02, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ep = rng.uniform(10, 500, n).astype(np.float32)
    cells = rng.random((n, *SHOWER_SHAPE), dtype=np.float32)
    cells *= (sf * ep / cells.sum(axis=(1, 2, 3)))[:, None, None, None]
    return cells, ep


def test_round_trip_keeps_values_and_self_describing_attributes(tmp_path: Path) -> None:
    cells, ep = _showers(5)
    path = tmp_path / "s.h5"
    write_showers(path, cells, ep, attrs=shower_file_attrs(producer="test", seed=42))
    back = read_showers(path)
    assert np.array_equal(back.cells_gev, cells)
    assert np.array_equal(back.ep_gev, ep)
    assert back.attrs["units"] == "GeV"
    assert back.attrs["axis_order"] == "x,y,layer"
    assert back.attrs["seed"] == 42
    assert {"detector", "producer", "producer_version", "created_utc"} <= back.attrs.keys()
    with h5py.File(path) as f:
        assert f["ECAL"].compression == "gzip"


def test_writer_appends_chunks(tmp_path: Path) -> None:
    path = tmp_path / "s.h5"
    with ShowerWriter(path, attrs=shower_file_attrs(producer="test")) as out:
        for seed in range(3):
            out.append(*_showers(7, seed=seed))
    assert len(read_showers(path)) == 21


def test_writer_appends_to_an_existing_file_and_cuts_a_half_written_row(tmp_path: Path) -> None:
    path = tmp_path / "s.h5"
    first, second = _showers(4, seed=1), _showers(3, seed=2)
    write_showers(path, *first, attrs=shower_file_attrs(producer="test", seed=5))
    with h5py.File(path, "r+") as f:  # an append interrupted between its two datasets
        f["ECAL"].resize(5, axis=0)
    with ShowerWriter(path, append=True) as out:
        assert out.n_written == 4
        out.append(*second)
    back = read_showers(path)
    np.testing.assert_array_equal(back.cells_gev, np.concatenate([first[0], second[0]]))
    np.testing.assert_array_equal(back.ep_gev, np.concatenate([first[1], second[1]]))
    assert back.attrs["seed"] == 5  # the file's own attributes stay
    with ShowerWriter(path, append=True) as out:
        out.truncate(2)
    assert len(read_showers(path)) == 2


def test_writer_refuses_to_append_to_a_file_without_the_datasets(tmp_path: Path) -> None:
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["something"] = np.zeros(3)
    with pytest.raises(ShowerFileError, match="no extendable"), ShowerWriter(path, append=True):
        pass
    with pytest.raises(ValueError, match="attrs are needed"):
        ShowerWriter(tmp_path / "new.h5")


def test_reads_public_target_layout_and_detects_the_x50_scale(tmp_path: Path) -> None:
    cells, ep = _showers(4)
    path = tmp_path / "public.h5"
    with h5py.File(path, "w") as f:
        f["ECAL"] = cells * 50
        f["target"] = np.stack([np.full_like(ep, 11), ep], axis=1)
    back = read_showers(path)
    assert back.unit_note == "x50 scaled"
    assert np.allclose(back.cells_gev, cells, rtol=1e-6)
    assert np.array_equal(back.ep_gev, ep)


def test_max_showers_reads_a_prefix(tmp_path: Path) -> None:
    path = tmp_path / "s.h5"
    write_showers(path, *_showers(6), attrs=shower_file_attrs(producer="test"))
    assert len(read_showers(path, max_showers=2)) == 2


def _write_raw(path: Path, **datasets: np.ndarray) -> Path:
    with h5py.File(path, "w") as f:
        for key, value in datasets.items():
            f[key] = value
    return path


@pytest.mark.parametrize(
    ("datasets", "message"),
    [
        ({"energy": np.ones(2)}, "no 'ECAL'"),
        ({"ECAL": np.zeros((2, 25, 25, 24)), "energy": np.ones(2)}, "shape"),
        ({"ECAL": np.zeros((2, 25, 25, 25))}, "no 'energy'"),
        ({"ECAL": np.zeros((2, 25, 25, 25)), "energy": np.ones(3)}, "3 energies"),
        ({"ECAL": np.zeros((2, 25, 25, 25)), "energy": np.array([1.0, -1.0])}, "> 0"),
    ],
)
def test_wrong_layouts_give_a_clear_error(tmp_path: Path, datasets: dict, message: str) -> None:
    path = _write_raw(tmp_path / "bad.h5", **datasets)
    with pytest.raises(ShowerFileError, match=message):
        read_showers(path)


def test_missing_and_non_hdf5_files_give_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ShowerFileError, match="no such file"):
        read_showers(tmp_path / "absent.h5")
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    with pytest.raises(ShowerFileError, match="cannot read"):
        read_showers(junk)
