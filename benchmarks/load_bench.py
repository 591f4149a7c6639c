"""Load test of the real service: uvicorn in a subprocess on 127.0.0.1, a bounded number of POST /estimate.

For each concurrency level: throughput, p50 and p99 latency, error count. Also times parsing a 10 000 × 32
body as JSON vs as .npz (the binary endpoint), server side.
    python benchmarks/load_bench.py [--requests 2000] [--concurrency 1 8 32] [--workers 1] [--torch-threads 2]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import httpx2 as httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(workers: int, torch_threads: int, extra_env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = {**os.environ, "MIST_TORCH_THREADS": str(torch_threads), **extra_env}
    cmd = [sys.executable, "-m", "mist.cli", "serve", "--port", str(port), "--workers", str(workers)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/health/ready", timeout=1).status == 200:
                return proc, url
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not become ready in 120 s")


def _body(n: int, d: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    y = 0.6 * x + 0.8 * rng.standard_normal((n, d))
    return json.dumps({"x": np.round(x, 6).tolist(), "y": np.round(y, 6).tolist()}).encode()


async def run_level(url: str, bodies: list[bytes], requests: int, concurrency: int) -> dict:
    latencies: list[float] = []
    errors = 0
    counter = iter(range(requests))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def user() -> None:
            nonlocal errors
            for i in counter:
                start = time.perf_counter()
                try:
                    r = await client.post("/estimate", content=bodies[i % len(bodies)],
                                          headers={"content-type": "application/json"})  # fmt: skip
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - start)
                errors += not ok

        start = time.perf_counter()
        await asyncio.gather(*(user() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    lat = np.array(latencies) * 1e3
    return {"concurrency": concurrency, "requests": requests, "errors": errors, "throughput_rps": requests / wall,
            "p50_ms": float(np.median(lat)), "p99_ms": float(np.percentile(lat, 99))}  # fmt: skip


def parse_timings(n: int = 10_000, d: int = 32, reps: int = 5) -> dict:
    """Server-side cost of reading one large request: the service's paths (orjson to numpy; header-checked .npz)
    against validating the JSON into nested pydantic lists (the 0.1 service's path), in the same run."""
    from model.npz import read_npz
    from model.validation import Limits
    from server.parsing import estimate_call
    from server.schemas import EstimateRequest

    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((n, d)), rng.standard_normal((n, d))
    as_json = json.dumps({"x": x.tolist(), "y": y.tolist()}).encode()
    buf = io.BytesIO()
    np.savez(buf, x=x, y=y)
    as_npz = buf.getvalue()

    def parse_pydantic() -> None:
        req = EstimateRequest.model_validate_json(as_json)
        np.asarray(req.x), np.asarray(req.y)

    def parse_json() -> None:
        estimate_call(as_json)

    def parse_npz() -> None:
        read_npz(as_npz, Limits())

    out = {"n": n, "d": d, "json_bytes": len(as_json), "npz_bytes": len(as_npz)}
    for name, fn in (("pydantic_json", parse_pydantic), ("json", parse_json), ("npz", parse_npz)):
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        out[f"{name}_parse_ms"] = float(np.median(times)) * 1e3
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=5, help="dx = dy")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--torch-threads", type=int, default=2)
    parser.add_argument("--env", nargs="*", default=[], help="extra MIST_* settings for the server, KEY=VALUE")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    extra_env = dict(kv.split("=", 1) for kv in args.env)
    bodies = [_body(args.n, args.dim, seed) for seed in range(16)]
    proc, url = start_server(args.workers, args.torch_threads, extra_env)
    rows = []
    try:
        asyncio.run(run_level(url, bodies, 20, 1))  # warm-up
        setup = f"{args.workers} worker(s) × {args.torch_threads} torch threads"
        print(f"n={args.n}, dx=dy={args.dim}, {setup} {extra_env or ''}")
        print(f"{'concurrency':>11} {'requests':>8} {'errors':>6} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7}")
        for c in args.concurrency:
            row = asyncio.run(run_level(url, bodies, args.requests, c))
            rows.append(row)
            print(f"{c:>11} {row['requests']:>8} {row['errors']:>6} {row['throughput_rps']:7.1f} "
                  f"{row['p50_ms']:7.1f} {row['p99_ms']:7.1f}")  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(30)
    base = rows[0]["throughput_rps"]
    for row in rows:
        row["throughput_vs_first"] = row["throughput_rps"] / base
    ratios = ", ".join(f"c={r['concurrency']}: {r['throughput_vs_first']:.2f}" for r in rows)
    print(f"throughput relative to concurrency {rows[0]['concurrency']}: {ratios}")
    parse = parse_timings()
    print(f"parse 10 000 x 32 (x and y): JSON {parse['json_parse_ms']:.0f} ms (pydantic lists: "
          f"{parse['pydantic_json_parse_ms']:.0f} ms; {parse['json_bytes'] / 1e6:.1f} MB), "
          f"npz {parse['npz_parse_ms']:.1f} ms ({parse['npz_bytes'] / 1e6:.1f} MB)")  # fmt: skip
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        config = {"n": args.n, "dim": args.dim, "workers": args.workers, "torch_threads": args.torch_threads,
                  "env": extra_env}  # fmt: skip
        Path(args.out).write_text(json.dumps({"config": config, "levels": rows, "parse": parse}, indent=1))


if __name__ == "__main__":
    main()
