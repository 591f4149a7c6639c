"""Seconds an estimate takes, predicted from its shape before it runs: the server admits work by it.

Fitted on this project's reference machine (2 CPU cores, torch threads 2) by least squares on
``benchmarks/cost_bench.py``'s grid (results in ``benchmarks/results/cost.json``, which also lists each
prediction against its measurement); on faster machines it over-predicts, which only makes admission careful.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

# mist: per forward pass; per row up to the trained n (the kNN statistics' chunks) and past it; per cell n·(dx + dy)
# (the set body). Predicted / measured 0.67–1.47 from n = 100 to 10⁶.
MIST_BASE_S, MIST_PER_CELL_S = 6.1e-3, 3.5e-7
MIST_PER_ROW_S, MIST_ROWS_SATURATE, MIST_PER_LARGE_ROW_S = 8.5e-6, 16384, 6.4e-7
# ksg: c · n^a · (dx + dy)^b, a power law fitted in log space: within a factor 2 either way (the k-d trees' cost
# jumps around d ≈ 16). No margin: refusing work that would finish in time is as wrong as admitting work that
# would not, and the deadline still stops the latter.
KSG_SCALE_S, KSG_ROW_POWER, KSG_DIM_POWER = 4.8e-7, 1.23, 1.40
# the plug-ins (gaussian, gaussian_copula): ranks (n log n per column) and a covariance. Predicted / measured
# 0.36–1.2 (the low end at n·(dx+dy) of 1.6·10⁷, a few seconds).
PLUG_IN_BASE_S, PLUG_IN_PER_SORTED_CELL_S = 4.5e-4, 1.7e-8
# Ross's estimator with 20 half-samples, against one KSG estimate on the same shape: 0.35 s against 0.052 s at
# n = 10 000, 1 + 1 (benchmarks/inference_bench.py's KSG, the same machine).
ROSS_OVER_KSG = 7.0
# the contingency table of two discrete sides, through Estimator.estimate: 1.3 / 29 / 161 ms at n = 1 000 /
# 20 000 / 100 000, 1 + 1 (validation, the joint labels and the table)
TABLE_BASE_S, TABLE_PER_CELL_S = 6e-4, 8e-7


def estimate_seconds(method: str, n: int, dx: int, dy: int) -> float:
    """Predicted seconds of one estimate of ``method`` on ``n`` rows of ``dx`` + ``dy`` dimensions."""
    d = dx + dy
    if method == "mist":
        return (MIST_BASE_S + MIST_PER_ROW_S * min(n, MIST_ROWS_SATURATE) + MIST_PER_LARGE_ROW_S * n
                + MIST_PER_CELL_S * n * d)  # fmt: skip
    if method == "ksg":
        return KSG_SCALE_S * n**KSG_ROW_POWER * d**KSG_DIM_POWER
    return PLUG_IN_BASE_S + PLUG_IN_PER_SORTED_CELL_S * n * d * math.log(max(n, 2))


def pair_seconds(method: str, n: int, dx: int, dy: int, discrete_x: bool = False, discrete_y: bool = False) -> float:
    """:func:`estimate_seconds` for a pair whose sides may be discrete (:mod:`model.discrete`): both, a contingency
    table (:data:`TABLE_BASE_S`, :data:`TABLE_PER_CELL_S`); one, Ross's kNN estimator on the full sample and its
    half-samples (:data:`ROSS_OVER_KSG` times one KSG estimate)."""
    if discrete_x and discrete_y:
        return TABLE_BASE_S + TABLE_PER_CELL_S * n * (dx + dy)
    if discrete_x or discrete_y:
        return ROSS_OVER_KSG * estimate_seconds("ksg", n, dx, dy)
    return estimate_seconds(method, n, dx, dy)


def stratified_seconds(
    method: str, class_sizes: Sequence[int], dx: int, dy: int, discrete_x: bool = False, discrete_y: bool = False
) -> float:
    """Predicted seconds of I(X; Y | Z) by the classes of a discrete z (:mod:`model.stratified`): each class's pair
    (:func:`pair_seconds`) on its own rows. Ross's estimator on a discrete side costs more than the four network
    terms :func:`conditional_seconds` prices (at n = 100 000 with two classes, about 10 s against 0.8 s)."""
    return sum(pair_seconds(method, m, dx, dy, discrete_x, discrete_y) for m in class_sizes)


def conditional_seconds(method: str, n: int, dx: int, dy: int, dz: int) -> float:
    """Predicted seconds of one I(X; Y | Z): mist's four chain-rule terms, Frenzel–Pompe's one kNN search in
    all dx + dy + dz dims (costed like KSG's), the copula's two plug-ins."""
    if method == "mist":
        return sum(estimate_seconds("mist", n, a, b) for a, b in ((dx, dy + dz), (dy, dx + dz), (dx, dz), (dy, dz)))
    if method == "frenzel_pompe":
        return estimate_seconds("ksg", n, dx, dy + dz)
    return 2 * estimate_seconds(method, n, dx, dy + dz)
