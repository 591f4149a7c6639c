"""Discrete label against a continuous target, with known MI: L ~ Uniform{0, …, k−1}, Y = gap · L + N(0, 1), so
I(L; Y) = H(Y) − ½ log(2πe) with H(Y) of the Gaussian mixture by quadrature. mist (its median, 90 % coverage),
KSG and, if installed (``pip install 'mist-estimator[bench]'``), scikit-learn's ``mutual_info_classif``
(n_neighbors = 3, Ross's estimator for a discrete target) on the same arrays, in one run; ties are broken by
:mod:`model.ties`. Prints a table; writes JSON with --out.

    python benchmarks/discrete_bench.py [--n 1000] [--seeds 3] [--out benchmarks/results/discrete.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.integrate import trapezoid
from scipy.stats import norm

from model.estimator import Estimator

try:
    from sklearn.feature_selection import mutual_info_classif
except ImportError:  # optional competitor
    mutual_info_classif = None


def sklearn_mi(label: np.ndarray, y: np.ndarray, seed: int) -> float:
    if mutual_info_classif is None:
        return float("nan")
    return float(mutual_info_classif(y[:, None], label.astype(int), n_neighbors=3, random_state=seed)[0])


def label_mi(k: int, gap: float) -> float:
    grid = np.linspace(-8.0, (k - 1) * gap + 8.0, 200_001)
    p = np.mean([norm.pdf(grid, loc=c * gap) for c in range(k)], axis=0)
    return float(-trapezoid(p * np.log(np.maximum(p, 1e-300)), grid) - 0.5 * np.log(2 * np.pi * np.e))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    est, rows = Estimator.load(), []
    print(f"{'k':>2s} {'gap':>4s} {'truth':>6s} {'mist MAE':>9s} {'KSG MAE':>8s} {'sklearn':>8s} {'mist cov90':>10s}")
    for k in (2, 4, 8):
        for gap in (0.5, 1.0, 2.0, 4.0):
            truth, group = label_mi(k, gap), []
            for seed in range(args.seeds):
                rng = np.random.default_rng(seed)
                label = rng.integers(0, k, args.n).astype(float)
                y = gap * label + rng.standard_normal(args.n)
                r = est.estimate(label, y)
                group.append({"k": k, "gap": gap, "seed": seed, "truth": truth, "mist": r.mi_nats,
                              "lower": r.interval_90[0], "upper": r.interval_90[1],
                              "ksg": est.estimate(label, y, method="ksg").mi_nats,
                              "sklearn": sklearn_mi(label, y, seed)})  # fmt: skip
            rows += group
            mae = np.mean([abs(g["mist"] - truth) for g in group])
            ksg = np.mean([abs(g["ksg"] - truth) for g in group])
            skl = np.mean([abs(g["sklearn"] - truth) for g in group])
            cov = np.mean([g["lower"] <= truth <= g["upper"] for g in group])
            print(f"{k:2d} {gap:4.1f} {truth:6.3f} {mae:9.3f} {ksg:8.3f} {skl:8.3f} {cov:10.2f}", flush=True)
    mae, ksg, skl = (np.mean([abs(r[m] - r["truth"]) for r in rows]) for m in ("mist", "ksg", "sklearn"))
    cov = np.mean([r["lower"] <= r["truth"] <= r["upper"] for r in rows])
    print(f"all {len(rows)} tasks: mist MAE {mae:.3f}, KSG MAE {ksg:.3f}, sklearn MAE {skl:.3f}, mist cov90 {cov:.2f}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"n": args.n, "rows": rows, "mae_mist": mae, "mae_ksg": ksg,
                                              "mae_sklearn": skl, "cov90_mist": cov}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
