"""Calibrate a checkpoint's conditional MI (``mist calibrate-cmi``): run the chain rule on CMI tasks the network
never trained on and fit the conformal offsets and the CI test's null statistics (:mod:`model.conditional`).

The calibration tasks and the benchmark's held-out tasks (``benchmarks/cmi_bench.py``) share no MI family, link
or reshaping: calibration pairs the training families with the linear and tanh links; the held-out suite the
held-out families with the sine and quadratic links, and other seeds.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from tqdm import tqdm

from metadata_gen.conditional import ConditionalSpec, sample_conditional_task
from metadata_gen.config import load_config
from model.assets import DEFAULT_META, HELDOUT_META, resolve
from model.conditional import Calibration, fit_calibration
from model.estimator import Estimator, calibration_path

CALIBRATION_SEED = 20_261_203
HELDOUT_SEED = 31_415_927


def calibration_spec() -> ConditionalSpec:
    return ConditionalSpec(load_config(resolve(DEFAULT_META)), links=("linear", "tanh"), seed=CALIBRATION_SEED)


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


def calibrate_checkpoint(checkpoint: str | Path, tasks: int = 600, progress: bool = True) -> Path:
    """Calibrate ``checkpoint`` and write its ``.cmi.json`` beside it."""
    est = Estimator.load(checkpoint)
    out = calibration_path(resolve(checkpoint))
    calibrate(est, calibration_spec(), tasks, progress).save(out)
    return out
