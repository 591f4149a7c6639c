"""Conditional MI I(X; Y | Z) from amortized MI estimates, with intervals calibrated on CMI tasks.

The chain rule, both ways round (so that swapping X and Y changes nothing):

    I(X; Y | Z) = I(X; YZ) − I(X; Z) = I(Y; XZ) − I(Y; Z).

The median is the mean of the two differences of the network's medians. Its spread is read from the terms'
quantile spreads (added in quadrature) and from the disagreement of the two ways round, so the interval widens
where the statistics disagree. The spread is turned into quantiles by offsets fitted by split-conformal
calibration on CMI tasks the network never trained on (:mod:`model.conformal`, run by ``mist calibrate-cmi``). The
conditional-independence test is a conformal p-value against the same run's null tasks (truth 0).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from model.conformal import conformal_offsets, normalized_residuals, offset_quantiles

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
        return np.maximum(offset_quantiles(c.median, c.spread_down, c.spread_up, offsets), 0.0)

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


def fit_calibration(
    combined: Sequence[Combined], truths: Sequence[float], levels: Sequence[float], version: str, spec: dict
) -> Calibration:
    sides = np.array([(c.median, c.spread_down, c.spread_up) for c in combined]).reshape(-1, 3)
    residuals = normalized_residuals(truths, *sides.T)
    nulls = sorted(c.difference for c, t in zip(combined, truths, strict=True) if t == 0.0)
    return Calibration(version, list(levels), conformal_offsets(residuals, levels), nulls, len(residuals), spec)
