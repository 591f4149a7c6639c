"""Split-conformal calibration of quantiles from a median and a spread on each side.

A calibration task gives the normalized residual r = (truth − median) / spread, with the upper spread where the
truth lies above the median and the lower one below it (normalized scores, Lei et al. 2018; the quantile form of
conformalized quantile regression, Romano, Patterson & Candès 2019). The offset of level τ is the split-conformal
τ-quantile of the residuals, and quantile τ of a new sample is median + c_τ · spread. On new tasks exchangeable
with the calibration tasks, P(truth ≤ quantile τ) ≥ τ for τ ≥ ½ (≤ τ below), whatever the model.

Used for MI intervals (:mod:`model.intervals`, on the log(1 + MI) scale) and conditional MI
(:mod:`model.conditional`, in nats).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Calibration sizes of the shipped recipe (``mist calibrate``, ``mist calibrate-cmi``), here so that the CLI shows
# them without importing the training code
INTERVAL_TASKS_PER_SOURCE = 400  # MI intervals: tasks from each of the held-in and held-out meta-distributions
CMI_CALIBRATION_TASKS = 1500  # conditional MI: about 600 of them null (truth 0), the CI test's conformal null


def normalized_residuals(truth, median, down, up) -> np.ndarray:
    """(truth − median) / spread, with ``up`` above the median and ``down`` below it (all arrays of one shape)."""
    diff = np.asarray(truth, dtype=float) - np.asarray(median, dtype=float)
    return diff / np.where(diff >= 0, up, down)


def conformal_offsets(residuals: np.ndarray, levels: Sequence[float]) -> list[float]:
    """The split-conformal τ-quantile of the residuals for each level: the ⌈τ(N + 1)⌉-th smallest above the
    median level and the ⌊τ(N + 1)⌋-th below it (clipped to the sample), non-decreasing in τ."""
    r = np.sort(np.asarray(residuals, dtype=float))
    n = len(r)
    if n == 0:
        raise ValueError("conformal calibration needs at least one residual")
    out = []
    for tau in levels:
        rank = np.ceil(tau * (n + 1)) if tau >= 0.5 else np.floor(tau * (n + 1))
        out.append(float(r[int(np.clip(rank, 1, n)) - 1]))
    return list(np.maximum.accumulate(out))


def offset_quantiles(median, down, up, offsets: Sequence[float]) -> np.ndarray:
    """Quantiles median + c · spread for each offset c (``spread = down`` where c < 0): ``(..., len(offsets))``."""
    c = np.asarray(offsets, dtype=float)
    m, d, u = (np.asarray(a, dtype=float)[..., None] for a in (median, down, up))
    return m + c * np.where(c < 0, d, u)
