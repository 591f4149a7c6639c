"""Measured seconds per estimate against the cost model the server admits by (:mod:`model.cost`).

For each method and shape: the median of a few timed ``Estimator.estimate`` calls (torch threads as served, 2),
the model's prediction and their ratio. The model should not under-predict by much: admission refuses work whose
predicted cost is past the deadline, and keeps a lane for light work. Prints a table; writes JSON with --out.

    python benchmarks/cost_bench.py [--out benchmarks/results/cost.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from model.cost import estimate_seconds
from model.estimator import Estimator
from model.validation import WORK_LIMITS

SHAPES = [(100, 1, 1), (1000, 5, 5), (1000, 32, 32), (5000, 2, 2), (5000, 16, 16), (20000, 1, 1), (20000, 8, 8),
          (20000, 64, 64), (1562, 32, 32), (3000, 8, 8), (10000, 4, 4), (100_000, 1, 1), (100_000, 16, 16),
          (1_000_000, 1, 1), (1_000_000, 8, 8), (200_000, 40, 40)]  # fmt: skip


def median_seconds(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    est, rng, rows = Estimator.load(), np.random.default_rng(0), []
    print(f"{'method':16s} {'n':>6s} {'dx':>3s} {'dy':>3s} {'measured s':>11s} {'model s':>8s} {'model/meas':>10s}")
    for method in ("mist", "ksg", "gaussian_copula"):
        for n, dx, dy in SHAPES:
            if n * (dx + dy) > WORK_LIMITS.get(method, np.inf):
                continue
            x = rng.standard_normal((n, dx))
            y = x[:, :1] + rng.standard_normal((n, dy))
            est.estimate(x, y, method=method)  # warm
            measured = median_seconds(lambda x=x, y=y, m=method: est.estimate(x, y, method=m), args.reps)
            model = estimate_seconds(method, n, dx, dy)
            rows.append({"method": method, "n": n, "dx": dx, "dy": dy, "measured_s": measured, "model_s": model})
            print(f"{method:16s} {n:6d} {dx:3d} {dy:3d} {measured:11.4f} {model:8.4f} {model / measured:10.2f}",
                  flush=True)  # fmt: skip
    ratios = [r["model_s"] / r["measured_s"] for r in rows]
    print(f"model/measured: median {np.median(ratios):.2f}, min {min(ratios):.2f}, max {max(ratios):.2f}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"rows": rows, "ratio_median": float(np.median(ratios))}, indent=1))


if __name__ == "__main__":
    main()
