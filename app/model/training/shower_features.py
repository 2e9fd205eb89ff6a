"""Differentiable per-shower features (TensorFlow), for training objectives that compare distributions.

The same function turns generated showers (with gradients) and reference showers (constants) into one
feature vector per shower, so that a distance between two *sets* of showers at the same Ep (the energy
score of :mod:`app.model.training.fluctuations`) sees what a physicist's validation sees: the energy
response, the longitudinal and lateral shape, the hit count and the cell-energy spectrum. Hard counts
have no gradient, so hits and the spectrum are counted with sigmoids in log cell energy.

Imports TensorFlow lazily (only :func:`shower_features` needs it); physics constants come from
``app.physics``. Units: cells in visible GeV, Ep in GeV; moments in cell-index units.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from app.physics.detector import N_LAYERS
from app.physics.observables import DEFAULT_HIT_THRESHOLD_GEV

SPECTRUM_LOG10_EDGES_GEV: Final = np.linspace(-4.0, 0.0, 9)
"""Edges of the soft cell-energy spectrum, log10(GeV): 8 bins from 0.1 MeV (the hit threshold) to 1 GeV."""

SOFT_WIDTH_LOG: Final = 0.3
"""Width of the sigmoid steps, in natural-log units of cell energy (a 35 % change in energy)."""

SURROGATE_WIDTH_GEV: Final = 0.01
"""Width of the linear sigmoid whose gradient the hit count borrows (see :func:`shower_features`): the
shipped v2 generator's empty cells sit at -0.03 GeV before its final ReLU (median), 300 thresholds
below, where the log-space step has no gradient at all."""

FEATURE_GROUPS: Final = {
    "energy": 1,  # log(S / Ep)
    "layers": N_LAYERS,  # share of S in each layer
    "depth": 2,  # longitudinal centre and spread, layer units
    "lateral": 4,  # x and y centre and width, cell units
    "hits": 1,  # log(1 + soft count of cells above the hit threshold)
    "spectrum": len(SPECTRUM_LOG10_EDGES_GEV) - 1,  # log(1 + soft count) per log-energy bin
}
"""Feature groups in column order, with their widths."""

N_FEATURES: Final = sum(FEATURE_GROUPS.values())

STD_FLOORS: Final = {"energy": 0.01, "layers": 0.002, "depth": 0.1, "lateral": 0.05, "hits": 0.05, "spectrum": 0.1}
"""Smallest standard deviation each group is divided by, in the features' own units. Without it a
feature that hardly varies in the reference (the last layers' share at 2 GeV) turns a tiny absolute
difference into thousands of standard deviations and drowns every other term."""


def std_floors() -> np.ndarray:
    """``STD_FLOORS`` per column; shape (N_FEATURES,)."""
    return np.concatenate([np.full(width, STD_FLOORS[name]) for name, width in FEATURE_GROUPS.items()])


@dataclass(frozen=True)
class FeatureScale:
    """Standardisation and group weights of the feature vector, one row per Ep bin.

    Attributes
    ----------
    edges_gev : ndarray, shape (K + 1,)
        Ep bin edges, GeV (log-spaced).
    mean, std : ndarray, shape (K, N_FEATURES)
        Reference mean and standard deviation of each feature in each bin.
    """

    edges_gev: np.ndarray
    mean: np.ndarray
    std: np.ndarray

    def bin_of(self, ep_gev: float) -> int:
        """Index of the Ep bin holding ``ep_gev`` (clipped to the first and last bin)."""
        return int(np.clip(np.searchsorted(self.edges_gev, ep_gev, side="right") - 1, 0, len(self.mean) - 1))


def group_weights(weights: dict[str, float]) -> np.ndarray:
    """Column weights w_g / sqrt(width_g): each group adds about w_g^2 to a squared distance of
    standardised features, however many columns it has; shape (N_FEATURES,)."""
    unknown = sorted(set(weights) - set(FEATURE_GROUPS))
    if unknown:
        raise ValueError(f"unknown feature groups {unknown}; known: {', '.join(FEATURE_GROUPS)}")
    return np.concatenate(
        [np.full(width, weights.get(name, 0.0) / np.sqrt(width)) for name, width in FEATURE_GROUPS.items()]
    ).astype(np.float32)


def shower_features(cells_gev: Any, ep_gev: Any, *, pre_relu_gev: Any | None = None) -> Any:
    """One feature row per shower (see ``FEATURE_GROUPS``); differentiable in the cells.

    Parameters
    ----------
    cells_gev : tf.Tensor, shape (B, 25, 25, 25)
        Visible energy per cell, GeV, [x, y, layer], non-negative.
    ep_gev : tf.Tensor, shape (B,)
        Primary energies, GeV.
    pre_relu_gev : tf.Tensor, shape (B, 25, 25, 25), optional
        The generator's output before its final ReLU, for the soft counts; with it the hit count's
        gradient reaches cells below zero (``SURROGATE_WIDTH_GEV``). Default: ``cells_gev``.

    Returns
    -------
    tf.Tensor, shape (B, N_FEATURES), float32
    """
    import tensorflow as tf

    eps = 1e-12
    cells = tf.cast(cells_gev, tf.float32)
    ep = tf.cast(ep_gev, tf.float32)
    total = tf.reduce_sum(cells, axis=[1, 2, 3]) + eps
    layers = tf.reduce_sum(cells, axis=[1, 2]) / total[:, None]
    x_profile = tf.reduce_sum(cells, axis=[2, 3]) / total[:, None]
    y_profile = tf.reduce_sum(cells, axis=[1, 3]) / total[:, None]
    depth = _centre_and_width(layers)
    lateral = tf.concat([_centre_and_width(x_profile), _centre_and_width(y_profile)], axis=1)
    counted = cells if pre_relu_gev is None else tf.cast(pre_relu_gev, tf.float32)
    log_e = tf.math.log(tf.nn.relu(counted) + 1e-9)
    soft_hits = tf.reduce_sum(tf.sigmoid((log_e - np.log(DEFAULT_HIT_THRESHOLD_GEV)) / SOFT_WIDTH_LOG), axis=[1, 2, 3])
    if pre_relu_gev is not None:
        # Straight-through surrogate: the value stays the log-space count, the gradient is that of a
        # wide linear step, which still reaches cells far below zero.
        wide = tf.reduce_sum(tf.sigmoid((counted - DEFAULT_HIT_THRESHOLD_GEV) / SURROGATE_WIDTH_GEV), axis=[1, 2, 3])
        soft_hits += wide - tf.stop_gradient(wide)
    edges = SPECTRUM_LOG10_EDGES_GEV * np.log(10.0)
    above = tf.stack([tf.sigmoid((log_e - edge) / SOFT_WIDTH_LOG) for edge in edges], axis=-1)
    spectrum = tf.reduce_sum(above[..., :-1] - above[..., 1:], axis=[1, 2, 3])
    return tf.concat(
        [
            tf.math.log(total / ep)[:, None],
            layers,
            depth,
            lateral,
            tf.math.log1p(soft_hits)[:, None],
            tf.math.log1p(spectrum),
        ],
        axis=1,
    )


def _centre_and_width(profile: Any) -> Any:
    """Barycentre and rms width (index units) of normalised profiles (B, 25); shape (B, 2)."""
    import tensorflow as tf

    index = tf.range(profile.shape[-1], dtype=tf.float32)
    centre = tf.reduce_sum(profile * index, axis=1)
    variance = tf.reduce_sum(profile * (index - centre[:, None]) ** 2, axis=1)
    return tf.stack([centre, tf.sqrt(variance + 1e-6)], axis=1)


def energy_score(generated: Any, reference: Any) -> Any:
    """Energy score of a generated set against a reference set (both (n, F), one Ep), to minimise.

    E||X - Y|| - 1/2 E||Y - Y'|| with X reference and Y, Y' distinct generated rows: a strictly proper
    scoring rule, minimal when the generated distribution equals the reference one (Gneiting and
    Raftery 2007; the engression objective, arXiv:2307.00835). The sqrt has a floor so that identical
    rows do not give an infinite gradient.
    """
    import tensorflow as tf

    def distances(a: Any, b: Any) -> Any:
        return tf.sqrt(tf.reduce_sum((a[:, None, :] - b[None, :, :]) ** 2, axis=-1) + 1e-6)

    n = tf.cast(tf.shape(generated)[0], tf.float32)
    cross = tf.reduce_mean(distances(reference, generated))
    within = tf.reduce_sum(distances(generated, generated)) / (n * (n - 1.0))
    return cross - 0.5 * within
