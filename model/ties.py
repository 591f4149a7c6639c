"""Ties broken by the values themselves, so that every estimator sees continuous data and stays exactly invariant
to the order of rows and columns and to swapping X with Y.

Breaking the ties of a column at random is dequantization: for a discrete X, ``X + U`` with independent
``U ~ Uniform(0, 1)`` keeps I(X; Y) exactly (X is recovered from it), and for values rounded finely it keeps
nearly all of it. The estimators were trained and built for continuous data, where average ranks and zero
distances do not occur; on ties they were confidently wrong (a binary column independent of y read 0.09 nats
with an interval above 0; x = y as a 10-class label read 6.2 nats, where ln 10 = 2.30 is the most possible).
"""

from __future__ import annotations

import numpy as np

from model.sorting import in_row_blocks, sort_rows

MIX_A, MIX_B = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)  # splitmix64's finalizer
GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(h: np.ndarray) -> np.ndarray:
    """A bijective scramble of uint64 values (splitmix64 finalizer; products wrap)."""
    h = (h ^ (h >> np.uint64(30))) * MIX_A
    h = (h ^ (h >> np.uint64(27))) * MIX_B
    return h ^ (h >> np.uint64(31))


def _occurrence(sorted_groups: np.ndarray) -> np.ndarray:
    """For a sorted 1-D array: each entry's index within its run of equal entries."""
    first = np.r_[True, sorted_groups[1:] != sorted_groups[:-1]]
    index = np.arange(len(sorted_groups))
    return index - np.maximum.accumulate(np.where(first, index, 0))


def _identical_rows(joint: np.ndarray, row_key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows grouped by identity (not merely the same set of values): an order that puts identical rows together,
    each group's rows in their own order, and the sorted group labels. Identical rows share their row key, so the
    keys group them (one sort of n numbers, not np.unique over whole rows: 0.6 → 0.05 ms a 1 000-row pair);
    rows that share a key but differ (a 64-bit collision) fall back to np.unique, so the grouping stays exact."""
    order = np.argsort(row_key, kind="stable")
    keys = row_key[order]
    same_key = keys[1:] == keys[:-1]
    if same_key.any():
        rows = joint[order]
        if not np.array_equal(same_key, (rows[1:] == rows[:-1]).all(axis=1)):
            _, inverse = np.unique(joint, axis=0, return_inverse=True)
            order = np.argsort(inverse.ravel(), kind="stable")
            return order, inverse.ravel()[order]
    return order, keys


def cell_keys(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A pseudo-random uint64 per cell of ``[x | y]``: a function of the cell's value, of its column's values (as a
    multiset), of its row's (value, column) pairs (as a set) and of the row's rank among rows identical to it.
    Permuting rows or columns, or swapping x and y, moves the keys with the data, exactly. Equal values in one row
    get distinct keys through their columns (noise shared across x and y would make x = y look infinitely
    dependent); in identical columns, by position, which is invariant too (swapping them changes nothing)."""
    joint = np.hstack([x, y]).astype(np.float64) + 0.0  # + 0.0 makes -0.0 and 0.0 one value
    cells = _mix(joint.view(np.uint64))
    n = len(joint)
    column_key = _mix(cells.sum(axis=0, dtype=np.uint64) + GOLDEN)  # a multiset hash: sums wrap
    placed = _mix(cells ^ column_key[None, :])  # a value in its column, wherever that column sits
    # each row's keys in order, stably (the runs below number equal keys by column position), on the sort threads
    by_key = in_row_blocks(_stable_argsort, placed)
    srt = np.take_along_axis(placed, by_key, axis=1)
    row_key = np.zeros(n, dtype=np.uint64)
    for column in srt.T:
        row_key = _mix(row_key ^ column)
    among_rows = np.empty(n, dtype=np.uint64)
    order, group = _identical_rows(joint, row_key)
    among_rows[order] = _occurrence(group)
    row_key = _mix(row_key ^ _mix(among_rows + GOLDEN))
    in_row = np.zeros(joint.shape, dtype=np.uint64)  # 0 unless value and column key repeat within the row
    runs = np.zeros(joint.shape, dtype=np.uint64)
    for j in range(1, joint.shape[1]):
        runs[:, j] = np.where(srt[:, j] == srt[:, j - 1], runs[:, j - 1] + np.uint64(1), np.uint64(0))
    np.put_along_axis(in_row, by_key, runs, axis=1)
    return _mix(placed ^ row_key[:, None] ^ _mix(in_row * GOLDEN + GOLDEN))


def value_keyed_jitter(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Noise in [−½, ½) per cell from :func:`cell_keys`."""
    noise = (cell_keys(x, y) >> np.uint64(11)).astype(np.float64) / 2.0**53 - 0.5
    return noise[:, : x.shape[1]], noise[:, x.shape[1] :]


def sorted_columns(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each column sorted, and its argsort, ``(d, n)`` each: one sort per column gives both the tie check
    (:func:`tied_columns`) and the ranks (:func:`model.preprocess.gaussian_scores`)."""
    rows = np.ascontiguousarray(a.T)  # columns as rows: 20 % faster at 20 000 × 64
    order = sort_rows(rows, arg=True)
    return rows.ravel()[order + np.arange(0, rows.size, rows.shape[1])[:, None]], order  # 2× take_along_axis


def _repeats(srt: np.ndarray) -> np.ndarray:
    return (srt[:, 1:] == srt[:, :-1]).any(axis=1)


def has_ties(a: np.ndarray) -> np.ndarray:
    """Per column: does any value repeat?"""
    return _repeats(sort_rows(np.ascontiguousarray(a.T)))


def tied_columns(a: np.ndarray, sorted_values: np.ndarray | None = None) -> np.ndarray:
    """Per column: does a non-constant column repeat a value? (A constant column carries nothing and is dropped.)
    ``sorted_values``: the first of :func:`sorted_columns`, when the caller has it."""
    srt = sort_rows(np.ascontiguousarray(a.T)) if sorted_values is None else sorted_values
    return _repeats(srt) & (srt[:, -1] > srt[:, 0])


MATERIAL_DISTINCT = 0.9  # a tied column is worth a warning when fewer than this share of its values are distinct


def material_ties(a: np.ndarray, tied: np.ndarray) -> list[tuple[int, int]]:
    """The ``tied`` columns of ``a`` whose ties matter, with their numbers of distinct values: fewer than
    :data:`MATERIAL_DISTINCT` · n distinct (labels, counts, rounded measurements). A few exact repeats among
    continuous values (float32 data, a large offset) are broken like any tie but move an estimate by far less than
    its interval (5 000 float32 rows, 2 repeats: 0.1549 → 0.1555 nats), so they warn no one."""
    out = []
    for j in np.flatnonzero(tied):
        distinct = len(np.unique(a[:, j]))
        if distinct < MATERIAL_DISTINCT * len(a):
            out.append((int(j), distinct))
    return out


def broken_orders(order: np.ndarray, broken: np.ndarray, tied: np.ndarray) -> np.ndarray:
    """``order`` (the argsort of :func:`sorted_columns` of a side) for the side :func:`tie_broken_ranks` returns
    (``broken``): each tied column's entry becomes the order of its ranks (a permutation, inverted in O(n))."""
    if not tied.any():
        return order
    out = order.copy()
    for j in np.flatnonzero(tied):
        out[j, broken[:, j].astype(np.int64)] = np.arange(len(broken))
    return out


def tie_broken_ranks(
    x: np.ndarray, y: np.ndarray, tied: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Columns with ties replaced by their ranks 0 … n−1, ties ordered by :func:`cell_keys` (columns without ties
    are returned as they are: a rank-based estimator sees the same order either way). ``tied``: each side's
    :func:`has_ties`, when the caller has it (each check sorts every column)."""
    tied_x, tied_y = (has_ties(x), has_ties(y)) if tied is None else tied
    if not (tied_x.any() or tied_y.any()):
        return x, y
    keys = cell_keys(x, y)
    out = []
    for side, tied, offset in ((x, tied_x, 0), (y, tied_y, x.shape[1])):
        side = side.astype(np.float64, copy=True)
        cols = np.flatnonzero(tied)
        if len(cols):
            side[:, cols] = _ranks_by_value_then_key(side[:, cols], keys[:, offset + cols])
        out.append(side)
    return out[0], out[1]


def _stable_argsort(rows: np.ndarray) -> np.ndarray:
    return np.argsort(rows, axis=-1, kind="stable")


def _ranks_by_value_then_key(values: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Each column's ranks 0 … n−1 in the order of its values, equal values in the order of their (distinct) keys:
    ``np.lexsort((key, value))`` per column, as one sort by key and then a stable sort by value, over all columns
    at once on the sort threads (20 000 rows × 128 columns: 226 → 134 ms, the same orders)."""
    by_key = sort_rows(np.ascontiguousarray(keys.T), arg=True)
    in_key_order = np.take_along_axis(np.ascontiguousarray(values.T), by_key, axis=1)
    order = np.take_along_axis(by_key, in_row_blocks(_stable_argsort, in_key_order), axis=1)
    ranks = np.empty(order.shape)
    np.put_along_axis(ranks, order, np.arange(order.shape[1], dtype=np.float64)[None, :], axis=1)
    return ranks.T
