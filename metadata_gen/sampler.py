"""Draw tasks from a meta-distribution: family + dims + target MI -> (X, Y, true MI), then reshape.

Task ``i`` of a config with seed ``s`` is a pure function of ``(s, i)``: it gets its own
``numpy.random.SeedSequence([s, i])``, so results do not depend on how tasks are split over
workers, processes or machines.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from metadata_gen.config import MetaConfig, TransformsConfig
from metadata_gen.families import FAMILIES, JointDistribution
from metadata_gen.transforms import Chain, Coordinatewise, Linear, RandomFlow, Spiral, Standardize

PILOT_SAMPLES = 256


@dataclass
class Task:
    """One dataset with its ground truth; ``x`` and ``y`` are float32 arrays of shape (n, dx) and (n, dy)."""

    x: np.ndarray
    y: np.ndarray
    mi: float
    mi_se: float
    family: str
    index: int = -1
    transforms_x: list[str] = field(default_factory=list)
    transforms_y: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return self.x.shape[0]

    def meta(self) -> dict[str, Any]:
        """Everything but the arrays, as plain JSON-able values."""
        return {
            "index": self.index,
            "family": self.family,
            "n": self.n,
            "dx": self.x.shape[1],
            "dy": self.y.shape[1],
            "mi": self.mi,
            "mi_se": self.mi_se,
            "transforms_x": self.transforms_x,
            "transforms_y": self.transforms_y,
        }


def task_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, index]))


def draw_target_mi(rng: np.random.Generator, config: MetaConfig) -> float:
    prior = config.mi_prior
    if rng.uniform() < prior.log_uniform_fraction:
        return float(np.exp(rng.uniform(np.log(prior.min_log_nats), np.log(prior.max_nats))))
    return float(rng.uniform(0.0, prior.max_nats))


def draw_shape(rng: np.random.Generator, config: MetaConfig) -> tuple[int, int, int]:
    d = config.dims
    n = int(np.exp(rng.uniform(np.log(d.n.low), np.log(d.n.high + 1))))
    return min(n, d.n.high), int(rng.integers(d.dx.low, d.dx.high + 1)), int(rng.integers(d.dy.low, d.dy.high + 1))


def draw_family(rng: np.random.Generator, config: MetaConfig) -> str:
    enabled = config.families.enabled()
    names = list(enabled)
    weights = np.array([enabled[k].weight for k in names])
    return names[rng.choice(len(names), p=weights / weights.sum())]


def build_reshaping(rng: np.random.Generator, pilot: np.ndarray, spec: TransformsConfig) -> Chain:
    """Draw one side's chain of MI-preserving maps. Standardizations inside the chain are fitted on an
    independent pilot sample, so the chain is a fixed bijection, not a function of the task's own data."""
    d = pilot.shape[1]
    chain = Chain([])

    def push(t) -> None:
        nonlocal pilot
        chain.parts.append(t)
        pilot = t.forward(pilot)

    push(Standardize.fit(pilot))
    if rng.uniform() < spec.linear.probability:
        push(Linear.random(rng, d))
    if d >= 2 and rng.uniform() < spec.spiral.probability:
        push(Standardize.fit(pilot))
        push(Spiral.random(rng, d))
    if d >= 2 and rng.uniform() < spec.flow.probability:
        push(Standardize.fit(pilot))
        push(RandomFlow.random(rng, d, spec.flow))
    if rng.uniform() < spec.coordinatewise.probability:
        push(Standardize.fit(pilot))
        push(Coordinatewise.random(rng, d, spec.coordinatewise.kinds))
    return chain


def build_distribution(rng: np.random.Generator, config: MetaConfig, dx: int, dy: int) -> JointDistribution:
    family = draw_family(rng, config)
    spec = config.families.enabled()[family]
    return FAMILIES[family](rng, dx, dy, draw_target_mi(rng, config), spec)


def sample_task(
    config: MetaConfig, index: int, seed: int | None = None, shape: tuple[int, int, int] | None = None
) -> Task:
    """Draw task ``index`` of the meta-distribution (deterministic in ``(seed, index)``).

    ``shape = (n, dx, dy)`` overrides the config's shape prior (the trainer uses it to bucket batches).
    """
    rng = task_rng(config.seed if seed is None else seed, index)
    drawn = draw_shape(rng, config)
    n, dx, dy = shape if shape is not None else drawn
    dist = build_distribution(rng, config, dx, dy)
    pilot_x, pilot_y = dist.sample(rng, PILOT_SAMPLES)
    chain_x = build_reshaping(rng, pilot_x, config.transforms)
    chain_y = build_reshaping(rng, pilot_y, config.transforms)
    x, y = dist.sample(rng, n)
    return Task(
        x=chain_x.forward(x).astype(np.float32),
        y=chain_y.forward(y).astype(np.float32),
        mi=float(dist.mi),
        mi_se=float(dist.mi_se),
        family=dist.family,
        index=index,
        transforms_x=[t for t in chain_x.names() if t != "standardize"],
        transforms_y=[t for t in chain_y.names() if t != "standardize"],
    )


def iter_tasks(config: MetaConfig, start: int, stop: int, seed: int | None = None) -> Iterator[Task]:
    for i in range(start, stop):
        yield sample_task(config, i, seed)


class TaskStream(torch.utils.data.IterableDataset):
    """An endless stream of tasks for a PyTorch DataLoader.

    Each (rank, worker) pair draws its own disjoint index sequence ``i = offset + k * stride``, so no two
    workers (or DDP ranks) ever produce the same task and the stream is reproducible.
    """

    def __init__(self, config: MetaConfig, seed: int | None = None, rank: int = 0, world_size: int = 1):
        self.config, self.seed, self.rank, self.world_size = config, seed, rank, world_size

    def __iter__(self) -> Iterator[Task]:
        info = torch.utils.data.get_worker_info()
        workers, worker = (info.num_workers, info.id) if info else (1, 0)
        torch.set_num_threads(1)
        stride = self.world_size * workers
        i = self.rank * workers + worker
        while True:
            yield sample_task(self.config, i, self.seed)
            i += stride
