"""npy streaming and HDF5 response files."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.config import Settings
from app.physics.io import read_showers, shower_file_attrs
from app.serving.backends import FakeBackend
from app.serving.batcher import RequestCancelled, ShowerBatcher
from app.serving.encoders import file_stream, npy_block, npy_header, npy_size_bytes, npy_stream, write_hdf5
from tests.serving.helpers import expected_showers, load_npy

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_header_and_blocks_make_a_valid_npy(rng: np.random.Generator, dtype: Any) -> None:
    cells = rng.random((5, 25, 25, 25), dtype=np.float32)
    body = npy_header(5, dtype) + npy_block(cells[:2], dtype) + npy_block(cells[2:], dtype)
    loaded = np.load(io.BytesIO(body))
    assert loaded.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(loaded, cells.astype(dtype))
    assert len(body) == npy_size_bytes(5, dtype)


async def test_npy_stream_is_the_whole_request(tiny_settings: Settings, latent_fn: Callable[..., Any]) -> None:
    async with ShowerBatcher(FakeBackend(), tiny_settings, latent_fn=latent_fn, latent_size=200) as batcher:
        job = batcher.submit(70.0, 150, seed=9)
        body = b"".join([block async for block in npy_stream(job)])
    assert len(body) == npy_size_bytes(150)
    np.testing.assert_array_equal(load_npy(body), expected_showers(np.full(150, 70.0), 9, latent_fn))


async def test_stopping_the_stream_cancels_the_job(tiny_settings: Settings, latent_fn: Callable[..., Any]) -> None:
    async with ShowerBatcher(FakeBackend(), tiny_settings, latent_fn=latent_fn, latent_size=200) as batcher:
        job = batcher.submit(70.0, 500, seed=9)
        stream = npy_stream(job)
        await anext(stream)  # the header
        await anext(stream)  # the first block: the job is running
        await stream.aclose()  # what Starlette does when the client goes away
        assert job.closed
        assert batcher.queued_showers == 0


async def test_hdf5_file_has_layout_showers_and_metadata(
    tiny_settings: Settings, latent_fn: Callable[..., Any], tmp_path: Path
) -> None:
    ep = np.linspace(10.0, 400.0, 90)
    attrs = shower_file_attrs(producer="calogan-serve", seed=4, model_name="fake", model_sha256="0" * 64)
    seen: list[int] = []
    async with ShowerBatcher(FakeBackend(), tiny_settings, latent_fn=latent_fn, latent_size=200) as batcher:
        path = await write_hdf5(batcher.submit(ep, seed=4), tmp_path / "out.h5", attrs=attrs, progress=seen.append)
    showers = read_showers(path)
    np.testing.assert_array_equal(showers.cells_gev, expected_showers(ep, 4, latent_fn))
    np.testing.assert_allclose(showers.ep_gev, ep, rtol=1e-6)
    assert showers.attrs["seed"] == 4
    assert showers.attrs["model_name"] == "fake"
    assert showers.attrs["axis_order"] == "x,y,layer"
    assert sum(seen) == 90


async def test_failed_job_leaves_no_file(
    tiny_settings: Settings, latent_fn: Callable[..., Any], tmp_path: Path
) -> None:
    async with ShowerBatcher(FakeBackend(), tiny_settings, latent_fn=latent_fn, latent_size=200) as batcher:
        job = batcher.submit(70.0, 10, seed=1)
        job.cancel()
        with pytest.raises(RequestCancelled):
            await write_hdf5(job, tmp_path / "gone.h5", attrs={})
    assert not (tmp_path / "gone.h5").exists()


async def test_file_stream_sends_the_file_and_removes_it(tmp_path: Path) -> None:
    path = tmp_path / "body.bin"
    content = bytes(range(256)) * 10_000
    path.write_bytes(content)
    received = b"".join([block async for block in file_stream(path)])
    assert received == content
    assert not path.exists()
