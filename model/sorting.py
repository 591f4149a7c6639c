"""Row-wise numpy sorts (and medians) spread over threads: numpy releases the GIL while it sorts or partitions,
so a large batch of rows cut into one block per thread runs in parallel, with the same result (each row on its
own). Measured on 2 cores: 128 rows of 20 000 float32, argsort 97 → 50 ms and sort 46 → 23 ms; float64 sort
78 → 49 ms."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

SORT_THREADS = 2  # blocks sorted at once (the cores of the machine the defaults are set for)
PARALLEL_MIN_NUMBERS = 1 << 18  # below this one thread is faster than handing blocks to the pool
_pools: dict[int, ThreadPoolExecutor] = {}  # by process id: a pool copied into a forked child has no threads


def _pool() -> ThreadPoolExecutor:
    return _pools.setdefault(os.getpid(), ThreadPoolExecutor(SORT_THREADS, thread_name_prefix="mist-sort"))


def in_row_blocks(fn: Callable[[np.ndarray], np.ndarray], a: np.ndarray) -> np.ndarray:
    """``fn(a)`` for a row-wise numpy function ``fn`` of a 2-D or larger array (one output row per input row,
    along the last axis), over :data:`SORT_THREADS` blocks of rows when ``a`` holds at least
    :data:`PARALLEL_MIN_NUMBERS` numbers in two or more rows."""
    if a.size < PARALLEL_MIN_NUMBERS or a.size < 2 * a.shape[-1]:  # small, or one row: no reshape, no pool
        return fn(a)
    rows = a.reshape(-1, a.shape[-1])
    blocks = np.array_split(rows, min(SORT_THREADS, len(rows)))
    out = np.concatenate(list(_pool().map(fn, blocks)))
    return out.reshape(a.shape[:-1] + out.shape[1:])


def sort_rows(a: np.ndarray, arg: bool = False) -> np.ndarray:
    """``np.sort(a, axis=-1)``, or ``np.argsort`` with ``arg``, in row blocks (:func:`in_row_blocks`)."""
    sort = np.argsort if arg else np.sort
    return in_row_blocks(lambda block: sort(block, axis=-1), a)
