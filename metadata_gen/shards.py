"""Write and read tasks as shards: one flat float32 ``.npy`` per chunk of tasks plus a JSON index.

Layout of ``DIR``::

    chunk-00000.npy    all X then Y values of the chunk's tasks, row-major, concatenated
    chunk-00000.json   per task: index, family, n, dx, dy, mi, mi_se, transforms, offset
    manifest[-i-of-k].json   config, seed, task range of this invocation

Chunk ``c`` always holds tasks ``[c * chunk_size, (c + 1) * chunk_size)``, so the files are identical
whatever the number of workers or machines that wrote them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from metadata_gen.config import MetaConfig
from metadata_gen.sampler import Task

CHUNK_SIZE = 500


def shard_range(total: int, shard_index: int, num_shards: int) -> tuple[int, int]:
    """Contiguous task range ``[start, stop)`` of one of ``num_shards`` machines, in whole chunks."""
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard index {shard_index} must lie in [0, {num_shards})")
    chunks = -(-total // CHUNK_SIZE)
    per = -(-chunks // num_shards)
    return min(shard_index * per * CHUNK_SIZE, total), min((shard_index + 1) * per * CHUNK_SIZE, total)


def _write_chunk(args: tuple[MetaConfig, int, int, int, str]) -> int:
    config, seed, start, stop, out = args
    import torch

    from metadata_gen.batched import BatchGenerator

    torch.set_num_threads(1)
    chunk = start // CHUNK_SIZE
    metas, parts, offset = [], [], 0
    batches = BatchGenerator(config, seed).generate(range(start, stop))
    for task in sorted((t for b in batches for t in b.tasks()), key=lambda t: t.index):
        meta = task.meta()
        meta["offset"] = offset
        metas.append(meta)
        parts += [task.x.ravel(), task.y.ravel()]
        offset += task.x.size + task.y.size
    stem = Path(out) / f"chunk-{chunk:05d}"
    np.save(f"{stem}.npy", np.concatenate(parts).astype(np.float32))
    Path(f"{stem}.json").write_text(json.dumps(metas))
    return stop - start


def write_shards(
    config: MetaConfig,
    tasks: int,
    out: str | Path,
    seed: int | None = None,
    workers: int = 1,
    shard_index: int = 0,
    num_shards: int = 1,
    progress: bool = True,
) -> Path:
    """Generate this machine's share of ``tasks`` tasks into ``out``; returns the manifest path."""
    seed = config.seed if seed is None else seed
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start, stop = shard_range(tasks, shard_index, num_shards)
    first_chunk, last_chunk = start // CHUNK_SIZE, -(-stop // CHUNK_SIZE)
    jobs = [
        (config, seed, max(c * CHUNK_SIZE, start), min((c + 1) * CHUNK_SIZE, stop), str(out))
        for c in range(first_chunk, last_chunk)
    ]
    bar = tqdm(total=stop - start, unit="task", desc="generate", disable=not progress)
    if workers <= 1:
        for job in jobs:
            bar.update(_write_chunk(job))
    else:
        with ProcessPoolExecutor(workers) as pool:
            for done in pool.map(_write_chunk, jobs):
                bar.update(done)
    bar.close()
    name = "manifest.json" if num_shards == 1 else f"manifest-{shard_index}-of-{num_shards}.json"
    manifest = {"config": config.model_dump(mode="json"), "seed": seed, "tasks": tasks, "range": [start, stop]}
    (out / name).write_text(json.dumps(manifest, indent=1))
    return out / name


class ShardReader:
    """Random access to the tasks in a shard directory (memory-mapped)."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        index_files = sorted(self.directory.glob("chunk-*.json"))
        if not index_files:
            raise FileNotFoundError(f"no chunk-*.json files in {self.directory}")
        self._entries: list[tuple[Path, dict]] = []
        for f in index_files:
            self._entries += [(f.with_suffix(".npy"), m) for m in json.loads(f.read_text())]
        self._data: dict[Path, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def meta(self, i: int) -> dict:
        return self._entries[i][1]

    def __getitem__(self, i: int) -> Task:
        path, m = self._entries[i]
        if path not in self._data:
            self._data[path] = np.load(path, mmap_mode="r")
        flat, o = self._data[path], m["offset"]
        nx, ny = m["n"] * m["dx"], m["n"] * m["dy"]
        x = np.array(flat[o : o + nx]).reshape(m["n"], m["dx"])
        y = np.array(flat[o + nx : o + nx + ny]).reshape(m["n"], m["dy"])
        return Task(x, y, m["mi"], m["mi_se"], m["family"], m["index"], m["transforms_x"], m["transforms_y"])

    def __iter__(self) -> Iterator[Task]:
        for i in range(len(self)):
            yield self[i]
