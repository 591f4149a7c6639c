"""MI when one side or both are discrete (labels, flags, counts), each with a standard error, so an answer carries
an interval like the network's.

- Both discrete: the plug-in MI of the contingency table with the Miller–Madow correction, I = I_plugin +
  (K_x + K_y − K_xy − 1) / (2n) over the K observed levels and cells. Its variance is the delta method's,
  (E[log² r] − I²) / n with r = p(x, y) / (p(x) p(y)), plus the null variance df / (2n²) of the χ² law that
  2n·I_plugin follows under independence (df = (K_x − 1)(K_y − 1), at least 1), plus the square of the
  correction itself (the bias left by cells never seen is of its order).
- One discrete, one continuous: Ross's kNN estimator (PLoS ONE 2014; scikit-learn's ``mutual_info_classif``),
  I = ψ(n) + ψ(k) − ⟨ψ(n_c)⟩ − ⟨ψ(m)⟩: the distance to the k-th neighbour of the same class, and the number m
  of points of any class within it. Its variance is read from :data:`HALVES` half-samples (a half-sample's
  spread about its mean is the full sample's, σ²(1/m − 1/n) = σ²/n at m = n/2), and the difference between the
  half-samples' mean and the full estimate (its finite-n bias) is added in quadrature.

Quantiles are normal about the estimate, clipped at 0. :func:`looks_discrete` is the ``"auto"`` rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from scipy.spatial import cKDTree
from scipy.special import digamma, ndtri

from model.ties import cell_keys, value_keyed_jitter
from model.validation import InputError

MAX_AUTO_LEVELS = 32  # "auto": integer-valued with at most this many distinct values ...
MIN_ROWS_PER_LEVEL = 5  # ... and at least this many rows per value on average
ROSS_K = 3  # Ross's (and scikit-learn's) neighbour count
HALVES = 20  # half-samples behind the discrete–continuous standard error
ROSS_MAX_CELLS = 200_000  # continuous numbers Ross's estimator takes: about 7 s at n = 200 000, one dimension
ROSS_MAX_CLASSES = 1_000  # classes beside a continuous side (a k-d tree each, per half-sample)
PLUG_IN, ROSS = "plug_in_miller_madow", "ross_knn"  # the ``method`` an answer reports

Discreteness = bool | Literal["auto"]


def looks_discrete(a: np.ndarray) -> bool:
    """The ``"auto"`` rule: every column integer-valued, with at most :data:`MAX_AUTO_LEVELS` distinct values and
    at least :data:`MIN_ROWS_PER_LEVEL` rows per value on average."""
    a = a.reshape(len(a), -1)
    if not np.all(a == np.round(a)):
        return False
    levels = [len(np.unique(column)) for column in a.T]
    return all(k <= min(MAX_AUTO_LEVELS, len(a) // MIN_ROWS_PER_LEVEL) for k in levels)


def resolve(flag: Discreteness, a: np.ndarray, field: str) -> bool:
    """A side's declared discreteness (True, False or ``"auto"``) as a bool; a side declared discrete must repeat
    its values (a column of distinct values is continuous, and a plug-in on it would read log n)."""
    if flag == "auto":
        return looks_discrete(a)
    if not isinstance(flag, bool | np.bool_):
        raise InputError(field, f"must be true, false or 'auto', got {flag!r}")
    if flag:
        levels = int(codes(a).max()) + 1
        if levels > len(a) // 2:
            raise InputError(field, f"is declared discrete but has {levels} distinct values in {len(a)} rows; a "
                             "discrete column repeats its values: declare it continuous")  # fmt: skip
    return bool(flag)


def codes(a: np.ndarray) -> np.ndarray:
    """Each row's index among the distinct rows of ``a`` (a multi-column discrete side is one joint label)."""
    return np.unique(a.reshape(len(a), -1), axis=0, return_inverse=True)[1].ravel()


def plug_in(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Miller–Madow-corrected plug-in MI of two discrete sides, and its standard error (nats). Only the observed
    cells are counted (memory O(n) however many levels each side has)."""
    n = len(x)
    cx, cy = codes(x), codes(y)
    kx, ky = int(cx.max()) + 1, int(cy.max()) + 1
    cells, cell_counts = np.unique(cx.astype(np.int64) * ky + cy, return_counts=True)
    p = cell_counts / n
    px, py = np.bincount(cx) / n, np.bincount(cy) / n
    log_ratio = np.log(p / (px[cells // ky] * py[cells % ky]))
    value = float(p @ log_ratio)
    correction = (kx + ky - len(cells) - 1) / (2 * n)
    variance = max(float(p @ log_ratio**2) - value**2, 0.0) / n
    null_variance = max((kx - 1) * (ky - 1), 1) / (2.0 * n * n)
    return max(float(value + correction), 0.0), float(np.sqrt(variance + null_variance + correction**2))


def _ross(labels: np.ndarray, y: np.ndarray, k: int = ROSS_K) -> float:
    _, label, counts = np.unique(labels, return_inverse=True, return_counts=True)
    label = label.ravel()
    in_class = counts[label]
    keep = in_class > 1  # a class seen once has no neighbour of its own (scikit-learn drops it too)
    radius = np.zeros(len(y))
    for c in np.flatnonzero(counts > 1):
        members = np.flatnonzero(label == c)
        kc = min(k, len(members) - 1)
        radius[members] = cKDTree(y[members]).query(y[members], k=kc + 1, p=np.inf)[0][:, -1]
    kept = y[keep]
    within = cKDTree(kept).query_ball_point(kept, np.nextafter(radius[keep], 0), p=np.inf, return_length=True)
    ks = np.minimum(k, in_class[keep] - 1)
    return float(digamma(keep.sum()) + np.mean(digamma(ks) - digamma(in_class[keep]) - digamma(within)))


def _ross_inputs(discrete: np.ndarray, continuous: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The labels, the continuous side standardized with its ties broken, and each cell's value key."""
    labels = codes(discrete)
    y = continuous.reshape(len(continuous), -1).astype(np.float64)
    keys = cell_keys(y, labels[:, None].astype(np.float64))  # of the values as given, before any arithmetic
    std = y.std(0)
    y = (y - y.mean(0)) / np.where(std > 0, std, 1.0) + 1e-10 * value_keyed_jitter(y, labels[:, None])[0]
    return labels, y, keys


def ross(discrete: np.ndarray, continuous: np.ndarray) -> tuple[float, float]:
    """Ross's estimator of I(discrete; continuous) and its half-sample standard error (nats). The continuous side
    is standardized and its ties broken by 1e-10 of value-keyed noise (as :func:`model.baselines.ksg` does); the
    half-samples are drawn over an order of rows keyed by their values, so the answer does not depend on the
    order of rows or columns."""
    labels, y, keys = _ross_inputs(discrete, continuous)
    value = _ross(labels, y)
    order = np.argsort(keys.sum(axis=1, dtype=np.uint64), kind="stable")
    rng = np.random.default_rng(0)
    half = len(y) // 2
    halves = [_ross(labels[rows], y[rows]) for rows in (order[rng.permutation(len(y))[:half]] for _ in range(HALVES))]
    bias = float(np.mean(halves)) - value
    return max(value, 0.0), float(np.hypot(np.std(halves, ddof=1), bias))


def _check_ross_work(discrete: np.ndarray, continuous: np.ndarray, field: str) -> None:
    """Ross's estimator builds a k-d tree per class, 21 times: at most :data:`ROSS_MAX_CELLS` continuous numbers
    and :data:`ROSS_MAX_CLASSES` classes."""
    classes = int(codes(discrete).max()) + 1
    if continuous.size > ROSS_MAX_CELLS or classes > ROSS_MAX_CLASSES:
        raise InputError(field, f"a discrete side beside a continuous one is answered by Ross's kNN estimator, "
                         f"which takes n·d ≤ {ROSS_MAX_CELLS} continuous numbers and ≤ {ROSS_MAX_CLASSES} classes; "
                         f"this sample has {continuous.size} and {classes}: subsample the rows, merge classes, or "
                         "declare the side continuous")  # fmt: skip


def _constant_side(x: np.ndarray, y: np.ndarray) -> bool:
    """A side whose columns are all constant carries no information: its MI is exactly 0."""
    return any(np.ptp(a, axis=0).max() == 0 for a in (x, y))


def estimate(x: np.ndarray, y: np.ndarray, discrete_x: bool, discrete_y: bool) -> tuple[str, float, float]:
    """The method, the estimate and its standard error for a pair with at least one discrete side; a constant
    side carries no information: exactly 0. Ross's estimator takes at most :data:`ROSS_MAX_CELLS` continuous
    numbers (its k-d trees, 21 of them, slow down like KSG's)."""
    name = PLUG_IN if discrete_x and discrete_y else ROSS
    if name == ROSS:
        _check_ross_work(*((x, y) if discrete_x else (y, x)), "discrete_x" if discrete_x else "discrete_y")
    if _constant_side(x, y):
        return name, 0.0, 0.0
    if discrete_x and discrete_y:
        return PLUG_IN, *plug_in(x, y)
    return ROSS, *(ross(x, y) if discrete_x else ross(y, x))


def point(x: np.ndarray, y: np.ndarray, discrete_x: bool, discrete_y: bool) -> float:
    """:func:`estimate`'s value without its standard error (Ross's half-samples are 20 more k-d tree passes): the
    statistic of the stratified CI test's permutations (:mod:`model.stratified`)."""
    if _constant_side(x, y):
        return 0.0
    if discrete_x and discrete_y:
        return plug_in(x, y)[0]
    return max(_ross(*_ross_inputs(*((x, y) if discrete_x else (y, x)))[:2]), 0.0)


def quantiles(value: float, se: float, levels: Sequence[float]) -> np.ndarray:
    """Normal quantiles about the estimate, clipped at 0 (MI is never negative)."""
    return np.maximum(value + se * ndtri(np.asarray(levels, dtype=np.float64)), 0.0)
