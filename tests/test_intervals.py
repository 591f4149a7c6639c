"""Calibrated MI intervals (model.conformal, model.intervals): the conformal guarantee, widening where the
statistics disagree, zeros kept, and the estimator's use of a checkpoint's calibration."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest

from model.conformal import conformal_offsets
from model.estimator import Estimator
from model.intervals import IntervalCalibration, fit_interval_calibration
from model.network import QUANTILE_GRID

LEVELS = list(QUANTILE_GRID)


def _network_grid(median_u: np.ndarray, spread_u: np.ndarray) -> np.ndarray:
    """A stand-in network's grid quantiles in nats: Gaussian on the log(1 + MI) scale with the given spread."""
    from scipy.stats import norm

    z = norm.ppf(LEVELS) / norm.ppf(0.95)
    return np.expm1(np.maximum(median_u[:, None] + spread_u[:, None] * z[None, :], 0.0))


def _tasks(rng: np.random.Generator, n: int, true_sd: np.ndarray | float, said_sd: float, disagreement=None):
    median = rng.uniform(0.5, 2.0, n)
    truth = np.expm1(np.maximum(median + np.broadcast_to(true_sd, n) * rng.standard_normal(n), 0.0))
    d = np.zeros(n) if disagreement is None else disagreement
    return _network_grid(median, np.full(n, said_sd)), d, truth


def _cov90(q: np.ndarray, truth: np.ndarray) -> float:
    lo, hi = q[:, LEVELS.index(0.05)], q[:, LEVELS.index(0.95)]
    return float(((lo <= truth) & (truth <= hi)).mean())


def test_conformal_offsets_cover_their_levels():
    """Split conformal: averaged over calibration draws, P(fresh residual ≤ offset) is the order statistic's
    k / (N + 1): at least τ above the median level, at most τ below it."""
    from scipy.stats import norm

    rng = np.random.default_rng(0)
    levels = (0.05, 0.5, 0.95)
    draws = [conformal_offsets(rng.standard_normal(199), levels) for _ in range(2000)]
    assert all(d == sorted(d) for d in draws)
    coverage = norm.cdf(np.array(draws)).mean(0)  # exact coverage of each offset for normal residuals
    assert coverage == pytest.approx([10 / 200, 100 / 200, 190 / 200], abs=0.004)


def test_an_overconfident_network_is_widened_to_its_level_on_fresh_tasks():
    """The network says σ/3; fitted on 2 000 tasks, the fresh tasks' 90 % coverage is ≈ 0.90 (raw: far below)."""
    rng = np.random.default_rng(1)
    grid, d, truth = _tasks(rng, 2000, 0.6, 0.2)
    cal = fit_interval_calibration(grid, d, truth, LEVELS, ["a"] * 1000 + ["b"] * 1000)
    fresh, fd, ftruth = _tasks(rng, 4000, 0.6, 0.2)
    assert _cov90(fresh, ftruth) < 0.5
    assert _cov90(cal.apply(fresh, fd), ftruth) == pytest.approx(0.90, abs=0.02)
    assert cal.report["groups"]["a"]["leave_group_out"] == pytest.approx(0.90, abs=0.04)
    medians = cal.apply(fresh, fd)[:, LEVELS.index(0.5)]
    assert np.allclose(medians, fresh[:, LEVELS.index(0.5)])  # point estimates are the network's


def test_where_errors_follow_the_disagreement_the_weight_is_chosen_and_intervals_widen_with_it():
    rng = np.random.default_rng(2)
    d = rng.uniform(0.0, 1.5, 3000)
    grid, _, truth = _tasks(rng, 3000, 0.05 + 0.8 * d, 0.05, d)
    cal = fit_interval_calibration(grid, d, truth, LEVELS, ["a"] * 3000)
    assert cal.disagreement_weight > 0
    same = np.repeat(grid[:1], 3, axis=0)
    q = cal.apply(same, np.array([0.0, 0.5, 1.5]))
    widths = q[:, LEVELS.index(0.95)] - q[:, LEVELS.index(0.05)]
    assert widths[0] < widths[1] < widths[2]
    # errors that do not follow it: the disagreement gets no weight
    grid, _, truth = _tasks(rng, 3000, 0.3, 0.3, d)
    assert fit_interval_calibration(grid, d, truth, LEVELS, ["a"] * 3000).disagreement_weight == 0.0


def test_calibrated_quantiles_are_ordered_and_zeros_stay_zero():
    rng = np.random.default_rng(3)
    grid, d, truth = _tasks(rng, 500, 0.5, 0.1, rng.uniform(0, 1, 500))
    cal = fit_interval_calibration(grid, d, truth, LEVELS, ["a"] * 500)
    q = cal.apply(np.vstack([grid, np.zeros(len(LEVELS)), _network_grid(np.array([0.05]), np.array([0.3]))]),
                  np.r_[d, 0.0, 2.0])  # fmt: skip
    assert (np.diff(q, axis=1) >= -1e-12).all() and (q >= 0).all()
    assert (q[-2] == 0).all()  # a constant side: exactly 0
    assert q[-1, 0] == 0.0  # the network's lower quantile was 0 (MI may be 0): still 0
    assert IntervalCalibration.from_dict(cal.to_dict()) == cal


def test_the_estimator_applies_a_checkpoints_calibration_and_the_chain_rule_does_not(shipped: Estimator):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((400, 2))
    y = x @ rng.standard_normal((2, 2)) + rng.standard_normal((400, 2))
    z = rng.standard_normal((400, 1))
    assert shipped.interval_calibration is not None, "run `mist calibrate` on the shipped checkpoint"
    raw = Estimator(_shipped_without_calibration())
    a, b = shipped.estimate(x, y), raw.estimate(x, y)
    assert a.mi_nats == pytest.approx(b.mi_nats)
    assert a.interval_90 != b.interval_90
    # the same raw terms (the folded body of two loads may differ in the last bits: threads order the sums)
    with_cal, without = (asdict(e.chain_rule(x, y, z)) for e in (shipped, raw))
    assert with_cal.pop("features") == pytest.approx(without.pop("features"), rel=1e-6)
    assert with_cal == pytest.approx(without, rel=1e-6)


def _shipped_without_calibration() -> dict:
    from model.checkpoint import load_checkpoint
    from model.estimator import default_checkpoint_path

    ckpt = load_checkpoint(default_checkpoint_path())
    ckpt.pop("interval_calibration")
    return ckpt


def test_the_shipped_calibration_reports_what_it_covers(shipped: Estimator):
    report = shipped.interval_calibration.report
    assert report["coverage_90_after"] >= 0.88
    assert any(g.startswith("held-out/") for g in report["groups"])
    assert all("leave_group_out" in r for r in report["groups"].values())


def test_a_calibration_saved_in_a_checkpoint_loads_with_weights_only(tmp_path):
    from model.checkpoint import load_checkpoint, save_checkpoint

    rng = np.random.default_rng(5)
    grid, d, truth = _tasks(rng, 100, 0.5, 0.2)
    cal = fit_interval_calibration(grid, d, truth, list(np.asarray(LEVELS)), ["a"] * 50 + ["b"] * 50)
    save_checkpoint(tmp_path / "c.pt", {"interval_calibration": cal.to_dict()})
    assert IntervalCalibration.from_dict(load_checkpoint(tmp_path / "c.pt")["interval_calibration"]) == cal


def test_mist_calibrate_rewrites_a_checkpoint_and_names_bad_flags(tmp_path, capsys):
    import shutil

    from mist.cli import main
    from model.estimator import default_checkpoint_path

    assert main(["calibrate", "--tasks", "5"]) == 2 and "--tasks" in capsys.readouterr().err
    assert main(["calibrate", "--checkpoint", str(tmp_path / "none.pt")]) == 2
    assert "not found" in capsys.readouterr().err
    path = tmp_path / "c.pt"
    shutil.copy(default_checkpoint_path(), path)
    assert main(["calibrate", "--checkpoint", str(path), "--tasks", "20", "--quiet"]) == 0
    assert "held-out/" in capsys.readouterr().out
    cal = Estimator.load(path).interval_calibration
    assert cal is not None and cal.tasks == 40 and cal.disagreement_weight in (0.0, 0.25, 0.5, 1.0, 2.0)
