"""Discrete columns with known MI, mist beside KSG (and scikit-learn where installed) on the same arrays.

1. A discrete label against a continuous target: L ~ Uniform{0, …, k−1}, Y = gap · L + N(0, 1), so
   I(L; Y) = H(Y) − ½ log(2πe), with H(Y) of the Gaussian mixture by quadrature. scikit-learn's
   ``mutual_info_classif`` (n_neighbors = 3, Ross's estimator; ``pip install 'mist-estimator[bench]'``) runs too.
2. Two discrete columns from a random k × k joint table (Dirichlet), against the table's exact MI.

"mist" is the product's answer with the discrete side declared (``discrete_x="auto"``: :mod:`model.discrete`, Ross's
estimator or the Miller–Madow plug-in, with an interval); "network" is the network on the same arrays read as
continuous (ties broken by :mod:`model.ties`, answered with a warning). Prints tables; writes JSON with --out.

    python benchmarks/discrete_bench.py [--n 1000] [--seeds 3] [--pairs-n 10000] [--out FILE.json]
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


def pmf_mi(p: np.ndarray) -> float:
    """The exact MI of a joint probability table."""
    px, py = p.sum(1, keepdims=True), p.sum(0, keepdims=True)
    nz = p > 0
    return float((p[nz] * np.log(p[nz] / (px @ py)[nz])).sum())


def discrete_pairs(est: Estimator, n: int, seeds: int) -> list[dict]:
    """Two discrete columns drawn from a random k × k joint table (Dirichlet, a concentration that sets the MI):
    mist and KSG against the exact MI of the table."""
    rows = []
    for k in (2, 5, 10):
        for conc in (0.1, 1.0):
            for seed in range(seeds):
                rng = np.random.default_rng([k, seed, int(conc * 10)])
                p = rng.dirichlet(np.full(k * k, conc)).reshape(k, k)
                cells = rng.choice(k * k, size=n, p=p.ravel())
                a, b = (cells // k).astype(float), (cells % k).astype(float)
                r = est.estimate(a, b, discrete_x="auto", discrete_y="auto")
                rows.append({"k": k, "concentration": conc, "seed": seed, "truth": pmf_mi(p), "mist": r.mi_nats,
                             "method": r.method, "lower": r.interval_90[0], "upper": r.interval_90[1],
                             "network": est.estimate(a, b).mi_nats,
                             "ksg": est.estimate(a, b, method="ksg").mi_nats})  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--pairs-n", type=int, default=10_000, help="rows of the discrete–discrete tasks")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    est, rows = Estimator.load(), []
    print(f"{'k':>2s} {'gap':>4s} {'truth':>6s} {'mist MAE':>9s} {'network':>8s} {'KSG MAE':>8s} {'sklearn':>8s} "
          f"{'mist cov90':>10s}")  # fmt: skip
    for k in (2, 4, 8):
        for gap in (0.5, 1.0, 2.0, 4.0):
            truth, group = label_mi(k, gap), []
            for seed in range(args.seeds):
                rng = np.random.default_rng(seed)
                label = rng.integers(0, k, args.n).astype(float)
                y = gap * label + rng.standard_normal(args.n)
                r = est.estimate(label, y, discrete_x="auto")
                group.append({"k": k, "gap": gap, "seed": seed, "truth": truth, "mist": r.mi_nats,
                              "method": r.method, "lower": r.interval_90[0], "upper": r.interval_90[1],
                              "network": est.estimate(label, y).mi_nats,
                              "ksg": est.estimate(label, y, method="ksg").mi_nats,
                              "sklearn": sklearn_mi(label, y, seed)})  # fmt: skip
            rows += group
            mae = np.mean([abs(g["mist"] - truth) for g in group])
            net = np.mean([abs(g["network"] - truth) for g in group])
            ksg = np.mean([abs(g["ksg"] - truth) for g in group])
            skl = np.mean([abs(g["sklearn"] - truth) for g in group])
            cov = np.mean([g["lower"] <= truth <= g["upper"] for g in group])
            print(f"{k:2d} {gap:4.1f} {truth:6.3f} {mae:9.3f} {net:8.3f} {ksg:8.3f} {skl:8.3f} {cov:10.2f}", flush=True)
    mae, net, ksg, skl = (
        np.mean([abs(r[m] - r["truth"]) for r in rows]) for m in ("mist", "network", "ksg", "sklearn")
    )
    cov = np.mean([r["lower"] <= r["truth"] <= r["upper"] for r in rows])
    print(f"all {len(rows)} tasks: mist MAE {mae:.4f}, network {net:.4f}, KSG {ksg:.4f}, sklearn {skl:.4f}, "
          f"mist cov90 {cov:.2f}")  # fmt: skip
    pairs = discrete_pairs(est, args.pairs_n, args.seeds)
    print(f"\ndiscrete–discrete at n = {args.pairs_n} (exact MI of the table):")
    print(f"{'k':>3s} {'conc':>5s} {'truth':>6s} {'mist err':>9s} {'max err':>8s} {'network':>8s} {'KSG err':>8s} "
          f"{'mist cov90':>10s}")  # fmt: skip
    for k in (2, 5, 10):
        for conc in (0.1, 1.0):
            g = [r for r in pairs if r["k"] == k and r["concentration"] == conc]
            err = {m: np.mean([abs(r[m] - r["truth"]) for r in g]) for m in ("mist", "network", "ksg")}
            worst = max(abs(r["mist"] - r["truth"]) for r in g)
            cov90 = np.mean([r["lower"] <= r["truth"] <= r["upper"] for r in g])
            print(f"{k:3d} {conc:5.1f} {np.mean([r['truth'] for r in g]):6.3f} {err['mist']:9.4f} {worst:8.4f} "
                  f"{err['network']:8.3f} {err['ksg']:8.4f} {cov90:10.2f}", flush=True)  # fmt: skip
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        summary = {"mae_mist": mae, "mae_network": net, "mae_ksg": ksg, "mae_sklearn": skl, "cov90_mist": cov}
        Path(args.out).write_text(json.dumps({"n": args.n, "rows": rows, **summary, "discrete_pairs": pairs}, indent=1))


if __name__ == "__main__":
    main()
