"""``calogan generate``: GAN showers into an HDF5 file offline, through the service's own code path."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from app import __version__
from app.cli.options import FixedEnergy, OutputFile, ShowerCount, SpectrumMax, SpectrumMin
from app.config import Settings, load_settings
from app.errors import InvalidRequest

# Offline there is no client to time out on, and one request holds every shower.
_NO_DEADLINE_S = 1e9


def generate(
    output: OutputFile,
    n: ShowerCount = 1000,
    energy: FixedEnergy = None,
    emin: SpectrumMin = None,
    emax: SpectrumMax = None,
    seed: Annotated[int | None, typer.Option(help="Seed; drawn and recorded when omitted. "
                                             "The same seed gives the same showers as the service.")] = None,
    backend: Annotated[Literal["auto", "tf", "int8", "fake"] | None, typer.Option(help="As for serve.")] = None,
    model_dir: Annotated[Path | None, typer.Option(help="Model folder (default: the shipped one).")] = None,
    device: Annotated[Literal["auto", "cpu", "gpu"] | None, typer.Option(help="As for serve.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Showers per model call, 1-2048 (default 2048).")] = None,
) -> None:
    """Generate showers with the GAN: same backend, latent noise and batching as `calogan serve`."""
    from app.physics.io import shower_file_attrs
    from app.serving.backends import load_backends
    from app.serving.batcher import ShowerBatcher, check_seed, new_seed, spectrum_energies
    from app.serving.encoders import write_hdf5

    if n < 1:
        raise InvalidRequest(f"number of showers {n} is not allowed", allowed="-n 1 or more")
    base = load_settings(backend=backend, model_dir=model_dir, device=device, max_batch_size=batch_size)
    settings = base.model_copy(update={
        "max_showers_per_request": n, "max_queued_showers": max(n, base.max_queued_showers),
        "request_timeout_s": _NO_DEADLINE_S, "warmup": False,
    })
    seed = new_seed() if seed is None else check_seed(seed)
    spectrum = emin is not None or emax is not None
    if spectrum == (energy is not None):
        raise InvalidRequest("give either --energy or both --emin and --emax", allowed="--energy E | --emin A --emax B")
    if spectrum:
        if emin is None or emax is None:
            raise InvalidRequest("a spectrum needs both --emin and --emax")
        ep_gev = spectrum_energies(n, emin_gev=emin, emax_gev=emax, seed=seed, limits_gev=settings.energy_limits_gev)
    backends = load_backends(settings)
    info = backends[0].info
    attrs = shower_file_attrs(
        producer="calogan-generate", seed=seed, model_name=info.name, model_version=info.version,
        model_sha256=info.sha256, backend=info.backend, device=info.device, precision=info.precision,
        service_version=__version__, energy_gev=energy, emin_gev=emin, emax_gev=emax,
    )

    async def run(settings: Settings) -> None:
        columns = (TextColumn("generating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, transient=True) as progress:
            task = progress.add_task("generate", total=n)
            async with ShowerBatcher(backends, settings) as batcher:
                job = batcher.submit(ep_gev, seed=seed) if spectrum else batcher.submit(energy, n, seed=seed)
                await write_hdf5(job, output, attrs=attrs, progress=lambda k: progress.advance(task, k))

    asyncio.run(run(settings))
    typer.echo(f"wrote {n} showers to {output} (seed {seed}, model {info.name} {info.version}, {info.backend})")
