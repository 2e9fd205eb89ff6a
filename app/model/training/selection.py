"""The one metric that picks a run's best epoch (and warm-up block), defined once for every caller.

Built on ``app.validation.metrics``. ``gen`` and ``ref`` are matched row by row (one generated shower per
held-out shower, at its Ep), which is how training validates.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final

import numpy as np

from app.model.training.config import STREAM_VALIDATION, seeded_rng
from app.physics.observables import ShowerObservables, observe
from app.validation import metrics

if TYPE_CHECKING:
    from app.model.training.trainer import GanTrainer

ValidationMetric = Callable[[ShowerObservables, ShowerObservables], dict[str, float]]
"""(generated, reference) observables at matched energies -> named values; ``"score"`` (lower is
better) selects the best epoch, every value goes to the CSV log as ``val_<name>``."""

VALIDATION_ENERGY_GROUPS: Final = 4
"""The held-out showers are scored in this many groups of rising Ep, and the scores averaged."""


def selection_metric(gen: ShowerObservables, ref: ShowerObservables) -> dict[str, float]:
    """The per-epoch selection metric (lower is better).

    The showers are split into :data:`VALIDATION_ENERGY_GROUPS` equal groups by Ep and, in each group,
    ``score`` = sqrt(mse_shape) / RMS of the reference's mean normalised profiles (a fractional shape
    error) + |<S/Ep>_gen / <S/Ep>_ref - 1| (a fractional energy-scale error); every value is the mean
    over the groups. Pooled over 2-500 GeV, a generator whose shower depth does not change with Ep
    could still match the average profile; per group it cannot. ``mse_shape`` and ``moment_error`` are
    logged beside it.
    """
    if len(gen) != len(ref):
        raise ValueError(f"validation needs matched samples, got {len(gen)} generated and {len(ref)} reference showers")
    groups = np.array_split(np.argsort(ref.ep_gev, kind="stable"), min(VALIDATION_ENERGY_GROUPS, len(ref)))
    per_group = [_group_scores(gen.select(rows), ref.select(rows)) for rows in groups]
    return {name: float(np.mean([scores[name] for scores in per_group])) for name in per_group[0]}


def _group_scores(gen: ShowerObservables, ref: ShowerObservables) -> dict[str, float]:
    mse = metrics.mse_shape(gen, ref)
    sf = metrics.sampling_fraction_comparison(gen, ref)
    sf_rel_error = abs(sf.mean_gen / sf.mean_ref - 1.0) if sf.mean_ref > 0 else float("inf")
    shape_rel = metrics.relative_shape_error(gen, ref)
    moment = metrics.moment_error(gen, ref)
    return {"score": shape_rel + sf_rel_error, "mse_shape": mse, "shape_rel_rmse": shape_rel,
            "sf_rel_error": sf_rel_error, "moment_error": moment}


def validate_generator(
    trainer: GanTrainer, val_obs: ShowerObservables, seed: int, metric: ValidationMetric
) -> dict[str, float]:
    """Score one generated shower per held-out shower, at its Ep."""
    # Fixed noise every epoch: epoch-to-epoch changes of the score come from the weights only.
    generated = trainer.generate(val_obs.ep_gev, seeded_rng(seed, 0, STREAM_VALIDATION + 100))
    return {k: float(v) for k, v in metric(observe(generated, val_obs.ep_gev), val_obs).items()}
