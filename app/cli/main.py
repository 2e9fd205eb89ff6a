"""Assemble the ``calogan`` commands and turn calogan's own errors into one clear line, not a traceback."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from app.cli import export, finetune, generate, mc, pull, quantize, serve, train, validate
from app.errors import CaloganError

cli = typer.Typer(
    name="calogan",
    help="Calorimeter showers from a GAN: simulate, train, validate and serve.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

@cli.callback()
def _root() -> None:
    """Calorimeter showers from a GAN: simulate, train, validate and serve."""


cli.command("mc")(mc.mc)
cli.command("validate")(validate.validate)
cli.command("serve")(serve.serve)
cli.command("generate")(generate.generate)
cli.command("pull")(pull.pull)
cli.command("quantize")(quantize.quantize)
cli.command("train")(train.train)
cli.command("finetune")(finetune.finetune)
cli.command("export")(export.export)

_stderr = Console(stderr=True, soft_wrap=True)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``calogan`` console script."""
    try:
        cli(args=argv, standalone_mode=True)
    except CaloganError as exc:
        _stderr.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(2)
