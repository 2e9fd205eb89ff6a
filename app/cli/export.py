"""``calogan export``: package a training run as a shipped model folder (Keras + ONNX + model card)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def export(
    run: Annotated[Path, typer.Argument(help="A finished `calogan train` run folder.")],
    out: Annotated[Path, typer.Option("--out", help="Model folder to write.")] = Path("models/conv2d"),
    version: Annotated[str, typer.Option(help="Model version written in the card.")] = "1",
    name: Annotated[str, typer.Option(help="Model name written in the card.")] = "conv2d",
    onnx: Annotated[bool, typer.Option("--onnx/--no-onnx", help="Also write generator.onnx.")] = True,
    data_version: Annotated[str | None, typer.Option(help="Training data version (read from the run if "
                                                          "omitted).")] = None,
    known_limit: Annotated[list[str] | None, typer.Option(help="A limit of this model, added to the card's "
                                                                "standard ones (repeatable).")] = None,
) -> None:
    """Copy the run's best generator to OUT, export ONNX, and write model.json + model_card.md."""
    from app.model.export import DEFAULT_KNOWN_LIMITS, package_run
    from app.model.loading import load_generator

    card = package_run(run, out, version=version, name=name, onnx=onnx, data_version=data_version,
                       known_limits=[*DEFAULT_KNOWN_LIMITS, *(known_limit or [])])
    load_generator(out)  # what the service will do: fail here rather than at deployment
    files = ", ".join(f"{file} {entry['sha256'][:12]}" for file, entry in card["files"].items())
    typer.echo(f"wrote {out}: {files}")
