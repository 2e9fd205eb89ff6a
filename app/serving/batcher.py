"""The dynamic shower batcher: many requests in, full model batches out, showers streamed back in order.

How a request travels::

    submit(ep_gev, n, seed)  ->  ShowerJob in the queue (or Overloaded at once: the queue is bounded in showers)
    worker (one per backend/device, each with its own single-thread executor):
        wait until max_batch_size showers are waiting or the oldest request has waited max_queue_delay_ms
        take up to max_batch_size rows, round-robin over the waiting requests, round_robin_showers rows
            per request per turn, so a 10 000-shower request cannot starve n=1 calls
        draw each slice's latent noise from its request's own generator, in request order
        run the model on the executor thread; hand each request its rows as one ShowerChunk
    ShowerJob.next_chunk() / async for chunk in job  ->  chunks in row order, for streaming

Guarantees:

- **Reproducible**: a request's noise comes from ``SeedSequence(seed)`` alone and is drawn row after
  row in request order, so how requests are cut into batches never changes its showers.
- **Bounded memory**: a request holds at most ``max_buffered_batches`` chunks not yet taken by its
  consumer; past that its rows wait (slow clients slow themselves down, not the service).
- **Isolation**: a failing batch fails only the requests in it (:class:`GenerationFailed`); the worker
  carries on. A cancelled request (client gone) leaves the queue and costs no further compute.
- **Deadline**: a request not finished ``request_timeout_s`` after submission fails with
  :class:`RequestTimeout`.
- **Drain**: leaving ``async with`` refuses new work (:class:`Draining`), finishes what is queued,
  bounded by ``drain_timeout_s``, then stops the workers.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self

import numpy as np
import numpy.typing as npt

from app.config import Settings
from app.errors import CaloganError, InvalidRequest, Overloaded
from app.physics.detector import SHOWER_SHAPE, FloatArray
from app.physics.primaries import check_count, check_primary_energies, primary_energies
from app.serving.backends import ShowerBackend, warm_up
from app.serving.metrics import ServiceMetrics

logger = logging.getLogger(__name__)

LatentFn = Callable[[FloatArray, np.random.Generator], FloatArray]
"""``latent_vectors(ep_gev (N,), rng) -> float32 (N, latent_size)``, as in ``app.model.latent``."""

MAX_SEED: Final = 2**63 - 1
_RETRY_AFTER_LIMITS_S: Final = (1.0, 3600.0)


class RequestTimeout(CaloganError, TimeoutError):
    """A request was not finished within ``request_timeout_s``; its remaining showers were dropped."""


class GenerationFailed(CaloganError):
    """The model failed on a batch; only the requests with rows in that batch fail."""


class RequestCancelled(CaloganError):
    """The request was cancelled (its client went away) before all its showers were produced."""


class Draining(Overloaded):
    """The service is shutting down and takes no new work; retry, on another replica if there is one."""

    def __init__(self, retry_after_s: float = 1.0) -> None:
        super().__init__(retry_after_s)
        self.args = ("the service is shutting down; retry on another replica",)


def new_seed() -> int:
    """A fresh random seed in [0, 2**63 - 1], reported back to the user so the result can be reproduced."""
    return secrets.randbelow(MAX_SEED + 1)


def check_seed(seed: int) -> int:
    """``seed`` as an int in [0, 2**63 - 1], or InvalidRequest."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not 0 <= seed <= MAX_SEED:
        raise InvalidRequest(f"seed {seed!r} is not allowed", allowed=f"an integer from 0 to {MAX_SEED}")
    return int(seed)


def seed_streams(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """The two independent generators of a request: (primary energies of a spectrum, latent noise)."""
    energy_seq, noise_seq = np.random.SeedSequence(check_seed(seed)).spawn(2)
    return np.random.default_rng(energy_seq), np.random.default_rng(noise_seq)


def spectrum_energies(
    n: int, *, emin_gev: float, emax_gev: float, seed: int, limits_gev: tuple[float, float]
) -> FloatArray:
    """Primary energies, shape (n,) GeV, uniform in [emin_gev, emax_gev], drawn from the seed's energy stream."""
    energy_rng, _ = seed_streams(seed)
    return primary_energies(n, emin_gev=emin_gev, emax_gev=emax_gev, rng=energy_rng, limits_gev=limits_gev)


@dataclass(frozen=True)
class ShowerChunk:
    """Consecutive showers of one request: rows ``start .. start + len(ep_gev)``.

    Attributes
    ----------
    start : int
        Index of the first shower within its request.
    cells_gev : ndarray, shape (k, 25, 25, 25), float32
        Visible energy per cell, GeV, indexed [x, y, layer].
    ep_gev : ndarray, shape (k,)
        Primary energies, GeV.
    """

    start: int
    cells_gev: FloatArray
    ep_gev: FloatArray

    def __len__(self) -> int:
        return len(self.ep_gev)


class ShowerJob:
    """One request's place in the batcher: its showers arrive as in-order :class:`ShowerChunk` s.

    Iterate it (``async for chunk in job``) to stream, ``await job`` for all showers as one array,
    ``job.cancel()`` to drop what is not computed yet.
    """

    def __init__(self, batcher: ShowerBatcher, job_id: int, ep_gev: FloatArray, seed: int, deadline: float) -> None:
        self.id = job_id
        self.ep_gev = ep_gev
        self.n = len(ep_gev)
        self.seed = seed
        self.deadline = deadline  # event-loop time
        self.submitted_at = asyncio.get_running_loop().time()
        self.started_at: float | None = None  # when its first rows entered a batch
        self._batcher = batcher
        self._noise_rng = seed_streams(seed)[1]
        self._next_row = 0  # rows handed to batches so far
        self._in_flight = 0  # batches now computing rows of this job
        self._early: dict[int, ShowerChunk] = {}  # finished out of order (several workers), by start row
        self._ready: deque[ShowerChunk] = deque()  # in order, waiting for the consumer
        self._next_ready = 0  # first row not yet moved to _ready
        self._consumed = 0  # rows handed to the consumer
        self._error: CaloganError | None = None
        self._changed = asyncio.Event()

    @property
    def closed(self) -> bool:
        """True once the job failed or was cancelled."""
        return self._error is not None

    @property
    def remaining(self) -> int:
        """Rows not yet handed to a batch."""
        return 0 if self.closed else self.n - self._next_row

    @property
    def buffered(self) -> int:
        """Chunks computed or computing that the consumer has not taken yet."""
        return self._in_flight + len(self._early) + len(self._ready)

    async def next_chunk(self) -> ShowerChunk | None:
        """The next showers in row order, or None when all ``n`` were handed out.

        Raises
        ------
        RequestTimeout, GenerationFailed, RequestCancelled, Draining
            Why the request ended early; nothing more will come.
        """
        loop = asyncio.get_running_loop()
        while True:
            if self._ready:
                chunk = self._ready.popleft()
                self._consumed += len(chunk)
                self._batcher._wake()  # buffer space: this job's rows may join batches again
                return chunk
            if self._error is not None:
                raise self._error
            if self._consumed == self.n:
                return None
            self._changed.clear()
            try:
                async with asyncio.timeout_at(self.deadline):
                    await self._changed.wait()
            except TimeoutError:
                if loop.time() >= self.deadline and not self._ready:
                    self._batcher._drop(self, self._timeout_error())

    def __aiter__(self) -> AsyncIterator[ShowerChunk]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[ShowerChunk]:
        while (chunk := await self.next_chunk()) is not None:
            yield chunk

    async def result(self) -> FloatArray:
        """All showers, shape (n, 25, 25, 25) float32 GeV; for small n (tests, the CLI's own use)."""
        cells_gev = np.empty((self.n, *SHOWER_SHAPE), dtype=np.float32)
        async for chunk in self:
            cells_gev[chunk.start : chunk.start + len(chunk)] = chunk.cells_gev
        return cells_gev

    def __await__(self) -> Generator[Any, None, FloatArray]:
        return self.result().__await__()

    def cancel(self) -> None:
        """Drop every row not computed yet and free the buffered chunks; no-op once finished."""
        if self._error is None and self._consumed < self.n:
            self._batcher._drop(self, RequestCancelled(f"request {self.id} cancelled"))

    def _timeout_error(self) -> RequestTimeout:
        done = self._consumed + sum(len(c) for c in self._ready)
        return RequestTimeout(
            f"request not finished within {self._batcher.settings.request_timeout_s:g} s "
            f"({done} of {self.n} showers done); ask for fewer showers or retry later"
        )

    def _deliver(self, chunk: ShowerChunk) -> None:
        self._early[chunk.start] = chunk
        while self._next_ready in self._early:  # release in row order
            ready = self._early.pop(self._next_ready)
            self._ready.append(ready)
            self._next_ready += len(ready)
        self._changed.set()

    def _close(self, error: CaloganError) -> None:
        self._error = error
        self._early.clear()
        self._ready.clear()  # frees the memory of chunks nobody will read
        self._changed.set()


@dataclass(frozen=True)
class _Slice:
    job: ShowerJob
    start: int
    stop: int


class _Batch:
    """Rows of one or more jobs, computed together."""

    def __init__(self, slices: list[_Slice]) -> None:
        self.slices = slices
        self.size = sum(s.stop - s.start for s in slices)

    def latent(self, latent_fn: LatentFn) -> FloatArray:
        """Latent vectors for every row; runs on the worker thread, slice after slice in request order."""
        parts = [latent_fn(s.job.ep_gev[s.start : s.stop], s.job._noise_rng) for s in self.slices]
        return np.concatenate(parts).astype(np.float32, copy=False)


class ShowerBatcher:
    """Collect shower requests into model batches; one worker per backend (device). See the module docstring.

    Parameters
    ----------
    backends : ShowerBackend or sequence of them
        One per device; each gets its own worker task and single-thread executor.
    settings : Settings
        Batch size, queue delay and bound, fairness turn, buffer bound, timeouts, energy limits.
    metrics : ServiceMetrics, optional
        Updated per batch and per request.
    latent_fn : callable, optional
        ``latent_vectors(ep_gev, rng)``; default ``app.model.latent.latent_vectors``.
    """

    def __init__(
        self,
        backends: ShowerBackend | Sequence[ShowerBackend],
        settings: Settings,
        *,
        metrics: ServiceMetrics | None = None,
        latent_fn: LatentFn | None = None,
        latent_size: int | None = None,
    ) -> None:
        if latent_fn is None or latent_size is None:
            from app.model import latent  # imports Keras: only when no latent_fn is given

            latent_fn = latent_fn or latent.latent_vectors
            latent_size = latent_size or latent.LATENT_SIZE
        self.backends = [backends] if isinstance(backends, ShowerBackend) else list(backends)
        if not self.backends:
            raise ValueError("ShowerBatcher needs at least one backend")
        self.settings = settings
        self.metrics = metrics
        self.latent_size = latent_size
        self._latent_fn = latent_fn
        self._queue: deque[ShowerJob] = deque()  # jobs with rows not yet in a batch, next turn first
        self._queued_rows = 0
        self._inflight_batches = 0
        self._next_id = 0
        self._wakeup = asyncio.Event()
        self._form_lock = asyncio.Lock()  # one worker forms a batch (and draws its noise) at a time
        self._closing = False
        self._executors: list[ThreadPoolExecutor] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._rate_showers_per_s: float | None = None  # per worker, smoothed; sets Retry-After

    # ----- lifecycle

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def start(self) -> None:
        """Start one worker per backend (call inside the event loop)."""
        for index, backend in enumerate(self.backends):
            executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"calogan-model-{index}")
            self._executors.append(executor)
            task = asyncio.create_task(self._work(backend, executor), name=f"calogan-batcher-{index}")
            task.add_done_callback(self._worker_done)
            self._tasks.append(task)

    async def warm_up(self) -> None:
        """Run each model once at full batch size on its own thread; also gives Retry-After a first rate."""
        loop = asyncio.get_running_loop()
        size = self.settings.max_batch_size
        rates = await asyncio.gather(*(
            loop.run_in_executor(executor, lambda b=backend: warm_up(b, batch_size=size, latent_size=self.latent_size))
            for backend, executor in zip(self.backends, self._executors, strict=True)
        ))
        self._rate_showers_per_s = min(rates)
        logger.info("model warmed up", extra={"batch_size": size, "showers_per_s": round(min(rates), 1)})

    async def close(self, timeout_s: float | None = None) -> None:
        """Refuse new work, finish the queued work (at most ``timeout_s``, default drain_timeout_s), stop."""
        self._closing = True
        self._wake()
        timeout_s = self.settings.drain_timeout_s if timeout_s is None else timeout_s
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=timeout_s)
            if pending:
                logger.warning("drain timed out; dropping queued work", extra={"queued_showers": self._queued_rows})
                for job in list(self._queue):
                    self._drop(job, Draining())
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
        for executor in self._executors:
            executor.shutdown(wait=False, cancel_futures=True)
        self._tasks.clear()

    @property
    def healthy(self) -> bool:
        """False when a worker died (a bug); readiness reports it."""
        return all(not task.done() for task in self._tasks) or self._closing

    @property
    def closing(self) -> bool:
        """True once close() has begun: no new work is accepted."""
        return self._closing

    # ----- intake

    def submit(self, ep_gev: npt.ArrayLike, n: int | None = None, *, seed: int | None = None) -> ShowerJob:
        """Queue showers and return at once: one per energy in ``ep_gev``, or ``n`` at one energy.

        Raises
        ------
        InvalidRequest
            Energies outside the served range, a bad n or seed.
        Overloaded
            The queue cannot take ``n`` more showers now (``retry_after_s`` says when to come back);
            :class:`Draining` while shutting down.
        """
        if self._closing:
            raise Draining()
        settings = self.settings
        ep = check_primary_energies(ep_gev, settings.energy_limits_gev)
        if n is not None:
            n = check_count(n, max_n=settings.max_showers_per_request)
            if ep.size == 1:
                ep = np.full(n, ep[0])
            elif ep.size != n:
                raise InvalidRequest(f"{ep.size} energies given for n={n}", allowed="one energy, or n energies")
        check_count(ep.size, max_n=settings.max_showers_per_request)
        seed = new_seed() if seed is None else check_seed(seed)
        if self._queued_rows + ep.size > settings.max_queued_showers:
            raise Overloaded(self.retry_after_s())
        loop = asyncio.get_running_loop()
        job = ShowerJob(self, self._next_id, ep, seed, deadline=loop.time() + settings.request_timeout_s)
        self._next_id += 1
        self._queue.append(job)
        self._queued_rows += job.n
        self._update_gauges()
        self._wake()
        return job

    def retry_after_s(self) -> float:
        """When a rejected client should come back: queued showers over the measured rate, in whole seconds."""
        low, high = _RETRY_AFTER_LIMITS_S
        if not self._rate_showers_per_s:
            return low
        seconds = self._queued_rows / (self._rate_showers_per_s * len(self.backends))
        return float(min(high, max(low, math.ceil(seconds))))

    @property
    def queued_showers(self) -> int:
        """Showers accepted but not yet in a batch."""
        return self._queued_rows

    @property
    def queued_requests(self) -> int:
        """Requests with showers not yet in a batch."""
        return len(self._queue)

    # ----- the worker

    async def _work(self, backend: ShowerBackend, executor: ThreadPoolExecutor) -> None:
        loop = asyncio.get_running_loop()
        while True:
            async with self._form_lock:
                batch = await self._next_batch()
                if batch is None:
                    return
                try:  # noise is drawn under the lock: each job's rows get their noise in row order
                    latent = await loop.run_in_executor(executor, batch.latent, self._latent_fn)
                except Exception as exc:  # noqa: BLE001 - a bad noise draw fails its batch, not the service
                    self._fail(batch, exc)
                    continue
            self._inflight_batches += 1
            self._update_gauges()
            start = time.perf_counter()
            try:  # the model runs on this worker's own thread, never on the event loop
                cells_gev = await loop.run_in_executor(executor, backend.generate, latent)
                expected = (batch.size, *SHOWER_SHAPE)
                if getattr(cells_gev, "shape", None) != expected:
                    raise GenerationFailed(f"backend returned shape {getattr(cells_gev, 'shape', None)}, "
                                           f"expected {expected}")
            except Exception as exc:  # noqa: BLE001 - one failed batch must not stop the service
                self._fail(batch, exc)
            else:
                self._deliver(batch, cells_gev, time.perf_counter() - start)
            finally:
                self._inflight_batches -= 1
                self._update_gauges()

    async def _next_batch(self) -> _Batch | None:
        """Wait until a batch is worth running, then take it; None once closing and nothing is left."""
        loop = asyncio.get_running_loop()
        delay_s = self.settings.max_queue_delay_ms / 1000.0
        while True:
            now = loop.time()
            for job in [job for job in self._queue if now >= job.deadline]:
                self._drop(job, job._timeout_error())
            if self._closing and not self._queue:
                return None
            eligible = [job for job in self._queue if job.buffered < self.settings.max_buffered_batches]
            wake_at = min((job.deadline for job in self._queue), default=None)
            if eligible:
                rows = sum(job.remaining for job in eligible)
                ready_at = min(job.submitted_at for job in eligible) + delay_s
                if rows >= self.settings.max_batch_size or now >= ready_at or self._closing:
                    return self._take(eligible, now)
                wake_at = ready_at if wake_at is None else min(wake_at, ready_at)
            self._wakeup.clear()
            try:
                async with asyncio.timeout_at(wake_at):
                    await self._wakeup.wait()
            except TimeoutError:
                pass

    def _take(self, eligible: list[ShowerJob], now: float) -> _Batch:
        """Round-robin turns of ``round_robin_showers`` rows until the batch is full or nothing is left."""
        capacity = self.settings.max_batch_size
        turn = self.settings.round_robin_showers
        taken: dict[ShowerJob, int] = {}
        while capacity > 0:
            progressed = False
            for job in eligible:
                rows = min(turn, job.remaining - taken.get(job, 0), capacity)
                if rows > 0:
                    taken[job] = taken.get(job, 0) + rows
                    capacity -= rows
                    progressed = True
                if capacity == 0:
                    break
            if not progressed:
                break
        slices = []
        for job, rows in taken.items():
            slices.append(_Slice(job, job._next_row, job._next_row + rows))
            job._next_row += rows
            job._in_flight += 1
            self._queued_rows -= rows
            if job.started_at is None:
                job.started_at = now
                if self.metrics:
                    self.metrics.queue_wait.observe(now - job.submitted_at)
            self._queue.remove(job)
            if job.remaining:  # served jobs go to the back: the unserved get the first turns next time
                self._queue.append(job)
        self._update_gauges()
        return _Batch(slices)

    # ----- outcomes

    def _deliver(self, batch: _Batch, cells_gev: FloatArray, duration_s: float) -> None:
        offset = 0
        for s in batch.slices:
            rows = s.stop - s.start
            s.job._in_flight -= 1
            if not s.job.closed:
                part = cells_gev[offset : offset + rows]  # a view: no copy of the batch
                s.job._deliver(ShowerChunk(s.start, part, s.job.ep_gev[s.start : s.stop]))
            offset += rows
        rate = batch.size / max(duration_s, 1e-9)
        old = self._rate_showers_per_s
        # Smoothed, weighted by batch size so that a 1-row batch barely moves it.
        weight = min(1.0, batch.size / self.settings.max_batch_size) * 0.3
        self._rate_showers_per_s = rate if old is None else (1 - weight) * old + weight * rate
        if self.metrics:
            self.metrics.batches.labels(outcome="ok").inc()
            self.metrics.showers.inc(batch.size)
            self.metrics.batch_size.observe(batch.size)
            self.metrics.batch_duration.observe(duration_s)
        logger.debug("batch done", extra={"batch_size": batch.size, "duration_s": round(duration_s, 4),
                                          "requests": len(batch.slices)})
        self._wake()

    def _fail(self, batch: _Batch, exc: Exception) -> None:
        logger.error(
            "batch of %d showers failed: %s", batch.size, exc, exc_info=exc,
            extra={"batch_size": batch.size, "requests": len(batch.slices)},
        )
        error = exc if isinstance(exc, GenerationFailed) else GenerationFailed(
            f"the model failed on a batch of {batch.size} showers ({type(exc).__name__}: {exc})"
        )
        for s in batch.slices:
            s.job._in_flight -= 1
            if not s.job.closed:
                self._drop(s.job, error)
        if self.metrics:
            self.metrics.batches.labels(outcome="failed").inc()
        self._wake()

    def _drop(self, job: ShowerJob, error: CaloganError) -> None:
        """End a job early: its queued rows leave the queue and its buffered chunks are freed."""
        if job.closed:
            return
        if job in self._queue:
            self._queue.remove(job)
            self._queued_rows -= job.remaining
        job._close(error)
        if not isinstance(error, RequestCancelled):
            logger.info("request ended early: %s", error, extra={"request_id": job.id, "n": job.n})
        self._update_gauges()
        self._wake()

    def _wake(self) -> None:
        self._wakeup.set()

    def _update_gauges(self) -> None:
        if self.metrics:
            self.metrics.queued_showers.set(self._queued_rows)
            self.metrics.queued_requests.set(len(self._queue))
            self.metrics.inflight_batches.set(self._inflight_batches)

    def _worker_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.critical("batcher worker died", exc_info=task.exception())
