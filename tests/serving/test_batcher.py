"""The dynamic batcher: merging, splitting, fairness, reproducibility, backpressure, cancellation, failure, drain."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from app.config import Settings
from app.errors import InvalidRequest, Overloaded
from app.physics.detector import SHOWER_SHAPE
from app.serving.backends import FakeBackend
from app.serving.batcher import (
    Draining,
    GenerationFailed,
    RequestCancelled,
    RequestTimeout,
    ShowerBatcher,
    seed_streams,
    spectrum_energies,
)
from app.serving.metrics import ServiceMetrics
from tests.serving.helpers import GatedBackend, PoisonBackend, expected_showers, wait_until_async

pytestmark = pytest.mark.anyio

LatentFn = Callable[[Any, np.random.Generator], Any]


def batcher_for(backend: Any, settings: Settings, latent_fn: LatentFn, **changes: Any) -> ShowerBatcher:
    return ShowerBatcher(backend, settings.model_copy(update=changes), latent_fn=latent_fn, latent_size=200)


async def entered(gated: GatedBackend) -> None:
    assert await asyncio.to_thread(gated.entered.wait, 5.0), "the first batch never reached the model"


def test_latent_vectors_do_not_depend_on_how_rows_are_cut(latent_fn: LatentFn) -> None:
    # The reproducibility guarantee rests on this: drawing rows in pieces equals drawing them at once.
    ep = np.linspace(2.0, 500.0, 37)
    whole = latent_fn(ep, seed_streams(5)[1])
    rng = seed_streams(5)[1]
    pieces = np.concatenate([latent_fn(ep[a:b], rng) for a, b in ((0, 1), (1, 17), (17, 37))])
    np.testing.assert_array_equal(whole, pieces)


async def test_waiting_requests_share_the_next_batch(tiny_settings: Settings, latent_fn: LatentFn) -> None:
    gated = GatedBackend()
    async with batcher_for(gated, tiny_settings, latent_fn) as batcher:
        first = batcher.submit(50.0, 8, seed=1)  # enqueues now, returns a job
        await entered(gated)  # batch 1 is in the model
        rest = [batcher.submit(e, 8, seed=2) for e in (10.0, 100.0)]
        gated.release.set()
        await asyncio.gather(first, *rest)
    assert gated.batch_sizes == [8, 16]


async def test_large_request_is_split_and_arrives_in_order(tiny_settings: Settings, latent_fn: LatentFn) -> None:
    backend = FakeBackend()
    async with batcher_for(backend, tiny_settings, latent_fn) as batcher:
        job = batcher.submit(200.0, 300, seed=11)
        starts = []
        async for chunk in job:
            starts.append(chunk.start)
            assert chunk.cells_gev.shape == (len(chunk), *SHOWER_SHAPE)
    assert max(backend.batch_sizes) == 64
    assert sum(backend.batch_sizes) == 300
    assert starts == sorted(starts)
    assert starts[0] == 0


async def test_two_workers_keep_each_request_in_row_order(tiny_settings: Settings, latent_fn: LatentFn) -> None:
    backends = [FakeBackend(), FakeBackend()]
    async with batcher_for(backends, tiny_settings, latent_fn) as batcher:
        jobs = [batcher.submit(e, 150, seed=s) for s, e in enumerate((20.0, 400.0, 90.0))]
        results = await asyncio.gather(*jobs)
    for seed, (energy, cells) in enumerate(zip((20.0, 400.0, 90.0), results, strict=True)):
        np.testing.assert_array_equal(cells, expected_showers(np.full(150, energy), seed, latent_fn))
    assert sum(sum(b.batch_sizes) for b in backends) == 450


async def test_same_seed_same_showers_alone_and_in_a_busy_batch(
    tiny_settings: Settings, latent_fn: LatentFn
) -> None:
    async with batcher_for(FakeBackend(), tiny_settings, latent_fn) as batcher:
        alone = await batcher.submit(120.0, 40, seed=7)
    gated = GatedBackend()
    async with batcher_for(gated, tiny_settings, latent_fn) as batcher:
        first = batcher.submit(300.0, 30, seed=1)
        await entered(gated)
        others = [batcher.submit(e, 25, seed=100 + i) for i, e in enumerate((5.0, 250.0, 60.0))]
        busy = batcher.submit(120.0, 40, seed=7)  # shares batches with the others, cut differently
        gated.release.set()
        *_, in_busy = await asyncio.gather(first, *others, busy)
    assert len(gated.batch_sizes) >= 2
    assert max(gated.batch_sizes) == 64
    np.testing.assert_array_equal(alone, in_busy)
    np.testing.assert_array_equal(alone, expected_showers(np.full(40, 120.0), 7, latent_fn))


async def test_small_request_is_not_starved_by_a_big_one(tiny_settings: Settings, latent_fn: LatentFn) -> None:
    gated = GatedBackend()
    async with batcher_for(gated, tiny_settings, latent_fn) as batcher:
        big = batcher.submit(400.0, 512, seed=1)
        await entered(gated)  # batch 1: 64 rows of the big request
        small = batcher.submit(5.0, 8, seed=2)
        gated.release.set()
        await asyncio.gather(big, small)
    # The small request's rows (latent norm ~ 0.05 * sqrt(200)) ride in the very next batch.
    low_rows = [int((norms < 3.0).sum()) for norms in gated.batch_norms]
    assert low_rows[0] == 0
    assert low_rows[1] == 8
    assert gated.batch_sizes[1] == 64


async def test_full_queue_rejects_with_retry_after(tiny_settings: Settings, latent_fn: LatentFn) -> None:
    gated = GatedBackend()
    async with batcher_for(gated, tiny_settings, latent_fn, max_queued_showers=100) as batcher:
        first = batcher.submit(50.0, 64, seed=1)
        await entered(gated)  # its rows left the queue for the model
        waiting = batcher.submit(50.0, 100, seed=2)
        with pytest.raises(Overloaded) as info:
            batcher.submit(50.0, 1, seed=3)
        assert info.value.retry_after_s >= 1.0
        assert batcher.queued_showers == 100
        gated.release.set()
        await asyncio.gather(first, waiting)
        await batcher.submit(50.0, 1, seed=3)  # room again


async def test_cancelled_request_leaves_the_queue(tiny_settings: Settings, latent_fn: LatentFn) -> None:
    gated = GatedBackend()
    metrics = ServiceMetrics()
    batcher = ShowerBatcher(gated, tiny_settings, metrics=metrics, latent_fn=latent_fn, latent_size=200)
    async with batcher:
        first = batcher.submit(50.0, 8, seed=1)
        await entered(gated)
        gone = batcher.submit(50.0, 40, seed=2)
        assert batcher.queued_showers == 40
        gone.cancel()
        assert batcher.queued_showers == 0
        assert metrics.queued_showers._value.get() == 0
        gated.release.set()
        await first
        with pytest.raises(RequestCancelled):
            await gone
    assert gated.batch_sizes == [8]


async def test_failed_batch_fails_only_its_requests(tiny_settings: Settings, latent_fn: LatentFn) -> None:
    backend = PoisonBackend(limit_gev=300.0)
    async with batcher_for(backend, tiny_settings, latent_fn, max_queue_delay_ms=50.0) as batcher:
        poisoned, neighbour = batcher.submit(450.0, 4, seed=1), batcher.submit(10.0, 4, seed=2)
        results = await asyncio.gather(poisoned, neighbour, return_exceptions=True)
        assert all(isinstance(r, GenerationFailed) for r in results)
        assert "poisoned batch" in str(results[0])
        after = await batcher.submit(10.0, 4, seed=3)  # the worker carries on
    np.testing.assert_array_equal(after, expected_showers(np.full(4, 10.0), 3, latent_fn))


async def test_request_past_its_deadline_times_out(tiny_settings: Settings, latent_fn: LatentFn) -> None:
    gated = GatedBackend()
    async with batcher_for(gated, tiny_settings, latent_fn, request_timeout_s=0.2) as batcher:
        first = batcher.submit(50.0, 8, seed=1)
        await entered(gated)  # the gate holds batch 1 past the deadline
        waiting = batcher.submit(50.0, 8, seed=2)
        with pytest.raises(RequestTimeout):
            await waiting
        assert batcher.queued_showers == 0
        first.cancel()  # its batch is still in the model: whether it beats its deadline is a race
        gated.release.set()
        assert await batcher.submit(50.0, 8, seed=3) is not None  # the worker is still serving


async def test_unread_request_holds_only_its_buffer(tiny_settings: Settings, latent_fn: LatentFn) -> None:
    backend = FakeBackend()
    async with batcher_for(backend, tiny_settings, latent_fn, max_buffered_batches=1) as batcher:
        slow = batcher.submit(50.0, 500, seed=1)  # nobody reads it yet
        quick = batcher.submit(50.0, 8, seed=2)
        await quick  # the worker served the other request meanwhile
        assert backend.batch_sizes == [64]  # 56 rows of `slow` + 8 of `quick`; then `slow` waits for its reader
        assert slow.buffered == 1
        cells = await slow
    np.testing.assert_array_equal(cells, expected_showers(np.full(500, 50.0), 1, latent_fn))


async def test_close_drains_queued_work_then_refuses(tiny_settings: Settings, latent_fn: LatentFn) -> None:
    backend = FakeBackend()
    batcher = batcher_for(backend, tiny_settings, latent_fn)
    async with batcher:
        jobs = [batcher.submit(30.0, 20, seed=s) for s in range(3)]
    assert sum(backend.batch_sizes) == 60  # all queued showers were computed before the workers stopped
    for job in jobs:
        assert (await job).shape == (20, *SHOWER_SHAPE)
    with pytest.raises(Draining):
        batcher.submit(30.0, 1)


async def test_drain_waits_for_a_streaming_reader(tiny_settings: Settings, latent_fn: LatentFn) -> None:
    batcher = batcher_for(FakeBackend(), tiny_settings, latent_fn, max_buffered_batches=1)
    async with batcher:
        job = batcher.submit(30.0, 500, seed=4)
        reader = asyncio.create_task(job.result())
        await wait_until_async(lambda: job.started_at is not None, what="first batch")
    assert (await reader).shape == (500, *SHOWER_SHAPE)


@pytest.mark.parametrize(
    ("energy", "n"), [(0.0, 1), (-5.0, 1), (float("nan"), 1), (600.0, 1), (100.0, 0), (100.0, 513), (1.0, 1)]
)
async def test_bad_requests_are_refused_before_queueing(
    tiny_settings: Settings, latent_fn: LatentFn, energy: float, n: int
) -> None:
    async with batcher_for(FakeBackend(), tiny_settings, latent_fn) as batcher:
        with pytest.raises(InvalidRequest):
            batcher.submit(energy, n)
        assert batcher.queued_showers == 0


async def test_spectrum_energies_are_reproducible_and_in_range(tiny_settings: Settings) -> None:
    first = spectrum_energies(50, emin_gev=10.0, emax_gev=20.0, seed=3, limits_gev=tiny_settings.energy_limits_gev)
    again = spectrum_energies(50, emin_gev=10.0, emax_gev=20.0, seed=3, limits_gev=tiny_settings.energy_limits_gev)
    np.testing.assert_array_equal(first, again)
    assert first.min() >= 10.0
    assert first.max() <= 20.0
    assert first.std() > 1.0


async def test_metrics_count_batches_and_showers(tiny_settings: Settings, latent_fn: LatentFn) -> None:
    metrics = ServiceMetrics()
    async with ShowerBatcher(FakeBackend(), tiny_settings, metrics=metrics, latent_fn=latent_fn,
                             latent_size=200) as batcher:
        await batcher.warm_up()
        await batcher.submit(80.0, 100, seed=1)
    registry = metrics.registry
    assert registry.get_sample_value("calogan_showers_total") == 100
    assert registry.get_sample_value("calogan_batches_total", {"outcome": "ok"}) == 2
    assert registry.get_sample_value("calogan_batch_size_showers_bucket", {"le": "64.0"}) == 2
    assert registry.get_sample_value("calogan_queued_showers") == 0
    assert batcher.retry_after_s() >= 1.0
