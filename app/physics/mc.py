"""A fast parametric (GFlash-type) electromagnetic shower Monte Carlo for the Si-W ECAL.

What it is: the Grindhammer-Peters parameterisation (hep-ex/0001020) as Geant4's GFlash tuning
classes write it, with its sampling-calorimeter corrections, per-shower correlated fluctuations of
(ln T, ln alpha), exact binned lateral integration of the two-component radial profile, and
compound-Poisson "spots" for cell-level fluctuations; binned into the 3DGAN 25 x 25 x 25 format.
The formulas and their sources are in ``shared/research/parametric_shower_mc.md`` (cited as
"spec 1.1" etc. below). The free constants are fitted to the project's Geant4 samples by
``tools/calibrate_mc.py`` (see :data:`CALIBRATED`).

Limits (spec section 5): fitted, not first-principles; one Gamma profile per shower (no explicit
first-interaction depth, no double-peaked showers); a heavy r^-3 radial tail by construction;
synthetic cell-level fluctuations without sub-shower clustering or Landau structure; no upstream
material, field, noise or digitisation; least reliable below about 5 GeV. Valid for electrons at
normal incidence, 1-1000 GeV accepted, calibrated on 10-400 GeV.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from scipy.special import gammainc

from app.physics.detector import (
    LAYER_CELLS,
    SHOWER_SHAPE,
    THIN_CELL,
    FloatArray,
    cell_edges_mm,
    layer_back_depth_x0,
    layer_thickness_x0,
)
from app.physics.primaries import check_primary_energies

MC_VERSION = "2.0"
"""Bumped whenever the physics or the calibrated constants change; written into every file."""

MIP_MPV_GEV: Final = 1.40e-4
"""Most probable energy loss of a relativistic track in 0.5 mm silicon, GeV (PDG 34.2.9: about
0.28 keV/um for 500 um on the Fermi plateau; the Geant4 files' single-track peak in layer 0 sits at
0.14 MeV)."""

MIP_XI_GEV: Final = 8.9e-6
"""Landau width parameter xi = (K/2) (Z/A) rho x of 0.5 mm silicon, GeV (K/2 = 0.1535 MeV cm^2/g,
Z/A = 0.4985, rho x = 0.1165 g/cm^2)."""

MIP_MEAN_GEV: Final = MIP_MPV_GEV + MIP_XI_GEV * (np.euler_gamma + np.log(2.0))
"""Mean of :func:`landau_mip_gev`, GeV."""

EARLY_TRACK_LAYERS: Final = 12
"""Layers whose early-component energy arrives as separate Landau tracks; deeper (beyond ~8 X0,
where 0.1 % of it is left) it has merged into the shower and joins the spots."""

PAD_CENTRE: Final = SHOWER_SHAPE[0] // 2
"""Index of the pad the beam hits (the gun aims at its centre)."""


@dataclass(frozen=True)
class ShowerParameters:
    """The simulator's free constants (dimensionless unless the name gives a unit).

    Attributes
    ----------
    visible_scale : float
        Global factor kappa on the visible energy (spec step 7).
    thick_visible_scale : float
        Extra factor on the visible fraction of the 4.8 mm layers (e/mip depends on the plate
        thickness through the soft-photon spectrum, which GFlash's single e/mip ignores).
    spot_energy_gev : float
        Mean deposited (calibrated, not visible) energy of one spot, GeV; sets the sampling
        term sqrt(spot_energy_gev * (1 + 1/spot_shape) / E) and the number of hit cells.
    spot_shape : float
        Gamma shape of one spot's energy; larger is narrower. The cell energy is a compound
        Poisson-Gamma sum, so the cell spectrum is continuous.
    start_depth_x0 : float
        Mean of an exponential delay of the whole profile, X0: a hard bremsstrahlung photon
        that converts late starts the shower deeper (a single Gamma profile cannot), which
        gives the low tail of the total deposit that Geant4 shows at high energy.
    depth_scale : float
        Factor on the shower-maximum depth T (absorbs the sensor sitting behind its plate and
        the missing face layer).
    sigma_ln_t_scale, sigma_ln_alpha_scale : float
        Factors on the GFlash widths of ln T and ln alpha (longitudinal fluctuations).
    radius_scale : float
        Factor on both radial scales R_C and R_T.
    core_fraction_scale : float
        Factor on the core probability p of the radial profile (clipped to [0, 1]).
    k4 : float
        Slope of the tail radius with ln E (0.0421 in CMS/pi0fit, 0.0412 in Geant4; spec 1.2).
    impact_spread_mm : float
        Gaussian rms of the impact point around the centre of the central cell, mm (0 = fixed gun).
    threshold_gev : float
        Cells with less visible energy are set to zero, GeV.
    early_fraction : float
        Share of Ep carried by the early component of the longitudinal profile at Ep = 100 GeV
        (docs/mc.md, "The first layers"): the primary's first hard photons and their conversions,
        a Gamma(``early_alpha``) profile from the face with mean depth ``early_depth_x0``.
    early_energy_slope : float
        The early share scales as (Ep / 100 GeV)^-slope (its absolute energy grows slower than Ep).
    early_alpha : float
        Gamma shape of the early component (2 = linear onset, as the first pair multiplication).
    early_depth_x0 : float
        Mean depth of the early component, X0.
    primary_track_x0 : float
        Mean of the exponential depth, X0, up to which the primary is one identifiable charged track;
        it leaves one Landau-distributed MIP deposit in the impact pad of every sensor before that.
    back_plate_share : float
        Share of a sensor's visible energy made by soft electrons from the plate behind it
        (the next layer's absorber) when that plate is 2.4 mm thick. The last sensor has no plate
        behind it and lacks that share.
    thick_back_plate_share : float
        The same share behind a 4.8 mm plate (layers 16-23) and for the last sensor: a thicker plate
        converts more of the late, soft photons near its surface, so more comes back.
    early_shape : float
        Gamma shape of a per-shower factor (mean 1, variance 1 / shape) on the early component: how
        much the primary radiates before the shower proper starts varies from shower to shower.
    tail_fraction : float
        Share of Ep carried on past the main profile by photons near the minimum of tungsten's
        attenuation coefficient (about 4 MeV), which travel an extra Exp(``tail_length_x0``) path.
    tail_length_x0 : float
        Mean extra path of those photons, X0 (1 / (mu_min X0) = 3.7 X0 for tungsten, NIST XCOM).
    tail_energy_slope : float
        The tail share scales as (Ep / 100 GeV)^slope.
    """

    visible_scale: float = 1.0
    thick_visible_scale: float = 1.0
    spot_energy_gev: float = 0.0289
    spot_shape: float = 1.0
    start_depth_x0: float = 0.0
    depth_scale: float = 1.0
    sigma_ln_t_scale: float = 1.0
    sigma_ln_alpha_scale: float = 1.0
    radius_scale: float = 1.0
    core_fraction_scale: float = 1.0
    k4: float = 0.0421
    impact_spread_mm: float = 0.0
    threshold_gev: float = 1e-6
    early_fraction: float = 0.0
    early_energy_slope: float = 0.5
    early_alpha: float = 2.0
    early_depth_x0: float = 2.0
    primary_track_x0: float = 0.0
    back_plate_share: float = 0.0
    thick_back_plate_share: float = 0.0
    early_shape: float = 1e6
    tail_fraction: float = 0.0
    tail_length_x0: float = 3.7
    tail_energy_slope: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The constants as plain floats, for file metadata."""
        return asdict(self)


# Fit: tools/calibrate_mc.py (Nelder-Mead, 402 evaluations, 150 MC showers per energy; targets: sum/Ep, its
# rms/mean, hits > 1e-4 GeV, the mean layer and x profiles, the central 3x3 share, the rms/mean of the
# layer 0-5 deposits and the layer-0 hits, with the floors of its GROUPS) to the Geant4 samples
# shared/data/g4/g4_e{5,10,20,50,100,200,400,500}GeV_*.h5 (Geant4 11.4.p01, opt0 EM); chi2 296 for 488
# targets. thick_back_plate_share (0.5), early_shape (4) and sigma_ln_t_scale (GFlash's 1.0) were set by
# hand between fits and held fixed: with sigma_ln_t_scale 0.92 the 200 GeV resolution improved and the
# 400 GeV one and the 50 GeV classifier AUC got worse (docs/mc.md). MC_VERSION 2.0.
CALIBRATED = ShowerParameters(
    visible_scale=1.1624, thick_visible_scale=1.041, spot_energy_gev=0.0154, start_depth_x0=0.685,
    depth_scale=0.9452, radius_scale=1.0728, core_fraction_scale=0.9541, k4=0.0236, early_fraction=0.0019,
    early_energy_slope=0.6085, early_depth_x0=1.6283, primary_track_x0=4.4777, back_plate_share=0.4493,
    tail_fraction=0.099, tail_length_x0=4.2327, tail_energy_slope=0.1053, early_alpha=2.0536,
    sigma_ln_t_scale=1.0, thick_back_plate_share=0.5, early_shape=4.0,
)


class ShowerSimulator:
    """Draw showers for given primary energies; memory is bounded by ``batch_size``.

    Parameters
    ----------
    params : ShowerParameters
        The free constants; :data:`CALIBRATED` by default.
    batch_size : int
        Showers simulated at once (about 0.5 MB of temporaries per shower).

    Examples
    --------
    >>> sim = ShowerSimulator()
    >>> sim.simulate(np.full(4, 100.0), np.random.default_rng(1)).shape
    (4, 25, 25, 25)
    """

    def __init__(self, params: ShowerParameters = CALIBRATED, batch_size: int = 256) -> None:
        self.params = params
        self.batch_size = batch_size
        self._t_back_x0 = layer_back_depth_x0()
        self._t_front_x0 = self._t_back_x0 - layer_thickness_x0()
        self._t_mid_x0 = 0.5 * (self._t_front_x0 + self._t_back_x0)
        self._visible_fraction = np.array([c.mip_visible_fraction * c.e_over_mip for c in LAYER_CELLS])
        self._thick_factor = np.where(
            [c is THIN_CELL for c in LAYER_CELLS], 1.0, params.thick_visible_scale
        )
        self._moliere_mm = np.array([c.moliere_radius_mm for c in LAYER_CELLS])
        self._inv_fs = np.array([1.0 / c.samplings_per_x0 for c in LAYER_CELLS])
        self._edges_mm = cell_edges_mm()
        thickness_x0 = layer_thickness_x0()
        self._behind_depth_ratio = thickness_x0[:-1] / thickness_x0[1:]
        thick_behind = np.append(thickness_x0[1:] > thickness_x0[0], True)  # the last sensor counts as thick
        self._back_plate_shares = np.where(thick_behind, params.thick_back_plate_share, params.back_plate_share)
        self._behind_weights = self._back_plate_shares[:-1] * self._behind_depth_ratio
        self._visible_per_deposit = params.visible_scale * self._visible_fraction * self._thick_factor
        early_rate = params.early_alpha / params.early_depth_x0  # per X0
        self._early_share = gammainc(params.early_alpha, early_rate * self._t_back_x0) - gammainc(
            params.early_alpha, early_rate * self._t_front_x0
        )

    def simulate(self, ep_gev: npt.ArrayLike, rng: np.random.Generator) -> FloatArray:
        """Simulate one shower per primary energy.

        Parameters
        ----------
        ep_gev : array-like, shape (N,)
            Primary electron energies, GeV (1-1000 accepted; calibrated 10-400).
        rng : numpy.random.Generator
            Source of all randomness; the same generator state gives the same showers.

        Returns
        -------
        ndarray, shape (N, 25, 25, 25), float32
            Visible energy per cell, GeV, indexed [x, y, layer].
        """
        ep = check_primary_energies(ep_gev)
        out = np.empty((len(ep), *SHOWER_SHAPE), dtype=np.float32)
        for start in range(0, len(ep), self.batch_size):
            out[start : start + self.batch_size] = self._simulate_batch(ep[start : start + self.batch_size], rng)
        return out

    def iter_batches(
        self, ep_gev: npt.ArrayLike, rng: np.random.Generator, batch_size: int | None = None
    ) -> Iterator[tuple[FloatArray, FloatArray]]:
        """Yield ``(cells_gev (n, 25, 25, 25), ep_gev (n,))`` chunks of at most ``batch_size`` showers."""
        ep = check_primary_energies(ep_gev)
        size = batch_size or self.batch_size
        for start in range(0, len(ep), size):
            chunk = ep[start : start + size]
            yield self.simulate(chunk, rng), chunk.astype(np.float32)

    def _simulate_batch(self, ep: FloatArray, rng: np.random.Generator) -> FloatArray:
        # Two streams: the per-shower draws (profile, impact, primary track) come from their own, so
        # that a small change of a constant changes the showers smoothly; the cell-level Poisson draws
        # consume a varying number of random numbers and would otherwise reshuffle everything after them.
        shower_rng, cell_rng = rng.spawn(2)
        profile = self.longitudinal_parameters(ep, shower_rng)
        main_gev, early_gev = self.layer_energies(ep, profile)
        lateral = self.lateral_fractions(ep, profile, shower_rng)
        track_gev = self.primary_track(len(ep), shower_rng)
        cell_gev = main_gev.copy()
        cell_gev[:, EARLY_TRACK_LAYERS:] += early_gev[:, EARLY_TRACK_LAYERS:]
        early_tracks_gev = early_gev[:, :EARLY_TRACK_LAYERS]
        deposit_gev = self.sensor_deposits(cell_gev[:, None, None, :] * lateral)
        visible = self._spot_fluctuations(deposit_gev, cell_rng)
        early_visible_gev = (
            early_tracks_gev[:, None, None, :] * lateral[..., :EARLY_TRACK_LAYERS]
            * self._visible_per_deposit[:EARLY_TRACK_LAYERS]
        )
        visible[..., :EARLY_TRACK_LAYERS] += self._track_fluctuations(early_visible_gev, cell_rng)
        visible[:, PAD_CENTRE, PAD_CENTRE, :] += track_gev
        visible[visible < self.params.threshold_gev] = 0.0
        return visible.astype(np.float32)

    # -- longitudinal ---------------------------------------------------------------------------

    def longitudinal_parameters(self, ep: FloatArray, rng: np.random.Generator) -> dict[str, FloatArray]:
        """Per-shower Gamma-profile parameters (spec 1.1, sampling-calorimeter version).

        Returns
        -------
        dict of ndarray, each shape (N,)
            ``t_max_x0`` (depth of the maximum T, X0), ``alpha``, ``beta`` (1/X0),
            ``alpha_mean`` (exp<ln alpha>, used for the radial depth variable tau),
            ``start_x0`` (depth where the profile starts, X0) and ``early_weight`` (share of Ep in
            the early component, see :meth:`layer_energies`).

        Notes
        -----
        ln T and ln alpha are drawn from a bivariate normal with the GFlash means, widths and
        correlation, y = E / E_c of the thin-section effective medium; Geant4's clamps are kept
        (T >= 1 X0, alpha >= 1.1, sigma <= 0.5, arguments of the outer ln >= 0.1).
        """
        cell = THIN_CELL
        p = self.params
        ln_y = np.log(1000.0 * ep / cell.critical_energy_mev)
        inv_fs, e_hat, z = 1.0 / cell.samplings_per_x0, cell.e_over_mip, cell.z_eff
        t_hom = np.maximum(ln_y - 0.812, 0.1)
        alpha_hom = np.maximum(0.81 + (0.458 + 2.26 / z) * ln_y, 0.1)
        mean_ln_t = np.log(np.maximum(t_hom - 0.55 * inv_fs - 0.69 * (1.0 - e_hat), 0.1))
        mean_ln_alpha = np.log(np.maximum(alpha_hom - 0.476 * inv_fs, 0.1))
        sigma_t = p.sigma_ln_t_scale * _clamped_inverse(-2.5 + 1.25 * ln_y)
        sigma_alpha = p.sigma_ln_alpha_scale * _clamped_inverse(-0.82 + 0.79 * ln_y)
        rho = np.clip(0.784 - 0.023 * ln_y, -1.0, 1.0)
        z1, z2 = rng.standard_normal((2, len(ep)))
        start = rng.exponential(1.0, len(ep)) * p.start_depth_x0
        common, opposite = np.sqrt((1 + rho) / 2) * z1, np.sqrt((1 - rho) / 2) * z2
        t_max = np.maximum(np.exp(mean_ln_t + sigma_t * (common + opposite)), 1.0) * p.depth_scale
        alpha = np.maximum(np.exp(mean_ln_alpha + sigma_alpha * (common - opposite)), 1.1)
        early_factor = rng.gamma(p.early_shape, 1.0 / p.early_shape, len(ep))
        early = np.clip(p.early_fraction * (ep / 100.0) ** -p.early_energy_slope * early_factor, 0.0, 0.5)
        return {
            "t_max_x0": t_max,
            "alpha": alpha,
            "beta": (alpha - 1.0) / t_max,
            "alpha_mean": np.exp(mean_ln_alpha),
            "start_x0": start,
            "early_weight": early,
        }

    def layer_energies(self, ep: FloatArray, profile: dict[str, FloatArray]) -> tuple[FloatArray, FloatArray]:
        """Energy deposited (all materials) in each layer's sampling cell, GeV, by the shower's components.

        Returns
        -------
        main_gev, early_gev : ndarray, each shape (N, 25)
            ``main_gev``: the Gamma profile from the shower start, E_p (1 - w_e - w_t) [P(alpha, beta t_k)
            - P(alpha, beta t_{k-1})] (P the regularised lower incomplete gamma function), plus its
            photon tail w_t E_p (see :func:`_gamma_plus_exponential_cdf`). ``early_gev``: the early component
            w_e E_p [P(a_e, b_e t_k) - P(a_e, b_e t_{k-1})] from the face (a_e = ``early_alpha``, mean
            depth a_e / b_e = ``early_depth_x0``). w_e is ``early_weight``, w_t = ``tail_fraction``
            (Ep / 100 GeV)^``tail_energy_slope``.
            Energy behind the last layer leaks out.
        """
        p = self.params
        a = profile["alpha"][:, None]
        b = profile["beta"][:, None]
        start = profile["start_x0"][:, None]
        w_early = profile["early_weight"][:, None]
        back = np.maximum(self._t_back_x0 - start, 0.0)
        front = np.maximum(self._t_front_x0 - start, 0.0)
        gamma = gammainc(a, b * back) - gammainc(a, b * front)
        rate = np.minimum(1.0 / p.tail_length_x0, 0.9 * b)
        tail = gamma - (_exponential_delay_deficit(a, b, rate, back) - _exponential_delay_deficit(a, b, rate, front))
        w_tail = np.clip(p.tail_fraction * (ep[:, None] / 100.0) ** p.tail_energy_slope, 0.0, 0.5)
        main = ep[:, None] * ((1.0 - w_early - w_tail) * gamma + w_tail * tail)
        return main, w_early * ep[:, None] * self._early_share[None, :]

    def sensor_deposits(self, cell_gev: FloatArray) -> FloatArray:
        """What each sensor sees of the sampling cells' deposits, GeV; shape (N, x, y, 25) like ``cell_gev``.

        (1 - b_k) E_k + b_k E_{k+1} d_k / d_{k+1}, pad by pad: soft electrons leave the plate behind a
        sensor only from its first millimetres, so the share b_k (``back_plate_share`` or, behind a
        4.8 mm plate and for the last sensor, ``thick_back_plate_share``) follows that plate's
        deposit per X0 times this cell's depth d_k, not its whole deposit: the first 4.8 mm plate
        must not double what the last 2.4 mm sensor receives. The last sensor has no plate behind it.
        """
        from_behind = cell_gev[..., 1:] * self._behind_weights
        deposit = cell_gev * (1.0 - self._back_plate_shares)
        deposit[..., :-1] += from_behind
        return deposit

    def primary_track(self, n_showers: int, rng: np.random.Generator) -> FloatArray:
        """The primary electron's own ionisation in the impact pad, visible GeV; shape (N, 25).

        The primary stays one charged track up to a depth t_0 + Exp(``primary_track_x0``) (t_0 = the
        first sensor, which it always crosses) and leaves one Landau MIP (:func:`landau_mip_gev`) in
        every sensor before that.
        """
        end_x0 = self._t_back_x0[0] + rng.exponential(self.params.primary_track_x0, n_showers)
        crossed = self._t_back_x0[None, :] <= end_x0[:, None]
        return np.where(crossed, landau_mip_gev(rng, crossed.shape), 0.0)

    # -- lateral --------------------------------------------------------------------------------

    def radial_parameters(self, ep: FloatArray, profile: dict[str, FloatArray]) -> tuple[FloatArray, ...]:
        """Core radius, tail radius (mm) and core probability per shower and layer (spec 1.2).

        Returns
        -------
        r_core_mm, r_tail_mm, p_core : ndarray, each shape (N, 25)
        """
        cell, prm = THIN_CELL, self.params
        z, e_hat = cell.z_eff, cell.e_over_mip
        ln_e = np.log(ep)[:, None]
        alpha, t_max, alpha_mean, start = (
            profile[k][:, None] for k in ("alpha", "t_max_x0", "alpha_mean", "start_x0")
        )
        depth_x0 = np.maximum(self._t_mid_x0 - start, 0.0)
        tau = depth_x0 * (alpha - 1.0) / (alpha * t_max) * alpha_mean / (alpha_mean - 1.0)
        r_core = (0.0251 + 0.00319 * ln_e) + (0.1162 - 0.000381 * z) * tau
        k1, k2, k3, k4 = 0.659 - 0.00309 * z, 0.645, -2.59, 0.3585 + prm.k4 * ln_e
        r_tail = k1 * (np.exp(k3 * (tau - k2)) + np.exp(k4 * (tau - k2)))
        p1, p2, p3 = 2.632 - 0.00094 * z, 0.401 + 0.00187 * z, 1.313 - 0.0686 * ln_e
        p_core = p1 * np.exp((p2 - tau) / p3 - np.exp((p2 - tau) / p3))
        # Sampling corrections, with each layer's own samplings per X0.
        r_core = r_core - 0.0203 * (1 - e_hat) + 0.0397 * self._inv_fs * np.exp(-tau)
        r_tail = r_tail - 0.14 * (1 - e_hat) - 0.495 * self._inv_fs * np.exp(-tau)
        p_core = p_core + (1 - e_hat) * (0.348 - 0.642 * self._inv_fs * np.exp(-((tau - 1) ** 2)))
        scale_mm = prm.radius_scale * self._moliere_mm
        # Clipping is not in Geant4; it keeps radii positive and p a probability at small tau.
        return (
            np.maximum(r_core, 1e-3) * scale_mm,
            np.maximum(r_tail, 1e-3) * scale_mm,
            np.clip(prm.core_fraction_scale * p_core, 0.0, 1.0),
        )

    def lateral_fractions(self, ep: FloatArray, profile: dict[str, FloatArray], rng: np.random.Generator) -> FloatArray:
        """Fraction of each layer's energy in each pad; shape (N, 25, 25, 25) [x, y, layer].

        The sum over a layer's pads is below 1 by the lateral leakage out of the window.
        """
        r_core, r_tail, p_core = self.radial_parameters(ep, profile)
        if self.params.impact_spread_mm > 0:
            offset_mm = self.params.impact_spread_mm * rng.standard_normal((2, len(ep)))
            x_mm = self._edges_mm[None, :] - offset_mm[0][:, None]  # (N, 26)
            y_mm = self._edges_mm[None, :] - offset_mm[1][:, None]
            core, tail = (_pad_fractions(x_mm, y_mm, r) for r in (r_core, r_tail))
        else:
            core, tail = (_centred_pad_fractions(self._edges_mm, r) for r in (r_core, r_tail))
        mixed = p_core[:, :, None, None] * core + (1.0 - p_core)[:, :, None, None] * tail  # (N, 25 layers, x, y)
        return np.moveaxis(mixed, 1, -1)

    # -- cell fluctuations ----------------------------------------------------------------------

    def _spot_fluctuations(self, mean_deposit_gev: FloatArray, rng: np.random.Generator) -> FloatArray:
        """Compound Poisson-Gamma cell energies around the mean deposit, in visible GeV (float64).

        n ~ Poisson(deposit / spot energy) spots per cell, each with Gamma(spot_shape) energy; the
        sum of n such spots is Gamma(n * spot_shape), so one draw per cell suffices.
        """
        p = self.params
        spots = rng.poisson(mean_deposit_gev / p.spot_energy_gev)
        hit = spots > 0
        deposit = np.zeros(mean_deposit_gev.shape, dtype=np.float64)
        deposit[hit] = rng.gamma(spots[hit] * p.spot_shape) * (p.spot_energy_gev / p.spot_shape)
        deposit *= self._visible_per_deposit
        return deposit

    def _track_fluctuations(self, mean_visible_gev: FloatArray, rng: np.random.Generator) -> FloatArray:
        """Cells crossed by n ~ Poisson(mean / MIP mean) charged tracks, each a Landau MIP; visible GeV.

        Used for the early component, whose energy reaches the silicon as a few separate tracks
        (the primary's first pairs), not as the many soft particles of a developed shower.
        """
        tracks = rng.poisson(mean_visible_gev / MIP_MEAN_GEV)
        visible = np.zeros(mean_visible_gev.shape, dtype=np.float64)
        hit = np.flatnonzero(tracks)
        counts = tracks.ravel()[hit]
        np.add.at(visible.reshape(-1), np.repeat(hit, counts), landau_mip_gev(rng, int(counts.sum())))
        return visible


def landau_mip_gev(rng: np.random.Generator, shape: int | tuple[int, ...]) -> FloatArray:
    """Energy a minimum-ionising track leaves in one 0.5 mm silicon sensor, GeV (Landau-like).

    The Moyal approximation of the Landau distribution, MPV - xi ln(Z^2) with Z standard normal:
    most probable value ``MIP_MPV_GEV`` and width ``MIP_XI_GEV``. Its high tail is lighter than
    Landau's (no single hard delta ray), which is what a 5 mm pad that contains most delta rays sees.
    """
    return MIP_MPV_GEV - MIP_XI_GEV * np.log(rng.standard_normal(shape) ** 2)


def _gamma_plus_exponential_cdf(alpha: FloatArray, beta: FloatArray, rate: FloatArray, t: FloatArray) -> FloatArray:
    """P(X + Y <= t) for X ~ Gamma(alpha, rate beta) and Y ~ Exp(rate), rate < beta (all per X0).

    P(alpha, beta t) - exp(-rate t) (beta / (beta - rate))^alpha P(alpha, (beta - rate) t): the depth
    profile of energy that follows the Gamma profile and then travels an exponential path.
    """
    return gammainc(alpha, beta * t) - _exponential_delay_deficit(alpha, beta, rate, t)


def _exponential_delay_deficit(alpha: FloatArray, beta: FloatArray, rate: FloatArray, t: FloatArray) -> FloatArray:
    """P(X <= t) - P(X + Y <= t) of :func:`_gamma_plus_exponential_cdf`: what the extra path moves past t."""
    shrink = beta - rate
    return np.exp(alpha * np.log(beta / shrink) - rate * t) * gammainc(alpha, shrink * t)


def _clamped_inverse(denominator: FloatArray) -> FloatArray:
    """1/denominator clamped to (0, 0.5], as GFlash clamps its widths (also where it diverges)."""
    with np.errstate(divide="ignore"):
        inverse = np.where(denominator > 0, 1.0 / np.maximum(denominator, 1e-12), 0.5)
    return np.minimum(inverse, 0.5)


def _pad_fractions(x_mm: FloatArray, y_mm: FloatArray, radius_mm: FloatArray) -> FloatArray:
    """Integral of the 2-D density R^2 / (pi (x^2 + y^2 + R^2)^2) over each pad.

    Parameters
    ----------
    x_mm, y_mm : ndarray, shape (N, P + 1)
        Pad edges relative to the shower axis, mm.
    radius_mm : ndarray, shape (N, L)
        Radial scale R per shower and layer, mm.

    Returns
    -------
    ndarray, shape (N, L, P, P)
        Fraction in each pad [x, y]; the density's radial marginal is 2 r R^2 / (r^2 + R^2)^2.

    Notes
    -----
    The integral over [0, a] x [0, b] is G(a, b) = (1/2 pi) [a/s_a atan(b/s_a) + b/s_b atan(a/s_b)]
    with s_a = sqrt(a^2 + R^2) (spec step 5); G is odd in a and b, so a pad's share is a double
    difference of G on the corner grid.
    """
    corners = _half_corner_integral(x_mm, y_mm, radius_mm)
    corners = corners + np.swapaxes(_half_corner_integral(y_mm, x_mm, radius_mm), -1, -2)
    return np.diff(np.diff(corners, axis=-1), axis=-2)


def _centred_pad_fractions(edges_mm: FloatArray, radius_mm: FloatArray) -> FloatArray:
    """:func:`_pad_fractions` for an axis through the centre of the middle pad, 8x cheaper.

    With mirror-symmetric edges shared by x and y, G is needed only on the positive quadrant
    (G odd in each argument), and its second term is the transpose of the first.
    """
    n_edges = len(edges_mm)
    positive = edges_mm[n_edges // 2 :]
    if n_edges % 2 or not np.allclose(edges_mm[: n_edges // 2], -positive[::-1]):
        raise ValueError(f"edges must be mirror-symmetric with an even count, received {edges_mm}")
    half = _half_corner_integral(positive[None, :], positive[None, :], radius_mm)
    quadrant = half + np.swapaxes(half, -1, -2)
    index = np.concatenate([np.arange(len(positive))[::-1], np.arange(len(positive))])
    sign = np.where(np.arange(n_edges) < n_edges // 2, -1.0, 1.0)
    corners = quadrant[..., index[:, None], index[None, :]] * np.outer(sign, sign)
    return np.diff(np.diff(corners, axis=-1), axis=-2)


def _half_corner_integral(a_mm: FloatArray, b_mm: FloatArray, radius_mm: FloatArray) -> FloatArray:
    """First term of G: (1/2 pi) a/s_a atan(b/s_a) on the grid a x b; shape (N, L, A, B)."""
    r2 = (radius_mm**2)[:, :, None]
    a = a_mm[:, None, :]  # (N, 1, A)
    s_a = np.sqrt(a * a + r2)  # (N, L, A)
    ratio = b_mm[:, None, None, :] / s_a[..., :, None]
    return (a / s_a)[..., :, None] * np.arctan(ratio) / (2.0 * math.pi)


def simulate_showers(
    ep_gev: npt.ArrayLike, *, seed: int | None = None, params: ShowerParameters = CALIBRATED
) -> FloatArray:
    """Convenience wrapper: ``ShowerSimulator(params).simulate(ep_gev, default_rng(seed))``."""
    return ShowerSimulator(params).simulate(ep_gev, np.random.default_rng(seed))


def with_overrides(params: ShowerParameters, **changes: float) -> ShowerParameters:
    """A copy of ``params`` with some constants changed (used by the calibration fit)."""
    return replace(params, **changes)
