"""No request can take the service down or return a 500: one test per attack found by the service probe."""

from __future__ import annotations

import asyncio
import contextlib
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
from server.errors import ClientGone
from server.limits import Admission, Busy, DeadlineExceeded
from server.settings import Settings
from tests.conftest import live_server, server_cpu_seconds

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


def _corrupt_deflate() -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, x=np.arange(500.0), y=np.arange(500.0))
    body = bytearray(buf.getvalue())
    start = body.find(b"x.npy") + len(b"x.npy") + 20  # inside the first member's deflate stream
    body[start : start + 40] = bytes(range(40))
    return bytes(body)


def _with_header(header: bytes) -> bytes:
    """An .npz whose x.npy carries ``header`` (a version 1.0 header of any text) and y.npy is fine."""
    npy = np.lib.format.magic(1, 0) + struct.pack("<H", len(header)) + header + b"\0" * 40
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("x.npy", npy)
        z.writestr("y.npy", _npy(np.arange(5.0)))
    return out.getvalue()


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (_npz(x=np.arange(50.0), y=np.arange(50.0))[:300], "body"),  # truncated
        (np.lib.format.magic(1, 0) + b"plain npy, not a zip", "body"),
        (_bad_crc(), "x.npy"),
        (_header_claiming(2**40), "x.npy"),
        (_header_claiming(100), "x.npy"),  # holds less than its header says
        (_npz(x=np.array(["a"] * 20), y=np.arange(20.0)), "x.npy"),
        (_corrupt_deflate(), "x.npy"),  # zlib.error once answered 500
        (_with_header(b"{'descr': '<f8',\n"), "x.npy"),  # cut short: tokenize.TokenError once answered 500
        (_with_header(b"{'descr': print('hi'), 'fortran_order': False, 'shape': (5,)}"), "x.npy"),
    ],
)
def test_broken_npz_bodies_are_422_naming_the_member(client, body, field):
    r = client.post("/estimate/npz", content=body, headers=NPZ)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field
    assert "object at 0x" not in r.text and "Error" not in r.json()["detail"]  # words, not Python internals


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


HEAVY = 10.0  # estimated seconds: past Admission.light_cost_s


def test_light_work_has_a_lane_while_heavy_work_fills_the_slots():
    async def scenario() -> float:
        gate = Admission(slots=1, deadline_s=5.0, max_waiting=4)
        heavy = [asyncio.ensure_future(gate.run(time.sleep, 0.8, cost=HEAVY)) for _ in range(2)]
        await asyncio.sleep(0.05)
        start = time.perf_counter()
        await gate.run(time.sleep, 0.01, cost=0.01)
        waited = time.perf_counter() - start
        await asyncio.gather(*heavy)
        return waited

    assert asyncio.run(scenario()) < 0.5  # not behind the 1.6 s of heavy work


def test_a_request_whose_client_left_is_never_started():
    async def scenario() -> list[str]:
        gate = Admission(slots=1, deadline_s=5.0, max_waiting=4)
        started = []
        running = asyncio.ensure_future(gate.run(time.sleep, 0.3, cost=HEAVY))
        await asyncio.sleep(0.05)
        left = threading.Event()
        queued = asyncio.ensure_future(gate.run(started.append, "queued", cost=HEAVY, cancel=left))
        await asyncio.sleep(0.05)
        left.set()  # the client hangs up while its request waits for a slot
        await running
        with pytest.raises(ClientGone):
            await queued
        return started

    assert asyncio.run(scenario()) == []


def test_a_batch_past_the_deadline_is_refused_before_any_work(client):
    x = np.random.default_rng(0).integers(0, 9, (1562, 32))  # each item inside the KSG budget (1562 × 64 cells)
    items = [{"x": x.tolist(), "y": x.tolist()}] * 30  # 41 such items once ran 29 s of CPU, then answered 504
    start = time.perf_counter()
    r = client.post("/estimate/batch", json={"items": items, "method": "ksg"})
    assert r.status_code == 422 and r.json()["field"] == "items" and "deadline" in r.json()["detail"], r.text
    assert time.perf_counter() - start < 10  # refused on its predicted cost, not after running


def test_admission_waits_for_a_slot_within_bounds():
    async def scenario() -> list[str]:
        gate = Admission(slots=1, deadline_s=2.0, max_waiting=1)
        runs = [asyncio.ensure_future(gate.run(time.sleep, 0.2, cost=HEAVY)) for _ in range(3)]
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
        slow = asyncio.ensure_future(gate.run(time.sleep, 0.6, cost=HEAVY))
        await asyncio.sleep(0.05)
        try:
            await gate.run(time.sleep, 0.0, cost=HEAVY)
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

    async def busy(*_, **__):
        raise Busy

    async def late(*_, **__):
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


def test_media_types_are_case_insensitive(client):
    body = _npz(x=np.arange(50.0), y=np.arange(50.0) % 7)
    r = client.post("/estimate/npz", content=body, headers={"content-type": "Application/Octet-Stream"})
    assert r.status_code == 200, r.text
    r = client.post("/estimate", content=json.dumps({"x": list(range(20)), "y": list(range(20))}),
                    headers={"content-type": "Application/JSON; charset=UTF-8"})  # fmt: skip
    assert r.status_code == 200, r.text


def test_quantile_levels_are_bounded_so_the_answer_is(client):
    levels = np.linspace(0.03, 0.97, 101).tolist()
    items = [{"x": list(range(20)), "y": list(range(20))}] * 4
    r = client.post("/estimate/batch", json={"items": items, "quantiles": levels})
    assert r.status_code == 422 and r.json()["field"] == "quantiles", r.text
    assert "100" in r.json()["detail"]
    r = client.post("/estimate/batch", json={"items": items, "quantiles": levels[:100]})
    assert r.status_code == 200 and all(len(res["result"]["quantiles"]) == 100 for res in r.json()["results"])


def test_wrong_media_type_is_refused_before_the_body_and_every_status_is_counted():
    settings = Settings(max_body_bytes=1000, max_buffered_bytes=1000, parse_workers=0)
    with TestClient(create_app(settings)) as c:

        def body():  # a 415 must not wait for this body: the generator stops the test if it is read
            yield b'{"x": '
            raise AssertionError("the body was read before the media type was checked")

        assert c.post("/estimate", content=body(), headers={"content-type": "text/plain"}).status_code == 415
        assert c.post("/estimate", content=b"0" * 2000, headers={"content-type": "application/json"}).status_code == 413
        text = c.get("/metrics").text
    assert 'mist_requests_total{path="/estimate",status="415"} 1.0' in text
    assert 'mist_requests_total{path="/estimate",status="413"} 1.0' in text


def test_openapi_documents_problems_and_bodies(client):
    spec = client.get("/openapi.json").json()
    post = spec["paths"]["/estimate/npz"]["post"]
    assert "application/octet-stream" in post["requestBody"]["content"]
    assert {"413", "422", "503"} <= set(post["responses"])
    assert "application/problem+json" in post["responses"]["422"]["content"]
    ref = spec["paths"]["/estimate"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert "x" in spec["components"]["schemas"][ref.rsplit("/", 1)[1]]["properties"]


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


def test_a_batch_stops_soon_after_its_client_leaves(live_port):
    x = np.random.default_rng(1).integers(0, 9, (1000, 10))
    items = [{"x": x[:, :5].tolist(), "y": x[:, 5:].tolist()}] * 100  # about 6 s of KSG work
    body = json.dumps({"items": items, "method": "ksg"}).encode()
    head = b"POST /estimate/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    with socket.create_connection(("127.0.0.1", live_port)) as s:
        s.sendall(head % len(body) + body)
        time.sleep(1.5)
    left = server_cpu_seconds(live_port)  # the client has gone: the server may finish its current item
    time.sleep(2.5)
    assert server_cpu_seconds(live_port) - left < 1.0


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


# ------------------------------------------------------------------ what slow and idle clients may hold

GUARDED = {"MIST_HEAD_TIMEOUT_S": "1", "MIST_BODY_TIMEOUT_S": "1.5", "MIST_MAX_BODY_BYTES": str(1 << 20),
           "MIST_MAX_BUFFERED_BYTES": str(3 << 19)}  # fmt: skip


@pytest.fixture(scope="module")
def guarded_port():
    with live_server(GUARDED) as port:
        yield port


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
        return True  # the server closed the connection
    except TimeoutError:
        return False


def test_idle_and_trickling_connections_are_closed(guarded_port):
    with socket.create_connection(("127.0.0.1", guarded_port)) as idle:
        assert _closed_within(idle, 3.0)
    with socket.create_connection(("127.0.0.1", guarded_port)) as slow:
        slow.sendall(b"GET /health/live HTTP/1.1\r\n")
        for _ in range(4):  # one header line every 0.5 s: each byte would have reset uvicorn's own timer
            time.sleep(0.5)
            with contextlib.suppress(OSError):
                slow.sendall(b"X-Slow: 1\r\n")
        assert _closed_within(slow, 2.0)


def test_a_body_that_does_not_arrive_in_time_is_408(guarded_port):
    head = b"POST /estimate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    with socket.create_connection(("127.0.0.1", guarded_port), timeout=10) as s:
        s.sendall(head + b'{"x": [1,')
        answer = s.recv(4096)
        assert answer.split(b" ")[1] == b"408" and b"connection: close" in answer.lower()
        assert _closed_within(s, 2.0)  # not held open for the rest of a body that will never be read


def test_bodies_held_across_connections_are_bounded(guarded_port):
    head = (b"POST /estimate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            % (1 << 20))  # fmt: skip
    held = [socket.create_connection(("127.0.0.1", guarded_port), timeout=10) for _ in range(2)]
    try:
        for s in held:  # 2 × 0.75 MiB held, under the 1.5 MiB budget
            s.sendall(head + b"[" + b"1," * (3 << 17))
        time.sleep(0.3)
        status = _raw_status(guarded_port, head, [b"[" + b"1," * (3 << 17)])  # a third would pass the budget
        assert status == 503
    finally:
        for s in held:
            s.close()
