"""A small client for grid jobs: fetch many showers in chunks, retry politely, resume interrupted files.

::

    with ShowerClient("http://calogan:8000", token=discover_token()) as client:
        cells_gev = client.simulate(energy_gev=100.0, n=10, seed=1)          # (10, 25, 25, 25) float32
        client.pull("out.h5", energy_gev=500.0, n=100_000, seed=7)           # resumable 3DGAN file

Reproducible: a pull of n showers with seed S asks for chunk k with the seed :func:`chunk_seed` (S, k),
so the whole file depends only on (S, chunk size, energy, n) and on the served model, however often it
was interrupted. Retries: connection errors, cut-short bodies, 429/500/502/503/504, with exponential
backoff and jitter, never sooner than the server's Retry-After (capped at ``max_retry_after_s``), and
never past the ``deadline_s`` of the whole call: a grid job learns in time that it will not finish.
Each chunk is verified (npy header shape and dtype, byte count, seed and count headers) before it is
appended.

Bearer tokens follow WLCG Bearer Token Discovery: ``--token``, then ``BEARER_TOKEN``, then
``BEARER_TOKEN_FILE``, then ``$XDG_RUNTIME_DIR/bt_u<uid>``, then ``/tmp/bt_u<uid>``.
"""

from __future__ import annotations

import ast
import logging
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import h5py
import httpx
import numpy as np

from app import __version__
from app.errors import CaloganError, InvalidRequest, ShowerFileError
from app.physics.detector import SHOWER_SHAPE, FloatArray
from app.physics.io import CELLS_KEY, ENERGY_KEY, ShowerWriter, shower_file_attrs
from app.serving.batcher import new_seed

logger = logging.getLogger(__name__)

RETRY_STATUSES: Final = frozenset({429, 500, 502, 503, 504})
_NPY_MAGIC: Final = b"\x93NUMPY"
_MAX_BACKOFF_S: Final = 120.0
_PULL_ATTRS: Final = ("producer", "seed", "energy_gev", "chunk_showers", "n_requested")


class ServiceError(CaloganError):
    """The service answered with an error that retrying will not fix, or kept failing past the retries."""

    exit_code: int = 3
    """What ``calogan pull`` exits with, so a job script can tell the kinds apart."""


class DeadlineExceeded(ServiceError):
    """The next retry would start after the caller's deadline."""

    exit_code = 4


class ModelChanged(ServiceError):
    """The server now serves another model than the one the pull (or the resumed file) started with."""

    exit_code = 5


def chunk_seed(seed: int, index: int) -> int:
    """The seed of chunk ``index`` of a pull with ``seed``: independent streams, in [0, 2**63 - 1]."""
    state = np.random.SeedSequence(entropy=int(seed), spawn_key=(int(index),)).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))


def discover_token(explicit: str | None = None, environ: Mapping[str, str] | None = None) -> str | None:
    """A bearer token by WLCG Bearer Token Discovery, or None when there is none."""
    environ = os.environ if environ is None else environ
    if explicit:
        return explicit.strip()
    if environ.get("BEARER_TOKEN", "").strip():
        return environ["BEARER_TOKEN"].strip()
    candidates = []
    if environ.get("BEARER_TOKEN_FILE"):
        candidates.append(Path(environ["BEARER_TOKEN_FILE"]))
    uid = os.getuid() if hasattr(os, "getuid") else None
    if uid is not None:
        if environ.get("XDG_RUNTIME_DIR"):
            candidates.append(Path(environ["XDG_RUNTIME_DIR"]) / f"bt_u{uid}")
        candidates.append(Path("/tmp") / f"bt_u{uid}")
    for path in candidates:
        if path.is_file():
            token = path.read_text().strip()
            if token:
                return token
    return None


@dataclass(frozen=True)
class PullResult:
    """What a pull did: the file, showers in it, how many were fetched now, and the pull's seed."""

    path: Path
    n_showers: int
    n_fetched: int
    seed: int
    resumed: bool


class _Retryable(Exception):
    """Internal: this attempt failed in a way another attempt may fix."""

    def __init__(self, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


class ShowerClient:
    """HTTP client of the calogan service (httpx); use as a context manager.

    Parameters
    ----------
    url : str
        Base URL, e.g. ``http://calogan:8000``.
    token : str, optional
        Bearer token (see :func:`discover_token`).
    max_retries : int
        Attempts per chunk after the first.
    backoff_s : float
        First retry delay; doubles each attempt (with jitter), capped at 120 s.
    timeout_s : float
        Read timeout per request: the longest silence between two bytes (a big chunk may wait in the
        server's queue before its first byte).
    connect_timeout_s : float
        Time to open a connection; a dead port fails fast.
    max_retry_after_s : float
        The longest wait a Retry-After header can impose; a server asking for more gets this.
    deadline_s : float, optional
        Total time one ``simulate`` or ``pull`` may take, waits included; a retry that would start
        after it is not made (ServiceError saying so). None: no limit.
    transport : httpx.BaseTransport, optional
        For tests (``httpx.MockTransport``).
    sleep, clock : callable
        ``time.sleep`` and ``time.monotonic``; tests pass fakes.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        max_retries: int = 8,
        backoff_s: float = 1.0,
        timeout_s: float = 900.0,
        connect_timeout_s: float = 10.0,
        max_retry_after_s: float = 600.0,
        deadline_s: float | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        headers = {"User-Agent": f"calogan-client/{__version__}"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.url = url.rstrip("/")
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_retry_after_s = max_retry_after_s
        self.deadline_s = deadline_s
        self._sleep = sleep
        self._clock = clock
        self._ends_at: float | None = None
        self._http = httpx.Client(
            base_url=self.url, headers=headers, transport=transport,
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def models(self) -> dict[str, Any]:
        """The server's ``/v1/models``: model cards and limits."""
        response = self._http.get("/v1/models")
        _raise_for_error(response)
        return response.json()

    def simulate(
        self, *, energy_gev: float, n: int, seed: int, dtype: str = "float32"
    ) -> FloatArray:
        """``n`` showers at ``energy_gev`` GeV, shape (n, 25, 25, 25) of ``dtype``, retried and verified."""
        self._start_deadline()
        cells_gev, _ = self._with_retries(lambda: self._fetch(energy_gev, n, seed, dtype), what=f"seed {seed}")
        return cells_gev

    def pull(
        self,
        path: str | Path,
        *,
        energy_gev: float,
        n: int,
        seed: int | None = None,
        chunk_showers: int = 1000,
        progress: Callable[[int, int], None] | None = None,
    ) -> PullResult:
        """Fill a 3DGAN-layout HDF5 file with ``n`` showers, chunk by chunk; resume it if it exists.

        Parameters
        ----------
        path : str or Path
            Output file. If it exists from an interrupted pull, its seed, energy and chunk size are
            checked against the arguments (None seed means "take the file's") and the pull resumes.
        energy_gev : float
            Primary energy, GeV.
        n : int
            Showers wanted in the file in total.
        seed : int, optional
            Seed of the whole pull; random (and stored in the file) when omitted.
        chunk_showers : int
            Showers per request; the server's per-request limit must allow it.
        progress : callable, optional
            Called as ``progress(showers_in_file, n)`` after each chunk.
        """
        self._start_deadline()
        path = Path(path)
        if n < 1 or chunk_showers < 1:
            raise InvalidRequest(f"n={n} and chunk_showers={chunk_showers} must be >= 1")
        resumed = path.exists()
        if resumed:
            seed, done = _resume_state(path, energy_gev=energy_gev, n=n, seed=seed, chunk_showers=chunk_showers)
        else:
            seed = new_seed() if seed is None else seed
            done = 0
        if progress:
            progress(done, n)
        fetched = 0
        model_sha256 = _file_attr(path, "model_sha256") if resumed else None
        while done < n:
            index = done // chunk_showers
            count = min(chunk_showers, n - done)
            this_seed = chunk_seed(seed, index)
            # Pinned from the first chunk on (or from the file being resumed): a server that has
            # switched models answers 409 instead of mixing two models' showers in one file.
            cells_gev, headers = self._with_retries(
                lambda s=this_seed, k=count, pin=model_sha256: self._fetch(energy_gev, k, s, "float32", pin),
                what=f"chunk {index}",
            )
            served_sha = headers.get("x-calogan-model-sha256")
            if model_sha256 is not None and served_sha != model_sha256:
                raise ModelChanged(
                    f"{path}: the server now runs model sha256 {served_sha}, the file holds showers of {model_sha256}; "
                    "start a new file rather than mix models"
                )
            if not path.exists():
                model_sha256 = served_sha
                attrs = shower_file_attrs(
                    producer="calogan-pull", seed=seed, energy_gev=energy_gev, n_requested=n,
                    chunk_showers=chunk_showers, source_url=self.url, model_name=headers.get("x-calogan-model"),
                    model_version=headers.get("x-calogan-model-version"), model_sha256=served_sha,
                )
                with ShowerWriter(path, attrs=attrs):
                    pass  # creates the empty datasets with the project's layout
            _append_chunk(path, cells_gev, np.full(count, energy_gev, dtype=np.float32))
            done += count
            fetched += count
            if progress:
                progress(done, n)
        return PullResult(path=path, n_showers=done, n_fetched=fetched, seed=int(seed), resumed=resumed)

    # ----- one request, verified

    def _fetch(
        self, energy_gev: float, n: int, seed: int, dtype: str, model_sha256: str | None = None
    ) -> tuple[FloatArray, httpx.Headers]:
        params: dict[str, Any] = {"energy": energy_gev, "n": n, "seed": seed, "format": "npy", "dtype": dtype}
        if model_sha256:
            params["model"] = f"sha256:{model_sha256}"
        try:
            with self._http.stream("POST", "/simulate", params=params) as response:
                if response.status_code != 200:
                    response.read()
                    _raise_for_error(response)
                _check_header(response.headers, "x-calogan-showers", str(n))
                _check_header(response.headers, "x-calogan-seed", str(seed))
                cells = _read_npy(response.iter_bytes(), n=n, dtype=dtype)
                return cells, response.headers
        except (httpx.TransportError, httpx.DecodingError) as exc:  # refused, reset, cut short, timed out
            raise _Retryable(f"{type(exc).__name__}: {exc}") from exc

    def _start_deadline(self) -> None:
        self._ends_at = None if self.deadline_s is None else self._clock() + self.deadline_s

    def _with_retries(self, attempt: Callable[[], Any], *, what: str) -> Any:
        for tries in range(self.max_retries + 1):
            try:
                return attempt()
            except _Retryable as exc:
                if tries == self.max_retries:
                    raise ServiceError(f"{what}: giving up after {tries + 1} attempts ({exc})") from exc
                backoff = min(_MAX_BACKOFF_S, self.backoff_s * 2**tries) * random.uniform(0.5, 1.0)
                delay = max(backoff, min(exc.retry_after_s or 0.0, self.max_retry_after_s))
                if self._ends_at is not None and self._clock() + delay > self._ends_at:
                    raise DeadlineExceeded(
                        f"{what}: the deadline of {self.deadline_s:g} s would pass during the next wait of "
                        f"{delay:.0f} s ({exc})"
                    ) from exc
                logger.warning("%s: %s; retrying in %.1f s", what, exc, delay)
                self._sleep(delay)
        raise AssertionError("unreachable")


def _raise_for_error(response: httpx.Response) -> None:
    """Turn an error answer into _Retryable (worth another try) or a final error carrying the server's words."""
    if response.status_code < 400:
        return
    try:
        body = response.json()
        detail, allowed = str(body.get("detail", "")), body.get("allowed")
    except ValueError:
        detail, allowed = response.text[:200], None
    message = f"HTTP {response.status_code}: {detail}"
    if response.status_code in RETRY_STATUSES:
        retry_after = response.headers.get("retry-after")
        try:
            retry_after_s = float(retry_after) if retry_after is not None else None
        except ValueError:
            retry_after_s = None
        raise _Retryable(message, retry_after_s)
    if response.status_code in (400, 406, 422):
        raise InvalidRequest(message, allowed=allowed)
    if response.status_code == 409:
        raise ModelChanged(f"{message} (the pull started with another model; start a new file)")
    raise ServiceError(message)


def _check_header(headers: httpx.Headers, name: str, expected: str) -> None:
    if headers.get(name) != expected:
        raise ServiceError(f"server sent {name}={headers.get(name)!r}, expected {expected}")


def _read_npy(blocks: Any, *, n: int, dtype: str) -> FloatArray:
    """Parse a streamed .npy body of shape (n, 25, 25, 25) into a preallocated array; _Retryable if cut short."""
    buffer = bytearray()
    iterator = iter(blocks)
    # Version 1.0 header: magic (6), version (2), little-endian uint16 length, then the header text.
    while len(buffer) < 10 or len(buffer) < 10 + int.from_bytes(buffer[8:10], "little"):
        block = next(iterator, None)
        if block is None:
            raise _Retryable("response ended inside the npy header")
        buffer.extend(block)
    if not buffer.startswith(_NPY_MAGIC) or buffer[6] != 1:
        raise ServiceError("response is not a version 1.0 .npy body")
    header_end = 10 + int.from_bytes(buffer[8:10], "little")
    header = ast.literal_eval(buffer[10:header_end].decode("latin1"))
    expected_shape = (n, *SHOWER_SHAPE)
    if tuple(header["shape"]) != expected_shape or np.dtype(header["descr"]) != np.dtype(dtype).newbyteorder("<"):
        raise ServiceError(f"server sent {header['descr']} {tuple(header['shape'])}, expected {dtype} {expected_shape}")
    cells = np.empty(expected_shape, dtype=np.dtype(dtype).newbyteorder("<"))
    target = memoryview(cells.reshape(-1).view(np.uint8))
    filled = 0
    for block in [bytes(buffer[header_end:]), *iterator]:
        end = filled + len(block)
        if end > len(target):
            raise ServiceError("response is longer than its npy header says")
        target[filled:end] = block
        filled = end
    if filled != len(target):
        raise _Retryable(f"response cut short: {filled} of {len(target)} bytes")
    return cells.astype(np.dtype(dtype), copy=False)  # native byte order


def _file_attr(path: Path, key: str) -> Any:
    with h5py.File(path, "r") as f:
        value = f.attrs.get(key)
    return value.decode() if isinstance(value, bytes) else value


def _resume_state(path: Path, *, energy_gev: float, n: int, seed: int | None, chunk_showers: int) -> tuple[int, int]:
    """(seed, showers kept) of an interrupted pull; a partly written chunk is cut off."""
    try:
        with h5py.File(path, "r") as f:
            attrs = {key: f.attrs.get(key) for key in _PULL_ATTRS}
            stored_rows = min(len(f[CELLS_KEY]), len(f[ENERGY_KEY]))
    except (OSError, KeyError) as exc:
        raise ShowerFileError(f"{path}: cannot resume from this file ({exc})") from exc
    if attrs["producer"] != "calogan-pull" or any(value is None for value in attrs.values()):
        raise ShowerFileError(f"{path}: exists and was not written by calogan pull; not touching it")
    checks = {
        "energy_gev": (float(attrs["energy_gev"]), float(energy_gev)),
        "chunk_showers": (int(attrs["chunk_showers"]), int(chunk_showers)),
        "n": (int(attrs["n_requested"]), int(n)),
    }
    if seed is not None:
        checks["seed"] = (int(attrs["seed"]), int(seed))
    for name, (stored, asked) in checks.items():
        if stored != asked:
            raise InvalidRequest(
                f"{path}: cannot resume, the file has {name}={stored} but {name}={asked} was asked",
                allowed="the same arguments as the interrupted pull, or a new output file",
            )
    kept = n if stored_rows >= n else stored_rows - stored_rows % chunk_showers
    if kept != stored_rows:
        with ShowerWriter(path, append=True) as out:
            out.truncate(kept)
    return int(attrs["seed"]), kept


def _append_chunk(path: Path, cells_gev: FloatArray, ep_gev: FloatArray) -> None:
    """Append one verified chunk and close the file, so an interruption leaves whole chunks behind."""
    with ShowerWriter(path, append=True) as out:
        out.append(cells_gev, ep_gev)


__all__ = [
    "DeadlineExceeded",
    "ModelChanged",
    "PullResult",
    "ServiceError",
    "ShowerClient",
    "chunk_seed",
    "discover_token",
]
