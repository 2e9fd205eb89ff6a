"""``calogan finetune``: the distribution-matching stage that teaches a trained generator the fluctuations.

Interrupt it at any time (Ctrl-C, SIGTERM from a batch system): it writes a checkpoint and exits with
code 75 (EX_TEMPFAIL); the same command resumes the run exactly where it stopped.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from app.model.training.fluctuations import FluctuationConfig

if TYPE_CHECKING:
    from rich.progress import TaskID

DEFAULTS = FluctuationConfig()
EXIT_STOPPED = 75
"""Exit status of a run stopped by a signal (EX_TEMPFAIL): rerun the same command to resume."""


def _format_weights(weights: dict[str, float]) -> str:
    return ",".join(f"{name}={value:g}" for name, value in weights.items())


def _parse_weights(text: str) -> dict[str, float]:
    try:
        pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
        return {name.strip(): float(value) for name, value in pairs}
    except ValueError as exc:
        raise typer.BadParameter(f"{text!r} is not group=weight,... (e.g. energy=2,layers=1)") from exc


class _BarProgress:
    """A rich progress bar with ETA and the last validation's score."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._bar = Progress(TextColumn("[bold]finetune"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                             console=console)
        self._task: TaskID | None = None

    def start(self, total_steps: int, done_steps: int) -> None:
        self._bar.start()
        self._task = self._bar.add_task("steps", total=total_steps, completed=done_steps, info="")

    def step(self, losses: dict[str, float]) -> None:
        if self._task is not None:
            self._bar.update(self._task, advance=1, info=f"loss {losses['loss']:.3f}")

    def validated(self, row: dict[str, Any]) -> None:
        ratios = " ".join(f"{k.split('_ratio_')[0]}@{k.split('_ratio_')[1]} {v:.2f}" for k, v in row.items()
                          if "_ratio_" in k and k.startswith(("hits_rms", "sf_rms", "depth_rms")))
        self._console.print(f"step {row['step']}: val_score {row['val_score']:.3f}{' (best)' if row['best'] else ''}"
                            f"  {ratios}", highlight=False)

    def stop(self) -> None:
        self._bar.stop()


def finetune(
    out: Annotated[Path, typer.Option("--out", help="Run folder; an existing one with a checkpoint is resumed.")],
    init_generator: Annotated[Path, typer.Option(help="Model folder or .keras file to start from.")] = Path(
        DEFAULTS.init_generator),
    steps: Annotated[int, typer.Option(min=1, help="Optimizer steps.")] = DEFAULTS.steps,
    energies_per_step: Annotated[int, typer.Option(min=1, help="Primary energies per step (log-uniform).")] = (
        DEFAULTS.energies_per_step),
    generated_per_energy: Annotated[int, typer.Option(min=2, help="Generated showers per energy and step.")] = (
        DEFAULTS.generated_per_energy),
    reference_per_energy: Annotated[int, typer.Option(min=1, help="Fresh MC showers per energy and step.")] = (
        DEFAULTS.reference_per_energy),
    learning_rate: Annotated[float, typer.Option(help="Adam learning rate.")] = DEFAULTS.learning_rate,
    anchor_weight: Annotated[float, typer.Option(help="Weight of the feature-mean anchor.")] = DEFAULTS.anchor_weight,
    shape_weight: Annotated[float, typer.Option(help="Weight of the 3D mean-shower anchor.")] = DEFAULTS.shape_weight,
    spread_weight: Annotated[float, typer.Option(help="Weight of the per-feature spread term.")] = (
        DEFAULTS.spread_weight),
    energy_anchor_weight: Annotated[float, typer.Option(help="Quadratic weight on the mean log(S/Ep) offset.")] = (
        DEFAULTS.energy_anchor_weight),
    feature_weights: Annotated[str, typer.Option(help="Weight of each feature group in the energy score, "
                                                      "group=weight,...")] = _format_weights(DEFAULTS.feature_weights),
    validate_every: Annotated[int, typer.Option(min=1, help="Steps between validations and checkpoints.")] = (
        DEFAULTS.validate_every),
    validation_showers: Annotated[int, typer.Option(min=10, help="Showers per validation energy.")] = (
        DEFAULTS.validation_showers),
    scale_showers: Annotated[int, typer.Option(min=16, help="MC showers for the feature standardisation.")] = (
        DEFAULTS.scale_showers),
    seed: Annotated[int, typer.Option(min=0, help="Seeds every draw of the run.")] = DEFAULTS.seed,
) -> None:
    """Fine-tune a generator so that its showers fluctuate like the MC's (energy score on shower features)."""
    from app.model.training.fluctuations import run_fluctuation_training

    config = FluctuationConfig(
        init_generator=str(init_generator), steps=steps, energies_per_step=energies_per_step,
        generated_per_energy=generated_per_energy, reference_per_energy=reference_per_energy,
        learning_rate=learning_rate, anchor_weight=anchor_weight, shape_weight=shape_weight,
        spread_weight=spread_weight, energy_anchor_weight=energy_anchor_weight,
        feature_weights=_parse_weights(feature_weights),
        validate_every=validate_every, validation_showers=validation_showers, scale_showers=scale_showers,
        seed=seed,
    )
    console = Console(stderr=True)
    progress = _BarProgress(console)
    try:
        result = run_fluctuation_training(config, out, progress=progress)
    finally:
        progress.stop()
    if not result.finished:
        console.print(f"stopped at step {result.steps_done} of {steps}; checkpoint written. Run the same command "
                      "to resume.", highlight=False)
        raise typer.Exit(EXIT_STOPPED)
    console.print(f"done: best step {result.best_step} (val_score {result.best_score:.3f}); "
                  f"{out / 'generator.keras'} written. Package it with `calogan export {out}`.", highlight=False)
