"""Response bodies: a streamed ``.npy`` and an HDF5 file in the project's 3DGAN layout.

npy is written header first, then one block per finished chunk, so memory does not grow with n and
the first bytes leave as soon as the first batch is done. HDF5 cannot be streamed while it is being
written, so it goes to a temporary file (h5py on a worker thread, never on the event loop), which is
then streamed and removed. Both run through the same :class:`~app.serving.batcher.ShowerJob` chunks.
"""

from __future__ import annotations

import asyncio
import io
import os
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np

from app.physics.detector import SHOWER_SHAPE, FloatArray
from app.physics.io import ShowerWriter
from app.serving.batcher import ShowerChunk, ShowerJob

OutputFormat = Literal["npy", "hdf5"]
OutputDtype = Literal["float32", "float16"]

NPY_MEDIA_TYPE: Final = "application/x-npy"
HDF5_MEDIA_TYPE: Final = "application/x-hdf5"
MEDIA_TYPES: Final[dict[OutputFormat, str]] = {"npy": NPY_MEDIA_TYPE, "hdf5": HDF5_MEDIA_TYPE}
SUFFIXES: Final[dict[OutputFormat, str]] = {"npy": ".npy", "hdf5": ".h5"}

_STREAM_BLOCK_SHOWERS: Final = 64  # 4 MB per send at float32: smooth flow control, few event-loop hops
_FILE_BLOCK_BYTES: Final = 1 << 20


def npy_header(n: int, dtype: OutputDtype = "float32") -> bytes:
    """The ``.npy`` header (format 1.0) of an array of shape (n, 25, 25, 25), little-endian ``dtype``."""
    buffer = io.BytesIO()
    descr = np.dtype(dtype).newbyteorder("<").str
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": descr, "fortran_order": False, "shape": (n, *SHOWER_SHAPE)}
    )
    return buffer.getvalue()


def npy_size_bytes(n: int, dtype: OutputDtype = "float32") -> int:
    """Total size of the ``.npy`` body for n showers (header included)."""
    return len(npy_header(n, dtype)) + n * int(np.prod(SHOWER_SHAPE)) * np.dtype(dtype).itemsize


def npy_block(cells_gev: FloatArray, dtype: OutputDtype = "float32") -> bytes:
    """Raw little-endian C-order bytes of showers (k, 25, 25, 25), as they follow the npy header."""
    return np.ascontiguousarray(cells_gev, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()


async def npy_stream(
    job: ShowerJob, first: ShowerChunk | None = None, dtype: OutputDtype = "float32"
) -> AsyncIterator[bytes]:
    """The whole ``.npy`` body of a job: header, then its chunks in row order; cancels the job if stopped early.

    ``first`` is a chunk already taken from the job (the API waits for it before answering 200).
    """
    try:
        yield npy_header(job.n, dtype)
        chunk = first if first is not None else await job.next_chunk()
        while chunk is not None:
            for start in range(0, len(chunk), _STREAM_BLOCK_SHOWERS):
                block = chunk.cells_gev[start : start + _STREAM_BLOCK_SHOWERS]
                yield await asyncio.to_thread(npy_block, block, dtype)
            chunk = await job.next_chunk()
    finally:
        job.cancel()  # no-op when complete; a client that left stops costing compute


async def write_hdf5(
    job: ShowerJob,
    path: Path,
    *,
    attrs: dict[str, Any],
    compression: str | None = "gzip",
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Write every shower of ``job`` to a new 3DGAN-layout file, chunk by chunk, h5py on worker threads.

    ``progress`` is called with the number of showers in each chunk written. The file is removed if
    the job fails or is cancelled.
    """
    writer = ShowerWriter(path, attrs=attrs, compression=compression)
    await asyncio.to_thread(writer.__enter__)
    ok = False
    try:
        async for chunk in job:
            await asyncio.to_thread(writer.append, chunk.cells_gev, chunk.ep_gev)
            if progress is not None:
                progress(len(chunk))
        ok = True
    finally:
        await asyncio.to_thread(writer.__exit__, None, None, None)
        if not ok:
            job.cancel()
            path.unlink(missing_ok=True)
    return path


def temporary_path(directory: Path | None, suffix: str) -> Path:
    """A fresh, empty temporary file path in ``directory`` (the system default when None)."""
    fd, name = tempfile.mkstemp(prefix="calogan-", suffix=suffix, dir=directory)
    os.close(fd)
    return Path(name)


async def file_stream(path: Path) -> AsyncIterator[bytes]:
    """Stream a file and delete it; it is unlinked as soon as it is open, so it never outlives the send."""
    handle = await asyncio.to_thread(path.open, "rb")
    try:
        await asyncio.to_thread(path.unlink, missing_ok=True)
        while block := await asyncio.to_thread(handle.read, _FILE_BLOCK_BYTES):
            yield block
    finally:
        handle.close()
