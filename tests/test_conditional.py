"""Conditional MI: generator truths against independent computations, the calibrated chain rule, the CI test, and
the interfaces (Python, CLI, HTTP) with their bad-input paths."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from metadata_gen.conditional import LINKS, ConditionalSpec, sample_conditional_task
from model.baselines import frenzel_pompe, gaussian
from model.checkpoint import load_checkpoint
from model.conditional import Calibration, Combined, fit_calibration
from model.conformal import offset_quantiles
from model.estimator import Estimator, calibration_path, default_checkpoint_path
from model.training.calibrate import CALIBRATION_LINKS, heldout_spec
from model.validation import InputError
from server.app import create_app
from server.settings import Settings
from tests.conftest import meta_variant

NO_RESHAPING = {"linear": {"probability": 0.0}, "spiral": {"probability": 0.0}, "flow": {"probability": 0.0},
                "coordinatewise": {"probability": 0.0}}  # fmt: skip


def gaussian_cmi_of_sample(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> float:
    """½ log(det Σ_XZ det Σ_YZ / (det Σ_Z det Σ_XYZ)) of the sample covariance: the closed form, computed
    independently of the generator's truth."""
    ld = lambda *blocks: np.linalg.slogdet(np.cov(np.hstack(blocks), rowvar=False).reshape(  # noqa: E731
        sum(b.shape[1] for b in blocks), -1))[1]  # fmt: skip
    return 0.5 * (ld(x, z) + ld(y, z) - ld(z) - ld(x, y, z))


@pytest.fixture(scope="module")
def gaussian_spec() -> ConditionalSpec:
    inner = meta_variant(families={"gaussian_dense": {"weight": 1.0}}, transforms=NO_RESHAPING)
    return ConditionalSpec(inner, links=("linear",), heteroscedastic=0.0, null_fraction=0.0, dims=(1, 16), seed=4)


@pytest.fixture(scope="module")
def shipped() -> Estimator:
    return Estimator.load()


def test_linear_gaussian_truth_matches_the_closed_form_up_to_16_dims(gaussian_spec):
    for i, shape in enumerate(((100_000, 1, 1, 1), (100_000, 3, 2, 5), (100_000, 16, 4, 16))):
        t = sample_conditional_task(gaussian_spec, i, shape)
        assert t.transforms == {"x": [], "y": [], "z": []}
        got = gaussian_cmi_of_sample(*(a.astype(np.float64) for a in (t.x, t.y, t.z)))
        assert got == pytest.approx(t.cmi, abs=0.01 + 0.02 * t.cmi), (shape, t.cmi)


@pytest.mark.parametrize("link", [k for k in LINKS if k != "linear"])
def test_heteroscedastic_nonlinear_truth_agrees_with_frenzel_pompe(gaussian_spec, link: str):
    spec = dataclasses.replace(gaussian_spec, links=(link,), heteroscedastic=1.0)
    n = 100_000 if link == "sin" else 20_000  # at 20 000 rows FP reads 0.75 for the sine link's truth of 0.91
    for i in range(3):
        t = sample_conditional_task(spec, i, (n, 1, 1, 1))
        fp = frenzel_pompe(*(a.astype(np.float64) for a in (t.x, t.y, t.z)))
        assert fp == pytest.approx(t.cmi, abs=0.04 + 0.05 * t.cmi), (i, t.cmi)


def test_null_tasks_are_conditionally_independent_but_marginally_dependent(gaussian_spec):
    spec = dataclasses.replace(gaussian_spec, null_fraction=1.0, links=("linear",))
    for i in range(3):
        t = sample_conditional_task(spec, i, (50_000, 2, 2, 2))
        x, y, z = (a.astype(np.float64) for a in (t.x, t.y, t.z))
        assert t.cmi == 0.0 and t.family.startswith("null(")
        assert abs(gaussian_cmi_of_sample(x, y, z)) < 0.005 and gaussian(x, y) > 0.05


def test_tasks_are_deterministic_and_reshaped_per_block(default_meta):
    spec = ConditionalSpec(default_meta, seed=9)
    a, b = sample_conditional_task(spec, 3), sample_conditional_task(spec, 3)
    assert np.array_equal(a.x, b.x) and np.array_equal(a.z, b.z) and a.cmi == b.cmi
    assert any(sample_conditional_task(spec, i).transforms["z"] for i in range(6))


def test_calibration_round_trips_and_its_null_level_is_a_conformal_p_value(tmp_path: Path):
    combined = [Combined(max(m, 0.0), 0.1, 0.2, m, (1.0,)) for m in np.linspace(-0.1, 0.3, 20)]
    cal = fit_calibration(combined, [0.0] * 10 + [0.2] * 10, [0.05, 0.5, 0.95], "v", {})
    cal.save(tmp_path / "c.cmi.json")
    again = Calibration.load(tmp_path / "c.cmi.json")
    assert again == cal and len(cal.null_statistics) == 10
    assert cal.null_level(Combined(10.0, 0.1, 0.1, 10.0, (1.0,))) == pytest.approx(1 / 11)  # beyond every null
    assert cal.null_level(Combined(0.0, 0.1, 0.1, -1.0, (1.0,))) == 1.0
    old = {k: v for k, v in json.loads((tmp_path / "c.cmi.json").read_text()).items() if k != "null_coefficients"}
    (tmp_path / "old.cmi.json").write_text(json.dumps(old))
    with pytest.raises(ValueError, match="rerun `mist calibrate-cmi"):
        Calibration.load(tmp_path / "old.cmi.json")


def test_quantiles_below_the_median_are_zero_while_the_ci_test_keeps_the_null():
    nulls = [Combined(max(d, 0.0), 0.1, 0.1, d, (1.0,)) for d in np.linspace(-0.1, 0.1, 99)]
    cal = fit_calibration(nulls + [Combined(0.5, 0.1, 0.1, 0.5, (1.0,))] * 99, [0.0] * 99 + [0.5] * 99,
                          [0.05, 0.25, 0.5, 0.75, 0.95], "v", {})  # fmt: skip
    levels = (0.05, 0.25, 0.5, 0.75, 0.95)
    weak = Combined(0.3, 0.1, 0.1, 0.08, (1.0,))  # the difference ranks among the nulls' largest: p about 0.1
    assert 0.05 < cal.null_level(weak) < 0.25
    unguarded = offset_quantiles(weak.median, 0.1, 0.1, np.interp(levels, cal.levels, cal.offsets))
    got = cal.quantiles(weak, levels)
    assert unguarded[0] > 0 and got[0] == 0.0  # the 5 % quantile: p > 0.05, so it holds 0
    assert np.array_equal(got[1:], unguarded[1:])  # levels at or above p, and the median and above, unmoved
    strong = Combined(0.5, 0.1, 0.1, 0.5, (1.0,))  # beyond every null: p = 0.01
    assert cal.quantiles(strong, levels)[0] > 0


def test_shipped_cmi_intervals_hold_zero_on_held_out_nulls_the_test_keeps(shipped):
    # 1 + 1 + 1 nulls behind the held-out links: the conformal offsets alone put the 5 % quantile above 0 in
    # 4 of these 12 (0.30 of 40 such tasks in the model card's run); the test keeps all 12
    cmi = shipped.conditional_by
    cal, spec = cmi.calibration, dataclasses.replace(heldout_spec(), cmi=0.0)
    above = 0
    for i in range(12):
        t = sample_conditional_task(spec, i, (1000, 1, 1, 1))
        x, y, z = (a.astype(np.float64) for a in (t.x, t.y, t.z))
        c = cmi.chain_rule(x, y, z)
        offset = np.interp([0.05], cal.levels, cal.offsets)
        above += offset_quantiles(c.median, c.spread_down, c.spread_up, offset)[0] > 0
        test = shipped.ci_test(x, y, z)
        assert test.dependent or test.estimate.interval_90[0] == 0.0, i
    assert above >= 2  # the guard is what holds 0 here


def test_the_ci_tests_null_location_removes_a_shift_its_features_explain():
    # nulls of two kinds of sample, whose chain-rule differences centre at -0.1 and at +0.2
    rng = np.random.default_rng(0)
    shifted = rng.uniform(size=400) < 0.5
    diffs = np.where(shifted, 0.2, -0.1) + 0.02 * rng.standard_normal(400)
    combined = [Combined(max(d, 0.0), 0.1, 0.1, d, (1.0, float(s))) for d, s in zip(diffs, shifted, strict=True)]
    cal = fit_calibration(combined, [0.0] * 400, [0.05, 0.5, 0.95], "v", {})
    assert cal.null_coefficients == pytest.approx([-0.1, 0.3], abs=0.01)
    typical_shifted_null = Combined(0.2, 0.1, 0.1, 0.2, (1.0, 1.0))
    assert 0.3 < cal.null_level(typical_shifted_null) < 0.7  # about 0.5: a typical null of its kind
    assert cal.null_level(Combined(0.2, 0.1, 0.1, 0.2, (1.0, 0.0))) < 0.01  # 15 sd above its own kind's nulls
    pooled = np.array(sorted(diffs))
    assert np.mean(pooled >= 0.2) < 0.3  # the pooled p-value of the shifted null: what the location corrects


def test_shipped_conditional_mi_is_answered_by_a_calibrated_checkpoint(shipped):
    cmi = shipped.conditional_by  # the shipped .cmi.json names the checkpoint whose chain rule answers (model card)
    cal = cmi.calibration
    assert cal is not None, "run `mist calibrate-cmi` after shipping a checkpoint"
    assert cal.checkpoint_version == cmi.version and cal.tasks >= 200
    assert cal.spec["links"] == list(CALIBRATION_LINKS)
    assert not set(cal.spec["links"]) & set(heldout_spec().links)  # the benchmark's held-out links are not among them


def test_a_checkpoint_can_name_the_checkpoint_that_answers_its_conditional_mi(shipped, tmp_path: Path):
    answering = shipped.conditional_by.version
    mi_path = default_checkpoint_path()
    cmi_path = mi_path.parent / json.loads(calibration_path(mi_path).read_text())["answered_by"]
    for src, name in ((mi_path, "a"), (cmi_path, "b")):
        (tmp_path / f"{name}.pt").write_bytes(src.read_bytes())
    (tmp_path / "b.cmi.json").write_text(calibration_path(cmi_path).read_text())
    (tmp_path / "a.cmi.json").write_text(json.dumps({"answered_by": "b.pt"}))
    a, b = Estimator.load(tmp_path / "a.pt"), Estimator.load(tmp_path / "b.pt")
    x, y, z = _gaussian_triple(np.random.default_rng(7), 500, 0.5)
    via_a, direct = a.conditional(x, y, z), b.conditional(x, y, z)
    assert via_a.version == b.version == answering and via_a.quantiles == direct.quantiles
    assert a.estimate(x, y).version == shipped.version  # plain MI stays with the checkpoint itself
    assert a.ci_test(x, y, z).p_value == b.ci_test(x, y, z).p_value
    (tmp_path / "b.cmi.json").write_text(json.dumps({"answered_by": "a.pt"}))  # a loop: refused, not followed
    with pytest.raises(ValueError, match="must hold its own calibration"):
        Estimator.load(tmp_path / "a.pt")
    (tmp_path / "a.cmi.json").write_text(json.dumps({"answered_by": "a.pt"}))  # itself
    with pytest.raises(ValueError, match="must hold its own calibration"):
        Estimator.load(tmp_path / "a.pt")
    (tmp_path / "a.cmi.json").write_text(json.dumps({"answered_by": "missing.pt"}))
    with pytest.raises(FileNotFoundError, match=r"missing\.pt"):
        Estimator.load(tmp_path / "a.pt")


def _gaussian_triple(rng: np.random.Generator, n: int, rho: float):
    z = rng.standard_normal((n, 2))
    e = rng.multivariate_normal([0, 0], [[1, rho], [rho, 1]], size=n)
    return z[:, :1] + z[:, 1:] + e[:, :1], np.tanh(z[:, :1]) * 2 + e[:, 1:], z


def test_conditional_separates_dependence_from_independence_given_z(shipped):
    """A strong conditional dependence is found, with a smaller p-value and a larger estimate than conditional
    independence, which reads small. (Coverage and the test's error rates are measured by benchmarks/cmi_bench.py;
    on this very case the 0.3 network over-reads: 0.73 [0.68, 1.53] for 0.51, see the model card.)"""
    rng = np.random.default_rng(0)
    x, y, z = _gaussian_triple(rng, 2000, 0.0)
    independent = shipped.ci_test(x, y, z)
    assert independent.estimate.mi_nats < 0.15 and 0.0 < independent.p_value <= 1.0
    assert shipped.estimate(x, y).interval_90[0] > 0.0  # X and Y are dependent through Z
    x, y, z = _gaussian_triple(rng, 2000, 0.8)
    dependent = shipped.ci_test(x, y, z)
    lo, hi = dependent.estimate.interval_90
    assert dependent.dependent and dependent.p_value < independent.p_value and 0.0 < lo <= dependent.estimate.mi_nats
    assert dependent.estimate.mi_nats > independent.estimate.mi_nats + 0.3 and hi >= dependent.estimate.mi_nats
    assert dependent.estimate.dz == 2 and dependent.estimate.dx == 1


def test_conditional_is_symmetric_in_x_and_y_and_invariant_to_row_order(shipped):
    rng = np.random.default_rng(1)
    x, y, z = _gaussian_triple(rng, 500, 0.5)
    a, b = shipped.conditional(x, y, z), shipped.conditional(y, x, z)
    assert a.mi_nats == pytest.approx(b.mi_nats, abs=1e-6)  # float32 passes batched in the other order
    assert a.quantiles == pytest.approx(b.quantiles, abs=1e-6)
    perm = rng.permutation(500)
    c = shipped.conditional(x[perm], y[perm], z[perm])
    assert c.mi_nats == pytest.approx(a.mi_nats, abs=1e-5)


def test_bad_conditional_input_names_the_field(shipped):
    rng = np.random.default_rng(2)
    x, y, z = _gaussian_triple(rng, 100, 0.5)
    cases = [((x, y, z[:50]), "z", "rows"), ((x, y, np.empty((100, 0))), "z", "empty"),
             ((x, y, np.hstack([z, 3 * x])), "z", "repeats"),
             ((x, y, rng.standard_normal((100, 64))), "z", "64")]  # fmt: skip
    for args, field, words in cases:
        with pytest.raises(InputError, match=words) as info:
            shipped.conditional(*args)
        assert info.value.field == field
    with pytest.raises(InputError, match="send z") as info:
        shipped.estimate(x, y, method="frenzel_pompe")
    with pytest.raises(InputError, match="does not estimate") as info:
        shipped.conditional(x, y, z, method="ksg")
    with pytest.raises(InputError, match="alpha"):
        shipped.ci_test(x, y, z, alpha=1.5)
    uncalibrated = Estimator(load_checkpoint(default_checkpoint_path()))  # no .cmi.json read
    with pytest.raises(InputError, match="calibrate-cmi"):
        uncalibrated.conditional(x, y, z)
    assert shipped.conditional(x, y, z, method="frenzel_pompe").interval_90 is None


def test_http_and_cli_take_z(tmp_path: Path, capsys):
    from mist.cli import main

    rng = np.random.default_rng(3)
    x, y, z = _gaussian_triple(rng, 300, 0.6)
    with TestClient(create_app(Settings())) as client:
        body = {"x": x.tolist(), "y": y.tolist(), "z": z.tolist()}
        r = client.post("/estimate", json=body)
        assert r.status_code == 200 and r.json()["dz"] == 2 and r.json()["interval_90"] is not None
        r = client.post("/estimate", json={**body, "method": "frenzel_pompe"})
        assert r.status_code == 200 and r.json()["method"] == "frenzel_pompe"
        r = client.post("/estimate", json={**body, "z": z[:10].tolist()})
        assert r.status_code == 422 and r.json()["field"] == "z"
        buf = io.BytesIO()
        np.savez(buf, x=x, y=y, z=z)
        r = client.post("/estimate/npz", content=buf.getvalue(), headers={"content-type": "application/octet-stream"})
        assert r.status_code == 200 and r.json()["dz"] == 2
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    np.save(tmp_path / "z.npy", z)
    args = ["estimate", "--x", str(tmp_path / "x.npy"), "--y", str(tmp_path / "y.npy"), "--z", str(tmp_path / "z.npy")]
    assert main([*args, "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["dz"] == 2 and answer["mi_nats"] == pytest.approx(r.json()["mi_nats"], abs=1e-6)
    assert main(args) == 0 and "I(X;Y|Z)" in capsys.readouterr().out


def test_bad_z_files_and_calibration_flags_are_named(tmp_path: Path, capsys, monkeypatch):
    from mist.cli import main

    rng = np.random.default_rng(4)
    x, y, z = _gaussian_triple(rng, 100, 0.5)
    buf = io.BytesIO()
    np.savez(buf, x=x, y=y, z=np.array(["a"] * 100))
    with TestClient(create_app(Settings())) as client:
        r = client.post("/estimate/npz", content=buf.getvalue(), headers={"content-type": "application/octet-stream"})
        assert r.status_code == 422 and r.json()["field"] == "z.npy"
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    np.save(tmp_path / "z.npy", z[:40])
    argv = ["estimate", "--x", str(tmp_path / "x.npy"), "--y", str(tmp_path / "y.npy"), "--z", str(tmp_path / "z.npy")]
    assert main(argv) == 2 and "z: has 40 rows" in capsys.readouterr().err
    assert main(["calibrate-cmi", "--tasks", "5"]) == 2 and "--tasks" in capsys.readouterr().err
    assert main(["calibrate-cmi", "--checkpoint", str(tmp_path / "none.pt")]) == 2
    assert "not found" in capsys.readouterr().err
    # a calibration written before the null location: a named error, not a stack trace
    shipped_cmi = default_checkpoint_path().parent / "mist-cmi.pt"
    (tmp_path / "old.pt").write_bytes(shipped_cmi.read_bytes())
    fields = json.loads(calibration_path(shipped_cmi).read_text())
    del fields["null_coefficients"]
    calibration_path(tmp_path / "old.pt").write_text(json.dumps(fields))
    assert main([*argv[:-1], str(tmp_path / "x.npy"), "--checkpoint", str(tmp_path / "old.pt")]) == 2
    assert "rerun `mist calibrate-cmi" in capsys.readouterr().err
