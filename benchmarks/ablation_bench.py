"""Ablation of the head's inputs: how much each one changes the answers.

For each task of a suite the network's inputs are computed once: the body's pooled features and the scalar
statistics (:data:`model.network.STAT_NAMES`). Each input is then replaced by its mean over the suite's tasks
(the body: all pooled features at once), the head is run again, and the MAE of the median is compared with the
full network's. An input whose ablation leaves the MAE unchanged carries nothing the head uses.

    python benchmarks/ablation_bench.py [--checkpoint PATH] [--suite held-out] [--tasks-per-bucket 20] [--out F]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from model.estimator import Estimator
from model.network import STAT_NAMES, chunks
from model.ties import tie_broken_ranks
from model.training.evaluate import load_suite


def inputs(est: Estimator, x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """The head's two inputs for one sample: pooled body features ``(1, width)`` and statistics ``(1, S)``."""
    net = est.network
    rx, ry = tie_broken_ranks(x.astype(np.float64), y.astype(np.float64))
    with torch.no_grad():
        sx, sy, stats = net.scores_and_statistics(torch.tensor(rx[None], dtype=torch.float32),
                                                  torch.tensor(ry[None], dtype=torch.float32))  # fmt: skip
        bx, by = chunks(sx, sy, net.cfg.body_rows, net.body_chunks(sx.shape[1], sx.shape[-1] + sy.shape[-1]))
        return net.pooled(bx, by), stats


def medians(est: Estimator, pooled: torch.Tensor, stats: torch.Tensor) -> np.ndarray:
    """The network's median from given head inputs (the same head as ``forward_scores``)."""
    net = est.network
    with torch.no_grad():
        q = net.head_quantiles(pooled, stats)
    return q[:, net.cfg.quantiles.index(0.5)].double().numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--suite", nargs="+", default=["held-in", "held-out", "textbook"])
    parser.add_argument("--tasks-per-bucket", type=int, default=20)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(2)
    est = Estimator.load(args.checkpoint)
    out: dict = {"checkpoint": est.version, "suites": {}}
    for suite in args.suite:
        tasks = load_suite(suite, args.tasks_per_bucket)
        pooled, stats = (torch.cat(t) for t in zip(*(inputs(est, t.x, t.y) for t in tasks), strict=True))
        truth = np.array([t.mi for t in tasks])
        mae = lambda p, s, truth=truth: float(np.abs(medians(est, p, s) - truth).mean())  # noqa: E731
        full = mae(pooled, stats)
        rows = {"full": full, "body": mae(pooled.mean(0).expand_as(pooled), stats)}
        for j, name in enumerate(STAT_NAMES[: est.network.cfg.head_stats]):
            ablated = stats.clone()
            ablated[:, j] = stats[:, j].mean()
            rows[name] = mae(pooled, ablated)
        out["suites"][suite] = {"tasks": len(tasks), "mae": rows}
        print(f"\n{suite} ({len(tasks)} tasks, {est.version}): MAE of the median with one input at its mean")
        for name, mae in rows.items():
            print(f"  {name:18s} {mae:7.3f}  ({mae / full:5.2f}x full)")
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
