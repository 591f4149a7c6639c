"""``mist adapt``: shape the training distribution to a lab's data with normalizing flows, fine-tune, compare.

1. fit a flow to the Gaussian scores of the lab's X and one to its Y (:mod:`metadata_gen.fitted_flows`; a 1-D side
   gets none: ranks leave a single coordinate nothing to learn);
2. write a meta-distribution that draws the base config's tasks (known MI) at the lab's dims and n, and pushes each
   side through its flow: MI unchanged, within-side structure like the lab's;
3. fine-tune the start checkpoint on it;
4. evaluate the start and the adapted checkpoints side by side on fresh tasks of that distribution, with KSG and
   the Gaussian copula on the same arrays.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from metadata_gen.config import read_config_file
from metadata_gen.fitted_flows import AdaptError, check_side, fit_flow, save_flow
from metadata_gen.streams import ADAPT_OFFSET, ADAPT_TRAIN_SEED
from model.assets import DEFAULT_CHECKPOINT, DEFAULT_META, resolve
from model.baselines import rank_gaussianize
from model.checkpoint import export_for_serving, load_checkpoint
from model.estimator import Estimator
from model.training.evaluate import comparison_table, evaluate_many
from model.training.train import load_train_config, train


def adapted_meta(base: dict, dx: int, dy: int, n: int, flows: dict[str, str], name: str) -> dict:
    """The base meta-distribution at the lab's shape, with the fitted flows as the first reshaping stage (other
    within-side maps off: they would overwrite the lab's structure)."""
    meta = json.loads(json.dumps(base))
    meta["name"], meta["seed"] = name, int(base.get("seed", 0)) + ADAPT_OFFSET
    meta["dims"] = {"dx": {"low": dx, "high": dx}, "dy": {"low": dy, "high": dy},
                    "n": {"low": max(16, min(n // 2, 2048)), "high": max(32, min(2 * n, 4096))}}  # fmt: skip
    transforms = meta.setdefault("transforms", {})
    for stage in ("linear", "spiral", "flow"):
        transforms[stage] = {"probability": 0.0}
    transforms["fitted"] = flows
    return meta


def adapt(
    x: np.ndarray,
    y: np.ndarray,
    out: str | Path,
    base_meta: str = DEFAULT_META,
    init: str = DEFAULT_CHECKPOINT,
    minutes: float = 10.0,
    steps: int = 100_000,
    flow_epochs: int = 200,
    eval_tasks: int = 20,
    progress: bool = True,
) -> dict:
    """Run the four steps above into ``out``; returns a summary (also written to ``out/adapt.json``)."""
    x, y = check_side(x, "x"), check_side(y, "y")
    if len(x) != len(y):
        raise AdaptError(f"y: has {len(y)} rows but x has {len(x)}; rows are paired samples")
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    flows, fits = {}, {}
    for side, data in (("x", x), ("y", y)):
        if data.shape[1] < 2:
            fits[side] = "1-D: no within-side structure to learn (ranks remove the marginal); no flow"
            continue
        flow, report = fit_flow(rank_gaussianize(data), side, max_epochs=flow_epochs, progress=progress)
        save_flow(flow, out / f"flow_{side}.pt")
        flows[side], fits[side] = str(out / f"flow_{side}.pt"), asdict(report)
    meta = adapted_meta(
        read_config_file(resolve(base_meta)), x.shape[1], y.shape[1], len(x), flows, f"adapted-{out.name}"
    )
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    start = load_checkpoint(resolve(init))
    cfg = {**start["train_config"], "name": "mist-adapted", "out_dir": str(out / "run")}
    # the whole network trains on fresh batches, whatever the start was trained by (a cached-head start included)
    cfg["data"] = {**cfg["data"], "meta_config": str(out / "meta.json"), "seed": ADAPT_TRAIN_SEED, "cached_tasks": 0}
    cfg["optim"] = {**cfg["optim"], "steps": steps, "max_minutes": minutes, "lr": 5e-4, "warmup": 20,
                    "trainable": "all"}  # fmt: skip
    (out / "train.json").write_text(json.dumps(cfg, indent=1))
    last = train(load_train_config(out / "train.json"), init=init, progress=progress)
    export_for_serving(last, out / "adapted.pt")
    models = {"start": Estimator.load(init), "adapted": Estimator.load(out / "adapted.pt")}
    reports = evaluate_many(models, str(out / "meta.json"), eval_tasks, progress=progress)
    table = comparison_table(reports)
    (out / "evaluation.md").write_text(table + "\n")
    summary = {
        "flows": fits,
        "meta_config": str(out / "meta.json"),
        "checkpoint": str(out / "adapted.pt"),
        "mae": {k: r["overall"]["mae"] for k, r in reports.items()},
        "coverage_90": {k: r["overall"]["coverage_90"] for k, r in reports.items()},
        "mae_ksg": reports["start"]["overall"]["mae_ksg"],
        "mae_gaussian_copula": reports["start"]["overall"]["mae_gaussian_copula"],
        "table": table,
    }
    (out / "adapt.json").write_text(json.dumps(summary, indent=1))
    return summary
