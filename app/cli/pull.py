"""``calogan pull``: fetch many showers from a calogan service into a resumable HDF5 file.

Exit status, for job scripts: 0 done; 2 a request the server refuses as invalid (or bad options);
3 the service kept failing or answered an error retrying cannot fix; 4 the ``--deadline`` would pass
before the next retry; 5 the server now serves another model than the file holds (start a new file).
On a terminal the progress is a bar; in a batch log, one plain line per chunk with rate and ETA.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.text import Text


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
    from app.serving.client import ServiceError, ShowerClient, discover_token

    client_options = {"max_retries": retries, "deadline_s": deadline, "connect_timeout_s": connect_timeout,
                      "timeout_s": read_timeout, "max_retry_after_s": max_retry_after}
    console = Console(stderr=True)
    try:
        with ShowerClient(url, token=discover_token(token), **client_options) as client, \
                _progress(console, n) as report:
            result = client.pull(output, energy_gev=energy, n=n, seed=seed, chunk_showers=chunk, progress=report)
    except ServiceError as exc:
        console.print(f"calogan pull failed: {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    verb = "resumed" if result.resumed else "wrote"
    typer.echo(f"{verb} {result.path}: {result.n_showers} showers ({result.n_fetched} fetched now, seed {result.seed})")


class _RateColumn(ProgressColumn):
    """Showers per second (rich's own speed column speaks bytes)."""

    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:.1f} showers/s" if task.speed else "")


@contextmanager
def _progress(console: Console, n: int) -> Iterator[Callable[[int, int], None]]:
    """A bar on a terminal; plain 'pulled x/n showers, r showers/s, ETA t s' lines in a batch log."""
    if console.is_terminal:
        columns = (TextColumn("pulling"), BarColumn(), MofNCompleteColumn(), _RateColumn(), TimeRemainingColumn())
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task("pull", total=n)
            yield lambda done, total: bar.update(task, completed=done, total=total)
        return
    start, first = time.monotonic(), None

    def line(done: int, total: int) -> None:
        nonlocal first
        if first is None:
            first = done  # showers already in a resumed file do not count for the rate
            return
        rate = (done - first) / max(time.monotonic() - start, 1e-9)
        eta = f"{(total - done) / rate:.0f} s" if rate > 0 else "unknown"
        console.print(f"pulled {done}/{total} showers, {rate:.1f} showers/s, ETA {eta}", highlight=False)

    yield line
