"""Where one estimate's time goes: each stage of ``Estimator.estimate`` timed on its own (median of --reps), for
one shape, beside the whole call in the same run.

Stages in the order the estimator runs them: validation (checks and the per-column rescale), the column sorts (one
argsort per column: tie check and ranks), the tie-broken network inputs, the Gaussian scores from those orders,
the row hash, then each head statistic and the head. Prints a table; writes JSON with --out.

    python benchmarks/stages_bench.py [--n 20000 --dims 64] [--out benchmarks/results/stages.json]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from model import network
from model.estimator import Estimator, _ranked, _sort_facts
from model.preprocess import gaussian_scores
from model.validation import validate_pair


def median_ms(fn: Callable[[], object], reps: int) -> tuple[float, object]:
    out = fn()  # warm-up, and the value later stages read
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times)), out


def stages(est: Estimator, x: np.ndarray, y: np.ndarray, reps: int) -> dict[str, float]:
    """Milliseconds per stage (medians), and the whole ``estimate`` call."""
    cfg, out = est.network.cfg, {}
    out["estimate (whole call)"], _ = median_ms(lambda: est.estimate(x, y), reps)
    out["validate_pair"], (xv, yv) = median_ms(lambda: validate_pair(x, y, est.limits), reps)
    out["column sorts (ties, orders)"], (tied, orders) = median_ms(lambda: _sort_facts(xv, yv), reps)
    out["tie-broken inputs"], (bx, by, ox, oy) = median_ms(lambda: _ranked(xv, yv, tied, orders), reps)
    xt, yt = (torch.from_numpy(np.ascontiguousarray(a[None], dtype=np.float32)) for a in (bx, by))
    oxt, oyt = torch.from_numpy(ox[None]), torch.from_numpy(oy[None])
    out["Gaussian scores"], (gx, gy) = median_ms(lambda: (gaussian_scores(xt, oxt), gaussian_scores(yt, oyt)), reps)
    out["row hash order"], (sx, sy) = median_ms(lambda: network.in_hash_order(gx, gy), reps)
    out["statistics (all)"], stats = median_ms(lambda: network.sample_statistics(sx, sy, cfg), reps)
    cap = cfg.knn_max_rows
    for m in network.KNN_SCALES:
        out[f"  kNN at {m} rows"], _ = median_ms(lambda m=m: network.knn_mi(sx, sy, cfg.knn_k, m, cap), reps)
    out["  copula at 256 rows"], _ = median_ms(lambda: network.chunked_copula_mi(sx, sy, 256, cap), reps)
    with torch.no_grad():
        out["head"], _ = median_ms(lambda: est.network.forward_scores(sx, sy, stats), reps)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--dims", type=int, default=64, help="per side")
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.n, args.dims))
    y = 0.5 * x + rng.standard_normal((args.n, args.dims))
    result = stages(Estimator.load(), x, y, args.reps)
    print(f"n = {args.n}, {args.dims} + {args.dims} dims, {args.threads} threads, medians of {args.reps}")
    for name, ms in result.items():
        print(f"{name:32s} {ms:8.1f} ms")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"n": args.n, "dims": args.dims, "threads": args.threads,
                                              "reps": args.reps, "ms": result}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
