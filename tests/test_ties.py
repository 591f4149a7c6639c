"""Data with ties (discrete, rounded): both mist and KSG read the MI of the recorded values, invariantly."""

from __future__ import annotations

import numpy as np
import pytest

from model import baselines
from model.ties import cell_keys, tie_broken_ranks

N = 4000
RNG = np.random.default_rng(0)
LABELS = RNG.integers(0, 10, (N, 1)).astype(float)
BITS = RNG.integers(0, 2, (N, 2)).astype(float)
XOR = (BITS[:, :1] != BITS[:, 1:]).astype(float)
# (x, y, true MI): each was confidently wrong before ties were broken (0.09 [0.05, 0.53]; 6.2; 0.009 nats)
CASES = {
    "binary independent of y": (RNG.integers(0, 2, (N, 1)).astype(float), RNG.standard_normal((N, 1)), 0.0),
    "x = y, a 10-class label": (LABELS, LABELS, np.log(10)),
    "XOR of two bits": (BITS, XOR, np.log(2)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_mist_interval_covers_the_mi_of_tied_data(shipped, case):
    x, y, truth = CASES[case]
    est = shipped.estimate(x, y)
    lo, hi = est.interval_90
    assert lo <= truth <= hi, (case, est.mi_nats, est.interval_90)
    assert abs(est.mi_nats - truth) < 0.45, (case, est.mi_nats)


@pytest.mark.parametrize("case", list(CASES))
def test_ksg_reads_the_mi_of_tied_data(case):
    x, y, truth = CASES[case]
    assert baselines.ksg(x, y) == pytest.approx(truth, abs=0.05)


@pytest.mark.parametrize("case", list(CASES))
def test_tied_answers_are_exactly_invariant(shipped, case):
    x, y, _ = CASES[case]
    rows = np.random.default_rng(1).permutation(N)
    for estimate in (lambda a, b: shipped.estimate(a, b).mi_nats, baselines.ksg):
        base = estimate(x, y)
        assert estimate(x[rows], y[rows]) == base
        assert estimate(y, x) == base
        assert estimate(x[:, ::-1], y) == base


def test_ties_are_broken_within_each_column_and_order_is_kept():
    x, y, _ = CASES["XOR of two bits"]
    keys = cell_keys(x, y)
    assert all(len(np.unique(keys[:, j])) == N for j in range(keys.shape[1]))  # even identical rows differ
    rx, ry = tie_broken_ranks(x, y)
    for raw, ranked in ((x, rx), (y, ry)):
        for j in range(raw.shape[1]):
            assert sorted(ranked[:, j]) == list(range(N))  # a permutation: no tie left
            assert (np.diff(raw[np.argsort(ranked[:, j]), j]) >= 0).all()  # distinct values keep their order
    continuous = RNG.standard_normal((50, 2))
    kept = tie_broken_ranks(continuous[:, :1], continuous[:, 1:])
    assert np.array_equal(kept[0], continuous[:, :1]) and np.array_equal(kept[1], continuous[:, 1:])  # no ties


def test_identical_rows_are_grouped_exactly_even_when_row_keys_collide():
    from model.ties import _identical_rows, _occurrence

    rows = np.round(RNG.standard_normal((500, 3)), 0)  # few distinct rows, many repeats
    _, inverse = np.unique(rows, axis=0, return_inverse=True)
    expected = np.empty(500, dtype=np.int64)
    by_group = np.argsort(inverse.ravel(), kind="stable")
    expected[by_group] = _occurrence(inverse.ravel()[by_group])
    colliding = (np.zeros(500, dtype=np.uint64), (rows[:, 0] > 0).astype(np.uint64))  # rows that differ share keys
    for row_key in colliding:
        order, group = _identical_rows(rows, row_key)
        got = np.empty(500, dtype=np.int64)
        got[order] = _occurrence(group)
        assert np.array_equal(got, expected)  # each row's rank among the rows identical to it, in row order


def test_one_sort_per_column_gives_the_ties_and_the_order_after_they_are_broken():
    from model.ties import broken_orders, sorted_columns, tied_columns

    x = np.hstack([LABELS, RNG.standard_normal((N, 1)), np.full((N, 1), 2.0)])  # tied, continuous, constant
    values, order = sorted_columns(x)
    assert np.array_equal(values, np.sort(x.T, axis=1)) and np.array_equal(order, np.argsort(x.T, axis=1))
    tied = tied_columns(x, values)
    assert tied.tolist() == [True, False, False] and np.array_equal(tied, tied_columns(x))
    broken, _ = tie_broken_ranks(x, x[:, :1], (tied, np.array([True])))
    assert np.array_equal(broken_orders(order, broken, tied), np.argsort(broken.T, axis=1))  # ranks: no ties left


def test_threaded_row_sorts_equal_numpys():
    from model.sorting import PARALLEL_MIN_NUMBERS, in_row_blocks, sort_rows

    rng = np.random.default_rng(11)
    for shape in ((3, 5, PARALLEL_MIN_NUMBERS // 10), (7, PARALLEL_MIN_NUMBERS // 7 + 1), (9,)):
        a = np.round(rng.standard_normal(shape), 2)  # ties too: an argsort's order of equal values is numpy's
        assert np.array_equal(sort_rows(a), np.sort(a, axis=-1))
        assert np.array_equal(sort_rows(a, arg=True), np.argsort(a, axis=-1))
        assert np.array_equal(in_row_blocks(lambda rows: np.median(rows, axis=-1), a), np.median(a, axis=-1))
