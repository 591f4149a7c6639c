"""Conditional MI I(X; Y | Z): mist's calibrated chain rule against Frenzel–Pompe (FP, k = 5) and the Gaussian-copula
chain rule (GC) on the same arrays, in one run; then the conditional-independence test against a permutation test
on FP (local permutations of X among neighbours in Z, Runge 2018). Prints tables; writes JSON with --out.

- accuracy: held-out CMI tasks (:func:`model.training.calibrate.heldout_spec`: held-out MI families, sine and
  quadratic links, held-out reshaping; none used by training or calibration), dims 1–8 per block, at each --n;
- CI test: Gaussian (E_x, E_y) at fixed CMI 0 / 0.05 / 0.1 / 0.2 behind the held-out links, n = 1000, dims
  --ci-dims per block; the rate of "dependent" at alpha = 0.05, and, since the permutation test's size is far
  from alpha on these tasks, two size-free comparisons: the AUC of each statistic (mist's chain-rule difference,
  the FP estimate) between the null tasks and each level's tasks, and the power of FP's estimate thresholded at
  the 95 % quantile of its own values on this run's null tasks (an in-sample, oracle threshold: it favours FP);
- speed: one mist estimate at n = 1000, 3 + 3 + 3, against one FP estimate and one FP permutation test.

    python benchmarks/cmi_bench.py [--tasks 40] [--ci-tasks 25] [--out benchmarks/results/cmi.json]
    python benchmarks/cmi_bench.py --null-shapes 1 2 3 5 [--shape-levels 0 0.1 0.2 0.5] [--null-tasks 40] \
        --out benchmarks/results/cmi_null_shapes.json
      (only the CI test's "dependent" rate per block size and CMI level, on tasks other than the CI section's:
      its false-positive rate at level 0, its power above)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
from cost_bench import median_seconds  # benchmarks run as scripts: their folder is on sys.path
from scipy.spatial import cKDTree
from scipy.stats import mannwhitneyu, rankdata

from metadata_gen.conditional import ConditionalSpec, sample_conditional_task
from metadata_gen.config import parse_config
from model.baselines import frenzel_pompe, gaussian_copula_conditional
from model.estimator import Estimator
from model.training.calibrate import heldout_spec

CI_LEVELS = (0.0, 0.05, 0.1, 0.2)
ALPHA = 0.05


def z_neighbours(z: np.ndarray, k: int = 5) -> np.ndarray:
    """Each row's k nearest rows in Z (itself included), by max-norm on Z's per-coordinate ranks, so that no
    coordinate's scale decides (k = 5 as in tigramite's CMIknn): ``(n, k)``."""
    ranks = rankdata(z, axis=0)
    return cKDTree(ranks).query(ranks, k=k, p=np.inf)[1]


def local_permutation(x: np.ndarray, neighbours: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Runge's (2018) shuffle: each row takes the x of a not-yet-used row among its neighbours in Z
    (:func:`z_neighbours`), which keeps X's dependence on Z and breaks the rest."""
    used = np.zeros(len(x), dtype=bool)
    take = np.empty(len(x), dtype=int)
    for i in rng.permutation(len(x)):
        options = rng.permutation(neighbours[i])
        free = options[~used[options]]
        take[i] = free[0] if free.size else options[0]
        used[take[i]] = True
    return x[take]


def fp_permutation_test(x, y, z, perms: int, rng: np.random.Generator) -> tuple[float, float]:
    """The permutation p-value of FP's estimate, and the estimate itself (Z's neighbours found once)."""
    observed, neighbours = frenzel_pompe(x, y, z), z_neighbours(z)
    null = [frenzel_pompe(local_permutation(x, neighbours, rng), y, z) for _ in range(perms)]
    return (1 + sum(v >= observed for v in null)) / (perms + 1), observed


def accuracy(est: Estimator, n: int, tasks: int) -> list[dict]:
    spec, rows = heldout_spec(), []
    for i in range(tasks):
        drawn = sample_conditional_task(spec, i)  # the shape prior's dims; n fixed below
        t = sample_conditional_task(spec, i, (n, drawn.x.shape[1], drawn.y.shape[1], drawn.z.shape[1]))
        x, y, z = (a.astype(np.float64) for a in (t.x, t.y, t.z))
        start = time.perf_counter()
        r = est.conditional(x, y, z)
        mist_s = time.perf_counter() - start
        start = time.perf_counter()
        fp = frenzel_pompe(x, y, z)
        fp_s = time.perf_counter() - start
        rows.append({**t.meta(), "mist": r.mi_nats, "lower": r.interval_90[0], "upper": r.interval_90[1],
                     "fp": fp, "gc": gaussian_copula_conditional(x, y, z), "mist_s": mist_s, "fp_s": fp_s})  # fmt: skip
    return rows


def ci_spec(cmi: float) -> ConditionalSpec:
    base = heldout_spec()
    inner = parse_config({**base.inner.model_dump(), "families": {"gaussian_sparse": {"weight": 1.0}}}, "ci")
    return dataclasses.replace(base, inner=inner, cmi=cmi, seed=base.seed + 1)


def ci_power(est: Estimator, tasks: int, dims: int, perms: int) -> list[dict]:
    rows = []
    for level in CI_LEVELS:
        spec = ci_spec(level)
        for i in range(tasks):
            t = sample_conditional_task(spec, i, (1000, dims, dims, dims))
            x, y, z = (a.astype(np.float64) for a in (t.x, t.y, t.z))
            start = time.perf_counter()
            test = est.ci_test(x, y, z, ALPHA)
            mist_s = time.perf_counter() - start
            start = time.perf_counter()
            p_fp, fp_statistic = fp_permutation_test(x, y, z, perms, np.random.default_rng(i))
            fp_s = time.perf_counter() - start
            rows.append({"level": level, "cmi": t.cmi, "index": i, "mist_p": test.p_value,
                         "mist_dependent": test.dependent, "fp_p": p_fp, "fp_dependent": p_fp <= ALPHA,
                         "mist_statistic": est.chain_rule(x, y, z).difference, "fp_statistic": fp_statistic,
                         "mist_s": mist_s, "fp_s": fp_s})  # fmt: skip
        group = [r for r in rows if r["level"] == level]
        print(f"CI test at CMI {level:.2f}: mist {np.mean([r['mist_dependent'] for r in group]):.2f}, "
              f"FP permutation {np.mean([r['fp_dependent'] for r in group]):.2f}", flush=True)  # fmt: skip
    return rows


def rates_by_shape(est: Estimator, dims: list[int], levels: list[float], tasks: int, start: int) -> dict:
    """mist's "dependent" rate at alpha on the CI section's tasks at each CMI level (0: its false-positive rate,
    above 0: its power), and its 90 % interval's coverage of the truth, per block size, on task indices ``start`` …
    ``start + tasks − 1`` (the CI section itself reads 0 … ci_tasks − 1)."""
    out: dict = {}
    cover: dict = {}
    for level in levels:
        spec, out[str(level)], cover[str(level)] = ci_spec(level), {}, {}
        for d in dims:
            drawn = [sample_conditional_task(spec, i, (1000, d, d, d)) for i in range(start, start + tasks)]
            tests = [est.ci_test(*(a.astype(np.float64) for a in (t.x, t.y, t.z)), ALPHA) for t in drawn]
            out[str(level)][str(d)] = rate = float(np.mean([t.dependent for t in tests]))
            bounds = [r.estimate.interval_90 for r in tests]
            held = [lo <= t.cmi <= hi for t, (lo, hi) in zip(drawn, bounds, strict=True)]
            cover[str(level)][str(d)] = cov = float(np.mean(held))
            print(f"CMI {level:.2f}, {d} + {d} + {d}, n = 1000: mist says dependent in {rate:.3f} of {tasks}; "
                  f"its 90 % interval holds the truth in {cov:.3f}", flush=True)  # fmt: skip
    return {"tasks": tasks, "start": start, "alpha": ALPHA, "rates": out, "cov90": cover}


def size_free(rows: list[dict]) -> dict:
    """Per level > 0: each statistic's AUC against the null tasks, and FP's power at its in-sample null threshold."""
    null = {m: np.array([r[f"{m}_statistic"] for r in rows if r["level"] == 0.0]) for m in ("mist", "fp")}
    fp_threshold = float(np.quantile(null["fp"], 1 - ALPHA))
    out: dict = {"fp_null_threshold": fp_threshold}
    for level in CI_LEVELS[1:]:
        alt = {m: np.array([r[f"{m}_statistic"] for r in rows if r["level"] == level]) for m in ("mist", "fp")}
        auc = {m: float(mannwhitneyu(alt[m], null[m]).statistic / (len(alt[m]) * len(null[m]))) for m in alt}
        out[str(level)] = {"auc": auc, "fp_power_at_null_threshold": float(np.mean(alt["fp"] > fp_threshold))}
    return out


def speed(est: Estimator, perms: int, reps: int = 20) -> dict:
    rng = np.random.default_rng(0)
    x, y, z = (rng.standard_normal((1000, 3)) for _ in range(3))
    est.conditional(x, y, z)  # warm-up
    mist = median_seconds(lambda: est.conditional(x, y, z), reps)
    fp = median_seconds(lambda: frenzel_pompe(x, y, z), reps)
    perm = median_seconds(lambda: fp_permutation_test(x, y, z, perms, rng), 1)
    return {"mist_s": mist, "fp_s": fp, "fp_permutation_s": perm, "perms": perms}


def summarize(rows: list[dict]) -> dict:
    truth = np.array([r["cmi"] for r in rows])
    err = {k: float(np.mean(np.abs(np.array([r[k] for r in rows]) - truth))) for k in ("mist", "fp", "gc")}
    cover = np.mean([r["lower"] <= r["cmi"] <= r["upper"] for r in rows])
    width = np.median([r["upper"] - r["lower"] for r in rows])
    return {"tasks": len(rows), "mae": err, "cov90": float(cover), "width90_median": float(width)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--tasks", type=int, default=40, help="held-out tasks per n")
    parser.add_argument("--ci-tasks", type=int, default=25, help="CI-test tasks per CMI level")
    parser.add_argument("--ci-dims", type=int, default=2, help="dims of each block in the CI test")
    parser.add_argument("--perms", type=int, default=200, help="permutations of the FP test")
    parser.add_argument(
        "--null-shapes",
        type=int,
        nargs="+",
        default=None,
        help="only measure the CI test's rate of 'dependent' at these dims per block (and --shape-levels)",
    )
    parser.add_argument(
        "--shape-levels", type=float, nargs="+", default=[0.0], help="CMI levels in nats (with --null-shapes)"
    )
    parser.add_argument("--null-tasks", type=int, default=40, help="tasks per shape and level (with --null-shapes)")
    parser.add_argument("--null-start", type=int, default=1000, help="first task index (with --null-shapes)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    est = Estimator.load()
    if args.null_shapes and not (all(1 <= d <= 32 for d in args.null_shapes) and args.null_tasks >= 1):
        parser.error("--null-shapes takes dims per block in 1..32 (x and z, y and z share one side of at most 64), "
                     "--null-tasks at least 1")  # fmt: skip
    if not all(0.0 <= v <= 2.0 for v in args.shape_levels):
        parser.error("--shape-levels takes CMI levels in 0..2 nats (the generator's range)")
    if args.null_shapes:
        found = {
            "checkpoint": est.conditional_by.version,
            "by_shape": rates_by_shape(est, args.null_shapes, args.shape_levels, args.null_tasks, args.null_start),
        }
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(found, indent=1))
        return
    out: dict = {"checkpoint": est.version, "accuracy": {}, "alpha": ALPHA}
    print(f"{'n':>5s} {'tasks':>5s} {'mist MAE':>9s} {'FP MAE':>7s} {'GC MAE':>7s} {'mist/FP':>7s} {'cov90':>6s} "
          f"{'width90':>7s}")  # fmt: skip
    for n in args.n:
        rows = accuracy(est, n, args.tasks)
        s = summarize(rows)
        out["accuracy"][str(n)] = {**s, "rows": rows}
        mae = s["mae"]
        print(f"{n:5d} {s['tasks']:5d} {mae['mist']:9.3f} {mae['fp']:7.3f} {mae['gc']:7.3f} "
              f"{mae['mist'] / mae['fp']:7.2f} {s['cov90']:6.2f} {s['width90_median']:7.2f}", flush=True)  # fmt: skip
    rows = ci_power(est, args.ci_tasks, args.ci_dims, args.perms)
    rates = {str(level): {m: float(np.mean([r[f"{m}_dependent"] for r in rows if r["level"] == level]))
                          for m in ("mist", "fp")} for level in CI_LEVELS}  # fmt: skip
    times = {m: float(np.median([r[f"{m}_s"] for r in rows])) for m in ("mist", "fp")}
    sizefree = size_free(rows)
    out["ci_test"] = {"dims": args.ci_dims, "perms": args.perms, "rates": rates, "size_free": sizefree,
                      "median_s": times, "rows": rows}  # fmt: skip
    for level in CI_LEVELS[1:]:
        sf = sizefree[str(level)]
        print(f"CMI {level:.2f} against the nulls: AUC mist {sf['auc']['mist']:.2f}, FP {sf['auc']['fp']:.2f}; "
              f"FP power at its in-sample null threshold {sf['fp_power_at_null_threshold']:.2f}")  # fmt: skip
    print(f"CI test medians: mist {times['mist'] * 1e3:.1f} ms, FP permutation {times['fp']:.2f} s "
          f"({times['fp'] / times['mist']:.0f}x)")  # fmt: skip
    out["speed"] = speed(est, args.perms)
    sp = out["speed"]
    print(f"n = 1000, 3 + 3 + 3: mist {sp['mist_s'] * 1e3:.1f} ms, FP {sp['fp_s'] * 1e3:.1f} ms, "
          f"FP permutation test {sp['fp_permutation_s']:.2f} s")  # fmt: skip
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
