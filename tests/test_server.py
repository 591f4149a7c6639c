"""HTTP API: answers, bad input as problem+json, health, metrics, and one real uvicorn request."""

from __future__ import annotations

import io
import json
import urllib.request

import numpy as np
import pytest
from fastapi.testclient import TestClient
from openapi_spec_validator import validate

from model.estimator import default_checkpoint_path
from model.validation import MAX_DIM
from server.app import create_app
from server.settings import Settings
from tests.conftest import live_server

RNG = np.random.default_rng(0)
X = RNG.standard_normal((200, 2))
Y = 0.8 * X + 0.6 * RNG.standard_normal((200, 2))


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(Settings(max_body_bytes=2_000_000))) as c:
        yield c


def test_estimate_answers_with_interval(client):
    r = client.post("/estimate", json={"x": X.tolist(), "y": Y.tolist(), "quantiles": [0.1, 0.5, 0.9]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["n"] == 200 and body["dx"] == 2 and body["method"] == "mist"
    lo, hi = body["interval_90"]
    assert lo <= body["mi_nats"] <= hi and set(body["quantiles"]) == {"0.1", "0.5", "0.9"}
    assert body["mi_bits"] == pytest.approx(body["mi_nats"] / np.log(2))


@pytest.mark.parametrize("method", ["ksg", "gaussian", "gaussian_copula"])
def test_baseline_methods(client, method):
    r = client.post("/estimate", json={"x": X[:, 0].tolist(), "y": Y[:, 0].tolist(), "method": method})
    assert r.status_code == 200 and r.json()["method"] == method and r.json()["interval_90"] is None


def test_batch_items_fail_on_their_own(client):
    items = [
        {"x": X.tolist(), "y": Y.tolist()},
        {"x": [[1.0]] * 5, "y": [[2.0]] * 5},
        {"x": X.tolist(), "y": Y.tolist()},
    ]
    r = client.post("/estimate/batch", json={"items": items})
    assert r.status_code == 200
    res = r.json()["results"]
    assert [x["ok"] for x in res] == [True, False, True] and res[1]["error"]["field"] == "x"


def test_npz_upload(client):
    buf = io.BytesIO()
    np.savez(buf, x=X, y=Y)
    r = client.post("/estimate/npz", content=buf.getvalue(), headers={"content-type": "application/octet-stream"})
    assert r.status_code == 200 and r.json()["n"] == 200
    r = client.post("/estimate/npz?quantiles=0.1,x", content=buf.getvalue(),
                    headers={"content-type": "application/octet-stream"})  # fmt: skip
    assert r.status_code == 422 and r.json()["field"] == "quantiles"


BAD = [
    ({"x": X.tolist(), "y": Y[:100].tolist()}, "y"),
    ({"x": X[:5].tolist(), "y": Y[:5].tolist()}, "x"),
    ({"x": np.zeros((20, MAX_DIM + 1)).tolist(), "y": np.zeros((20, 1)).tolist()}, "x"),
    ({"x": [[1.0, 2.0], [3.0]] * 10, "y": [[1.0]] * 20}, "x"),
    ({"x": [["a"]] * 20, "y": [[1.0]] * 20}, "x"),
    ({"x": [], "y": []}, "x"),
    ({"x": X.tolist(), "y": Y.tolist(), "quantiles": [0.0, 1.2]}, "quantiles"),
    ({"x": X.tolist(), "y": Y.tolist(), "method": "magic"}, "method"),
]


@pytest.mark.parametrize(("body", "field"), BAD)
def test_bad_input_is_problem_json_naming_field(client, body, field):
    r = client.post("/estimate", json=body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["field"].startswith(field)


def test_nan_size_and_content_type(client):
    text = json.dumps({"x": [[float("nan")]] * 20, "y": [[1.0]] * 20})  # Python writes NaN tokens: not JSON
    r = client.post("/estimate", content=text, headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["field"] == "body" and "not valid JSON" in r.json()["detail"]
    buf = io.BytesIO()
    np.savez(buf, x=np.full((20, 1), np.nan), y=np.ones((20, 1)))
    r = client.post("/estimate/npz", content=buf.getvalue(), headers={"content-type": "application/octet-stream"})
    assert r.status_code == 422 and r.json()["field"] == "x"
    big = json.dumps({"x": [[0.5] * 10] * 60_000, "y": [[0.5]] * 60_000})
    r = client.post("/estimate", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.headers["content-type"].startswith("application/problem+json")
    r = client.post("/estimate", content="x=1", headers={"content-type": "text/plain"})
    assert r.status_code == 415


def test_health_model_metrics(client):
    for path in ("/health/live", "/health/ready", "/v2/health/live", "/v2/health/ready"):
        assert client.get(path).status_code == 200
    info = client.get("/v1/model").json()
    assert info["version"] and info["limits"]["max_dim"] == MAX_DIM
    assert info["interval_calibration"]["report"]["groups"]  # the shipped intervals are calibrated, and say how
    assert info["conditional"]["calibrated"] and info["conditional"]["version"]  # which network answers z requests
    metrics = client.get("/metrics").text
    assert "mist_requests_total" in metrics and "mist_request_seconds_bucket" in metrics


def test_real_uvicorn_request():
    with live_server() as port:
        url = f"http://127.0.0.1:{port}"
        body = json.dumps({"x": X.tolist(), "y": Y.tolist()}).encode()
        req = urllib.request.Request(f"{url}/estimate", body, {"content-type": "application/json"})
        answer = json.loads(urllib.request.urlopen(req, timeout=30).read())
        assert answer["n"] == 200 and answer["mi_nats"] >= 0


def test_openapi_is_the_contract_parsing_checks(client):
    spec = client.get("/openapi.json").json()
    validate(spec)  # a valid OpenAPI 3.1 document: every $ref resolves
    schemas = spec["components"]["schemas"]
    for name in ("EstimateRequest", "BatchRequest"):
        assert {"quantiles", "method", "model"} <= set(schemas[name]["properties"]), name
    r = client.post("/estimate", json={"x": X.tolist(), "y": Y.tolist(), "bogus": 1})
    assert r.status_code == 422 and r.json()["field"] == "bogus"
    assert set(schemas["EstimateRequest"]["properties"]) <= set(r.json()["detail"].replace(",", " ").split())


@pytest.mark.parametrize("method", ["ksg", "gaussian_copula"])
def test_a_baseline_given_quantiles_is_refused_not_ignored(client, method):
    r = client.post("/estimate", json={"x": X.tolist(), "y": Y.tolist(), "method": method, "quantiles": [1.7]})
    assert r.status_code == 422 and r.json()["field"] == "quantiles" and "mist" in r.json()["detail"]
    r = client.post("/estimate/batch", json={"items": [{"x": X.tolist(), "y": Y.tolist()}], "method": method,
                                             "quantiles": [0.5]})  # fmt: skip
    assert r.status_code == 422 and r.json()["field"] == "quantiles"


def test_open_inference_protocol_model_metadata_and_readiness(client):
    meta = client.get("/v2/models/default").json()
    assert meta["name"] == "default" and meta["versions"] == [client.app.state.estimator.version]
    assert {i["name"] for i in meta["inputs"]} == {"x", "y"} and meta["parameters"]["units"] == "nats"
    assert meta["parameters"]["n_range"] == [10, 1_000_000] and meta["parameters"]["dims_range"] == [1, MAX_DIM]
    assert client.get("/v2/models/default/ready").json() == {"name": "default", "ready": True}
    for path in ("/v2/models/nope", "/v2/models/nope/ready"):
        r = client.get(path)
        assert r.status_code == 404 and "default" in r.json()["detail"]


def test_docs_are_served_without_internet(client):
    html = client.get("/docs").text
    assert "cdn" not in html.lower() and "/static-offline-docs/swagger-ui-bundle.js" in html
    assert client.get("/static-offline-docs/swagger-ui-bundle.js").status_code == 200
    redoc = client.get("/redoc").text
    assert "cdn" not in redoc.lower() and client.get("/static-offline-docs/redoc.standalone.js").status_code == 200


def test_several_models_by_name():
    settings = Settings(checkpoints=f"lab={default_checkpoint_path()}")
    with TestClient(create_app(settings)) as c:
        listed = c.get("/v1/models").json()
        assert [m["name"] for m in listed["models"]] == ["default", "lab"] and listed["default"] == "default"
        assert all(m["version"] and m["limits"]["max_dim"] == MAX_DIM for m in listed["models"])
        body = {"x": X.tolist(), "y": Y.tolist()}
        a = c.post("/estimate", json=body).json()
        b = c.post("/estimate", json={**body, "model": "lab"}).json()
        assert a["mi_nats"] == pytest.approx(b["mi_nats"])  # same file under two names
        r = c.post("/estimate", json={**body, "model": "nope"})
        assert r.status_code == 422 and r.json()["field"] == "model" and "default, lab" in r.json()["detail"]
        buf = io.BytesIO()
        np.savez(buf, x=X, y=Y)
        r = c.post(
            "/estimate/npz?model=nope", content=buf.getvalue(), headers={"content-type": "application/octet-stream"}
        )
        assert r.status_code == 422 and r.json()["field"] == "model"
    with pytest.raises(ValueError, match="name=path"):
        Settings(checkpoints="justapath").models()
