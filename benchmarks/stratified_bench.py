"""I(X; Y | Z) for a discrete Z: mist by strata against the chain rule and Frenzel–Pompe, on the same arrays.

Tasks: Z uniform over K classes; given Z = c, (X, Y) Gaussian with correlation ρ, class means drawn far apart (X
and Y depend strongly through Z), X warped monotonically and Y by a random power; the truth is −½ log(1 − ρ²).
A second section (``--heldout-tasks``) draws each class's (X, Y) from the held-out meta-distribution
(``configs/meta/heldout.toml``: families, links and reshapings that training never draws), its own family and MI
per class, shifted by class means; fixed class sizes n / K, so the truth is the mean of the classes' MI; half the
tasks have Y shuffled within each class (truth 0).
Point estimates: MAE and 90 % coverage for mist by strata (``mist_stratified``), mist's chain rule
(``discrete_z=False``) and Frenzel–Pompe. CI tests at α = 0.05, the rate of "dependent" per CMI level (the level
0 row is the false-positive rate): mist's within-class permutation test against the same permutation test on the
Frenzel–Pompe statistic, both with ``--permutations``; seconds per test.

    python benchmarks/stratified_bench.py [--n 1000] [--classes 2 5 10] [--tasks 20] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from metadata_gen.batched import sample_task
from metadata_gen.config import load_config
from model.assets import HELDOUT_META, resolve
from model.baselines import frenzel_pompe
from model.estimator import Estimator
from model.stratified import permutation_p_value, strata, within_class_permutations

LEVELS = (0.0, 0.02, 0.05, 0.144)  # CMI in nats (ρ = 0, 0.2, 0.31, 0.5)
HELDOUT_BENCH_SEED = 7_300  # a seed no suite, calibration or training run draws


def task(rng: np.random.Generator, n: int, k: int, cmi: float) -> tuple[np.ndarray, ...]:
    rho = np.sqrt(1.0 - np.exp(-2.0 * cmi))
    z = rng.integers(0, k, n)
    means = rng.normal(0.0, 2.0, (k, 2))
    e = rng.standard_normal((n, 2))
    x = means[z, 0] + e[:, 0]
    y = means[z, 1] + rho * e[:, 0] + np.sqrt(1.0 - rho**2) * e[:, 1]
    power = rng.uniform(1.0, 3.0)
    return np.arcsinh(x) + 0.2 * x, np.sign(y) * np.abs(y) ** power, z.astype(float)


def heldout_task(config, index: int, n: int, k: int, null: bool) -> tuple[np.ndarray, ...]:
    """K classes of n // K rows, each a held-out MI task of its own (1 + 1 dims), shifted by class means; with
    ``null`` Y is shuffled within each class. Returns x, y, z and the truth."""
    rng = np.random.default_rng(index)
    xs, ys, truths = [], [], []
    for c in range(k):
        t = sample_task(config, k * index + c, seed=HELDOUT_BENCH_SEED, shape=(n // k, 1, 1))
        y = rng.permutation(t.y[:, 0]) if null else t.y[:, 0]
        shift = rng.normal(0.0, 3.0, 2) * np.array([t.x.std(), t.y.std()])
        xs.append(t.x[:, 0] + shift[0])
        ys.append(y + shift[1])
        truths.append(0.0 if null else t.mi)
    z = np.repeat(np.arange(k, dtype=float), n // k)
    return np.concatenate(xs).astype(float), np.concatenate(ys).astype(float), z, float(np.mean(truths))


def frenzel_pompe_test(x, y, z, permutations: int) -> float:
    classes = strata(z[:, None])
    orders = within_class_permutations(classes, len(x), permutations)
    observed = frenzel_pompe(x[:, None], y[:, None], z[:, None])
    return permutation_p_value(observed, np.array([frenzel_pompe(x[:, None], y[o, None], z[:, None]) for o in orders]))


METHODS = ("mist_stratified", "mist chain rule", "frenzel_pompe")


def evaluate(est: Estimator, tasks, permutations: int) -> dict[str, dict[str, list]]:
    """Each method's errors, 90 % coverage, CI decisions and seconds per test over ``tasks`` (x, y, z, truth)."""
    found = {m: {"err": [], "cov": [], "dep": [], "sec": []} for m in METHODS}
    for x, y, z, truth in tasks:
        start = time.perf_counter()
        test = est.ci_test(x, y, z, permutations=permutations)
        found["mist_stratified"]["sec"].append(time.perf_counter() - start)
        chain = est.conditional(x, y, z, discrete_z=False)
        start = time.perf_counter()
        p = frenzel_pompe_test(x, y, z, permutations)
        found["frenzel_pompe"]["sec"].append(time.perf_counter() - start)
        for name, answer in (("mist_stratified", test.estimate), ("mist chain rule", chain)):
            lo, hi = answer.interval_90
            found[name]["err"].append(answer.mi_nats - truth)
            found[name]["cov"].append(lo <= truth <= hi)
        found["mist_stratified"]["dep"].append(test.dependent)
        found["frenzel_pompe"]["err"].append(frenzel_pompe(x[:, None], y[:, None], z[:, None]) - truth)
        found["frenzel_pompe"]["dep"].append(p <= 0.05)
    return found


def report(found: dict[str, dict[str, list]], cell: dict, label: str) -> list[dict]:
    """One row per method (printed and returned), ``cell`` naming the task cell."""
    rows = []
    for name, f in found.items():
        row = {**cell, "method": name, "tasks": len(f["err"]),
               "mae": float(np.mean(np.abs(f["err"]))), "bias": float(np.mean(f["err"])),
               "cov90": float(np.mean(f["cov"])) if f["cov"] else None,
               "dependent_rate": float(np.mean(f["dep"])) if f["dep"] else None,
               "seconds_per_test": float(np.median(f["sec"])) if f["sec"] else None}  # fmt: skip
        rows.append(row)
        cells = [f"{row['cov90']:6.2f}" if row["cov90"] is not None else f"{'':6s}",
                 f"{row['dependent_rate']:9.2f}" if row["dependent_rate"] is not None else f"{'':9s}",
                 f"{row['seconds_per_test']:7.3f}" if row["seconds_per_test"] is not None else ""]  # fmt: skip
        print(f"{label} {name:18s} {row['mae']:6.3f} {' '.join(cells)}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--classes", type=int, nargs="+", default=[2, 5, 10])
    parser.add_argument("--tasks", type=int, default=20, help="tasks per (classes, CMI level) cell")
    parser.add_argument("--heldout-tasks", type=int, default=20, help="per (classes, null) cell; 0: none")
    parser.add_argument("--permutations", type=int, default=99, help="per CI test, for mist and Frenzel–Pompe alike")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.tasks < 0 or args.heldout_tasks < 0 or args.n < 20 * max(args.classes) or min(args.classes) < 1:
        parser.error("--tasks and --heldout-tasks must be >= 0, --classes >= 1, and --n >= 20 rows per class")
    torch.set_num_threads(2)
    est, rows = Estimator.load(), []
    header = f"{'suite':8s} {'K':>3s} {'CMI':>6s} {'method':18s} {'MAE':>6s} {'cov90':>6s} {'dependent':>9s}"
    print(f"{header} {'s/test':>7s}")
    for k in args.classes:
        for cmi in LEVELS if args.tasks else ():
            rng = np.random.default_rng(1000 * k + int(1000 * cmi))
            tasks = ((*task(rng, args.n, k, cmi), cmi) for _ in range(args.tasks))
            cell = {"suite": "gaussian", "classes": k, "cmi": cmi, "n": args.n}
            rows += report(evaluate(est, tasks, args.permutations), cell, f"{'gaussian':8s} {k:3d} {cmi:6.3f}")
    config = load_config(resolve(HELDOUT_META))
    for k in args.classes:
        for null in (True, False) if args.heldout_tasks else ():
            tasks = (heldout_task(config, i, args.n, k, null) for i in range(args.heldout_tasks))
            cell = {"suite": "heldout", "classes": k, "cmi": 0.0 if null else "drawn", "n": args.n}
            label = f"{'heldout':8s} {k:3d} {'0' if null else 'drawn':>6s}"
            rows += report(evaluate(est, tasks, args.permutations), cell, label)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"permutations": args.permutations, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
