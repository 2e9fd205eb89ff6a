"""``calogan mc``: reference showers from the parametric Monte Carlo into a 3DGAN-layout HDF5 file."""

from __future__ import annotations

from typing import Annotated

import numpy as np
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from app.cli.options import FixedEnergy, OutputFile, ShowerCount, SpectrumMax, SpectrumMin
from app.physics.io import ShowerWriter, shower_file_attrs
from app.physics.mc import CALIBRATED, MC_VERSION, ShowerSimulator
from app.physics.primaries import primary_energies


def mc(
    output: OutputFile,
    n: ShowerCount = 1000,
    energy: FixedEnergy = None,
    emin: SpectrumMin = None,
    emax: SpectrumMax = None,
    seed: Annotated[int | None, typer.Option(help="Random seed; drawn and recorded when omitted.")] = None,
    batch_size: Annotated[int, typer.Option(help="Showers simulated and written at once.")] = 256,
) -> None:
    """Simulate electron showers with the GFlash-type reference Monte Carlo (fixed energy or flat spectrum)."""
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % 2**63)
    rng = np.random.default_rng(seed)
    ep_gev = primary_energies(n, energy_gev=energy, emin_gev=emin, emax_gev=emax, rng=rng)
    simulator = ShowerSimulator(batch_size=batch_size)
    attrs = shower_file_attrs(
        producer="calogan-mc", seed=seed, mc_version=MC_VERSION,
        mc_parameters=str(CALIBRATED.to_dict()),
        spectrum=f"fixed {energy:g} GeV" if energy is not None else f"uniform {emin:g}-{emax:g} GeV",
    )
    columns = (TextColumn("simulating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with ShowerWriter(output, attrs=attrs) as out, Progress(*columns, transient=True) as progress:
        task = progress.add_task("mc", total=n)
        for cells_gev, chunk_ep_gev in simulator.iter_batches(ep_gev, rng):
            out.append(cells_gev, chunk_ep_gev)
            progress.advance(task, len(chunk_ep_gev))
    typer.echo(f"wrote {n} showers to {output} (seed {seed})")
