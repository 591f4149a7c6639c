"""Screening and pairwise MI: batched answers equal one-by-one answers, known truths, labels, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model.validation import MAX_PAIRWISE_COLUMNS, InputError

RNG = np.random.default_rng(5)
N = 600
BASE = RNG.standard_normal((N, 1))
TABLE = np.hstack([BASE + 0.5 * RNG.standard_normal((N, 1)), RNG.standard_normal((N, 1)),
                   RNG.integers(0, 3, (N, 1)).astype(float), BASE])  # fmt: skip
NAMES = ["noisy", "unrelated", "label", "base"]


def test_screen_matches_one_estimate_per_column_and_ranks_by_dependence(shipped):
    answers = shipped.screen(TABLE[:, :3], TABLE[:, 3], columns=NAMES[:3])
    assert list(answers) == NAMES[:3]
    for j, name in enumerate(NAMES[:3]):
        alone = shipped.estimate(TABLE[:, [j]], TABLE[:, 3], discrete_x="auto")
        assert answers[name].method == ("ross_knn" if name == "label" else "mist")  # "auto" finds the label
        assert answers[name].mi_nats == pytest.approx(alone.mi_nats, abs=1e-5)  # batched pass, same answer
        assert answers[name].interval_90 == pytest.approx(alone.interval_90, abs=1e-5)
    assert answers["noisy"].mi_nats > 0.5 > answers["unrelated"].mi_nats  # truth ½ log 5 = 0.80 against 0
    assert answers["unrelated"].interval_90[0] <= 0.05 and answers["label"].interval_90[0] <= 0.05


def test_pairwise_is_symmetric_with_nan_diagonal_and_bounds_around_the_median(shipped):
    result = shipped.pairwise(TABLE, columns=NAMES)
    assert result.names == NAMES and result.mi_nats.shape == (4, 4)
    assert np.isnan(np.diag(result.mi_nats)).all()
    off = ~np.eye(4, dtype=bool)
    assert np.array_equal(result.mi_nats[off], result.mi_nats.T[off])
    assert (result.lower[off] <= result.mi_nats[off]).all() and (result.mi_nats[off] <= result.upper[off]).all()
    truth = 0.5 * np.log(5)  # noisy against base
    assert result.lower[0, 3] <= truth <= result.upper[0, 3]
    ksg = shipped.pairwise(TABLE, method="ksg")
    with_label = np.zeros((4, 4), dtype=bool)
    with_label[2, :] = with_label[:, 2] = True  # the discrete estimators answer these, with bounds, for any method
    assert np.isnan(ksg.lower[off & ~with_label]).all() and np.isfinite(ksg.lower[off & with_label]).all()
    assert ksg.mi_nats[0, 3] == pytest.approx(truth, abs=0.1)


def test_a_dataframe_keeps_its_column_labels(shipped):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(TABLE, columns=NAMES)
    assert shipped.pairwise(frame, method="gaussian_copula").names == NAMES
    assert list(shipped.screen(frame[NAMES[:2]], frame["base"], method="gaussian_copula")) == NAMES[:2]


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda e: e.screen(TABLE, TABLE[:-1, 0]), "target"),  # a target of the wrong length
        (lambda e: e.screen(np.array([["a", "b"]] * 20), TABLE[:20, 0]), "X"),  # not numbers
        (lambda e: e.pairwise(np.zeros((20, MAX_PAIRWISE_COLUMNS + 1))), "X"),  # more columns than the limit
        (lambda e: e.pairwise(TABLE[:, :1]), "X"),  # one column: no pair
        (lambda e: e.pairwise(TABLE, columns=["a"]), "columns"),
        (lambda e: e.pairwise(TABLE[:5]), "X"),  # too few rows for any pair
        (lambda e: e.screen(TABLE[:, :2], TABLE[:, 3], discrete_target="yes"), "discrete_target"),
        # a column declared discrete must repeat its values: the error names it
        (lambda e: e.pairwise(TABLE, columns=NAMES, discrete_features=["noisy"]), "discrete_features:noisy"),
        (lambda e: e.screen(TABLE[:, :2], TABLE[:, 3], discrete_features=[1]), "discrete_features:1"),
    ],
)
def test_bad_tables_name_the_field(shipped, call, field):
    with pytest.raises(InputError) as info:
        call(shipped)
    field, _, column = field.partition(":")
    assert info.value.field == field and (not column or f"column {column!r}" in info.value.message)


def test_an_all_constant_column_reads_exactly_zero(shipped):
    table = np.hstack([TABLE[:, :1], np.ones((N, 1))])
    assert shipped.pairwise(table).mi_nats[0, 1] == 0.0


def test_cli_screen_and_pairwise(tmp_path: Path, capsys):
    from mist.cli import main

    path = tmp_path / "t.csv"
    np.savetxt(path, TABLE, delimiter=",", header=",".join(NAMES), comments="")
    assert main(["screen", str(path), "--target", "base", "--method", "gaussian_copula", "--json"]) == 0
    ranked = list(json.loads(capsys.readouterr().out))
    assert ranked[0] == "noisy" and set(ranked) == set(NAMES[:3])
    assert main(["pairwise", str(path), "--method", "gaussian_copula", "--out", str(tmp_path / "mi.csv")]) == 0
    lines = (tmp_path / "mi.csv").read_text().splitlines()
    assert lines[0] == "," + ",".join(NAMES) and len(lines) == 5 and (tmp_path / "mi_lower.csv").exists()
    assert main(["screen", str(path), "--target", "nope"]) == 2
    assert "no column 'nope'" in capsys.readouterr().err


def test_http_screen_and_pairwise(shipped):
    from fastapi.testclient import TestClient

    from server.app import create_app
    from server.settings import Settings

    with TestClient(create_app(Settings(parse_workers=0), estimator=shipped)) as client:
        body = {"x": TABLE[:, :3].tolist(), "target": TABLE[:, 3].tolist(), "columns": NAMES[:3]}
        r = client.post("/estimate/screen", json=body)
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        columns = [res["column"] for res in results]
        assert columns[0] == "noisy" and set(columns) == set(NAMES[:3])  # ranked by mi_nats
        alone = shipped.estimate(TABLE[:, [0]], TABLE[:, 3])
        assert results[0]["result"]["mi_nats"] == pytest.approx(alone.mi_nats, abs=1e-5)
        r = client.post("/estimate/pairwise", json={"x": TABLE.tolist(), "columns": NAMES, "method": "ksg"})
        assert r.status_code == 200, r.text
        answer = r.json()
        assert answer["columns"] == NAMES and answer["mi_nats"][0][0] is None and answer["lower"][0][3] is None
        assert answer["mi_nats"][0][3] == pytest.approx(answer["mi_nats"][3][0])
        refusals = [
            ("/estimate/screen", {**body, "target": TABLE[:-1, 3].tolist()}, "target"),
            ("/estimate/pairwise", {"x": TABLE.tolist(), "quantiles": [0.5]}, "quantiles"),
            ("/estimate/pairwise", {"x": TABLE.tolist(), "bogus": 1}, "bogus"),
            ("/estimate/pairwise", {"x": TABLE.tolist(), "columns": ["a"]}, "columns"),
            ("/estimate/screen", {**body, "target": None}, "target"),
            ("/estimate/screen", {**body, "x": [["a", 1]] * 20}, "x[0][0]"),
            ("/estimate/pairwise", {"x": np.zeros((20_000, 60)).tolist()}, "x"),  # 1770 pairs at n = 20 000
        ]
        for path, payload, field in refusals:
            r = client.post(path, json=payload)
            assert r.status_code == 422 and r.json()["field"] == field, (path, r.text)
        spec = client.get("/openapi.json").json()
        assert {"ScreenRequest", "PairwiseRequest"} <= set(spec["components"]["schemas"])


def test_steps_report_progress_and_a_raising_callback_stops_between_steps(shipped, monkeypatch):
    import model.screening as screening

    monkeypatch.setattr(screening, "PAIRS_PER_STEP", 2)
    seen: list[tuple[int, int]] = []
    shipped.pairwise(TABLE, method="gaussian_copula", between=lambda done, total: seen.append((done, total)))
    assert seen == [(2, 6), (4, 6), (6, 6)]

    class StopError(Exception):
        pass

    def stop(done: int, total: int) -> None:
        seen.append((done, total))
        raise StopError

    seen.clear()
    with pytest.raises(StopError):
        shipped.screen(TABLE[:, :3], TABLE[:, 3], between=stop)
    assert seen == [(2, 3)]  # stopped after the first step: the last column was never estimated


def test_cli_pairwise_draws_a_heat_map(tmp_path: Path, capsys):
    from mist.cli import main

    path = tmp_path / "t.csv"
    np.savetxt(path, TABLE, delimiter=",", header=",".join(NAMES), comments="")
    plot = tmp_path / "mi.png"
    assert main(["pairwise", str(path), "--method", "gaussian_copula", "--plot", str(plot), "--quiet"]) == 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "heat map" in capsys.readouterr().out


def test_http_screen_and_pairwise_take_npz_uploads(shipped):
    import io

    from fastapi.testclient import TestClient

    from server.app import create_app
    from server.settings import Settings

    def npz(**arrays) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return buf.getvalue()

    binary = {"content-type": "application/octet-stream"}
    with TestClient(create_app(Settings(parse_workers=0), estimator=shipped)) as client:
        body = npz(x=TABLE[:, :3], target=TABLE[:, 3])
        r = client.post("/estimate/screen/npz?columns=noisy,unrelated,label", content=body, headers=binary)
        assert r.status_code == 200, r.text
        json_answer = client.post("/estimate/screen", json={"x": TABLE[:, :3].tolist(), "target": TABLE[:, 3].tolist(),
                                                           "columns": NAMES[:3]}).json()  # fmt: skip
        assert [x["column"] for x in r.json()["results"]] == [x["column"] for x in json_answer["results"]]
        assert r.json()["results"][0]["result"]["mi_nats"] == pytest.approx(
            json_answer["results"][0]["result"]["mi_nats"], abs=1e-6
        )
        r = client.post("/estimate/pairwise/npz?method=gaussian_copula", content=npz(x=TABLE), headers=binary)
        assert r.status_code == 200 and r.json()["columns"] == ["0", "1", "2", "3"], r.text
        refusals = [
            ("/estimate/screen/npz", npz(x=TABLE[:, :3]), "body"),  # no target
            ("/estimate/screen/npz?columns=a", body, "columns"),
            ("/estimate/pairwise/npz?method=bogus", npz(x=TABLE), "method"),
            ("/estimate/pairwise/npz", npz(x=np.zeros((10, MAX_PAIRWISE_COLUMNS + 1))), "x.npy"),
            ("/estimate/pairwise/npz", b"not a zip", "body"),
        ]
        for path, payload, field in refusals:
            r = client.post(path, content=payload, headers=binary)
            assert r.status_code == 422 and r.json()["field"] == field, (path, r.text)
