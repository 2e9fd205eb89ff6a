"""``calogan pull``: fetch many showers from a calogan service into a resumable HDF5 file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


def pull(
    url: Annotated[str, typer.Option(help="Service base URL, e.g. http://calogan:8000.")],
    energy: Annotated[float, typer.Option(help="Primary energy, GeV.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="HDF5 file (3DGAN layout); resumed if it exists.")],
    n: Annotated[int, typer.Option("-n", help="Showers wanted in the file.")] = 1000,
    seed: Annotated[int | None, typer.Option(help="Seed of the whole file; drawn and recorded when omitted.")] = None,
    chunk: Annotated[int, typer.Option(help="Showers per request (at most the server's limit).")] = 1000,
    token: Annotated[str | None, typer.Option(help="Bearer token; else BEARER_TOKEN, BEARER_TOKEN_FILE, "
                                              "$XDG_RUNTIME_DIR/bt_u<uid>, /tmp/bt_u<uid>.")] = None,
    retries: Annotated[int, typer.Option(help="Retries per chunk (backoff, honouring Retry-After).")] = 8,
    deadline: Annotated[float | None, typer.Option(help="Give up after this many seconds in all, waits included "
                                                        "(set it below the job's wall-clock limit).")] = None,
    connect_timeout: Annotated[float, typer.Option(help="Seconds to open a connection.")] = 10.0,
    read_timeout: Annotated[float, typer.Option(help="Longest silence of the server within a request, s.")] = 900.0,
    max_retry_after: Annotated[float, typer.Option(help="Longest wait a Retry-After may impose, s.")] = 600.0,
) -> None:
    """Pull showers from a service in chunks, with retries; rerun the same command to resume."""
    from app.serving.client import ShowerClient, discover_token

    columns = (TextColumn("pulling"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    client_options = {"max_retries": retries, "deadline_s": deadline, "connect_timeout_s": connect_timeout,
                      "timeout_s": read_timeout, "max_retry_after_s": max_retry_after}
    with ShowerClient(url, token=discover_token(token), **client_options) as client, \
            Progress(*columns, transient=True) as progress:
        task = progress.add_task("pull", total=n)
        result = client.pull(
            output, energy_gev=energy, n=n, seed=seed, chunk_showers=chunk,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    verb = "resumed" if result.resumed else "wrote"
    typer.echo(f"{verb} {result.path}: {result.n_showers} showers ({result.n_fetched} fetched now, seed {result.seed})")
