"""Draw tasks from a meta-distribution: family + dims + target MI -> (X, Y, true MI), then reshape.

Task ``i`` of a config with seed ``s`` is a pure function of ``(s, i)``: it gets its own
``numpy.random.SeedSequence([s, i])``, so results do not depend on how tasks are split over
workers, processes or machines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from metadata_gen.config import ConfigError, MetaConfig, TransformsConfig
from metadata_gen.families import FAMILIES, JointDistribution
from metadata_gen.transforms import (
    FLOW_BANK,
    Chain,
    Coordinatewise,
    Linear,
    RandomFlow,
    Spiral,
    Standardize,
    banked_flow,
)

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


def distribution_rng(seed: int, dist_id: int) -> np.random.Generator:
    """The stream of distribution ``dist_id``: family, target MI, dims and parameters."""
    return np.random.default_rng(np.random.SeedSequence([seed, DISTRIBUTION_STREAM, dist_id]))


DISTRIBUTION_STREAM = 7_340_033


def draw_n(rng: np.random.Generator, config: MetaConfig) -> int:
    d = config.dims
    return min(int(np.exp(rng.uniform(np.log(d.n.low), np.log(d.n.high + 1)))), d.n.high)


def draw_dims(rng: np.random.Generator, config: MetaConfig) -> tuple[int, int]:
    d = config.dims

    def one(r) -> int:
        if d.dims_prior == "log_uniform":
            return min(int(np.exp(rng.uniform(np.log(r.low), np.log(r.high + 1)))), r.high)
        return int(rng.integers(r.low, r.high + 1))

    return one(d.dx), one(d.dy)


def cap_rows(n: int, dx: int, dy: int, config: MetaConfig) -> int:
    """n capped at ``dims.max_cells / (dx + dy)`` (never below the config's lowest n)."""
    return max(min(n, config.dims.max_cells // (dx + dy)), config.dims.n.low)


def draw_shape(rng: np.random.Generator, config: MetaConfig) -> tuple[int, int, int]:
    n, (dx, dy) = draw_n(rng, config), draw_dims(rng, config)
    return cap_rows(n, dx, dy, config), dx, dy


@dataclass
class DistributionDraw:
    """What a distribution is made of, before any sampling: family, target MI, dims and parameters."""

    dist_id: int
    family: str
    target: float
    dx: int
    dy: int
    rng: np.random.Generator  # positioned after the draws above: the reference builder continues from here


def draw_distribution(config: MetaConfig, seed: int, dist_id: int, dims: tuple[int, int] | None) -> DistributionDraw:
    rng = distribution_rng(seed, dist_id)
    drawn = draw_dims(rng, config)
    dx, dy = dims if dims is not None else drawn
    family = draw_family(rng, config)
    return DistributionDraw(dist_id, family, draw_target_mi(rng, config), dx, dy, rng)


def draw_family(rng: np.random.Generator, config: MetaConfig) -> str:
    enabled = config.families.enabled()
    names = list(enabled)
    weights = np.array([enabled[k].weight for k in names])
    return names[rng.choice(len(names), p=weights / weights.sum())]


@dataclass
class Reshaping:
    """One side's randomly drawn MI-preserving maps, in the order they are applied (``None``: stage skipped).
    Each applied stage is preceded by a standardization fitted on a pilot sample."""

    fitted: object | None = None  # metadata_gen.fitted_flows.FittedFlowMap (imported only when configured)
    linear: Linear | None = None
    spiral: Spiral | None = None
    flow: RandomFlow | None = None
    flow_id: int = -1
    coordinatewise: Coordinatewise | None = None

    def stages(self) -> list:
        stages = (self.fitted, self.linear, self.spiral, self.flow, self.coordinatewise)
        return [t for t in stages if t is not None]


def fitted_map(spec: TransformsConfig, side: str, d: int):
    """The fitted flow configured for ``side`` ("x" or "y"), checked against the side's dimension; or None."""
    path = getattr(spec.fitted, side)
    if path is None:
        return None
    from pathlib import Path

    from metadata_gen.fitted_flows import FittedFlowMap

    if not Path(path).is_file():
        raise ConfigError(f"transforms.fitted.{side}: flow file not found: {path}")
    fitted = FittedFlowMap(path)
    if fitted.d != d:
        raise ConfigError(f"transforms.fitted.{side}: {path} was fitted for d{side} = {fitted.d}, the task has {d}")
    return fitted


def draw_reshaping(rng: np.random.Generator, d: int, spec: TransformsConfig, side: str = "x") -> Reshaping:
    """Draw one side's maps (no data involved: the batched and the reference paths share these draws)."""
    out = Reshaping(fitted=fitted_map(spec, side, d))
    if rng.uniform() < spec.linear.probability:
        out.linear = Linear.random(rng, d)
    if d >= 2 and rng.uniform() < spec.spiral.probability:
        out.spiral = Spiral.random(rng, d)
    if d >= 2 and rng.uniform() < spec.flow.probability:
        out.flow_id = int(rng.integers(FLOW_BANK))
        out.flow = banked_flow(d, spec.flow, out.flow_id)
    if rng.uniform() < spec.coordinatewise.probability:
        out.coordinatewise = Coordinatewise.random(rng, d, spec.coordinatewise.kinds)
    return out


def reshaping_rng(seed: int, index: int) -> np.random.Generator:
    """The stream of task ``index``'s reshaping maps (disjoint from its sampling stream)."""
    return np.random.default_rng(np.random.SeedSequence([seed, RESHAPING_STREAM, index]))


RESHAPING_STREAM = 5_767_169


def build_reshaping(maps: Reshaping, pilot: np.ndarray) -> Chain:
    """One side's chain of MI-preserving maps. Standardizations inside the chain are fitted on an
    independent pilot sample, so the chain is a fixed bijection, not a function of the task's own data."""
    chain = Chain([])
    for t in maps.stages():
        for part in (Standardize.fit(pilot), t):
            chain.parts.append(part)
            pilot = part.forward(pilot)
    return chain


def build_distribution(draw: DistributionDraw, config: MetaConfig) -> JointDistribution:
    spec = config.families.enabled()[draw.family]
    return FAMILIES[draw.family](draw.rng, draw.dx, draw.dy, draw.target, spec)


def sample_task(
    config: MetaConfig, index: int, seed: int | None = None, shape: tuple[int, int, int] | None = None
) -> Task:
    """Draw task ``index`` of the meta-distribution (deterministic in ``(seed, index)``): the reference path,
    one task at a time in numpy. Tasks ``index // config.tasks_per_distribution`` share one distribution.

    ``shape = (n, dx, dy)`` overrides the config's shape prior (the trainer uses it to bucket batches).
    """
    seed = config.seed if seed is None else seed
    rng = task_rng(seed, index)
    n = draw_n(rng, config) if shape is None else shape[0]
    draw = draw_distribution(config, seed, index // config.tasks_per_distribution, None if shape is None else shape[1:])
    dist = build_distribution(draw, config)
    pilot_x, pilot_y = dist.sample(rng, PILOT_SAMPLES)
    maps_rng = reshaping_rng(seed, index)
    chain_x = build_reshaping(draw_reshaping(maps_rng, dist.dx, config.transforms, "x"), pilot_x)
    chain_y = build_reshaping(draw_reshaping(maps_rng, dist.dy, config.transforms, "y"), pilot_y)
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
