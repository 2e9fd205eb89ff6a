"""Command-line options shared by the commands that write showers (``mc``, ``generate``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

OutputFile = Annotated[Path, typer.Option("--output", "-o", help="HDF5 file to write (3DGAN layout).")]
ShowerCount = Annotated[int, typer.Option("-n", help="Number of showers.")]
FixedEnergy = Annotated[float | None, typer.Option(help="Fixed primary energy, GeV.")]
SpectrumMin = Annotated[float | None, typer.Option(help="Lower end of a flat spectrum, GeV.")]
SpectrumMax = Annotated[float | None, typer.Option(help="Upper end of a flat spectrum, GeV.")]
