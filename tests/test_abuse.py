"""No request can take the service down or return a 500: one test per attack found by the service probe."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import struct
import threading
import time
import urllib.request
import zipfile
import zlib

import numpy as np
import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.limits import Admission, Busy, DeadlineExceeded
from server.settings import Settings
from tests.conftest import live_server

NPZ = {"content-type": "application/octet-stream"}


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(Settings(max_body_bytes=8 * 1024 * 1024))) as c:
        yield c


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def test_npz_zip_bomb_is_refused_before_inflating(client):
    buf = io.BytesIO()
    np.savez_compressed(buf, x=np.zeros(256 * 1024 * 1024, dtype=bool), y=np.zeros(3))
    assert len(buf.getvalue()) < 300_000
    before = _rss_mb()
    r = client.post("/estimate/npz", content=buf.getvalue(), headers=NPZ)
    assert r.status_code == 422 and r.json()["field"] == "x.npy"
    assert _rss_mb() - before < 300


def _header_claiming(elements: int) -> bytes:
    """An .npz whose x.npy header claims ``elements`` float64 values but holds a few bytes."""
    header = np.lib.format.header_data_from_array_1_0(np.zeros(1))
    header["shape"] = (elements,)
    npy = io.BytesIO()
    np.lib.format.write_array_header_1_0(npy, header)
    npy.write(b"\0" * 64)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("x.npy", npy.getvalue())
        z.writestr("y.npy", npy.getvalue())
    return out.getvalue()


def _bad_crc() -> bytes:
    body = bytearray(_npz(x=np.arange(50.0), y=np.arange(50.0)))
    offset = body.find(b"PK\x01\x02") + 16  # CRC-32 of the first member in the central directory
    body[offset : offset + 4] = struct.pack("<I", zlib.crc32(b"not it"))
    return bytes(body)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (_npz(x=np.arange(50.0), y=np.arange(50.0))[:300], "body"),  # truncated
        (np.lib.format.magic(1, 0) + b"plain npy, not a zip", "body"),
        (_bad_crc(), "x.npy"),
        (_header_claiming(2**40), "x.npy"),
        (_header_claiming(100), "x.npy"),  # holds less than its header says
        (_npz(x=np.array(["a"] * 20), y=np.arange(20.0)), "x.npy"),
    ],
)
def test_broken_npz_bodies_are_422_naming_the_member(client, body, field):
    r = client.post("/estimate/npz", content=body, headers=NPZ)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field


def test_huge_finite_values_are_rescaled_not_a_500(client):
    x = [1e308 * (-1) ** i for i in range(16)]
    r = client.post("/estimate", json={"x": x, "y": list(range(16)), "method": "ksg"})
    assert r.status_code == 200 and np.isfinite(r.json()["mi_nats"])
    good = {"x": list(range(20)), "y": [v * 2.0 for v in range(20)]}
    r = client.post("/estimate/batch", json={"items": [{"x": x, "y": list(range(16))}, good], "method": "ksg"})
    assert r.status_code == 200 and all(item["ok"] for item in r.json()["results"])
    rng = np.random.default_rng(0)
    same = rng.choice([-1.0, 1.0], 40) * rng.uniform(0.5, 1.0, 40)
    big = client.post("/estimate", json={"x": (same * 1e308).tolist(), "y": (same * 1e308).tolist(),
                                         "method": "gaussian"}).json()["mi_nats"]  # fmt: skip
    small = client.post("/estimate", json={"x": same.tolist(), "y": same.tolist(), "method": "gaussian"}).json()
    assert big == pytest.approx(small["mi_nats"], rel=1e-6) and big > 5


def test_a_bad_batch_item_fails_alone(client):
    items = [{"x": [[1.0, None]] * 20, "y": [[1.0]] * 20}, {"x": list(range(20)), "y": list(range(20))}]
    res = client.post("/estimate/batch", json={"items": items}).json()["results"]
    assert not res[0]["ok"] and res[0]["error"]["field"] == "items[0].x[0][1]" and res[1]["ok"]


def test_ksg_work_budget_names_the_method(client):
    x = np.random.default_rng(0).standard_normal((5000, 32))
    body = _npz(x=x, y=x)
    r = client.post("/estimate/npz?method=ksg", content=body, headers=NPZ)
    assert r.status_code == 422 and r.json()["field"] == "method" and "n·(dx+dy)" in r.json()["detail"]


def test_admission_waits_for_a_slot_within_bounds():
    async def scenario() -> list[str]:
        gate = Admission(slots=1, deadline_s=2.0, max_waiting=1)
        runs = [asyncio.ensure_future(gate.run(time.sleep, 0.2)) for _ in range(3)]
        outcomes = []
        for run in runs:
            try:
                await run
                outcomes.append("ran")
            except Busy:
                outcomes.append("busy")
        return outcomes

    assert asyncio.run(scenario()) == ["ran", "ran", "busy"]  # one runs, one waits, the third finds the line full


def test_admission_refuses_when_full_and_answers_deadlines():
    async def scenario() -> tuple[str, str]:
        gate = Admission(slots=1, deadline_s=0.3, max_waiting=0)
        slow = asyncio.ensure_future(gate.run(time.sleep, 0.6))
        await asyncio.sleep(0.05)
        try:
            await gate.run(time.sleep, 0.0)
            second = "ran"
        except Busy:
            second = "busy"
        try:
            await slow
            first = "ran"
        except DeadlineExceeded:
            first = "deadline"
        return first, second

    assert asyncio.run(scenario()) == ("deadline", "busy")


def test_busy_and_deadline_are_503_and_504(client, monkeypatch):
    admission = client.app.state.admission

    async def busy(*_):
        raise Busy

    async def late(*_):
        raise DeadlineExceeded

    body = {"x": list(range(20)), "y": list(range(20))}
    monkeypatch.setattr(admission, "run", busy)
    r = client.post("/estimate", json=body)
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    monkeypatch.setattr(admission, "run", late)
    assert client.post("/estimate", json=body).status_code == 504


def test_metrics_label_by_route_template(client):
    for i in range(50):
        assert client.get(f"/nope/{i}").status_code == 404
    text = client.get("/metrics").text
    assert 'path="unmatched"' in text and "/nope/" not in text


def test_405_keeps_allow_and_close_quantile_levels_stay_apart(client):
    r = client.get("/estimate")
    assert r.status_code == 405 and "POST" in r.headers["allow"]
    body = {"x": list(range(30)), "y": list(range(30)), "quantiles": [0.5, 0.5000000001]}
    assert len(client.post("/estimate", json=body).json()["quantiles"]) == 2


def test_openapi_documents_problems_and_bodies(client):
    spec = client.get("/openapi.json").json()
    post = spec["paths"]["/estimate/npz"]["post"]
    assert "application/octet-stream" in post["requestBody"]["content"]
    assert {"413", "422", "503"} <= set(post["responses"])
    assert "application/problem+json" in post["responses"]["422"]["content"]
    assert "x" in json.dumps(spec["paths"]["/estimate"]["post"]["requestBody"])


# ------------------------------------------------------------------ a real uvicorn on loopback


@pytest.fixture(scope="module")
def live_port():
    with live_server({"MIST_MAX_BODY_BYTES": str(8 * 1024 * 1024)}) as port:
        yield port


def _raw_status(port: int, head: bytes, chunks) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(head)
        try:
            for chunk in chunks:
                s.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server refused and closed: read its answer
        answer = s.recv(4096)
    return int(answer.split(b" ")[1]) if answer else 0


def _chunked(total: int, size: int = 1 << 16):
    piece = b"0," * (size // 2)
    sent = 0
    while sent < total:
        yield b"%x\r\n%s\r\n" % (len(piece), piece)
        sent += len(piece)
    yield b"0\r\n\r\n"


@pytest.mark.parametrize("declared", [b"Content-Length: 10\r\n", b""])
def test_chunked_body_cannot_bypass_the_cap(live_port, declared):
    head = (b"POST /estimate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + declared
            + b"Transfer-Encoding: chunked\r\n\r\n")  # fmt: skip
    status = _raw_status(live_port, head, _chunked(9 * 1024 * 1024))
    assert status in (400, 413), status  # refused (413), or the framing itself rejected (400): never parsed


def test_liveness_stays_fast_while_a_large_body_is_parsed(live_port):
    url = f"http://127.0.0.1:{live_port}"
    body = b'{"x": [' + b"0," * (3_900_000) + b'0], "y": [0]}'  # just under 8 MiB of numbers
    worst = []
    done = threading.Event()

    def post() -> None:
        req = urllib.request.Request(f"{url}/estimate", body, {"content-type": "application/json"})
        try:
            urllib.request.urlopen(req, timeout=60)
        except urllib.error.HTTPError as err:
            assert err.code == 422  # rows beyond the limit: refused, not a 500
        finally:
            done.set()

    thread = threading.Thread(target=post)
    thread.start()
    while not done.is_set():
        start = time.perf_counter()
        urllib.request.urlopen(f"{url}/health/live", timeout=5)
        worst.append(time.perf_counter() - start)
        time.sleep(0.02)
    thread.join()
    assert max(worst) < 1.0, max(worst)
