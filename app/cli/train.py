"""``calogan train``: train the Conv2D GAN on the simulator or on HDF5 showers, with checkpoints and resume."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

if TYPE_CHECKING:
    from app.physics.observables import ShowerObservables

TINY_WIDTH = 0.1


def train(
    out: Annotated[Path, typer.Option("--out", help="Run folder (checkpoint, metrics.csv, generator.keras).")],
    epochs: Annotated[int, typer.Option(help="Adversarial epochs (0 = warm-up only); with --resume, may be "
                                             "raised to extend a run.")] = 30,
    steps_per_epoch: Annotated[int, typer.Option(help="Steps per epoch (each takes batch-size real showers).")] = 100,
    batch_size: Annotated[int, typer.Option(help="Real showers per step.")] = 128,
    data: Annotated[str, typer.Option(help="'mc' (simulator, fresh showers each step) or a 3DGAN .h5 file or "
                                           "folder.")] = "mc",
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its checkpoint, with "
                                                          "its stored settings.")] = False,
    seed: Annotated[int, typer.Option(help="Seeds data, noise, labels, weights and dropout.")] = 1,
    tiny: Annotated[bool, typer.Option("--tiny", help=f"Width {TINY_WIDTH} networks (tests, smoke runs).")] = False,
    width: Annotated[float, typer.Option(help="Filter multiplier (1 = the paper's networks).")] = 1.0,
    warmup_steps: Annotated[int, typer.Option(help="Supervised generator steps (energy + mean profiles) "
                                                   "before epoch 1, validated every steps-per-epoch "
                                                   "steps.")] = 0,
    init_generator: Annotated[Path | None, typer.Option(help="Start from this trained generator (generator.keras "
                                                             "or a model folder) instead of random weights.")] = None,
    relu_from_epoch: Annotated[int, typer.Option(help="First epoch with the output ReLU (paper: 3).")] = 3,
    narrow_energy_epochs: Annotated[int, typer.Option(help="Epochs with fake Ep in 100-400 GeV (paper: 2).")] = 2,
    bn_training: Annotated[bool, typer.Option("--bn-training/--bn-inference",
                                              help="BatchNorm/Dropout mode in the steps (inference = the "
                                                   "authors' effective behaviour, and what keeps the "
                                                   "Ep conditioning; see app/model/training.py).")] = False,
    lr_generator: Annotated[float, typer.Option(help="Generator Adam learning rate before the decay (paper: "
                                                    "5e-4); also the warm-up's.")] = 5e-4,
    lr_discriminator: Annotated[float, typer.Option(help="Discriminator Adam learning rate before the decay "
                                                        "(paper: 1e-4).")] = 1e-4,
    lr_file_showers: Annotated[int, typer.Option(help="Real showers per 'file' of the lr schedule (paper: 9000; "
                                                      "total/600 runs the whole schedule).")] = 9000,
    val_showers: Annotated[int, typer.Option(help="Held-out validation showers.")] = 512,
    mirrored: Annotated[bool, typer.Option("--mirrored", help="tf.distribute.MirroredStrategy over all "
                                                              "visible GPUs.")] = False,
    eager: Annotated[bool, typer.Option("--eager", help="No tf.function (skips ~1 min of tracing; slower "
                                                        "steps).")] = False,
) -> None:
    """Train the Conv2D GAN; writes checkpoints each epoch and the best generator as generator.keras."""
    from app.model.training import TrainConfig
    from app.model.training import train as run_training

    config = TrainConfig(
        data=data, epochs=epochs, steps_per_epoch=steps_per_epoch, batch_size=batch_size, seed=seed,
        width=TINY_WIDTH if tiny else width, warmup_steps=warmup_steps, relu_from_epoch=relu_from_epoch,
        init_generator=str(init_generator) if init_generator else None,
        narrow_energy_epochs=narrow_energy_epochs, bn_training=bn_training, file_showers=lr_file_showers,
        lr_generator=lr_generator, lr_discriminator=lr_discriminator,
        val_showers=val_showers, run_eagerly=eager,
    )
    strategy = None
    if mirrored:
        import tensorflow as tf

        strategy = tf.distribute.MirroredStrategy()
    console = Console(stderr=True)
    try:
        with _RichProgress(console) as progress:
            result = run_training(config, out, resume=resume, metric=validation_metric, strategy=strategy,
                                  progress=progress)
    except KeyboardInterrupt:
        console.print(f"interrupted; the last finished epoch (or the finished warm-up) is checkpointed: "
                      f"calogan train --out {out} --resume; an unfinished warm-up starts again in a new --out")
        raise typer.Exit(130) from None
    typer.echo(
        f"{result.epochs_done} epochs, {result.showers_seen} real showers in {result.wall_s:.0f} s; best epoch "
        f"{result.best_epoch} (val_score {result.best_score:.4g}); wrote {result.generator_path}"
    )


VALIDATION_ENERGY_GROUPS = 4
"""The held-out showers are scored in this many groups of rising Ep, and the scores averaged."""


def validation_metric(gen: ShowerObservables, ref: ShowerObservables) -> dict[str, float]:
    """The per-epoch selection metric, built on ``app.validation.metrics`` (lower is better).

    ``gen`` and ``ref`` must be matched row by row (one generated shower per held-out shower, at its
    Ep), which is how training validates. The showers are split into
    :data:`VALIDATION_ENERGY_GROUPS` equal groups by Ep and, in each group, ``score`` = sqrt(mse_shape)
    / RMS of the reference's mean normalised profiles (a fractional shape error) + |<S/Ep>_gen /
    <S/Ep>_ref - 1| (a fractional energy-scale error); every value is the mean over the groups. Pooled
    over 2-500 GeV, a generator whose shower depth does not change with Ep could still match the
    average profile; per group it cannot. ``mse_shape`` and ``moment_error`` are logged beside it.
    """
    import numpy as np

    if len(gen) != len(ref):
        raise ValueError(f"validation needs matched samples, got {len(gen)} generated and {len(ref)} reference showers")
    groups = np.array_split(np.argsort(ref.ep_gev, kind="stable"), min(VALIDATION_ENERGY_GROUPS, len(ref)))
    per_group = [_group_scores(gen.select(rows), ref.select(rows)) for rows in groups]
    return {name: float(np.mean([scores[name] for scores in per_group])) for name in per_group[0]}


def _group_scores(gen: ShowerObservables, ref: ShowerObservables) -> dict[str, float]:
    import numpy as np

    from app.validation import metrics

    mse = metrics.mse_shape(gen, ref)
    ref_profiles = metrics.mean_normalised_projections(ref)
    sf = metrics.sampling_fraction_comparison(gen, ref)
    sf_rel_error = abs(sf.mean_gen / sf.mean_ref - 1.0) if sf.mean_ref > 0 else float("inf")
    shape_rel = float(np.sqrt(mse / np.mean(ref_profiles**2))) if np.isfinite(mse) else float("inf")
    moment = metrics.moment_error(gen, ref)
    return {"score": shape_rel + sf_rel_error, "mse_shape": mse, "shape_rel_rmse": shape_rel,
            "sf_rel_error": sf_rel_error, "moment_error": moment}


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
