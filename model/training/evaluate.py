"""Evaluation on fixed, seeded suites: held-in (training families, new seeds) and held-out (never trained on).

For each family × n bucket: MAE, bias, RMSE of the median; coverage and width of the 50 % and 90 % intervals;
and the MAE of KSG (k = 5) and the Gaussian-copula baseline on the same arrays, in the same run.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from metadata_gen.batched import BatchGenerator, sample_task
from metadata_gen.config import MetaConfig, load_config, parse_config, read_config_file
from metadata_gen.sampler import Task, draw_dims
from metadata_gen.streams import QUALITY_HIGH_MI_OFFSET, QUALITY_INDEPENDENCE_OFFSET, SUITE_OFFSET, task_rng
from model import baselines
from model.assets import DEFAULT_META, HELDOUT_META, resolve, shipped
from model.estimator import Estimator

SUITES = {"held-in": shipped(DEFAULT_META), "held-out": shipped(HELDOUT_META)}
N_BUCKETS = ((100, 500), (500, 2000), (2000, 5001))
PRECISE = "n>=1000, MI<=3"  # the group of the quality bar's precision target


def suite_tasks(meta: MetaConfig, tasks_per_bucket: int) -> list[Task]:
    """Tasks with n log-uniform inside each bucket and dims from the config's own prior, drawn by the generator
    that trains (one task per distribution)."""
    seed = meta.seed + SUITE_OFFSET
    gen = BatchGenerator(meta, seed)
    out = []
    for b, (lo, hi) in enumerate(N_BUCKETS):
        for k in range(tasks_per_bucket):
            rng = task_rng(seed, b * 1_000_000 + k)
            n = int(np.exp(rng.uniform(np.log(lo), np.log(hi))))
            index = (b * 1_000_000 + k) * meta.tasks_per_distribution
            out += gen.generate([index], dims=draw_dims(rng, meta), n=n).tasks()
    return out


def _bucket(n: int) -> str:
    for lo, hi in N_BUCKETS:
        if lo <= n < hi:
            return f"{lo}-{hi}"
    return "other"


def _summarize(rows: list[dict]) -> dict:
    mi = np.array([r["mi"] for r in rows])
    med = np.array([r["median"] for r in rows])
    err = med - mi
    q = np.array([r["q"] for r in rows])  # (T, 4): 5, 25, 75, 95 %
    out = {
        "tasks": len(rows),
        "mae": float(np.abs(err).mean()),
        "bias": float(err.mean()),
        "rmse": float(np.sqrt((err**2).mean())),
        "coverage_50": float(((q[:, 1] <= mi) & (mi <= q[:, 2])).mean()),
        "coverage_90": float(((q[:, 0] <= mi) & (mi <= q[:, 3])).mean()),
        "width_90": float((q[:, 3] - q[:, 0]).mean()),
    }
    for name in ("ksg", "gaussian_copula"):
        out[f"mae_{name}"] = float(np.abs(np.array([r[name] for r in rows]) - mi).mean())
    return out


TEXTBOOK_N = (200, 1000, 5000)
TEXTBOOK_SEEDS = 10


def _gaussian_pairs(rng: np.random.Generator, n: int, rho: float, pairs: int) -> tuple[np.ndarray, np.ndarray]:
    x = rng.standard_normal((n, pairs))
    return x, rho * x + np.sqrt(1 - rho**2) * rng.standard_normal((n, pairs))


def _textbook_task(group: str, n: int, seed: int) -> Task:
    """One task of the textbook suite, with its exact truth (Monte Carlo for the ring mixture)."""
    import torch

    from metadata_gen import truth

    rng = np.random.default_rng([seed, n, sum(map(ord, group))])
    kind, _, value = group.partition(" ")
    if kind in ("gauss", "gauss-warped"):
        rho = float(value.split("=")[1])
        x, y = _gaussian_pairs(rng, n, rho, 1)
        if kind == "gauss-warped":
            x, y = np.exp(x), y**3
        mi = -0.5 * np.log1p(-(rho**2))
    elif kind == "gauss-5pairs":
        x, y = _gaussian_pairs(rng, n, 0.7, 5)
        mi = -2.5 * np.log1p(-0.49)
    elif kind == "uniform":
        eps = float(value.split("=")[1])
        x = rng.uniform(size=(n, 1))
        y = x + eps * rng.uniform(size=(n, 1))
        mi = float(truth.uniform_noise_mi(torch.tensor([[eps]]), torch.ones(1, 1))[0])
    elif kind == "student-t3":
        d = int(value.split("=")[1])
        x, y = _gaussian_pairs(rng, n, 0.6, d)
        w = np.sqrt(rng.chisquare(3, size=(n, 1)) / 3)
        x, y = x / w, y / w
        mi = -0.5 * d * np.log1p(-0.36) + float(truth.student_t_correction(torch.tensor([3.0]), d, d)[0])
    elif kind == "ring-mixture":  # one fixed 12-component ring, drawn by the generator
        t = _ring_mixture(n, seed)
        x, y, mi = t.x, t.y, t.mi
    else:
        raise ValueError(f"unknown textbook group {group!r}")
    return Task(x.astype(np.float32), y.astype(np.float32), float(mi), 0.0, group)


def _ring_mixture(n: int, seed: int) -> Task:
    one = {"low": 1, "high": 1}
    ring = parse_config(
        {
            "seed": 2024,
            "tasks_per_distribution": 64,
            "dims": {"dx": one, "dy": one},
            "mi_prior": {"max_nats": 2.0, "log_uniform_fraction": 0.0},
            "families": {"gmm": {"layouts": ["ring"], "components": {"low": 12, "high": 12}}},
        }
    )
    return sample_task(ring, seed % 64, shape=(n, 1, 1))


TEXTBOOK_GROUPS = (
    *(f"gauss rho={r}" for r in (0.0, 0.3, 0.6, 0.8, 0.95, 0.99)),
    *(f"gauss-warped rho={r}" for r in (0.0, 0.3, 0.6, 0.8, 0.95, 0.99)),
    "gauss-5pairs rho=0.7", "uniform eps=0.1", "uniform eps=0.5", "student-t3 d=1", "student-t3 d=5", "ring-mixture",
)  # fmt: skip


def textbook_tasks(seeds: int = TEXTBOOK_SEEDS) -> list[Task]:
    return [_textbook_task(g, n, s) for g in TEXTBOOK_GROUPS for n in TEXTBOOK_N for s in range(seeds)]


def load_suite(suite: str, tasks_per_bucket: int) -> list[Task]:
    """The tasks of a named suite (held-in, held-out, textbook) or of a meta-distribution config file (its own
    shape prior, ``3 · tasks_per_bucket`` tasks from seeds disjoint from training)."""
    if suite == "textbook":
        return textbook_tasks(min(tasks_per_bucket, TEXTBOOK_SEEDS))
    if suite in SUITES:
        return suite_tasks(load_config(SUITES[suite]), tasks_per_bucket)
    if not resolve(suite).is_file():
        raise ValueError(f"unknown suite {suite!r}: use held-in, held-out, textbook or a meta-distribution config file")
    return config_tasks(load_config(resolve(suite)), tasks_per_bucket * len(N_BUCKETS))


def config_tasks(meta: MetaConfig, count: int, offset: int = SUITE_OFFSET) -> list[Task]:
    """``count`` tasks of a meta-distribution at its own shape prior, one per distribution, from the seed
    ``meta.seed + offset`` (disjoint from training)."""
    gen = BatchGenerator(meta, meta.seed + offset)
    per = meta.tasks_per_distribution
    return [t for b in gen.generate([k * per for k in range(count)]) for t in b.tasks()]


def evaluate_many(
    estimators: dict[str, Estimator], suite: str, tasks_per_bucket: int = 30, progress: bool = True
) -> dict[str, dict]:
    """Run one suite for several checkpoints on the same arrays, with KSG and GC computed once; returns per
    checkpoint {"overall": ..., "by_bucket": ..., "by_family": ..., "calibration": ...}. ``textbook`` takes
    ``tasks_per_bucket`` as the number of seeds per group and n (at most 10 are meaningful)."""
    tasks = load_suite(suite, tasks_per_bucket)
    base = [{"ksg": baselines.ksg(t.x, t.y), "gaussian_copula": baselines.gaussian_copula(t.x, t.y)}
            for t in tqdm(tasks, desc=f"baselines {Path(suite).stem}", disable=not progress)]  # fmt: skip
    return {name: _report(est, suite, tasks, base, progress) for name, est in estimators.items()}


def _report(estimator: Estimator, suite: str, tasks: list[Task], base: list[dict], progress: bool) -> dict:
    rows, taus = [], np.asarray(estimator.grid)
    below = []
    for t, b in zip(tqdm(tasks, desc=f"evaluate {Path(suite).stem}", disable=not progress), base, strict=True):
        answer = estimator.estimate(t.x, t.y, quantiles=tuple(taus))  # the serving path, its guards included
        grid_q = np.array(list(answer.quantiles.values()))
        below.append(t.mi <= grid_q)
        row = {"family": t.family, "n": t.n, "mi": t.mi, "median": float(np.interp(0.5, taus, grid_q)), **b}
        row["q"] = np.interp([0.05, 0.25, 0.75, 0.95], taus, grid_q).tolist()
        rows.append(row)
    groups: dict[str, dict[str, list]] = {"by_bucket": defaultdict(list), "by_family": defaultdict(list)}
    for r in rows:
        groups["by_bucket"][_bucket(r["n"])].append(r)
        groups["by_family"][r["family"] if suite != "textbook" else f"{r['family']} n={r['n']}"].append(r)
    frac_below = np.mean(below, axis=0)
    precise = [r for r in rows if r["n"] >= 1000 and r["mi"] <= 3.0]
    return {
        "suite": suite,
        "version": estimator.version,
        "overall": _summarize(rows),
        PRECISE: _summarize(precise) if precise else None,
        "by_bucket": {k: _summarize(v) for k, v in sorted(groups["by_bucket"].items())},
        "by_family": {k: _summarize(v) for k, v in sorted(groups["by_family"].items())},
        "calibration": {
            "taus": taus.tolist(),
            "fraction_below": frac_below.tolist(),
            "error": float(np.abs(frac_below - taus).mean()),
        },
    }


def comparison_table(reports: dict[str, dict]) -> str:
    """Checkpoints side by side on one suite: MAE, 90 % coverage and width per checkpoint, then KSG and GC."""
    names = list(reports)
    first = reports[names[0]]
    cols = [f"MAE {n}" for n in names] + [f"cov90 {n}" for n in names] + [f"width90 {n}" for n in names]
    head = "| group | tasks | " + " | ".join(cols) + " | MAE KSG | MAE GC |\n" + "|---" * (len(cols) + 4) + "|"
    lines = [f"### {first['suite']}: " + ", ".join(f"{n} = {r['version']}" for n, r in reports.items()), "", head]
    keys = [("all", ("overall",))] + [(f"n {k}", ("by_bucket", k)) for k in first["by_bucket"]]
    keys += [(k, ("by_family", k)) for k in first["by_family"]]
    for label, path in keys:
        cells = [_dig(reports[n], path) for n in names]
        vals = [f"{c['mae']:.3f}" for c in cells] + [f"{c['coverage_90']:.2f}" for c in cells]
        vals += [f"{c['width_90']:.2f}" for c in cells]
        lines.append(f"| {label} | {cells[0]['tasks']} | " + " | ".join(vals)
                     + f" | {cells[0]['mae_ksg']:.3f} | {cells[0]['mae_gaussian_copula']:.3f} |")  # fmt: skip
    return "\n".join(lines)


def _dig(report: dict, path: tuple[str, ...]) -> dict:
    for key in path:
        report = report[key]
    return report


def markdown_table(report: dict) -> str:
    head = "| group | tasks | MAE | bias | RMSE | cov50 | cov90 | width90 | MAE KSG | MAE GC |\n" + "|---" * 10 + "|"
    lines = [f"### {report['suite']} ({report['version']})", "", head]
    groups = [("all", report["overall"])]
    if report.get(PRECISE):
        groups.append(("n ≥ 1000, MI ≤ 3", report[PRECISE]))
    groups += [(f"n {k}", v) for k, v in report["by_bucket"].items()]
    groups += list(report["by_family"].items())
    for name, s in groups:
        lines.append(
            f"| {name} | {s['tasks']} | {s['mae']:.3f} | {s['bias']:+.3f} | {s['rmse']:.3f} | {s['coverage_50']:.2f} "
            f"| {s['coverage_90']:.2f} | {s['width_90']:.2f} | {s['mae_ksg']:.3f} | {s['mae_gaussian_copula']:.3f} |"
        )
    lines.append(f"\nquantile calibration error (mean |P(MI ≤ q_τ) − τ|): {report['calibration']['error']:.3f}")
    return "\n".join(lines)


def _variant(suite: str, **changes) -> MetaConfig:
    return parse_config({**read_config_file(SUITES[suite]), **changes}, f"{suite} variant")


def quality_checks(estimator: Estimator, tasks: int = 40, progress: bool = True) -> dict:
    """Two checks of the checkpoint's quality bar, on held-out transforms with new seeds:

    - independence: X, Y independent (MI = 0) at n = 1000: median estimates and how often the 90 % interval
      holds 0;
    - high MI: true MI in [4, 8] nats at n = 5000: relative error of the median, and of KSG and the
      Gaussian copula on the same arrays.
    """
    seed = QUALITY_INDEPENDENCE_OFFSET
    indep = _variant("held-out", families={"independent": {}})
    medians, holds_zero = [], []
    for k in tqdm(range(tasks), desc="independence", disable=not progress):
        index = k * indep.tasks_per_distribution  # one task per distribution
        t = sample_task(indep, index, seed, shape=(1000, *draw_dims(task_rng(seed, k), indep)))
        e = estimator.estimate(t.x, t.y)
        medians.append(e.median)
        holds_zero.append(e.interval_90[0] <= 0.0)
    high = _variant("held-out", mi_prior={"max_nats": 8.0, "log_uniform_fraction": 0.0})
    rel = {"mist": [], "ksg": [], "gaussian_copula": []}
    k = 0
    bar = tqdm(total=tasks, desc="high MI", disable=not progress)
    while len(rel["mist"]) < tasks and k < 20 * tasks:
        index = k * high.tasks_per_distribution
        t = sample_task(high, index, QUALITY_HIGH_MI_OFFSET,
                        shape=(5000, *draw_dims(task_rng(QUALITY_HIGH_MI_OFFSET, k), high)))  # fmt: skip
        k += 1
        if not 4.0 <= t.mi <= 8.0:
            continue
        rel["mist"].append(abs(estimator.estimate(t.x, t.y).median - t.mi) / t.mi)
        for name in ("ksg", "gaussian_copula"):
            rel[name].append(abs(baselines.BASELINES[name](t.x, t.y) - t.mi) / t.mi)
        bar.update(1)
    bar.close()
    return {
        "independence_n1000": {
            "tasks": tasks,
            "median_of_medians": float(np.median(medians)),
            "mean_median": float(np.mean(medians)),
            "fraction_median_le_0.03": float(np.mean(np.array(medians) <= 0.03)),
            "coverage_of_zero_90": float(np.mean(holds_zero)),
        },
        "high_mi_n5000": {
            "tasks": len(rel["mist"]),
            **{f"median_rel_error_{name}": float(np.median(v)) for name, v in rel.items()},
            **{f"mean_rel_error_{name}": float(np.mean(v)) for name, v in rel.items()},
        },
    }


def quality_table(checks: dict) -> str:
    ind, high = checks["independence_n1000"], checks["high_mi_n5000"]
    return "\n".join(
        [
            "### quality checks (held-out transforms)",
            "",
            f"independent X, Y at n = 1000 ({ind['tasks']} tasks): median estimate {ind['median_of_medians']:.3f} "
            f"(mean {ind['mean_median']:.3f}; ≤ 0.03 in {ind['fraction_median_le_0.03']:.0%}); "
            f"90 % interval holds 0 in {ind['coverage_of_zero_90']:.0%}",
            "",
            f"true MI 4–8 nats at n = 5000 ({high['tasks']} tasks), median relative error: "
            f"MIST {high['median_rel_error_mist']:.1%}, KSG {high['median_rel_error_ksg']:.1%}, "
            f"Gaussian copula {high['median_rel_error_gaussian_copula']:.1%}",
        ]
    )


def checkpoint_summary(reports: list[dict], checks: dict | None) -> dict:
    """The part of an evaluation stored inside a shipped checkpoint (and served by ``GET /v1/model``)."""
    keep = ("overall", PRECISE, "by_bucket", "by_family")
    suites = {r["suite"]: {k: r[k] for k in keep} | {"calibration_error": r["calibration"]["error"]} for r in reports}
    per_bucket = reports[0]["overall"]["tasks"] // len(N_BUCKETS)
    return {"suites": suites, "quality_checks": checks, "tasks_per_bucket": per_bucket}


def write_reports(reports: list[dict], out_dir: str | Path, checks: dict | None = None) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "evaluation.json").write_text(json.dumps({"suites": reports, "quality_checks": checks}, indent=1))
    tables = [markdown_table(r) for r in reports] + ([quality_table(checks)] if checks else [])
    (out / "evaluation.md").write_text("\n\n".join(tables) + "\n")
    _plot(reports, out)
    return out


def _plot(reports: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for r in reports:
        c = r["calibration"]
        axes[0].plot(c["taus"], c["fraction_below"], marker="o", label=r["suite"])
        buckets = list(r["by_bucket"])
        for key, style in (("mae", "-"), ("mae_ksg", "--"), ("mae_gaussian_copula", ":")):
            axes[1].plot(buckets, [r["by_bucket"][b][key] for b in buckets], style, marker="o",
                         label=f"{r['suite']} {key.replace('mae_', '') if key != 'mae' else 'mist'}")  # fmt: skip
    axes[0].plot([0, 1], [0, 1], "k--", lw=0.8)
    axes[0].set(xlabel="τ", ylabel="P(true MI ≤ q_τ)", title="quantile calibration")
    axes[1].set(xlabel="n bucket", ylabel="MAE (nats)", title="error vs n")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "evaluation.png", dpi=100)
    plt.close(fig)
