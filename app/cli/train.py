"""``calogan train``: train the Conv2D GAN on the simulator or on HDF5 showers, with checkpoints and resume."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from app.model.training.config import TrainConfig

TINY_WIDTH = 0.1


DEFAULTS = TrainConfig()

# CLI option -> TrainConfig field, where the names differ.
_FIELD_OF_OPTION = {"lr_file_showers": "file_showers", "eager": "run_eagerly"}


def train(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", help="Run folder (checkpoint, metrics.csv, generator.keras).")],
    epochs: Annotated[int, typer.Option(help="Adversarial epochs (0 = warm-up only); with --resume, may be "
                                             "raised to extend a run.")] = DEFAULTS.epochs,
    steps_per_epoch: Annotated[int, typer.Option(help="Steps per epoch (each takes batch-size real showers).")] = (
        DEFAULTS.steps_per_epoch),
    batch_size: Annotated[int, typer.Option(help="Real showers per step.")] = DEFAULTS.batch_size,
    data: Annotated[str, typer.Option(help="'mc' (simulator, fresh showers each step) or a 3DGAN .h5 file or "
                                           "folder.")] = DEFAULTS.data,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its checkpoint; options "
                                                          "given must equal the run's own (--epochs may be "
                                                          "raised).")] = False,
    seed: Annotated[int, typer.Option(help="Seeds data, noise, labels, weights and dropout.")] = DEFAULTS.seed,
    tiny: Annotated[bool, typer.Option("--tiny", help=f"Width {TINY_WIDTH} networks (tests, smoke runs).")] = False,
    width: Annotated[float, typer.Option(help="Filter multiplier (1 = the paper's networks).")] = DEFAULTS.width,
    warmup_steps: Annotated[int, typer.Option(help="Supervised generator steps (energy + mean profiles) "
                                                   "before epoch 1, validated every steps-per-epoch "
                                                   "steps.")] = DEFAULTS.warmup_steps,
    init_generator: Annotated[Path | None, typer.Option(help="Start from this trained generator (generator.keras "
                                                             "or a model folder) instead of random weights.")] = None,
    relu_from_epoch: Annotated[int, typer.Option(help="First epoch with the output ReLU (paper: 3).")] = (
        DEFAULTS.relu_from_epoch),
    narrow_energy_epochs: Annotated[int, typer.Option(help="Epochs with fake Ep in 100-400 GeV (paper: 2).")] = (
        DEFAULTS.narrow_energy_epochs),
    bn_training: Annotated[bool, typer.Option("--bn-training/--bn-inference",
                                              help="BatchNorm/Dropout mode in the steps (inference = the "
                                                   "authors' effective behaviour, and what keeps the "
                                                   "Ep conditioning; see app/model/training).")] = (
        DEFAULTS.bn_training),
    lr_generator: Annotated[float, typer.Option(help="Generator Adam learning rate before the decay (paper: "
                                                    "5e-4); also the warm-up's.")] = DEFAULTS.lr_generator,
    lr_discriminator: Annotated[float, typer.Option(help="Discriminator Adam learning rate before the decay "
                                                        "(paper: 1e-4).")] = DEFAULTS.lr_discriminator,
    lr_file_showers: Annotated[int, typer.Option(help="Real showers per 'file' of the lr schedule (paper: 9000; "
                                                      "total/600 runs the whole schedule).")] = DEFAULTS.file_showers,
    val_showers: Annotated[int, typer.Option(help="Held-out validation showers.")] = DEFAULTS.val_showers,
    mirrored: Annotated[bool, typer.Option("--mirrored", help="tf.distribute.MirroredStrategy over all "
                                                              "visible GPUs.")] = False,
    eager: Annotated[bool, typer.Option("--eager", help="No tf.function (skips ~1 min of tracing; slower "
                                                        "steps).")] = DEFAULTS.run_eagerly,
) -> None:
    """Train the Conv2D GAN; writes checkpoints each epoch and the best generator as generator.keras."""
    from app.model.training.run import train as run_training
    from app.model.training.selection import selection_metric

    given = {
        "data": data, "epochs": epochs, "steps_per_epoch": steps_per_epoch, "batch_size": batch_size, "seed": seed,
        "width": TINY_WIDTH if tiny else width, "warmup_steps": warmup_steps, "relu_from_epoch": relu_from_epoch,
        "init_generator": str(init_generator) if init_generator else None,
        "narrow_energy_epochs": narrow_energy_epochs, "bn_training": bn_training, "file_showers": lr_file_showers,
        "lr_generator": lr_generator, "lr_discriminator": lr_discriminator, "val_showers": val_showers,
        "run_eagerly": eager,
    }
    config = TrainConfig(**given) if not resume else _resumed_config(ctx, out, given, tiny)
    strategy = None
    if mirrored:
        import tensorflow as tf

        strategy = tf.distribute.MirroredStrategy()
    console = Console(stderr=True)
    try:
        with _RichProgress(console) as progress:
            result = run_training(config, out, resume=resume, metric=selection_metric, strategy=strategy,
                                  progress=progress)
    except KeyboardInterrupt:
        console.print(f"interrupted; the last finished epoch (or the finished warm-up) is checkpointed: "
                      f"calogan train --out {out} --resume; an unfinished warm-up starts again in a new --out")
        raise typer.Exit(130) from None
    typer.echo(
        f"{result.epochs_done} epochs, {result.showers_seen} real showers in {result.wall_s:.0f} s; best epoch "
        f"{result.best_epoch} (val_score {result.best_score:.4g}); wrote {result.generator_path}"
    )


def _resumed_config(ctx: typer.Context, out: Path, given: dict[str, Any], tiny: bool) -> TrainConfig:
    """The run's stored settings with the options given on this command line (to be checked against them)."""
    from app.model.training.run_files import stored_config

    # Typer bundles its own click, so the source is compared by name, not by click's enum class.
    explicit = {name for name in ctx.params if getattr(ctx.get_parameter_source(name), "name", "") != "DEFAULT"}
    if tiny:
        explicit.add("width")
    fields = {_FIELD_OF_OPTION.get(name, name) for name in explicit}
    return TrainConfig.from_dict({**stored_config(out), **{k: v for k, v in given.items() if k in fields}})


class _RichProgress:
    """Draws training phases as a rich progress bar and prints one line per epoch."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TimeRemainingColumn(), TextColumn("{task.fields[losses]}"), console=console, transient=True,
        )
        self._task: Any = None

    def __enter__(self) -> _RichProgress:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(*exc)

    def phase(self, description: str, total_steps: int) -> None:
        if self._task is not None:
            self._progress.remove_task(self._task)
        self._task = self._progress.add_task(description, total=total_steps, losses="")

    def step(self, losses: dict[str, float]) -> None:
        shown = " ".join(f"{k} {losses[k]:.3g}" for k in ("d_real_loss", "d_fake_loss", "g_loss", "warmup_loss")
                         if k in losses)
        self._progress.update(self._task, advance=1, losses=shown)

    def epoch_done(self, row: dict[str, Any]) -> None:
        rate = f", {row['showers_per_s']:.2f} showers/s" if row.get("showers_per_s") else ""
        self._console.print(
            f"epoch {row['epoch']} ({row['phase']}): val_score {row.get('val_score', float('nan')):.4g}"
            f"{' (best)' if row.get('best') else ''}, {row['wall_s']:.0f} s{rate}", highlight=False,
        )
