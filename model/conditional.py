"""Conditional MI I(X; Y | Z) from amortized MI estimates, with intervals calibrated on CMI tasks.

The chain rule, both ways round (so that swapping X and Y changes nothing):

    I(X; Y | Z) = I(X; YZ) − I(X; Z) = I(Y; XZ) − I(Y; Z).

The median is the mean of the two differences of the network's medians. Its spread is read from the terms'
quantile spreads (added in quadrature) and from the disagreement of the two ways round, so the interval widens
where the statistics disagree. The spread is turned into quantiles by offsets fitted by split-conformal
calibration on CMI tasks the network never trained on (:func:`calibrate`, run by ``mist calibrate-cmi``): the
τ-quantile of the normalized residual (truth − median) / spread, with the finite-sample correction. The
conditional-independence test is a conformal p-value against the same run's null tasks (truth 0).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

SPREAD_LEVELS = (0.05, 0.95)  # the term quantiles whose distance from the median makes the spread
FLOOR = 1e-3  # nats: a spread never below this (constant sides give exact zeros)


@dataclass(frozen=True)
class Combined:
    """The chain-rule combination of one sample's four MI terms."""

    median: float  # the mean of the two ways round, clamped at 0
    spread_down: float
    spread_up: float
    difference: float  # the same mean before the clamp: the CI test's statistic (the clamp would tie its nulls at 0)


@dataclass
class Calibration:
    """Conformal offsets per quantile level, and the null statistics of the CI test, for one checkpoint."""

    checkpoint_version: str
    levels: list[float]
    offsets: list[float]  # c_τ: quantile τ = median + c_τ · spread (spread_down where c_τ < 0), clamped at 0
    null_statistics: list[float]  # the unclamped difference on the calibration's null tasks, sorted
    tasks: int
    spec: dict

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        return cls(**json.loads(Path(path).read_text()))

    def quantiles(self, c: Combined, levels: Sequence[float]) -> np.ndarray:
        offsets = np.interp(levels, self.levels, self.offsets)
        spread = np.where(offsets < 0, c.spread_down, c.spread_up)
        return np.maximum(c.median + offsets * spread, 0.0)

    def null_level(self, c: Combined) -> float:
        """A conformal p-value of I(X; Y | Z) = 0: the share of null calibration tasks (plus this one) whose
        unclamped chain-rule difference is at least this sample's."""
        stats = np.asarray(self.null_statistics)
        return float((1 + np.count_nonzero(stats >= c.difference)) / (len(stats) + 1))


def chain_pairs(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The four MI terms of the two chain rules: (X; YZ), (Y; XZ), (X; Z), (Y; Z)."""
    return [(x, np.hstack([y, z])), (y, np.hstack([x, z])), (x, z), (y, z)]


def combine(terms: np.ndarray, grid: np.ndarray) -> Combined:
    """``terms``: the four terms' quantiles on the network's ``grid``, ``(4, len(grid))``, in nats."""
    lo, mid, hi = (np.array([np.interp(q, grid, t) for t in terms]) for q in (SPREAD_LEVELS[0], 0.5, SPREAD_LEVELS[1]))
    ways = mid[:2] - mid[2:]  # the two chain rules
    disagreement = 0.5 * (ways[0] - ways[1])
    up = np.sqrt(np.mean((hi[:2] - mid[:2]) ** 2 + (mid[2:] - lo[2:]) ** 2) + disagreement**2)
    down = np.sqrt(np.mean((mid[:2] - lo[:2]) ** 2 + (hi[2:] - mid[2:]) ** 2) + disagreement**2)
    return Combined(float(max(ways.mean(), 0.0)), float(max(down, FLOOR)), float(max(up, FLOOR)), float(ways.mean()))


def normalized_residual(c: Combined, truth: float) -> float:
    diff = truth - c.median
    return diff / (c.spread_up if diff >= 0 else c.spread_down)


def conformal_offsets(residuals: np.ndarray, levels: Sequence[float]) -> list[float]:
    """The split-conformal τ-quantile of the residuals for each level: the ⌈τ(N + 1)⌉-th smallest above the
    median level and the ⌊τ(N + 1)⌋-th below it (clipped to the sample), non-decreasing in τ."""
    r = np.sort(residuals)
    n = len(r)
    out = []
    for tau in levels:
        rank = np.ceil(tau * (n + 1)) if tau >= 0.5 else np.floor(tau * (n + 1))
        out.append(float(r[int(np.clip(rank, 1, n)) - 1]))
    return list(np.maximum.accumulate(out))


def fit_calibration(
    combined: Sequence[Combined], truths: Sequence[float], levels: Sequence[float], version: str, spec: dict
) -> Calibration:
    residuals = np.array([normalized_residual(c, t) for c, t in zip(combined, truths, strict=True)])
    nulls = sorted(c.difference for c, t in zip(combined, truths, strict=True) if t == 0.0)
    return Calibration(version, list(levels), conformal_offsets(residuals, levels), nulls, len(residuals), spec)
