"""The generator: one call draws many tasks as tensors, on CPU or CUDA; training, evaluation, ``mist generate``
and :func:`sample_task` (a batch of one) all draw through it.

What each task is made of (shape, family, parameters, reshaping maps) is drawn in numpy from its own streams
(:mod:`metadata_gen.sampler`; cheap, a few small arrays per distribution and per task). What is costly runs
batched in torch:

- noise: counter-based normals and uniforms keyed by each task (:mod:`metadata_gen.counter_rng`), so a task's
  sample does not depend on the batch it is drawn in, its size, or the number of workers;
- sampling and reshaping: one tensor program per family (:mod:`metadata_gen.families`) and per stage
  (:mod:`metadata_gen.transforms`) for the whole batch;
- truth: one call per family for all distributions of the batch, computed once per distribution and cached
  (``tasks_per_distribution`` tasks share one).

On CPU a task is bit-identical whatever its batch, batch size or number of workers (tested). On CUDA the integer
hash and the distributions' parameters (drawn in numpy) are the same, but float kernels (log, cos, matmuls, flows)
round differently from the CPU's: samples and Monte Carlo truths are not bit-identical across devices, and within
CUDA they are only as deterministic as its kernels.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from metadata_gen.config import MetaConfig
from metadata_gen.families import FAMILIES
from metadata_gen.sampler import (
    PILOT_SAMPLES,
    Task,
    cap_rows,
    draw_distribution,
    draw_n,
    draw_reshapings,
)
from metadata_gen.streams import TASK_KEY_SALT, task_rng
from metadata_gen.transforms import Reshaping, reshape


@dataclass
class TaskBatch:
    """B tasks of one shape: ``x: (B, n, dx)``, ``y: (B, n, dy)`` float32; ``mi``, ``mi_se``: ``(B,)`` float64."""

    x: torch.Tensor
    y: torch.Tensor
    mi: torch.Tensor
    mi_se: torch.Tensor
    families: list[str]
    indices: list[int]
    transforms: list[tuple[list[str], list[str]]] = field(default_factory=list)

    def tasks(self) -> list[Task]:
        """As :class:`Task` objects (numpy, float32)."""
        x, y, mi, se = (t.cpu().numpy() for t in (self.x, self.y, self.mi, self.mi_se))
        names = self.transforms or [([], [])] * len(self.indices)
        return [
            Task(x[b], y[b], float(mi[b]), float(se[b]), self.families[b], self.indices[b], *names[b])
            for b in range(len(self.indices))
        ]

    def select(self, keep: list[int]) -> TaskBatch:
        return TaskBatch(self.x[keep], self.y[keep], self.mi[keep], self.mi_se[keep],
                         [self.families[k] for k in keep], [self.indices[k] for k in keep],
                         [self.transforms[k] for k in keep])  # fmt: skip


@dataclass
class _Distribution:
    family: str
    params: dict
    dx: int
    dy: int
    mi: float | None = None
    mi_se: float = 0.0


class BatchGenerator:
    """Draws batches of tasks of a meta-distribution; keeps the truths of recent distributions."""

    def __init__(self, config: MetaConfig, seed: int | None = None, device: str | torch.device = "cpu"):
        self.config = config
        self.seed = config.seed if seed is None else seed
        self.device = torch.device(device)
        self._cache: OrderedDict[tuple, _Distribution] = OrderedDict()

    def generate(
        self, indices: Sequence[int], dims: tuple[int, int] | None = None, n: int | None = None
    ) -> TaskBatch | list[TaskBatch]:
        """Tasks ``indices`` with the given dims and n (both drawn per task when ``None``). With fixed ``dims`` and
        ``n`` returns one :class:`TaskBatch`; otherwise a list, one batch per distinct (n, dx, dy), in order of
        first appearance."""
        indices = list(indices)
        dists = [self._distribution(i, dims) for i in indices]
        ns = [n if n is not None else cap_rows(draw_n(task_rng(self.seed, i), self.config), d.dx, d.dy, self.config)
              for i, d in zip(indices, dists, strict=True)]  # fmt: skip
        groups: OrderedDict[tuple[int, int], list[int]] = OrderedDict()
        for pos, d in enumerate(dists):
            groups.setdefault((d.dx, d.dy), []).append(pos)
        out = []
        for (dx, dy), members in groups.items():
            batch = self._same_dims([indices[p] for p in members], [dists[p] for p in members], dx, dy,
                                    max(ns[p] for p in members))  # fmt: skip
            if n is not None:
                out.append(batch)
                continue
            for size in sorted({ns[p] for p in members}):
                keep = [k for k, p in enumerate(members) if ns[p] == size]
                part = batch.select(keep)
                part.x, part.y = part.x[:, :size], part.y[:, :size]
                out.append(part)
        return out[0] if dims is not None and n is not None else out

    # ------------------------------------------------------------ distributions and truth

    def _distribution(self, index: int, dims: tuple[int, int] | None) -> _Distribution:
        dist_id = index // self.config.tasks_per_distribution
        key = (dist_id, dims)
        if key not in self._cache:
            draw = draw_distribution(self.config, self.seed, dist_id, dims)
            spec = self.config.families.enabled()[draw.family]
            params = FAMILIES[draw.family].parameters(draw.rng, draw.dx, draw.dy, draw.target, spec)
            params["_key"] = int(draw.rng.integers(2**32))  # the counter key of its Monte Carlo truth
            self._cache[key] = _Distribution(draw.family, params, draw.dx, draw.dy)
            while len(self._cache) > 4096:
                self._cache.popitem(last=False)
        return self._cache[key]

    def _fill_truths(self, dists: list[_Distribution], dx: int, dy: int) -> None:
        todo: dict[str, list[_Distribution]] = {}
        for d in dists:
            if d.mi is None and all(d is not e for e in todo.get(d.family, [])):
                todo.setdefault(d.family, []).append(d)
        for family, group in todo.items():
            spec = self.config.families.enabled()[family]
            mi, se = FAMILIES[family].truth([d.params for d in group], dx, dy, spec, self.device)
            for d, m, s in zip(group, mi.tolist(), se.tolist(), strict=True):
                d.mi, d.mi_se = float(m), float(s)

    # ------------------------------------------------------------ sampling

    def _same_dims(self, indices: list[int], dists: list[_Distribution], dx: int, dy: int, n: int) -> TaskBatch:
        self._fill_truths(dists, dx, dy)
        rows = n + PILOT_SAMPLES
        keys = torch.tensor([int(task_rng(self.seed, i).integers(2**32)) ^ TASK_KEY_SALT for i in indices],
                            device=self.device)  # fmt: skip
        z = torch.empty(len(indices), rows, dx + dy, dtype=torch.float64, device=self.device)
        by_family: dict[str, list[int]] = {}
        for pos, d in enumerate(dists):
            by_family.setdefault(d.family, []).append(pos)
        for family, members in by_family.items():
            z[members] = FAMILIES[family].sample([dists[p].params for p in members], keys[members], rows, dx, dy)
        maps: list[tuple[Reshaping, Reshaping]] = [draw_reshapings(self.config, self.seed, i, dx, dy) for i in indices]
        x = reshape(z[..., :dx], [m[0] for m in maps], PILOT_SAMPLES)
        y = reshape(z[..., dx:], [m[1] for m in maps], PILOT_SAMPLES)
        return TaskBatch(
            x[:, PILOT_SAMPLES:].float(), y[:, PILOT_SAMPLES:].float(),
            torch.tensor([d.mi for d in dists], dtype=torch.float64, device=self.device),
            torch.tensor([d.mi_se for d in dists], dtype=torch.float64, device=self.device),
            [d.family for d in dists], indices, [(m[0].names(), m[1].names()) for m in maps],
        )  # fmt: skip


def sample_task(
    config: MetaConfig, index: int, seed: int | None = None, shape: tuple[int, int, int] | None = None
) -> Task:
    """Task ``index`` of the meta-distribution (deterministic in ``(seed, index)``) as a batch of one.
    ``shape = (n, dx, dy)`` overrides the config's shape prior (evaluation suites use it to bucket n)."""
    gen = BatchGenerator(config, seed)
    if shape is None:
        return gen.generate([index])[0].tasks()[0]
    return gen.generate([index], dims=shape[1:], n=shape[0]).tasks()[0]
