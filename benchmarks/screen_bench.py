"""Pairwise MI of a table: mist's batched ``pairwise`` against a one-pair-at-a-time loop and the baselines, on
Gaussian tables whose pairwise MI is known (−½ log(1 − ρ²) for each correlation ρ), in one run.

Prints a table (seconds, pairs/s, MAE against the truth, 90 % coverage for mist); writes JSON with --out. If
scikit-learn is installed (``pip install 'mist-estimator[bench]'``), its ``mutual_info_regression`` (n_neighbors
= 3, each column as the target once) runs beside them.

    python benchmarks/screen_bench.py [--shapes 20x1000 20x10000 100x1000] [--out benchmarks/results/screen.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from model.estimator import Estimator
from model.screening import PairwiseMI

try:
    from sklearn.feature_selection import mutual_info_regression
except ImportError:  # optional competitor
    mutual_info_regression = None


def sklearn_pairwise(table: np.ndarray) -> PairwiseMI:
    """scikit-learn's kNN MI of each column against all others, symmetrized by averaging the two directions."""
    p = table.shape[1]
    mi = np.full((p, p), np.nan)
    for j in range(p):
        others = [i for i in range(p) if i != j]
        mi[others, j] = mutual_info_regression(table[:, others], table[:, j], n_neighbors=3, random_state=0)
    mi = 0.5 * (mi + mi.T)
    nan = np.full((p, p), np.nan)
    return PairwiseMI([str(i) for i in range(p)], mi, nan, nan)


def gaussian_table(p: int, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n rows of p jointly Gaussian columns with a random correlation matrix; the (p, p) true pairwise MI."""
    factors = rng.standard_normal((p, max(2, p // 4)))
    cov = factors @ factors.T + np.diag(rng.uniform(0.3, 2.0, p))
    sd = np.sqrt(np.diag(cov))
    corr = cov / np.outer(sd, sd)
    truth = -0.5 * np.log(1 - np.clip(corr, -0.999999, 0.999999) ** 2)
    np.fill_diagonal(truth, np.nan)
    return rng.multivariate_normal(np.zeros(p), corr, size=n), truth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["20x1000", "20x10000", "100x1000"], help="PxN")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(2)
    est, rng, rows = Estimator.load(), np.random.default_rng(0), []
    print(f"{'p':>4s} {'n':>6s} {'method':30s} {'pairs':>6s} {'seconds':>8s} {'pairs/s':>8s} {'MAE':>6s} {'cov90':>6s}")
    for shape in args.shapes:
        p, n = map(int, shape.split("x"))
        table, truth = gaussian_table(p, n, rng)
        off = ~np.isnan(truth)
        pairs = p * (p - 1) // 2
        runs = {
            "mist pairwise (batched)": lambda t=table: est.pairwise(t),
            "ksg pairwise": lambda t=table: est.pairwise(t, method="ksg"),
            "gaussian_copula pairwise": lambda t=table: est.pairwise(t, method="gaussian_copula"),
        }
        if mutual_info_regression is not None:
            runs["sklearn mutual_info_regression"] = lambda t=table: sklearn_pairwise(t)
        for name, run in runs.items():
            start = time.perf_counter()
            result = run()
            secs = time.perf_counter() - start
            mae = float(np.abs(result.mi_nats[off] - truth[off]).mean())
            inside = (result.lower[off] <= truth[off]) & (truth[off] <= result.upper[off])
            cov = float(inside.mean()) if not np.isnan(result.lower[off]).all() else None
            rows.append({"p": p, "n": n, "method": name, "pairs": pairs, "seconds": secs, "pairs_per_s": pairs / secs,
                         "mae": mae, "cov90": cov})  # fmt: skip
            print(f"{p:4d} {n:6d} {name:30s} {pairs:6d} {secs:8.2f} {pairs / secs:8.0f} {mae:6.3f} "
                  f"{'' if cov is None else f'{cov:6.2f}'}", flush=True)  # fmt: skip
        loop = [(table[:, [i]], table[:, [j]]) for i in range(p) for j in range(i + 1, p)][:50]
        start = time.perf_counter()
        for x, y in loop:
            est.estimate(x, y)
        per_pair = (time.perf_counter() - start) / len(loop)
        rows.append(
            {"p": p, "n": n, "method": "mist one pair per call", "pairs": len(loop), "seconds_per_pair": per_pair}
        )
        print(f"{p:4d} {n:6d} {'mist one pair per call':30s} {len(loop):6d} {per_pair * len(loop):8.2f} "
              f"{1 / per_pair:8.0f}", flush=True)  # fmt: skip
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
