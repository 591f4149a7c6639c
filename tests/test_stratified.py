"""I(X; Y | Z) for a discrete Z, by strata: the truth of class-conditional Gaussians, the exact permutation CI
test (its permutations keep the classes; its size on null tasks), the API surfaces and bad input."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from model.stratified import MAX_PERMUTATIONS, strata, weighted_sum_quantiles, within_class_permutations
from model.validation import InputError

CLASS_RHOS = (0.0, 0.5, 0.8)  # the correlation of X and Y within each class of Z


def class_conditional(rng: np.random.Generator, n: int, rhos=CLASS_RHOS) -> tuple[np.ndarray, ...]:
    """Z uniform over len(rhos) classes; given Z = c, (X, Y) Gaussian with correlation rhos[c] and class means far
    apart (so X and Y depend strongly through Z); X warped monotonically. The truth, with the classes' true
    shares 1 / K: I(X; Y | Z) = Σ_c −½ log(1 − rhos[c]²) / K."""
    k = len(rhos)
    z = rng.integers(0, k, n)
    means = rng.normal(0.0, 2.0, (k, 2))
    e = rng.standard_normal((n, 2))
    rho = np.asarray(rhos)[z]
    x = means[z, 0] + e[:, 0]
    y = means[z, 1] + rho * e[:, 0] + np.sqrt(1.0 - rho**2) * e[:, 1]
    truth = float(np.mean([-0.5 * np.log(1.0 - r**2) for r in rhos]))
    return np.tanh(x / 2.0) * 3.0 + 0.1 * x, y, z.astype(float), truth


def test_strata_answer_the_class_conditional_truth_and_auto_finds_a_label(shipped):
    """Four samples of n = 3 000 (truth 0.218): measured medians 0.245 / 0.228 / 0.233 / 0.234, Frenzel–Pompe
    0.222 / 0.208 / 0.243 / 0.201; the first interval, [0.2183, 0.264], misses by 1e-4."""
    errors, covered = [], 0
    for seed in range(4):
        x, y, z, truth = class_conditional(np.random.default_rng(seed), 3000)
        answer = shipped.conditional(x, y, z)
        assert answer.method == "mist_stratified" and answer.dz == 1
        lo, hi = answer.interval_90
        covered += lo <= truth <= hi
        errors.append(answer.mi_nats - truth)
    assert covered >= 3 and abs(np.mean(errors)) <= 0.03
    assert shipped.conditional(x, y, z, discrete_z=False).method == "mist"  # the chain rule, when asked
    # the classes' own estimates, weighted by their shares, are the median (one class's answer is its MI's)
    classes = strata(z[:, None])
    alone = [shipped.estimate(x[rows], y[rows]).mi_nats for rows in classes]
    shares = np.array([len(rows) for rows in classes]) / len(z)
    assert answer.mi_nats == pytest.approx(float(shares @ alone), abs=1e-5)


def test_the_weighted_sum_of_comonotone_quantiles_is_their_weighted_average():
    grids = np.array([[0.0, 1.0, 2.0], [1.0, 3.0, 7.0]])
    assert weighted_sum_quantiles(grids, np.array([0.25, 0.75])) == pytest.approx([0.75, 2.5, 5.75])


def test_permutations_keep_every_row_in_its_class():
    z = np.repeat([0, 1, 2], [10, 15, 20])[np.random.default_rng(1).permutation(45)]
    classes = strata(z[:, None])
    orders = within_class_permutations(classes, len(z), 30)
    assert orders.shape == (30, 45)
    assert all(np.array_equal(np.sort(order), np.arange(45)) for order in orders)  # each a permutation
    assert (z[orders] == z).all()  # that never moves a row to another class
    assert len({tuple(order) for order in orders}) == 30  # and they differ


def test_the_ci_test_keeps_its_size_on_null_tasks_and_finds_dependence(shipped):
    """Exact by construction: 20 null tasks (X ⫫ Y | Z, X and Y strongly dependent through Z) reject at most 4
    times (a valid 5 % test exceeds that with probability 0.003); a within-class correlation of 0.5 in two of
    three classes (CMI 0.096) is found in every one of 5 tasks (measured 1.00 at 0.144 nats, model card)."""
    rng = np.random.default_rng(2)
    rejected = sum(shipped.ci_test(*class_conditional(rng, 600, (0.0, 0.0, 0.0))[:3]).dependent for _ in range(20))
    assert rejected <= 4
    for _ in range(5):
        test = shipped.ci_test(*class_conditional(rng, 1000, (0.0, 0.5, 0.5))[:3])
        assert test.dependent and 0.0 < test.p_value <= 0.05 and test.estimate.method == "mist_stratified"


def test_bad_discrete_z_is_named(shipped):
    x, y, z, _ = class_conditional(np.random.default_rng(3), 200)
    z[:5] = 7.0  # a class of 5 rows
    with pytest.raises(InputError, match="fewer than 10 rows") as info:
        shipped.conditional(x, y, z)
    assert info.value.field == "z"
    with pytest.raises(InputError) as info:
        shipped.conditional(x, y, z, discrete_z="sometimes")
    assert info.value.field == "discrete_z"
    with pytest.raises(InputError, match="distinct values") as info:  # a continuous z declared discrete
        shipped.conditional(x, y, np.random.default_rng(4).standard_normal(200), discrete_z=True)
    assert info.value.field == "discrete_z"
    z[:5] = 0.0
    for bad in (5, MAX_PERMUTATIONS + 1, 99.5):
        with pytest.raises(InputError) as info:
            shipped.ci_test(x, y, z, permutations=bad)
        assert info.value.field == "permutations"


def test_the_server_prices_strata_by_their_estimators(shipped):
    """A discrete side within the classes of z is Ross's estimator per class, far dearer than the chain rule's four
    network terms: a request past the deadline by that price is refused before it runs, naming z."""
    from fastapi.testclient import TestClient

    from model.cost import conditional_seconds, stratified_seconds
    from server.app import create_app
    from server.settings import Settings

    rng, n = np.random.default_rng(2), 60_000
    z = (np.arange(n) % 2).astype(float)[:, None]
    x = rng.integers(0, 4, (n, 1)).astype(float)
    y = x + z + rng.standard_normal((n, 1))
    ross = stratified_seconds("mist", [n // 2, n // 2], 1, 1, True, False)
    assert ross > 1.0 > conditional_seconds("mist", n, 1, 1, 1)  # the chain rule's price would have admitted it
    buf = io.BytesIO()
    np.savez(buf, x=x, y=y, z=z)
    settings = Settings(parse_workers=0, deadline_s=1.0, graceful_shutdown_s=1.0)
    with TestClient(create_app(settings, estimator=shipped)) as client:
        r = client.post("/estimate/npz?discrete_x=true", content=buf.getvalue(),
                        headers={"content-type": "application/octet-stream"})  # fmt: skip
    assert r.status_code == 422 and r.json()["field"] == "z" and "would need about" in r.text


def test_http_and_cli_take_discrete_z(shipped, tmp_path: Path, capsys):
    from fastapi.testclient import TestClient

    from mist.cli import main
    from server.app import create_app
    from server.settings import Settings

    x, y, z, _ = class_conditional(np.random.default_rng(5), 400)
    expected = shipped.conditional(x, y, z)
    with TestClient(create_app(Settings(parse_workers=0), estimator=shipped)) as client:
        body = {"x": x.tolist(), "y": y.tolist(), "z": z.tolist()}
        answer = client.post("/estimate", json=body).json()
        assert answer["method"] == "mist_stratified" and answer["mi_nats"] == pytest.approx(expected.mi_nats)
        chain = client.post("/estimate", json={**body, "discrete_z": False}).json()
        assert chain["method"] == "mist"
        r = client.post("/estimate", json={"x": x.tolist(), "y": y.tolist(), "discrete_z": True})
        assert r.status_code == 422 and r.json()["field"] == "discrete_z"  # without z it would be ignored
        buf = io.BytesIO()
        np.savez(buf, x=x, y=y, z=z)
        headers = {"content-type": "application/octet-stream"}
        r = client.post("/estimate/npz?discrete_z=false", content=buf.getvalue(), headers=headers)
        assert r.status_code == 200 and r.json()["method"] == "mist"
        for bad in (
            client.post("/estimate", json={**body, "discrete_z": "sometimes"}),
            client.post("/estimate/npz?discrete_z=sometimes", content=buf.getvalue(), headers=headers),
        ):
            assert bad.status_code == 422 and bad.json()["field"] == "discrete_z"
        r = client.post("/estimate", json={**body, "x": np.round(x).tolist(), "discrete_x": True})
        assert r.status_code == 200 and r.json()["method"] == "ross_knn_stratified"
        r = client.post("/estimate", json={**body, "x": np.round(x).tolist(), "discrete_x": True, "discrete_z": False})
        assert r.status_code == 422 and r.json()["field"] == "discrete_x" and "discrete z" in r.text
    for name, a in (("x", x), ("y", y), ("z", z)):
        np.save(tmp_path / f"{name}.npy", a)
    args = ["estimate", "--x", str(tmp_path / "x.npy"), "--y", str(tmp_path / "y.npy")]
    assert main([*args, "--z", str(tmp_path / "z.npy"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["method"] == "mist_stratified"
    assert main([*args, "--discrete-z"]) == 2 and "--discrete-z applies with --z" in capsys.readouterr().err


def discrete_triple(rng: np.random.Generator, n: int, dependent: bool) -> tuple[np.ndarray, ...]:
    """Z over 3 classes; given Z = c, (X, Y) from a 3 × 3 table (a product of its margins unless ``dependent``).
    The truth Σ_c P(c) I(X; Y | Z = c), computed exactly from the tables."""
    pz = np.array([0.2, 0.3, 0.5])
    tables = []
    for _ in range(3):
        t = rng.dirichlet(np.ones(9)).reshape(3, 3)
        tables.append(t if dependent else np.outer(t.sum(1), t.sum(0)))
    z = rng.choice(3, n, p=pz)
    cells = np.array([rng.choice(9, p=tables[c].ravel()) for c in z])

    def mi(t: np.ndarray) -> float:
        outer = np.outer(t.sum(1), t.sum(0))
        return float(np.sum(t[t > 0] * np.log(t[t > 0] / outer[t > 0])))

    truth = float(sum(p * mi(t) for p, t in zip(pz, tables, strict=True)))
    return (cells // 3).astype(float), (cells % 3).astype(float), z.astype(float), truth


def test_discrete_sides_given_a_discrete_z_are_answered_within_each_class(shipped):
    x, y, z, truth = discrete_triple(np.random.default_rng(6), 10_000, dependent=True)
    answer = shipped.conditional(x, y, z, discrete_x=True, discrete_y=True)
    assert answer.method == "plug_in_miller_madow_stratified" and answer.mi_nats == pytest.approx(truth, abs=0.02)
    assert answer.interval_90[0] <= truth <= answer.interval_90[1]
    assert shipped.ci_test(x, y, z, discrete_x=True, discrete_y=True).dependent
    x, y, z, truth = discrete_triple(np.random.default_rng(7), 3000, dependent=False)
    assert truth == pytest.approx(0.0, abs=1e-12)
    test = shipped.ci_test(x, y, z, discrete_x="auto", discrete_y="auto", permutations=99)
    assert test.estimate.mi_nats < 0.01 and test.p_value > 0.05  # measured p = 0.15 on this draw
    mixed = shipped.conditional(x, y + np.random.default_rng(8).standard_normal(3000), z, discrete_x=True)
    assert mixed.method == "ross_knn_stratified" and mixed.interval_90[0] <= 0.01
    with pytest.raises(InputError, match="needs a discrete z") as info:  # the chain rule takes no discrete side
        shipped.conditional(x, y, z + np.random.default_rng(9).standard_normal(3000), discrete_x=True)
    assert info.value.field == "discrete_x"
