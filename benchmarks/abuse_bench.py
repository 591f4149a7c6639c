"""The service under the probe's attacks: status, time, peak server RSS and worst /health/live latency per attack.

Starts ``mist serve`` from ``--root`` (a checkout: run it on an older commit's worktree for a before/after) on a
free port, runs each attack alone while a thread polls liveness and another samples the server's RSS, then four
requests at the body cap in parallel. Prints a table; writes JSON with --out.

    python benchmarks/abuse_bench.py [--root .] [--out benchmarks/results/abuse.json]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

CAP = 8 * 1024 * 1024  # MIST_MAX_BODY_BYTES for the run (--cap)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mb(pid: int) -> float:
    """RSS of ``pid`` and all its descendants (the server's parsing processes count)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            own = next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024
        children = []
        for task in Path(f"/proc/{pid}/task").iterdir():
            children += (task / "children").read_text().split()
    except (OSError, StopIteration):
        return 0.0
    return own + sum(_rss_mb(int(c)) for c in children)


class Watch:
    """Samples the server's RSS and the latency of /health/live while an attack runs."""

    def __init__(self, pid: int, url: str):
        self.pid, self.url = pid, url

    def __enter__(self) -> Watch:
        self.stop, self.peak, self.worst, self.base = threading.Event(), 0.0, 0.0, _rss_mb(self.pid)
        self.threads = [threading.Thread(target=self._rss), threading.Thread(target=self._live)]
        for t in self.threads:
            t.start()
        return self

    def _rss(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, _rss_mb(self.pid))
            time.sleep(0.01)

    def _live(self) -> None:
        while not self.stop.is_set():
            start = time.perf_counter()
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"{self.url}/health/live", timeout=30).read()
            self.worst = max(self.worst, time.perf_counter() - start)
            time.sleep(0.05)

    def __exit__(self, *exc) -> None:
        time.sleep(0.2)
        self.stop.set()
        for t in self.threads:
            t.join()


def _post(url: str, path: str, body: bytes, ctype: str = "application/json") -> int:
    req = urllib.request.Request(f"{url}{path}", body, {"content-type": ctype})
    try:
        return urllib.request.urlopen(req, timeout=600).status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return 0  # connection closed without an answer


def _raw(port: int, head: bytes, chunks) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=120) as s:
        s.sendall(head)
        try:
            for chunk in chunks:
                s.sendall(chunk)
        except OSError:
            pass
        answer = s.recv(4096)
    return int(answer.split(b" ")[1]) if answer else 0


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def _bad_header() -> bytes:
    header = np.lib.format.header_data_from_array_1_0(np.zeros(1))
    header["shape"] = (2**40,)
    npy = io.BytesIO()
    np.lib.format.write_array_header_1_0(npy, header)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("x.npy", npy.getvalue() + b"\0" * 64)
        z.writestr("y.npy", npy.getvalue() + b"\0" * 64)
    return out.getvalue()


def _corrupt_deflate() -> bytes:
    body = bytearray(_npz(x=np.arange(500.0), y=np.arange(500.0)))
    start = body.find(b"x.npy") + 25
    body[start : start + 40] = bytes(range(40))
    return bytes(body)


def _cut_header() -> bytes:
    header = b"{'descr': '<f8',\n"
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("x.npy", np.lib.format.magic(1, 0) + len(header).to_bytes(2, "little") + header)
        z.writestr("y.npy", np.lib.format.magic(1, 0) + len(header).to_bytes(2, "little") + header)
    return out.getvalue()


SLOW_HEAD = b"GET /health/live HTTP/1.1\r\n"
SLOW_BODY = b"POST /estimate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 99\r\n\r\n"


def _closed_after(port: int, first: bytes, trickle: bytes, wait_s: float = 15.0) -> str:
    """Open a connection, send ``first``, then ``trickle`` every 0.5 s: how long until the server closes it."""
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(first)
        s.settimeout(0.5)
        while time.perf_counter() - start < wait_s:
            try:
                if s.recv(4096) == b"":
                    return f"closed {time.perf_counter() - start:.1f}s"
            except TimeoutError:
                with contextlib.suppress(OSError):
                    s.sendall(trickle)
            except OSError:
                return f"closed {time.perf_counter() - start:.1f}s"
    return f"open {wait_s:.0f}s"


def _held_then_burst(url: str, port: int, held: int, cap: int) -> str:
    """``held`` connections each send all but 1 MiB of a body at the cap and wait; then 4 requests at the cap."""
    head = (b"POST /estimate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            % cap)  # fmt: skip
    part = b'{"x": [' + b"0," * ((cap - (1 << 20)) // 2)
    socks = []
    try:
        for _ in range(held):
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            socks.append(s)
            with contextlib.suppress(OSError):
                s.sendall(head + part)
        body = b'{"x": [' + b"0.5," * (cap // 4 - 64) + b'0.5], "y": [0.5]}'
        with ThreadPoolExecutor(4) as pool:
            statuses = list(pool.map(lambda _: _post(url, "/estimate", body), range(4)))
        return ",".join(map(str, statuses))
    finally:
        for s in socks:
            s.close()


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_after_leaving(port: int, pid: int, body: bytes, path: str = "/estimate/batch") -> str:
    """Send ``body``, hang up after 1 s: the server's CPU seconds over the next 5 s."""
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(head.encode() + body)
        time.sleep(1.0)
    left = _cpu_s(pid)
    time.sleep(5.0)
    return f"cpu {_cpu_s(pid) - left:.1f}s"


def _small_behind_heavy(url: str, heavy: bytes) -> str:
    """Two heavy batches fill the slots; then the latency of a small request."""
    with ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(_post, url, "/estimate/batch", heavy) for _ in range(2)]
        time.sleep(0.5)
        start = time.perf_counter()
        status = _post(url, "/estimate", json.dumps({"x": list(range(50)), "y": list(range(50))}).encode())
        waited = time.perf_counter() - start
        [r.result() for r in runs]
    return f"{status} in {waited:.2f}s"


def attacks(url: str, port: int, cap: int, pid: int) -> dict:
    rng = np.random.default_rng(0)
    huge = json.dumps({"x": [1e308 * (-1) ** i for i in range(16)], "y": list(range(16)), "method": "ksg"}).encode()
    chunk = b"0," * 32768
    chunked_head = (b"POST /estimate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n")  # fmt: skip
    chunks = [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * (9 * 1024 * 1024 // len(chunk)) + [b"0\r\n\r\n"]
    big_x = rng.standard_normal((20_000, 32))
    levels = np.linspace(0.03, 0.97, 20_000).tolist()
    item = {"x": rng.standard_normal(50).tolist(), "y": rng.standard_normal(50).tolist()}
    amplified = json.dumps({"items": [item] * 256, "quantiles": levels}).encode()
    octet = "Application/Octet-Stream"
    tied = rng.integers(0, 9, (1000, 10))
    ksg_batch = json.dumps({"method": "ksg", "items": [{"x": tied[:, :5].tolist(), "y": tied[:, 5:].tolist()}] * 100})
    tied = rng.integers(0, 9, (1562, 32))
    past_deadline = json.dumps(
        {"method": "ksg", "items": [{"x": tied.tolist(), "y": tied.tolist()}] * 30}, separators=(",", ":")
    )  # compact: 6 MB, under the 8 MiB cap
    return {
        "chunked 9 MiB, Content-Length 10": lambda: _raw(port, chunked_head, chunks),
        "npz bomb (256 MiB bool member)": lambda: _post(
            url, "/estimate/npz", _npz(x=np.zeros(2**28, bool), y=[0.0]), "application/octet-stream"
        ),
        "npz truncated": lambda: _post(
            url, "/estimate/npz", _npz(x=np.arange(50.0), y=np.arange(50.0))[:200], "application/octet-stream"
        ),
        "npz header claims 2^40 values": lambda: _post(url, "/estimate/npz", _bad_header(), "application/octet-stream"),
        "±1e308 with method=ksg": lambda: _post(url, "/estimate", huge),
        "8 MiB JSON of zeros": lambda: _post(url, "/estimate", b'{"x": [' + b"0," * 4_000_000 + b'0], "y": [0]}'),
        "npz corrupt deflate stream": lambda: _post(url, "/estimate/npz", _corrupt_deflate(), octet),
        "npz header cut short": lambda: _post(url, "/estimate/npz", _cut_header(), octet),
        "batch 256 items x 20000 levels": lambda: _post(url, "/estimate/batch", amplified),
        "idle connection, no bytes": lambda: _closed_after(port, b"", b""),
        "headers trickled, a line per 0.5 s": lambda: _closed_after(port, SLOW_HEAD, b"X-Slow: 1\r\n"),
        "body trickled after its head": lambda: _closed_after(port, SLOW_BODY, b"1", wait_s=35.0),
        "ksg batch (~6 s), client leaves at 1 s": lambda: _cpu_after_leaving(port, pid, ksg_batch.encode()),
        "ksg batch of 30 x 1562x(32+32)": lambda: _post(url, "/estimate/batch", past_deadline.encode()),
        "small request behind 2 heavy batches": lambda: _small_behind_heavy(url, ksg_batch.encode()),
        "64 held bodies, then 4 at the cap": lambda: _held_then_burst(url, port, 64, cap),
        "ksg n=20000, d=32+32 (npz)": lambda: _post(
            url, "/estimate/npz?method=ksg", _npz(x=big_x, y=big_x), "application/octet-stream"
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[1]))
    parser.add_argument("--skip", nargs="*", default=[], help="skip attacks whose name contains one of these")
    parser.add_argument("--cap", type=int, default=CAP, help="MIST_MAX_BODY_BYTES of the server under test")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    port = _free_port()
    env = {**os.environ, "MIST_MAX_BODY_BYTES": str(args.cap), "MIST_PORT": str(port)}
    server = subprocess.Popen([sys.executable, "-m", "mist.cli", "serve", "--port", str(port)], cwd=args.root,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(f"{url}/health/ready", timeout=1)
            break
        except OSError:
            time.sleep(0.2)
    rows = []
    print(f"{'attack':38s} {'status':>6s} {'seconds':>8s} {'RSS +MB':>8s} {'live max s':>10s}")
    try:
        for name, attack in attacks(url, port, args.cap, server.pid).items():
            if any(word in name for word in args.skip):
                continue
            with Watch(server.pid, url) as w:
                start = time.perf_counter()
                status = attack()
                secs = time.perf_counter() - start
            rows.append({"attack": name, "status": status, "seconds": secs, "rss_growth_mb": w.peak - w.base,
                         "live_worst_s": w.worst, "rss_peak_mb": w.peak})  # fmt: skip
            print(f"{name:38s} {status!s:>6s} {secs:8.2f} {w.peak - w.base:8.0f} {w.worst:10.2f}", flush=True)
        with Watch(server.pid, url) as w:
            for i in range(2000):
                with contextlib.suppress(urllib.error.HTTPError):
                    urllib.request.urlopen(f"{url}/nope/{i}", timeout=10)
            start = time.perf_counter()
            size = len(urllib.request.urlopen(f"{url}/metrics").read())
            secs = time.perf_counter() - start
        rows.append({"attack": "2000 random 404 paths, then /metrics", "status": 200, "seconds": secs,
                     "metrics_bytes": size, "rss_growth_mb": w.peak - w.base, "live_worst_s": w.worst})  # fmt: skip
        print(f"{'2000 random 404 paths, then /metrics':38s} {200:6d} {secs:8.2f} {w.peak - w.base:8.0f} "
              f"{w.worst:10.2f}  ({size} bytes)")  # fmt: skip
        body = b'{"x": [' + b"0.5," * (args.cap // 4 - 64) + b'0.5], "y": [0.5]}'
        with Watch(server.pid, url) as w, ThreadPoolExecutor(4) as pool:
            start = time.perf_counter()
            statuses = list(pool.map(lambda _: _post(url, "/estimate", body), range(4)))
            secs = time.perf_counter() - start
        rows.append({"attack": "4 parallel requests at the cap", "status": statuses, "seconds": secs,
                     "rss_peak_mb": w.peak, "live_worst_s": w.worst})  # fmt: skip
        print(f"{'4 parallel requests at the cap':38s} {statuses!s:>6s} {secs:8.2f} peak {w.peak:6.0f} MB "
              f"{w.worst:10.2f}")  # fmt: skip
    finally:
        server.terminate()
        server.wait(30)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"cap_bytes": args.cap, "root": args.root, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
