"""Screening a table: the MI of every column against a target, and the matrix of MI between all pairs of columns,
each answer with its interval (mist) and through the one estimate path (:meth:`Estimator.estimate_batch`: pairs of
one shape share forward passes).

Discrete columns need no declaration: ties are broken by value-keyed noise (:mod:`model.ties`), which keeps the
MI of a discrete column exactly, so integer labels, binary flags and rounded measurements are read as recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from model.validation import MAX_PAIRWISE_COLUMNS, MAX_SCREEN_COLUMNS, InputError, as_matrix

if TYPE_CHECKING:
    from model.estimator import Estimate, Estimator

PAIRS_PER_STEP = 256  # pairs estimated between two calls of ``between`` (a progress bar, or a cancellation check)

Between = Callable[[int, int], None]  # called with (pairs done, pairs in all) after each step; may raise to stop


@dataclass
class PairwiseMI:
    """The p × p matrices (nats) of the median and the 90 % interval's bounds; the diagonal is NaN (I(X; X) is
    infinite for a continuous X), and so are the bounds for a baseline method."""

    names: list[str]
    mi_nats: np.ndarray
    lower: np.ndarray
    upper: np.ndarray


def _table(X: Any, columns: Sequence[str] | None, field: str) -> tuple[np.ndarray, list[str]]:
    names = [str(c) for c in X.columns] if hasattr(X, "columns") else None  # a pandas DataFrame keeps its labels
    table = as_matrix(X.to_numpy() if names else X, field)
    if columns is not None:
        if len(columns) != table.shape[1]:
            raise InputError("columns", f"names {len(columns)} columns; {field} has {table.shape[1]}")
        names = [str(c) for c in columns]
    return table, names or [str(j) for j in range(table.shape[1])]


def _in_steps(est: Estimator, pairs: list[tuple], quantiles, method: str, between: Between | None) -> list[Estimate]:
    """:meth:`Estimator.estimate_batch` over the pairs, :data:`PAIRS_PER_STEP` at a time, calling ``between``
    after each step (the request itself is checked before the first step)."""
    est.check_request(quantiles, method)
    answers: list[Estimate] = []
    for start in range(0, len(pairs), PAIRS_PER_STEP):
        answers += est.estimate_batch(pairs[start : start + PAIRS_PER_STEP], quantiles, method)
        if between is not None:
            between(len(answers), len(pairs))
    return answers


def screen(
    est: Estimator, X: Any, target: Any, *, method: str = "mist", quantiles: Sequence[float] | None = None,
    columns: Sequence[str] | None = None, between: Between | None = None,
) -> dict[str, Estimate]:  # fmt: skip
    """I(X_j; target) for every column j of ``X`` (``target`` may be multi-dimensional), by column name."""
    table, names = _table(X, columns, "X")
    if table.shape[1] > MAX_SCREEN_COLUMNS:
        raise InputError("X", f"has {table.shape[1]} columns; at most {MAX_SCREEN_COLUMNS} are screened at once")
    y = as_matrix(target, "target")
    if len(y) != len(table):
        raise InputError("target", f"has {len(y)} rows but X has {len(table)}")
    answers = _in_steps(est, [(table[:, [j]], y) for j in range(table.shape[1])], quantiles, method, between)
    return dict(zip(names, answers, strict=True))


def ranked(answers: dict[str, Estimate]) -> list[tuple[str, Estimate]]:
    """Screening answers, most informative column first."""
    return sorted(answers.items(), key=lambda kv: -kv[1].mi_nats)


def pairwise(
    est: Estimator, X: Any, *, method: str = "mist", columns: Sequence[str] | None = None,
    between: Between | None = None,
) -> PairwiseMI:  # fmt: skip
    """I(X_i; X_j) for every pair of columns of ``X``."""
    table, names = _table(X, columns, "X")
    p = table.shape[1]
    if not 2 <= p <= MAX_PAIRWISE_COLUMNS:
        raise InputError("X", f"has {p} columns; pairwise takes 2 to {MAX_PAIRWISE_COLUMNS}")
    pairs = [(i, j) for i in range(p) for j in range(i + 1, p)]
    answers = _in_steps(est, [(table[:, [i]], table[:, [j]]) for i, j in pairs], None, method, between)
    mats = [np.full((p, p), np.nan) for _ in range(3)]
    for (i, j), a in zip(pairs, answers, strict=True):
        lo, hi = a.interval_90 or (np.nan, np.nan)
        for mat, value in zip(mats, (a.mi_nats, lo, hi), strict=True):
            mat[i, j] = mat[j, i] = value
    return PairwiseMI(names, *mats)
