"""Classifier two-sample test: can a classifier tell generated showers from reference ones?

As in the CaloChallenge's "cls-high" test (``hep_ecosystem.md`` 3.1), a classifier is trained on the
high-level features of :meth:`~app.physics.observables.ShowerObservables.features` to separate the two
samples, and its ROC AUC on held-out showers is the metric: 0.5 means indistinguishable, 1.0 means every
shower is recognised. Here the classifier is scikit-learn's HistGradientBoostingClassifier (trees need no
feature standardisation and accept the NaN of empty showers), evaluated by stratified k-fold cross
validation; the AUC is the mean over folds and its uncertainty the standard error over folds.

Energy. ``log10(Ep)`` IS a feature, so the classifier can learn energy-dependent differences (a wrong
slope of S/Ep versus Ep, say). That is only fair when both samples have the same Ep distribution, so
:func:`energy_matched_indices` first subsamples both to the same number of showers in each narrow
(10 %) log-energy cell; Ep alone then carries no information and an AUC above 0.5 comes from the showers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from threadpoolctl import threadpool_limits

from app.errors import InvalidRequest
from app.physics.detector import FloatArray
from app.physics.observables import FEATURE_NAMES, ShowerObservables

__all__ = [
    "CLASSIFIER_FEATURES",
    "MATCH_CELL_REL_WIDTH",
    "MIN_SHOWERS_PER_CLASS",
    "ClassifierResult",
    "classifier_auc",
    "energy_matched_indices",
    "feature_matrix",
    "samples_auc",
    "single_feature_aucs",
]

CLASSIFIER_FEATURES: Final = (*FEATURE_NAMES, "log10_ep_gev")
"""Columns of :func:`feature_matrix`: the physics features plus log10(Ep / GeV)."""

MATCH_CELL_REL_WIDTH: Final = 0.10
"""Width of the log-energy cells in which both samples are equalised: Ep differs by at most 10 % inside."""

MIN_SHOWERS_PER_CLASS: Final = 10
"""Fewer showers per sample than this cannot fill the folds meaningfully."""


@dataclass(frozen=True)
class ClassifierResult:
    """ROC AUC of the classifier two-sample test.

    Attributes
    ----------
    auc : float
        Mean held-out ROC AUC over the folds; 0.5 = indistinguishable.
    auc_sem : float
        Standard error of that mean (fold standard deviation / sqrt(k)).
    fold_aucs : tuple of float
        The AUC of each fold.
    n_gen, n_ref : int
        Showers of each sample used (after energy matching).
    """

    auc: float
    auc_sem: float
    fold_aucs: tuple[float, ...]
    n_gen: int
    n_ref: int

    @property
    def auc_std(self) -> float:
        """Standard deviation of the fold AUCs."""
        return float(np.std(self.fold_aucs, ddof=1)) if len(self.fold_aucs) > 1 else float("nan")


def feature_matrix(obs: ShowerObservables) -> FloatArray:
    """The classifier's input: one row per shower, columns in ``CLASSIFIER_FEATURES`` order.

    Returns
    -------
    ndarray, shape (N, len(CLASSIFIER_FEATURES)), float64
        High-level features (dimensionless or index units) and log10(Ep / GeV); NaN for undefined values.
    """
    columns = obs.features()
    return np.column_stack([*(columns[name] for name in FEATURE_NAMES), np.log10(obs.ep_gev)])


def energy_matched_indices(
    gen_ep_gev: npt.ArrayLike,
    ref_ep_gev: npt.ArrayLike,
    *,
    rng: np.random.Generator,
    rel_width: float = MATCH_CELL_REL_WIDTH,
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Subsample two samples to identical shower counts in each narrow log-energy cell.

    Parameters
    ----------
    gen_ep_gev, ref_ep_gev : array-like, shape (N,) and (M,)
        Primary energies, GeV.
    rng : numpy.random.Generator
        Chooses which showers are kept where one sample has more.
    rel_width : float
        Cells are [E0 (1 + w)^i, E0 (1 + w)^(i + 1)), so Ep varies by at most w inside a cell.

    Returns
    -------
    gen_index, ref_index : ndarray of int, same length
        Sorted indices of the kept showers of each sample. Two fixed-energy samples at the same energy
        share one cell, so the larger one is simply subsampled to the size of the smaller.
    """
    gen_ep = np.asarray(gen_ep_gev, dtype=np.float64)
    ref_ep = np.asarray(ref_ep_gev, dtype=np.float64)
    if rel_width <= 0:
        raise ValueError(f"rel_width must be > 0, received {rel_width}")
    step = np.log1p(rel_width)
    gen_cell = np.floor(np.log(gen_ep) / step).astype(np.int64)
    ref_cell = np.floor(np.log(ref_ep) / step).astype(np.int64)
    keep_gen, keep_ref = [], []
    for cell in np.intersect1d(gen_cell, ref_cell):
        in_gen, in_ref = np.flatnonzero(gen_cell == cell), np.flatnonzero(ref_cell == cell)
        n = min(len(in_gen), len(in_ref))
        keep_gen.append(rng.choice(in_gen, size=n, replace=False))
        keep_ref.append(rng.choice(in_ref, size=n, replace=False))
    if not keep_gen:
        return np.array([], dtype=np.intp), np.array([], dtype=np.intp)
    return np.sort(np.concatenate(keep_gen)), np.sort(np.concatenate(keep_ref))


def classifier_auc(
    gen_features: FloatArray,
    ref_features: FloatArray,
    *,
    n_folds: int = 5,
    seed: int = 0,
    max_iter: int = 100,
) -> ClassifierResult:
    """Held-out ROC AUC of a gradient-boosted classifier separating two feature samples.

    Parameters
    ----------
    gen_features, ref_features : ndarray, shape (N, F) and (M, F)
        One row per shower (e.g. from :func:`feature_matrix`); NaN allowed.
    n_folds : int
        Stratified folds (>= 2); every shower is tested once, by a model that never saw it.
    seed : int
        Seeds the fold assignment and the classifier, so the result is reproducible.
    max_iter : int
        Boosting iterations per fold.

    Returns
    -------
    ClassifierResult
        Mean fold AUC (generated = positive class) and its standard error.

    Raises
    ------
    InvalidRequest
        Fewer than ``max(MIN_SHOWERS_PER_CLASS, n_folds)`` showers in a sample, or mismatched columns.

    Notes
    -----
    Under the null hypothesis (same distribution) the AUC of one fold with n1, n2 test showers has a
    standard deviation of about sqrt((n1 + n2 + 1) / (12 n1 n2)) (Mann-Whitney), e.g. 0.065 for 40 + 40.
    """
    gen = np.asarray(gen_features, dtype=np.float64)
    ref = np.asarray(ref_features, dtype=np.float64)
    if gen.ndim != 2 or ref.ndim != 2 or gen.shape[1] != ref.shape[1]:
        raise InvalidRequest(f"feature arrays must be (N, F) with the same F, received {gen.shape} and {ref.shape}")
    if n_folds < 2:
        raise InvalidRequest(f"n_folds must be >= 2, received {n_folds}", allowed="an integer >= 2")
    needed = max(MIN_SHOWERS_PER_CLASS, n_folds)
    if min(len(gen), len(ref)) < needed:
        raise InvalidRequest(
            f"classifier test needs {needed} showers per sample, received {len(gen)} and {len(ref)}",
            allowed=f"at least {needed} energy-matched showers in each sample",
        )
    x = np.concatenate([gen, ref])
    y = np.concatenate([np.ones(len(gen), dtype=np.int8), np.zeros(len(ref), dtype=np.int8)])
    folds = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    aucs = []
    # One OpenMP thread: these tables are small (a fit of 20k showers takes under a second), and the
    # default one-thread-per-core spin-waits on a busy machine (a 400-shower fit went from 0.3 s to 10 s).
    with threadpool_limits(limits=1, user_api="openmp"):
        for train, test in folds.split(x, y):
            # early_stopping=False: the default turns it on above 10k showers with an internal random
            # split, which would make the result depend on N in a second, hidden way.
            model = HistGradientBoostingClassifier(max_iter=max_iter, early_stopping=False, random_state=seed)
            model.fit(x[train], y[train])
            aucs.append(float(roc_auc_score(y[test], model.predict_proba(x[test])[:, 1])))
    sem = float(np.std(aucs, ddof=1) / np.sqrt(len(aucs)))
    return ClassifierResult(float(np.mean(aucs)), sem, tuple(aucs), len(gen), len(ref))


def samples_auc(
    gen: ShowerObservables,
    ref: ShowerObservables,
    *,
    seed: int = 0,
    n_folds: int = 5,
    feature_names: Sequence[str] = CLASSIFIER_FEATURES,
) -> ClassifierResult:
    """Classifier test of two shower samples at matched energy (see :func:`energy_matched_indices`).

    Parameters
    ----------
    gen, ref : ShowerObservables
        The samples; they are subsampled to the same Ep distribution first.
    seed : int
        Seeds the energy matching, the folds and the classifier.
    n_folds : int
        Cross-validation folds.
    feature_names : sequence of str
        Columns of ``CLASSIFIER_FEATURES`` to use (all by default).

    Returns
    -------
    ClassifierResult
    """
    unknown = sorted(set(feature_names) - set(CLASSIFIER_FEATURES))
    if unknown:
        raise InvalidRequest(f"unknown classifier features {unknown}", allowed=", ".join(CLASSIFIER_FEATURES))
    columns = [CLASSIFIER_FEATURES.index(name) for name in feature_names]
    gen_index, ref_index = energy_matched_indices(gen.ep_gev, ref.ep_gev, rng=np.random.default_rng(seed))
    return classifier_auc(
        feature_matrix(gen)[gen_index][:, columns],
        feature_matrix(ref)[ref_index][:, columns],
        n_folds=n_folds,
        seed=seed,
    )


def single_feature_aucs(
    gen: ShowerObservables, ref: ShowerObservables, *, seed: int = 0, n_folds: int = 5
) -> dict[str, float]:
    """The classifier test on one physics feature at a time (plus log10 Ep), keyed by feature name.

    Points at what gives the samples away: a feature whose AUC alone is near the full classifier's is
    the discrepancy to fix first. Sorted from the most to the least separating.
    """
    aucs = {
        name: samples_auc(gen, ref, seed=seed, n_folds=n_folds, feature_names=(name, "log10_ep_gev")).auc
        for name in FEATURE_NAMES
    }
    return dict(sorted(aucs.items(), key=lambda item: -abs(item[1] - 0.5)))
