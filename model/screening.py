"""Screening a table: the MI of every column against a target, and the matrix of MI between all pairs of columns,
each answer with its interval (mist) and through the one estimate path (:meth:`Estimator.estimate_checked`, after
each column is checked once: pairs of one shape share forward passes).

Discrete columns (``discrete_features``: ``"auto"`` by :func:`model.discrete.looks_discrete`, or named) and a
discrete target are answered by :mod:`model.discrete`: the Miller–Madow plug-in when both sides are discrete, Ross's
kNN estimator when one is. A column read as continuous whose values tie is answered with a warning.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from model.discrete import Discreteness, looks_discrete, resolve
from model.ties import material_ties, sorted_columns, tied_columns
from model.validation import (
    MAX_PAIRWISE_COLUMNS,
    MAX_SCREEN_COLUMNS,
    InputError,
    as_matrix,
    check_pair_shape,
    robust_rescale,
)

if TYPE_CHECKING:
    from model.estimator import Estimate, Estimator

PAIRS_PER_STEP = 256  # pairs estimated between two calls of ``between`` (a progress bar, or a cancellation check)

Between = Callable[[int, int], None]  # called with (pairs done, pairs in all) after each step; may raise to stop


@dataclass
class PairwiseMI:
    """The p × p matrices (nats) of the median and the 90 % interval's bounds; the diagonal is NaN (I(X; X) is
    infinite for a continuous X), and so are the bounds of a pair a baseline method answers (a pair with a discrete
    column has bounds whatever the method: :mod:`model.discrete` answers it)."""

    names: list[str]
    mi_nats: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    warnings: list[str] = field(default_factory=list)  # columns with tied values read as continuous


def _table(X: Any, columns: Sequence[str] | None, field: str) -> tuple[np.ndarray, list[str]]:
    names = [str(c) for c in X.columns] if hasattr(X, "columns") else None  # a pandas DataFrame keeps its labels
    table = as_matrix(X.to_numpy() if names else X, field)
    if columns is not None:
        if len(columns) != table.shape[1]:
            raise InputError("columns", f"names {len(columns)} columns; {field} has {table.shape[1]}")
        names = [str(c) for c in columns]
    return table, names or [str(j) for j in range(table.shape[1])]


DiscreteFeatures = Discreteness | Sequence[str] | Sequence[int] | Sequence[bool]


def discrete_columns(table: np.ndarray, names: list[str], discrete_features: DiscreteFeatures) -> np.ndarray:
    """Which columns are discrete: ``"auto"`` (:func:`model.discrete.looks_discrete` per column), True or False
    for all, or the discrete ones as names, indices or a boolean mask (scikit-learn's convention)."""
    p = table.shape[1]
    if isinstance(discrete_features, str):
        if discrete_features != "auto":
            raise InputError("discrete_features", f"must be 'auto', a bool, or columns; got {discrete_features!r}")
        return np.array([looks_discrete(table[:, j]) for j in range(p)], dtype=bool)
    if isinstance(discrete_features, bool | np.bool_):
        return np.full(p, bool(discrete_features))
    chosen = list(discrete_features)
    if chosen and all(isinstance(c, bool | np.bool_) for c in chosen):
        if len(chosen) != p:
            raise InputError("discrete_features", f"a mask of {len(chosen)} entries for {p} columns")
        return np.array(chosen, dtype=bool)
    mask = np.zeros(p, dtype=bool)
    for c in chosen:
        if isinstance(c, int | np.integer) and not isinstance(c, bool) and 0 <= c < p:
            mask[c] = True
        elif str(c) in names:
            mask[names.index(str(c))] = True
        else:
            raise InputError("discrete_features", f"{c!r} is neither a column name nor an index in [0, {p})")
    return mask


def _in_steps(
    est: Estimator, pairs: list[tuple], flags: list[tuple], tied: list[tuple], orders: list[tuple],
    qs: tuple[float, ...], method: str, between: Between | None,
) -> list[Estimate]:  # fmt: skip
    """:meth:`Estimator.estimate_checked` over the checked pairs (``flags``: each pair's discreteness; ``tied``
    and ``orders``: its sides' tied columns and column argsorts), :data:`PAIRS_PER_STEP` at a time, calling
    ``between`` after each step."""
    answers: list[Estimate] = []
    for start in range(0, len(pairs), PAIRS_PER_STEP):
        step = slice(start, start + PAIRS_PER_STEP)
        answers += est.estimate_checked(pairs[step], flags[step], qs, method, tied=tied[step], orders=orders[step])
        if between is not None:
            between(len(answers), len(pairs))
    return answers


def _checked_table(
    est: Estimator, table: np.ndarray, names: list[str], mask: np.ndarray, partner: tuple[str, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The table as :func:`model.validation.validate_pair` leaves each column (its checks and rescaling are per
    column, so they run once per column, not once per pair), with each column's tied flag and argsort (one sort
    per column: :func:`model.ties.sorted_columns`); a column declared discrete must repeat its values
    (:func:`model.discrete.resolve`). ``partner``: the field and dims of what each column is paired with."""
    check_pair_shape(len(table), 1, partner[1], est.limits, ("X", partner[0]))
    for j in np.flatnonzero(mask):
        try:
            resolve(True, table[:, [j]], "discrete_features")
        except InputError as err:
            raise InputError(err.field, f"column {names[j]!r} {err.message}") from None
    checked = robust_rescale(table)
    values, order = sorted_columns(checked)
    return checked, tied_columns(checked, values), order


def screen(
    est: Estimator, X: Any, target: Any, *, method: str = "mist", quantiles: Sequence[float] | None = None,
    columns: Sequence[str] | None = None, between: Between | None = None,
    discrete_features: DiscreteFeatures = "auto", discrete_target: Discreteness = False,
) -> dict[str, Estimate]:  # fmt: skip
    """I(X_j; target) for every column j of ``X`` (``target`` may be multi-dimensional), by column name."""
    qs = est.check_request(quantiles, method)  # the request itself is checked before any column
    table, names = _table(X, columns, "X")
    if table.shape[1] > MAX_SCREEN_COLUMNS:
        raise InputError("X", f"has {table.shape[1]} columns; at most {MAX_SCREEN_COLUMNS} are screened at once")
    y = as_matrix(target, "target")
    if len(y) != len(table):
        raise InputError("target", f"has {len(y)} rows but X has {len(table)}")
    target_discrete = resolve(discrete_target, y, "discrete_target")
    mask = discrete_columns(table, names, discrete_features)
    checked, tied, order = _checked_table(est, table, names, mask, ("target", y.shape[1]))
    y = robust_rescale(y)
    values_y, order_y = sorted_columns(y)
    tied_y = tied_columns(y, values_y)
    pairs = [(checked[:, [j]], y) for j in range(table.shape[1])]
    flags = [(bool(m), target_discrete) for m in mask]
    answers = _in_steps(est, pairs, flags, [(tied[[j]], tied_y) for j in range(len(names))],
                        [(order[[j]], order_y) for j in range(len(names))], qs, method, between)  # fmt: skip
    return dict(zip(names, answers, strict=True))


def ranked(answers: dict[str, Estimate]) -> list[tuple[str, Estimate]]:
    """Screening answers, most informative column first."""
    return sorted(answers.items(), key=lambda kv: -kv[1].mi_nats)


def pairwise(
    est: Estimator, X: Any, *, method: str = "mist", columns: Sequence[str] | None = None,
    between: Between | None = None, discrete_features: DiscreteFeatures = "auto",
) -> PairwiseMI:  # fmt: skip
    """I(X_i; X_j) for every pair of columns of ``X``."""
    table, names = _table(X, columns, "X")
    p = table.shape[1]
    if not 2 <= p <= MAX_PAIRWISE_COLUMNS:
        raise InputError("X", f"has {p} columns; pairwise takes 2 to {MAX_PAIRWISE_COLUMNS}")
    qs = est.check_request(None, method)
    pairs = [(i, j) for i in range(p) for j in range(i + 1, p)]
    mask = discrete_columns(table, names, discrete_features)
    checked, tied, order = _checked_table(est, table, names, mask, ("X", 1))
    columns_checked = [checked[:, [j]] for j in range(p)]
    answers = _in_steps(est, [(columns_checked[i], columns_checked[j]) for i, j in pairs],
                        [(bool(mask[i]), bool(mask[j])) for i, j in pairs],
                        [(tied[[i]], tied[[j]]) for i, j in pairs], [(order[[i]], order[[j]]) for i, j in pairs],
                        qs, method, between)  # fmt: skip
    mats = [np.full((p, p), np.nan) for _ in range(3)]
    for (i, j), a in zip(pairs, answers, strict=True):
        lo, hi = a.interval_90 or (np.nan, np.nan)
        for mat, value in zip(mats, (a.mi_nats, lo, hi), strict=True):
            mat[i, j] = mat[j, i] = value
    shown = [names[j] for j, _ in material_ties(checked, tied & ~mask)]
    note = [f"tied values in columns read as continuous: {', '.join(shown)} (ties broken by noise); declare discrete "
            "ones in discrete_features"] if shown else []  # fmt: skip
    return PairwiseMI(names, *mats, warnings=note)
