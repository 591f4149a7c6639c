"""Conditional MI I(X; Y | Z) from amortized MI estimates, with intervals calibrated on CMI tasks.

The chain rule, both ways round (so that swapping X and Y changes nothing):

    I(X; Y | Z) = I(X; YZ) − I(X; Z) = I(Y; XZ) − I(Y; Z).

The median is the mean of the two differences of the network's medians. Its spread is read from the terms'
quantile spreads (added in quadrature) and from the disagreement of the two ways round, so the interval widens
where the statistics disagree. The spread is turned into quantiles by offsets fitted by split-conformal
calibration on CMI tasks the network never trained on (:mod:`model.conformal`, run by ``mist calibrate-cmi``).

The offsets hold over CMI tasks as a whole, not on the null tasks alone: on held-out 1 + 1 + 1 nulls the 5 %
quantile was above 0 in 0.30 of tasks. So a quantile below the median is 0 wherever the CI test's p-value (below)
exceeds its level: the interval holds 0 whenever the test keeps CMI = 0 at that level (test–interval duality), and
an interval that excludes 0 implies the test says "dependent".

The conditional-independence test is a conformal p-value against the same run's null tasks (truth 0). Under the
null the chain-rule difference is not centred at 0: the network's errors on I(X; YZ) and I(X; Z) differ with the
shape (on linear- and tanh-linked calibration nulls the median is −0.02 nats at 1 + 1 + 1 dims and −0.15 at
dz = 1 with more dims in X and Y) and with how strongly X
and Y depend on Z. So the test's statistic is the difference less a *null location* fitted by least squares on
the null tasks, linear in :func:`null_features` (log dims, log n, the I(X; Z) + I(Y; Z) medians); the p-value
ranks that residual among the null tasks' residuals.
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


class CalibrationError(ValueError):
    """A ``.cmi.json`` that cannot answer: written by an older version, or naming a checkpoint without one."""


@dataclass(frozen=True)
class Combined:
    """The chain-rule combination of one sample's four MI terms."""

    median: float  # the mean of the two ways round, clamped at 0
    spread_down: float
    spread_up: float
    difference: float  # the same mean before the clamp (the clamp would tie the CI test's nulls at 0)
    features: tuple[float, ...]  # :func:`null_features` of the sample: where its null difference lies


@dataclass
class Calibration:
    """Conformal offsets per quantile level, and the null statistics of the CI test, for one checkpoint."""

    checkpoint_version: str
    levels: list[float]
    offsets: list[float]  # c_τ: quantile τ = median + c_τ · spread (spread_down where c_τ < 0), clamped at 0
    null_statistics: list[float]  # the null tasks' residuals: difference − null location, sorted
    tasks: int
    spec: dict
    null_coefficients: list[float]  # the null location: coefficients of :func:`null_features`

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        return cls.from_fields(json.loads(Path(path).read_text()), path)

    @classmethod
    def from_fields(cls, fields: dict, source: str | Path) -> Calibration:
        """The calibration read from ``source`` (a ``.cmi.json``), or a message that says how to renew it."""
        if "null_coefficients" not in fields:
            raise CalibrationError(f"{source} was written before the CI test's null location (mist 0.3.1): rerun "
                             "`mist calibrate-cmi --checkpoint` on its checkpoint")  # fmt: skip
        return cls(**fields)

    def quantiles(self, c: Combined, levels: Sequence[float]) -> np.ndarray:
        """The calibrated quantiles at ``levels``; those below the median and below the CI test's p-value
        (:meth:`null_level`) are 0, so an interval holds 0 whenever the test at its level keeps I(X; Y | Z) = 0."""
        levels = np.asarray(levels, dtype=float)
        offsets = np.interp(levels, self.levels, self.offsets)
        q = np.maximum(offset_quantiles(c.median, c.spread_down, c.spread_up, offsets), 0.0)
        return np.where((levels < 0.5) & (levels < self.null_level(c)), 0.0, q)

    def null_residual(self, c: Combined) -> float:
        return null_residual(self.null_coefficients, c)

    def null_level(self, c: Combined) -> float:
        """A conformal p-value of I(X; Y | Z) = 0: the share of null calibration tasks (plus this one) whose
        residual is at least this sample's."""
        stats = np.asarray(self.null_statistics)
        return float((1 + np.count_nonzero(stats >= self.null_residual(c))) / (len(stats) + 1))


def chain_pairs(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The four MI terms of the two chain rules: (X; YZ), (Y; XZ), (X; Z), (Y; Z)."""
    return [(x, np.hstack([y, z])), (y, np.hstack([x, z])), (x, z), (y, z)]


def null_features(marginal_terms: Sequence[float], n: int, dx: int, dy: int, dz: int) -> tuple[float, ...]:
    """What the null location is linear in: 1, s, log dz, log n, I(X; Z) + I(Y; Z) (medians, nats), s · log dz,
    (log dz)², s · log n, where s = log dx + log dy. Symmetric in X and Y, as the statistic is."""
    lz, ln = np.log(dz), np.log(n)
    s = np.log(dx) + np.log(dy)
    return tuple(float(v) for v in (1.0, s, lz, ln, sum(marginal_terms), s * lz, lz * lz, s * ln))


def combine(terms: np.ndarray, grid: np.ndarray, shape: tuple[int, int, int, int]) -> Combined:
    """``terms``: the four terms' quantiles on the network's ``grid``, ``(4, len(grid))``, in nats, of a sample
    of ``shape = (n, dx, dy, dz)``."""
    lo, mid, hi = (np.array([np.interp(q, grid, t) for t in terms]) for q in (SPREAD_LEVELS[0], 0.5, SPREAD_LEVELS[1]))
    ways = mid[:2] - mid[2:]  # the two chain rules
    disagreement = 0.5 * (ways[0] - ways[1])
    up = np.sqrt(np.mean((hi[:2] - mid[:2]) ** 2 + (mid[2:] - lo[2:]) ** 2) + disagreement**2)
    down = np.sqrt(np.mean((mid[:2] - lo[:2]) ** 2 + (hi[2:] - mid[2:]) ** 2) + disagreement**2)
    return Combined(float(max(ways.mean(), 0.0)), float(max(down, FLOOR)), float(max(up, FLOOR)), float(ways.mean()),
                    null_features(mid[2:], *shape))  # fmt: skip


def fit_calibration(
    combined: Sequence[Combined], truths: Sequence[float], levels: Sequence[float], version: str, spec: dict
) -> Calibration:
    sides = np.array([(c.median, c.spread_down, c.spread_up) for c in combined]).reshape(-1, 3)
    residuals = normalized_residuals(truths, *sides.T)
    null = [c for c, t in zip(combined, truths, strict=True) if t == 0.0]
    coefficients = fit_null_location(null)
    stats = sorted(null_residual(coefficients, c) for c in null)
    return Calibration(version, list(levels), conformal_offsets(residuals, levels), stats, len(residuals), spec,
                       coefficients)  # fmt: skip


def null_residual(coefficients: Sequence[float], c: Combined) -> float:
    """The CI test's statistic: the chain-rule difference less the null location at ``c``'s features."""
    return float(c.difference - np.dot(coefficients, c.features))


def fit_null_location(null: Sequence[Combined], ridge: float = 1e-6) -> list[float]:
    """Least squares of the null tasks' differences on their features (a tiny ridge keeps it defined when
    there are fewer tasks than features). The residuals are in-sample: with 8 coefficients on hundreds of null
    tasks they are about 1 % narrower than out-of-sample ones."""
    if not null:
        raise ValueError("the CI test's calibration needs at least one null task (truth 0)")
    F = np.array([c.features for c in null], dtype=float)
    d = np.array([c.difference for c in null])
    return [float(b) for b in np.linalg.solve(F.T @ F + ridge * len(F) * np.eye(F.shape[1]), F.T @ d)]
