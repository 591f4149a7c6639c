"""Generator throughput at n = 500, dx = dy = 8: the reference path (one task at a time, numpy) against the
batched path (:class:`metadata_gen.batched.BatchGenerator`), measured in the same run.

    python benchmarks/generate_bench.py [--seconds 20] [--workers 2] [--device cpu|cuda|auto] [--out FILE.json]

On CPU, ``--workers`` processes (one thread each) draw disjoint task ranges, as ``mist generate`` and DataLoader
workers do. Prints a table; writes JSON with --out.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from metadata_gen.config import parse_config, read_config_file

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (500, 8, 8)
BATCH = 256


def _variant(base: dict, families: list[str] | None) -> dict:
    data = copy.deepcopy(base)
    if families is not None:
        data["families"] = {k: v for k, v in data["families"].items() if k in families}
    return data


def _rate(args: tuple) -> tuple[int, float]:
    """Tasks drawn in ``seconds`` by one process: (tasks, seconds)."""
    data, path, seconds, device, offset = args
    from metadata_gen.batched import BatchGenerator, sample_task

    if device == "cpu":
        torch.set_num_threads(1)
    config = parse_config(data)
    gen = BatchGenerator(config, device=device)
    n, dx, dy = SHAPE

    def draw(start: int, count: int) -> None:
        if path == "reference":
            for i in range(start, start + count):
                sample_task(config, i, shape=SHAPE)
        else:
            gen.generate(range(start, start + count), dims=(dx, dy), n=n)
            if device != "cpu":
                torch.cuda.synchronize()

    count = 16 if path == "reference" else BATCH
    draw(offset, count)  # warm-up (flow bank, kernels)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        draw(offset + count * (1 + done // count), count)
        done += count
    return done, time.perf_counter() - start


def measure(data: dict, path: str, seconds: float, workers: int, device: str) -> float:
    jobs = [(data, path, seconds, device, 10_000_000 * (w + 1)) for w in range(workers)]
    if workers == 1:
        results = [_rate(jobs[0])]
    else:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(_rate, jobs))
    return sum(done / secs for done, secs in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, or auto (cuda when available)")
    parser.add_argument("--config", default=str(ROOT / "configs/meta/default.toml"))
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    base = read_config_file(args.config)
    gaussian = [k for k in base["families"] if k.startswith("gaussian") or k == "independent"]
    rows = [("default mix", _variant(base, None)), ("Gaussian families only", _variant(base, gaussian))]
    paths = ["reference", "batched"] if device == "cpu" else ["batched"]
    workers = args.workers if device == "cpu" else 1
    results = []
    print(f"{'setting (n=500, dx=dy=8)':28s} {'path':10s} {'device':7s} {'workers':>7s} {'datasets/s':>11s}")
    for label, data in rows:
        for path in paths:
            rate = measure(data, path, args.seconds, workers, device)
            results.append({"setting": label, "path": path, "device": device, "workers": workers,
                            "datasets_per_s": rate})  # fmt: skip
            print(f"{label:28s} {path:10s} {device:7s} {workers:7d} {rate:11.1f}", flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"shape": SHAPE, "batch": BATCH, "results": results}, indent=1))


if __name__ == "__main__":
    main()
