"""Calibrated MI intervals: the network's quantiles reshaped by split-conformal offsets (:mod:`model.conformal`)
fitted on tasks the network never trained on, held-out families included.

On the scale u = log(1 + MI), a sample's median m is the network's and is never moved (point estimates are the
network's). The spread on each side is the network's own 5–95 % half-width, widened in quadrature by w · D, where
D is the ``knn_spread`` statistic (how far the kNN statistics at three chunk sizes disagree with each other and
with the copula anchor):

    down = sqrt((m − u₀.₀₅)² + (w·D)²),    up = sqrt((u₀.₉₅ − m)² + (w·D)²),

so an interval widens where the statistics disagree. The weight w is chosen on the calibration tasks alone, by
two-fold cross-fitting of the mean interval score of the 90 % interval (a proper scoring rule, Gneiting & Raftery
2007). ``mist calibrate`` fits it and stores it in the checkpoint (:mod:`model.training.calibrate`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from model.conformal import conformal_offsets, normalized_residuals, offset_quantiles

DISAGREEMENT = "knn_spread"  # the statistic (model.network.STAT_NAMES) that widens the spread
SPREAD_LEVELS = (0.05, 0.95)  # the network quantiles whose distance from the median is its own spread
WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0)  # candidate disagreement weights w
FLOOR = 1e-3  # a spread never below this on the log(1 + MI) scale
SCORED = (0.05, 0.95)  # the interval whose score picks w


@dataclass(frozen=True)
class IntervalCalibration:
    """Offsets c_τ on the network's grid levels (0 at the median) and the disagreement weight w."""

    levels: tuple[float, ...]
    offsets: tuple[float, ...]
    disagreement_weight: float
    tasks: int
    report: dict = field(default_factory=dict)  # how it was fitted and what it covers (written by the fit)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> IntervalCalibration:
        return cls(tuple(d["levels"]), tuple(d["offsets"]), float(d["disagreement_weight"]), int(d["tasks"]),
                   dict(d.get("report", {})))  # fmt: skip

    def apply(self, grid_q: np.ndarray, disagreement: np.ndarray) -> np.ndarray:
        """Calibrated quantiles in nats on the same levels, ``(B, Q)``; a quantile at exactly 0 stays 0."""
        grid_q = np.atleast_2d(grid_q)
        m, down, up = spreads(grid_q, self.levels, disagreement, self.disagreement_weight)
        out = np.expm1(np.maximum(offset_quantiles(m, down, up, self.offsets), 0.0))
        # Where the network's quantile is exactly 0 it says "MI may be 0" (its lower levels clamp there): the
        # calibrated one stays 0, so no interval that held 0 loses it.
        return np.where(grid_q > 0, out, 0.0)


def spreads(grid_q: np.ndarray, levels: Sequence[float], disagreement, weight: float):
    """The median and the two spreads on the log(1 + MI) scale, each ``(B,)``."""
    u = np.log1p(np.maximum(np.atleast_2d(grid_q), 0.0))
    lo, m, hi = (u[:, list(levels).index(t)] for t in (SPREAD_LEVELS[0], 0.5, SPREAD_LEVELS[1]))
    extra = (weight * np.asarray(disagreement, dtype=float)) ** 2
    return m, np.maximum(np.sqrt((m - lo) ** 2 + extra), FLOOR), np.maximum(np.sqrt((hi - m) ** 2 + extra), FLOOR)


def fit_offsets(grid_q, disagreement, truth, levels: Sequence[float], weight: float) -> tuple[float, ...]:
    """Conformal offsets per level, signed so that the quantiles stay on their side of the median."""
    m, down, up = spreads(grid_q, levels, disagreement, weight)
    c = np.array(conformal_offsets(normalized_residuals(np.log1p(truth), m, down, up), levels))
    tau = np.asarray(levels)
    return tuple(
        float(v) for v in np.where(tau < 0.5, np.minimum(c, 0.0), np.where(tau > 0.5, np.maximum(c, 0.0), 0.0))
    )


def _calibrated(grid_q, disagreement, levels, weight, offsets) -> np.ndarray:
    return IntervalCalibration(tuple(levels), offsets, weight, 0).apply(grid_q, disagreement)


def interval_score(lo: np.ndarray, hi: np.ndarray, truth: np.ndarray, alpha: float) -> np.ndarray:
    """The interval score of a central (1 − alpha) interval, per task (lower is better)."""
    return (hi - lo) + (2.0 / alpha) * (np.maximum(lo - truth, 0.0) + np.maximum(truth - hi, 0.0))


def _cross_fitted_score(grid_q, disagreement, truth, levels, weight, folds: np.ndarray) -> float:
    idx = [list(levels).index(t) for t in SCORED]
    scores = []
    for f in (0, 1):
        fit, held = folds != f, folds == f
        q = _calibrated(grid_q[held], disagreement[held], levels, weight,
                        fit_offsets(grid_q[fit], disagreement[fit], truth[fit], levels, weight))  # fmt: skip
        lo, hi = np.log1p(q[:, idx[0]]), np.log1p(q[:, idx[1]])
        scores.append(interval_score(lo, hi, np.log1p(truth[held]), SCORED[0] * 2))
    return float(np.concatenate(scores).mean())


def coverage(q: np.ndarray, levels: Sequence[float], truth: np.ndarray) -> float:
    lo, hi = (q[:, list(levels).index(t)] for t in SCORED)
    return float(((lo <= truth) & (truth <= hi)).mean())


def fit_interval_calibration(
    grid_q: np.ndarray, disagreement: np.ndarray, truth: np.ndarray, levels: Sequence[float], groups: Sequence[str]
) -> IntervalCalibration:
    """Choose w, fit the offsets on every task, and report the 90 % coverage before and after: per group and
    leave-one-group-out (offsets fitted without the group, then applied to it), the honest figure for a family
    that calibration never saw."""
    grid_q, disagreement, truth = (np.asarray(a, dtype=float) for a in (grid_q, disagreement, truth))
    groups = np.asarray(groups)
    folds = np.random.default_rng(0).permutation(len(truth)) % 2
    scores = {w: _cross_fitted_score(grid_q, disagreement, truth, levels, w, folds) for w in WEIGHTS}
    weight = min(scores, key=scores.get)
    offsets = fit_offsets(grid_q, disagreement, truth, levels, weight)
    after = _calibrated(grid_q, disagreement, levels, weight, offsets)
    report: dict = {"interval_score_by_weight": {str(w): round(s, 4) for w, s in scores.items()},
                    "coverage_90_before": round(coverage(grid_q, levels, truth), 3),
                    "coverage_90_after": round(coverage(after, levels, truth), 3), "groups": {}}  # fmt: skip
    for g in np.unique(groups):
        s = groups == g
        row = {"tasks": int(s.sum()), "before": round(coverage(grid_q[s], levels, truth[s]), 3)}
        if (~s).any():  # offsets fitted without the group, applied to it
            offsets_without = fit_offsets(grid_q[~s], disagreement[~s], truth[~s], levels, weight)
            held = _calibrated(grid_q[s], disagreement[s], levels, weight, offsets_without)
            row["leave_group_out"] = round(coverage(held, levels, truth[s]), 3)
        report["groups"][str(g)] = row
    return IntervalCalibration(tuple(float(v) for v in levels), offsets, float(weight), len(truth), report)
