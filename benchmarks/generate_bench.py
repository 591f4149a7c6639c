"""Generator throughput: datasets per second per core at n = 500, dx = dy = 8.

Runs single-threaded in this process (one core) and prints a table; writes JSON with --out.
    python benchmarks/generate_bench.py [--tasks 200] [--out benchmarks/results/generate.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

from metadata_gen.config import parse_config, read_config_file
from metadata_gen.sampler import sample_task

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (500, 8, 8)


def _variant(base: dict, families: list[str] | None, flow_kinds: list[str] | None) -> dict:
    data = copy.deepcopy(base)
    if families is not None:
        data["families"] = {k: v for k, v in data["families"].items() if k in families}
    if flow_kinds is None:
        data["transforms"]["flow"]["probability"] = 0.0
    else:
        data["transforms"]["flow"].update(probability=1.0, kinds=flow_kinds)
    return data


def measure(data: dict, tasks: int) -> float:
    config = parse_config(data)
    sample_task(config, 0, shape=SHAPE)  # warm-up
    start = time.perf_counter()
    for i in range(1, tasks + 1):
        sample_task(config, i, shape=SHAPE)
    return tasks / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--config", default=str(ROOT / "configs/meta/default.toml"))
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    base = read_config_file(args.config)
    closed_form = [k for k in base["families"] if k != "mixture"]
    rows = [
        ("default mix, no flows", _variant(base, None, None), 300),
        ("closed-form families, no flows", _variant(base, closed_form, None), 300),
        ("mixture (Monte Carlo truth), no flows", _variant(base, ["mixture"], None), None),
        (
            "default mix, flows on X and Y (config kinds)",
            _variant(base, None, base["transforms"]["flow"]["kinds"]),
            100,
        ),
        ("default mix, masked-affine flows", _variant(base, None, ["masked_affine"]), 100),
        ("default mix, coupling-spline flows", _variant(base, None, ["coupling_spline"]), None),
        ("default mix, autoregressive-spline flows", _variant(base, None, ["autoregressive_spline"]), None),
    ]
    results = []
    print(f"{'setting (n=500, dx=dy=8, 1 core)':48s} {'datasets/s':>11s} {'target':>7s}")
    for label, data, target in rows:
        k = args.tasks if "mixture (" not in label else max(args.tasks // 5, 10)
        rate = measure(data, k)
        results.append({"setting": label, "datasets_per_s_per_core": rate, "target": target, "tasks": k})
        print(f"{label:48s} {rate:11.1f} {target or '-':>7}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"shape": SHAPE, "results": results}, indent=1))


if __name__ == "__main__":
    main()
