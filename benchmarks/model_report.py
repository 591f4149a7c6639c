"""Accuracy of several checkpoints on the same suites (a learning curve), and a knock-out ablation of the head's
statistics: each group is replaced by its value under independence (0) at inference, and the error change shows
what the trained head draws from it.

    python benchmarks/model_report.py --checkpoint min10=runs/snap10.pt --checkpoint final=runs/cpu/last.pt \
        [--suite textbook --suite held-out] [--tasks-per-bucket 10] [--ablate final] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

import torch

from model import network
from model.estimator import Estimator
from model.training.evaluate import evaluate_many

ABLATIONS = {
    "knn (log1p_knn, knn_minus_gc)": ("log1p_knn", "knn_minus_gc"),
    "hermite (log1p_hermite, hermite_excess)": ("log1p_hermite", "hermite_excess"),
    "raw copula (log1p_gc)": ("log1p_gc",),
}


@contextlib.contextmanager
def knocked_out(names: tuple[str, ...]):
    """Within the block, the network sees the named statistics at their independence value (0)."""
    original = network.sample_statistics

    def patched(sx, sy, cfg):
        stats = original(sx, sy, cfg).clone()
        for name in names:
            stats[:, network.STAT_NAMES.index(name)] = 0.0
        return stats

    network.sample_statistics = patched
    try:
        yield
    finally:
        network.sample_statistics = original


def _row(report: dict) -> dict:
    out = {"mae": report["overall"]["mae"], "cov90": report["overall"]["coverage_90"],
           "width90": report["overall"]["width_90"], "mae_ksg": report["overall"]["mae_ksg"],
           "mae_gc": report["overall"]["mae_gaussian_copula"]}  # fmt: skip
    out.update({f"mae n {k}": v["mae"] for k, v in report["by_bucket"].items()})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", action="append", required=True, help="name=path, repeatable")
    parser.add_argument("--suite", action="append", default=None)
    parser.add_argument("--tasks-per-bucket", type=int, default=10)
    parser.add_argument("--ablate", default=None, help="name of the checkpoint to ablate")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    models = {k: Estimator.load(v) for k, v in (c.split("=", 1) for c in args.checkpoint)}
    rows = []
    for suite in args.suite or ["textbook", "held-in", "held-out"]:
        reports = evaluate_many(models, suite, args.tasks_per_bucket, progress=False)
        for name, rep in reports.items():
            rows.append({"suite": suite, "model": name, **_row(rep)})
        if args.ablate:
            for label, names in ABLATIONS.items():
                with knocked_out(names):
                    rep = evaluate_many({args.ablate: models[args.ablate]}, suite, args.tasks_per_bucket, False)
                rows.append({"suite": suite, "model": f"{args.ablate} without {label}", **_row(rep[args.ablate])})
        for r in rows:
            if r["suite"] == suite:
                print(f"{suite:10s} {r['model']:48s} MAE {r['mae']:.3f}  cov90 {r['cov90']:.2f}  width90 "
                      f"{r['width90']:.2f}  KSG {r['mae_ksg']:.3f}  GC {r['mae_gc']:.3f}", flush=True)  # fmt: skip
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
