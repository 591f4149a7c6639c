"""Inference speed of the shipped network against KSG (k = 5) on the same arrays, in the same run.

For n ∈ {100, 1000, 10 000} × dx = dy ∈ {1, 5, 20}: time per dataset (p50, p90) of ``Estimator.estimate``
(validation + ranks + forward pass) and of KSG, and their ratio; then the largest shape the API accepts (n = 20 000,
dx = dy = 64; mist alone: it is past KSG's work budget); then batched throughput at n = 500, d = 5.
    python benchmarks/inference_bench.py [--threads 2] [--out benchmarks/results/inference.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from model import baselines
from model.estimator import Estimator

SIZES = (100, 1000, 10_000)
DIMS = (1, 5, 20)
LARGEST = (20_000, 64)  # n and dims per side: the most the default limits accept


def _timings(fn, reps: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def _sample(rng: np.random.Generator, n: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    x = rng.standard_normal((n, d))
    return x, 0.6 * x + 0.8 * rng.standard_normal((n, d))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="default: the shipped checkpoint")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--batch", type=int, default=128, help="datasets in the batched-throughput run")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    est = Estimator.load(args.checkpoint)
    rng = np.random.default_rng(0)
    rows = []
    heads = ("mist p50 ms", "mist p90 ms", "ksg p50 ms", "ksg p90 ms", "ksg/mist")
    print(f"{'n':>6} {'d':>3} " + " ".join(f"{h:>12}" for h in heads))
    for n in SIZES:
        for d in DIMS:
            x, y = _sample(rng, n, d)
            reps = args.reps if n * d < 100_000 else max(args.reps // 2, 3)
            mist = np.array(_timings(lambda x=x, y=y: est.estimate(x, y), reps)) * 1e3
            ksg = np.array(_timings(lambda x=x, y=y: baselines.ksg(x, y), reps)) * 1e3
            row = {"n": n, "d": d, "reps": reps,
                   "mist_p50_ms": float(np.median(mist)), "mist_p90_ms": float(np.percentile(mist, 90)),
                   "ksg_p50_ms": float(np.median(ksg)), "ksg_p90_ms": float(np.percentile(ksg, 90))}  # fmt: skip
            row["ksg_over_mist"] = row["ksg_p50_ms"] / row["mist_p50_ms"]
            rows.append(row)
            cells = [row[k] for k in ("mist_p50_ms", "mist_p90_ms", "ksg_p50_ms", "ksg_p90_ms", "ksg_over_mist")]
            print(f"{n:>6} {d:>3} " + " ".join(f"{c:12.2f}" for c in cells))
    n, d = LARGEST
    x, y = _sample(rng, n, d)
    largest = np.array(_timings(lambda: est.estimate(x, y), 5)) * 1e3
    biggest = {"n": n, "d": d, "reps": 5, "mist_p50_ms": float(np.median(largest)),
               "mist_p90_ms": float(np.percentile(largest, 90))}  # fmt: skip
    print(f"{n:>6} {d:>3} {biggest['mist_p50_ms']:12.2f} {biggest['mist_p90_ms']:12.2f}  (KSG: past its work budget)")
    pairs = [_sample(rng, 500, 5) for _ in range(args.batch)]
    batched = _timings(lambda: est.estimate_batch(pairs), 3)
    one_by_one = _timings(lambda: [est.estimate(x, y) for x, y in pairs[:32]], 1)[0] / 32
    throughput = {"n": 500, "d": 5, "datasets": args.batch,
                  "batched_datasets_per_s": args.batch / float(np.median(batched)),
                  "one_at_a_time_datasets_per_s": 1.0 / one_by_one}  # fmt: skip
    print(f"\nn=500, dx=dy=5, {args.threads} torch threads: batched {throughput['batched_datasets_per_s']:.0f} "
          f"datasets/s, one at a time {throughput['one_at_a_time_datasets_per_s']:.0f} datasets/s")  # fmt: skip
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        result = {"version": est.version, "threads": args.threads, "timings": rows, "largest": biggest,
                  "throughput": throughput}  # fmt: skip
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
