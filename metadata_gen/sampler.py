"""What a task is made of, drawn before any sampling: shape, family, target MI, parameters and reshaping maps.

Task ``i`` of a config with seed ``s`` is a pure function of ``(s, i)``: every draw comes from a stream of
:mod:`metadata_gen.streams` keyed by ``(s, i)`` (or by its distribution ``i // tasks_per_distribution``), so
results do not depend on how tasks are split over batches, workers, processes or machines. The samples themselves
are drawn by :mod:`metadata_gen.batched`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from metadata_gen.config import ConfigError, MetaConfig, TransformsConfig
from metadata_gen.streams import Word, word_rng
from metadata_gen.transforms import Reshaping, draw_reshaping

PILOT_SAMPLES = 256  # extra rows drawn first: each reshaping stage's standardization is fitted on them


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


def draw_target_mi(rng: np.random.Generator, config: MetaConfig) -> float:
    prior = config.mi_prior
    if rng.uniform() < prior.log_uniform_fraction:
        return float(np.exp(rng.uniform(np.log(prior.min_log_nats), np.log(prior.max_nats))))
    return float(rng.uniform(0.0, prior.max_nats))


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
    rng = word_rng(seed, Word.DISTRIBUTION, dist_id)
    drawn = draw_dims(rng, config)
    dx, dy = dims if dims is not None else drawn
    family = draw_family(rng, config)
    return DistributionDraw(dist_id, family, draw_target_mi(rng, config), dx, dy, rng)


def draw_family(rng: np.random.Generator, config: MetaConfig) -> str:
    enabled = config.families.enabled()
    names = list(enabled)
    weights = np.array([enabled[k].weight for k in names])
    return names[rng.choice(len(names), p=weights / weights.sum())]


def fitted_map(spec: TransformsConfig, side: str, d: int):
    """The fitted flow configured for ``side`` ("x" or "y"), checked against the side's dimension; or None."""
    path = getattr(spec.fitted, side)
    if path is None:
        return None
    from metadata_gen.fitted_flows import FittedFlowMap

    if not Path(path).is_file():
        raise ConfigError(f"transforms.fitted.{side}: flow file not found: {path}")
    fitted = FittedFlowMap(path)
    if fitted.d != d:
        raise ConfigError(f"transforms.fitted.{side}: {path} was fitted for d{side} = {fitted.d}, the task has {d}")
    return fitted


def draw_reshapings(config: MetaConfig, seed: int, index: int, dx: int, dy: int) -> tuple[Reshaping, Reshaping]:
    """Task ``index``'s maps of X and of Y, drawn from its own stream (never from its data)."""
    rng = word_rng(seed, Word.RESHAPING, index)
    spec = config.transforms
    return (draw_reshaping(rng, dx, spec, fitted_map(spec, "x", dx)),
            draw_reshaping(rng, dy, spec, fitted_map(spec, "y", dy)))  # fmt: skip
