"""Discrete sides (model.discrete): the "auto" rule, known truths with intervals, invariance, warnings on ties."""

from __future__ import annotations

import numpy as np
import pytest

from model import discrete
from model.ties import tied_columns
from model.validation import InputError

N = 4000
RNG = np.random.default_rng(0)
LABELS = RNG.integers(0, 10, (N, 1)).astype(float)
BITS = RNG.integers(0, 2, (N, 2)).astype(float)
XOR = (BITS[:, :1] != BITS[:, 1:]).astype(float)


def table_mi(p: np.ndarray) -> float:
    """The exact MI of a joint probability table."""
    outer = np.outer(p.sum(1), p.sum(0))
    seen = p > 0
    return max(float(p[seen] @ np.log(p[seen] / outer[seen])), 0.0)


def test_auto_takes_integer_columns_with_few_values_only():
    assert discrete.looks_discrete(LABELS) and discrete.looks_discrete(BITS)
    assert not discrete.looks_discrete(LABELS + 0.5)  # not integer-valued
    assert not discrete.looks_discrete(RNG.integers(0, 100, (N, 1)).astype(float))  # more than 32 values
    assert not discrete.looks_discrete(LABELS[:40])  # 10 values in 40 rows: fewer than 5 rows per value
    assert not discrete.looks_discrete(np.round(RNG.standard_normal((N, 1)) * 1000))  # rounded measurements


@pytest.mark.parametrize(
    ("x", "y", "sides", "truth", "method"),
    [
        (BITS[:, :1], RNG.standard_normal((N, 1)), ("auto", False), 0.0, discrete.ROSS),
        (LABELS, LABELS, (True, True), np.log(10), discrete.PLUG_IN),
        (BITS, XOR, ("auto", "auto"), np.log(2), discrete.PLUG_IN),
    ],
    ids=["binary independent of y", "x = y, a 10-class label", "XOR of two bits"],
)
def test_the_cases_that_were_confidently_wrong_read_their_truth(shipped, x, y, sides, truth, method):
    est = shipped.estimate(x, y, discrete_x=sides[0], discrete_y=sides[1])
    assert est.method == method and not est.warnings
    assert est.interval_90[0] <= truth <= est.interval_90[1], est
    assert est.mi_nats == pytest.approx(truth, abs=0.02)


def test_discrete_pairs_from_random_tables_are_within_002_nats_and_covered():
    errors, covered = [], []
    for k in (2, 5, 10):
        for seed in range(12):
            rng = np.random.default_rng([k, seed])
            p = rng.dirichlet(np.full(k * k, (0.1, 1.0, 10.0)[seed % 3])).reshape(k, k)
            cells = rng.choice(k * k, size=10_000, p=p.ravel())
            value, se = discrete.plug_in(cells // k, cells % k)
            lo, hi = discrete.quantiles(value, se, (0.05, 0.95))
            errors.append(abs(value - table_mi(p)))
            covered.append(lo <= table_mi(p) <= hi)
    assert max(errors) <= 0.02 and np.mean(covered) >= 0.85, (max(errors), np.mean(covered))


def test_a_label_against_a_continuous_side_reads_the_closed_form():
    """L ~ Bernoulli(½), Y | L ~ Uniform(s·L, s·L + 1): the mixture's density is ½ on 2s of its support and 1 on the
    rest, so I(L; Y) = H(Y) = s·ln 2."""
    errors, covered = [], []
    for shift in (0.0, 0.25, 0.5, 1.0):
        for seed in range(5):
            rng = np.random.default_rng([seed, int(shift * 4)])
            label = rng.integers(0, 2, 1000)
            y = shift * label + rng.uniform(size=1000)
            value, se = discrete.ross(label[:, None].astype(float), y[:, None])
            lo, hi = discrete.quantiles(value, se, (0.05, 0.95))
            errors.append(abs(value - shift * np.log(2)))
            covered.append(lo <= shift * np.log(2) <= hi)
    assert np.mean(errors) <= 0.03 and np.mean(covered) >= 0.8, (np.mean(errors), np.mean(covered))


def test_discrete_answers_are_exactly_invariant_to_rows_columns_and_sides(shipped):
    y = np.hstack([LABELS + RNG.standard_normal((N, 1)), RNG.standard_normal((N, 1))])
    rows = RNG.permutation(N)
    base = shipped.estimate(LABELS, y, discrete_x=True)
    assert base.method == discrete.ROSS
    for other in (shipped.estimate(LABELS[rows], y[rows], discrete_x=True),
                  shipped.estimate(y, LABELS, discrete_y=True),
                  shipped.estimate(LABELS, y[:, ::-1], discrete_x=True)):  # fmt: skip
        assert (other.mi_nats, other.interval_90) == (base.mi_nats, base.interval_90)


def test_ties_read_as_continuous_are_answered_with_a_warning(shipped):
    tied = shipped.estimate(BITS[:, :1], RNG.standard_normal((N, 1)))
    assert tied.method == "mist" and len(tied.warnings) == 1 and "discrete_x=true" in tied.warnings[0]
    assert "discrete_y" in shipped.estimate(RNG.standard_normal(N), LABELS, method="ksg").warnings[0]
    assert not shipped.estimate(RNG.standard_normal(N), RNG.standard_normal(N)).warnings
    # float32 values repeat by chance (one value twice in x and in y here): broken like any tie, not worth a warning
    f32 = np.random.default_rng(1).standard_normal((N, 4)).astype(np.float32)
    assert tied_columns(f32.astype(np.float64)).tolist() == [True, False, False, True]
    assert not shipped.estimate(f32[:, :2], f32[:, 2:]).warnings
    coarse = np.round(f32[:, :1], 2)  # a measurement rounded to 0.01: 500 distinct values in 4 000
    assert "discrete_x=true" in shipped.estimate(coarse, f32[:, 2:]).warnings[0]


def test_bad_declarations_name_their_field(shipped):
    with pytest.raises(InputError) as err:
        shipped.estimate(RNG.standard_normal(N), LABELS, discrete_x=True)  # 4000 distinct values
    assert err.value.field == "discrete_x" and "declare it continuous" in err.value.message
    with pytest.raises(InputError) as err:
        shipped.estimate(LABELS, LABELS, discrete_y="yes")
    assert err.value.field == "discrete_y"


def test_screening_takes_named_indexed_and_masked_discrete_features(shipped):
    table = np.hstack([LABELS, RNG.standard_normal((N, 1)), BITS[:, :1]])
    names = ["label", "noise", "bit"]
    methods = {}
    for chosen in (["label", "bit"], [0, 2], [True, False, True], "auto"):
        answers = shipped.screen(table, LABELS[:, 0] + RNG.standard_normal(N), columns=names,
                                 discrete_features=chosen)  # fmt: skip
        methods[str(chosen)] = [answers[n].method for n in names]
    assert all(m == [discrete.ROSS, "mist", discrete.ROSS] for m in methods.values()), methods
    with pytest.raises(InputError) as err:
        shipped.screen(table, LABELS, discrete_features=["nope"])
    assert err.value.field == "discrete_features"
    rounded = np.round(table[:, 1:2], 1)  # a rounded measurement: ties, continuous
    pairs = shipped.pairwise(np.hstack([table, rounded]), columns=[*names, "rounded"])
    assert len(pairs.warnings) == 1 and "rounded" in pairs.warnings[0] and "label" not in pairs.warnings[0]
    screened = shipped.screen(table, LABELS, columns=names, discrete_target=True)
    assert screened["bit"].method == discrete.PLUG_IN and screened["label"].mi_nats == pytest.approx(np.log(10), 0.01)


def test_http_declares_discrete_sides_and_answers_warnings(shipped):
    import io

    from fastapi.testclient import TestClient

    from server.app import create_app
    from server.settings import Settings

    bits, noise = BITS[:1000, 0].tolist(), RNG.standard_normal(1000).tolist()
    with TestClient(create_app(Settings(parse_workers=0), estimator=shipped)) as client:
        plain = client.post("/estimate", json={"x": bits, "y": noise}).json()
        assert plain["method"] == "mist" and "discrete_x=true" in plain["warnings"][0]
        declared = client.post("/estimate", json={"x": bits, "y": noise, "discrete_x": "auto"}).json()
        assert declared["method"] == discrete.ROSS and declared["warnings"] == [] and declared["interval_90"][0] == 0
        batch = client.post("/estimate/batch", json={"items": [{"x": bits, "y": bits}], "discrete_x": True,
                                                     "discrete_y": True}).json()  # fmt: skip
        assert batch["results"][0]["result"]["method"] == discrete.PLUG_IN
        buf = io.BytesIO()
        np.savez(buf, x=np.array(bits), y=np.array(noise))
        npz = client.post("/estimate/npz?discrete_x=auto", content=buf.getvalue(),
                          headers={"content-type": "application/octet-stream"}).json()  # fmt: skip
        assert npz["mi_nats"] == declared["mi_nats"]
        table = np.c_[BITS[:1000], noise].tolist()
        screened = client.post("/estimate/screen", json={"x": table, "target": bits, "discrete_target": True,
                                                         "discrete_features": [0, 1]}).json()  # fmt: skip
        assert screened["results"][0]["result"]["method"] == discrete.PLUG_IN
        assert screened["results"][0]["result"]["mi_nats"] == pytest.approx(np.log(2), abs=0.01)  # column 0 = target
        refusals = [
            ("/estimate", {"x": bits, "y": noise, "discrete_x": "yes"}, "discrete_x"),
            ("/estimate", {"x": noise, "y": bits, "discrete_x": True}, "discrete_x"),  # 1000 distinct values
            ("/estimate", {"x": bits, "y": noise, "z": noise, "discrete_x": True}, "discrete_x"),
            ("/estimate/screen", {"x": table, "target": bits, "discrete_features": ["nope"]}, "discrete_features"),
            ("/estimate/pairwise", {"x": table, "discrete_target": True}, "discrete_target"),
            ("/estimate/pairwise", {"x": table, "discrete_features": {"a": 1}}, "discrete_features"),
            ("/estimate/screen", {"x": table, "target": bits, "discrete_features": [True, 0]}, "discrete_features"),
        ]
        for path, payload, field in refusals:
            r = client.post(path, json=payload)
            assert r.status_code == 422 and r.json()["field"] == field, (path, r.text)
        r = client.post("/estimate/npz?discrete_y=maybe", content=buf.getvalue(),
                        headers={"content-type": "application/octet-stream"})  # fmt: skip
        assert r.status_code == 422 and r.json()["field"] == "discrete_y", r.text


def test_cli_declares_discrete_sides_and_prints_warnings(tmp_path, capsys):
    import json

    from mist.cli import main

    table = tmp_path / "t.csv"
    np.savetxt(table, np.c_[LABELS[:1000], BITS[:1000], LABELS[:1000]], delimiter=",", header="label,a,b,target",
               comments="")  # fmt: skip
    assert main(["screen", str(table), "--target", "target", "--discrete-target", "--json"]) == 0
    answers = json.loads(capsys.readouterr().out)
    assert answers["label"]["method"] == discrete.PLUG_IN  # "auto" features, a declared target
    assert answers["label"]["mi_nats"] == pytest.approx(np.log(10), abs=0.02)
    np.save(tmp_path / "x.npy", BITS[:1000, 0])
    np.save(tmp_path / "y.npy", RNG.standard_normal(1000))
    args = ["estimate", "--x", str(tmp_path / "x.npy"), "--y", str(tmp_path / "y.npy")]
    assert main(args) == 0
    assert "warning: x has tied values" in capsys.readouterr().err
    assert main([*args, "--discrete-x", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["method"] == discrete.ROSS and "warning" not in captured.err


def test_ross_refuses_past_its_work_limit_and_the_cost_model_knows_discrete_pairs(shipped):
    from model.cost import pair_seconds

    big = discrete.ROSS_MAX_CELLS + 1
    with pytest.raises(InputError) as err:
        shipped.estimate(np.arange(big) % 3, np.linspace(0, 1, big), discrete_x=True)
    assert err.value.field == "discrete_x" and "subsample" in err.value.message
    many = np.arange(20_000) % 1_001  # 1 001 classes beside a continuous side
    with pytest.raises(InputError) as err:
        shipped.estimate(np.linspace(0, 1, 20_000), many, discrete_y=True)
    assert err.value.field == "discrete_y" and "classes" in err.value.message
    n = 10_000
    assert (
        pair_seconds("mist", n, 1, 1, True, True) < pair_seconds("mist", n, 1, 1) < pair_seconds("mist", n, 1, 1, True)
    )


def test_a_table_with_many_levels_is_counted_cell_by_cell():
    """100 000 levels per side (a dense table would be 10¹⁰ cells): only the observed cells are counted."""
    rows = np.arange(200_000) // 2
    value, se = discrete.plug_in(rows, (rows + 1) % 100_000)  # a bijection of the levels: plug-in H = ln 100 000
    miller_madow = (100_000 + 100_000 - 100_000 - 1) / (2 * 200_000)  # K_x + K_y − K_xy − 1 over 2n
    assert value == pytest.approx(np.log(100_000) + miller_madow, abs=1e-9) and np.isfinite(se)
