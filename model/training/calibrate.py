"""Calibrate a checkpoint's intervals on tasks its network never trained on.

- ``mist calibrate``: MI intervals (:mod:`model.intervals`), fitted on tasks of the training meta-distribution
  (new seeds) and of the held-out one (its families and reshaping never trained on), and stored in the checkpoint.
  The held-out *suite* of ``mist evaluate`` draws the same held-out families from other seeds, so its coverage is
  in-calibration; the calibration's own leave-one-family-out coverage (in the checkpoint's report) is the figure
  for families that calibration never saw.
- ``mist calibrate-cmi``: conditional MI (:mod:`model.conditional`): run the chain rule on CMI tasks the network
  never trained on and fit the conformal offsets and the CI test's null statistics.

The calibration tasks and the benchmark's held-out tasks (``benchmarks/cmi_bench.py``) share no MI family, link
or reshaping: calibration pairs the training families with :data:`CALIBRATION_LINKS`; the held-out suite the
held-out families with the sine and quadratic links, and other seeds. Calibration draws the cubic link because
without it the CI test's false-positive rate on held-out null tasks was 0.10-0.11 at alpha 0.05 (with it 0.03);
its null differences have the heaviest tail, which also costs the test most of its power (model card).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from metadata_gen.conditional import ConditionalSpec, sample_conditional_task
from metadata_gen.config import load_config
from metadata_gen.streams import INTERVAL_CALIBRATION_OFFSET
from model.assets import DEFAULT_META, HELDOUT_META, resolve
from model.checkpoint import load_checkpoint, save_checkpoint
from model.conditional import Calibration, fit_calibration
from model.conformal import CMI_CALIBRATION_TASKS, INTERVAL_TASKS_PER_SOURCE
from model.estimator import Estimator, calibration_path
from model.intervals import IntervalCalibration, fit_interval_calibration
from model.training.evaluate import config_tasks

INTERVAL_SOURCES = {"held-in": DEFAULT_META, "held-out": HELDOUT_META}

CALIBRATION_SEED = 20_261_203
HELDOUT_SEED = 31_415_927


CALIBRATION_LINKS = ("linear", "tanh", "cubic", "softplus", "bump")


def calibration_spec() -> ConditionalSpec:
    return ConditionalSpec(load_config(resolve(DEFAULT_META)), links=CALIBRATION_LINKS, seed=CALIBRATION_SEED)


def heldout_spec(n: tuple[int, int] = (200, 5000)) -> ConditionalSpec:
    return ConditionalSpec(load_config(resolve(HELDOUT_META)), links=("sin", "quadratic"), n=n, seed=HELDOUT_SEED)


def describe(spec: ConditionalSpec) -> dict:
    out = {k: v for k, v in asdict(spec).items() if k != "inner"}
    return {**out, "inner": spec.inner.name}


def calibrate(est: Estimator, spec: ConditionalSpec, tasks: int, progress: bool = True) -> Calibration:
    combined, truths = [], []
    for i in tqdm(range(tasks), desc="calibrate-cmi", disable=not progress):
        t = sample_conditional_task(spec, i)
        combined.append(est.chain_rule(t.x, t.y, t.z))
        truths.append(t.cmi)
    return fit_calibration(combined, truths, list(est.grid), est.version, describe(spec))


def calibrate_checkpoint(checkpoint: str | Path, tasks: int = CMI_CALIBRATION_TASKS, progress: bool = True) -> Path:
    """Calibrate ``checkpoint`` and write its ``.cmi.json`` beside it."""
    est = Estimator(load_checkpoint(resolve(checkpoint)))  # not Estimator.load: its old calibration may not load
    out = calibration_path(resolve(checkpoint))
    calibrate(est, calibration_spec(), tasks, progress).save(out)
    return out


def calibrate_intervals(est: Estimator, tasks_per_source: int, progress: bool = True) -> IntervalCalibration:
    """Fit MI interval offsets on ``tasks_per_source`` tasks of each of :data:`INTERVAL_SOURCES`; groups for the
    leave-one-out report are ``source/family``."""
    grids, disagreements, truths, groups = [], [], [], []
    for source, meta in INTERVAL_SOURCES.items():
        tasks = config_tasks(load_config(resolve(meta)), tasks_per_source, INTERVAL_CALIBRATION_OFFSET)
        for t in tqdm(tasks, desc=f"calibrate {source}", disable=not progress):
            ((g, d),) = est.raw_grids([(t.x, t.y)])
            grids.append(g), disagreements.append(d), truths.append(t.mi), groups.append(f"{source}/{t.family}")
    cal = fit_interval_calibration(np.stack(grids), np.array(disagreements), np.array(truths), list(est.grid), groups)
    cal.report["sources"] = {
        k: f"{Path(v).name}, seed + {INTERVAL_CALIBRATION_OFFSET}" for k, v in INTERVAL_SOURCES.items()
    }
    return cal


def calibrate_checkpoint_intervals(
    checkpoint: str | Path, tasks_per_source: int = INTERVAL_TASKS_PER_SOURCE, progress: bool = True
) -> dict:
    """Calibrate ``checkpoint``'s MI intervals and write them into the checkpoint file; returns the report."""
    path = resolve(checkpoint)
    ckpt = load_checkpoint(path)
    ckpt.pop("interval_calibration", None)  # fitted on the network's own quantiles
    cal = calibrate_intervals(Estimator(ckpt), tasks_per_source, progress)
    ckpt["interval_calibration"] = cal.to_dict()
    ckpt.pop("format_version", None)
    save_checkpoint(path, ckpt)
    return cal.to_dict()
