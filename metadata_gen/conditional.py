"""Conditional MI tasks I(X; Y | Z) with known truth, built on the MI generator.

A pair ``(E_x, E_y)`` is drawn as an ordinary MI task (any family, reshaped, with its known MI), ``Z`` independently
of it, and then, row by row,

    X = a_x(Z) + s_x(Z) · E_x,        Y = a_y(Z) + s_y(Z) · E_y,        s > 0.

Given Z = z, X is an invertible map of E_x and Y one of E_y, and (E_x, E_y) is independent of Z, so
I(X; Y | Z = z) = I(E_x; E_y) for every z: the truth is the MI task's truth, its standard error included. The
links ``a`` make X and Y strongly dependent on Z (and so on each other) whatever the conditional dependence; a
share of the tasks pairs E_x with the E_y of another task, so I(X; Y | Z) = 0 exactly while X and Y stay
dependent: the hard case for a conditional-independence test. Last, X, Y and Z are each reshaped by their own
MI-preserving maps (:mod:`metadata_gen.transforms`), which leave the CMI unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from metadata_gen.batched import sample_task
from metadata_gen.config import MetaConfig, MIPrior
from metadata_gen.streams import CONDITIONAL_NULL_OFFSET, Word, word_rng
from metadata_gen.transforms import draw_reshaping, reshape

Link = Literal["linear", "tanh", "cubic", "softplus", "bump", "sin", "quadratic"]
LINKS: tuple[str, ...] = ("linear", "tanh", "cubic", "softplus", "bump", "sin", "quadratic")


@dataclass(frozen=True)
class ConditionalSpec:
    """A meta-distribution of CMI tasks: the MI tasks behind (E_x, E_y), the links, and the shapes."""

    inner: MetaConfig
    links: tuple[str, ...] = ("linear", "tanh")
    dims: tuple[int, int] = (1, 8)  # each of dx, dy, dz, log-uniform
    n: tuple[int, int] = (200, 5000)  # log-uniform
    null_fraction: float = 0.4  # tasks with I(X; Y | Z) = 0
    heteroscedastic: float = 0.5  # the probability that s_x, s_y depend on Z
    max_cmi_nats: float = 2.0
    cmi: float | None = None  # a fixed target instead (0: every task null); exact for the Gaussian families
    seed: int = 0


@dataclass
class ConditionalTask:
    """One CMI dataset: float32 ``x: (n, dx)``, ``y: (n, dy)``, ``z: (n, dz)`` and the truth in nats."""

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    cmi: float
    cmi_se: float
    family: str
    link: str
    index: int
    transforms: dict[str, list[str]] = field(default_factory=dict)

    def meta(self) -> dict[str, Any]:
        return {"index": self.index, "family": self.family, "link": self.link, "n": len(self.x),
                "dx": self.x.shape[1], "dy": self.y.shape[1], "dz": self.z.shape[1], "cmi": self.cmi,
                "cmi_se": self.cmi_se, "transforms": self.transforms}  # fmt: skip


def _log_uniform(rng: np.random.Generator, low: int, high: int) -> int:
    return min(int(np.exp(rng.uniform(np.log(low), np.log(high + 1)))), high)


def _features(kind: str, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    u = z @ w
    if kind == "linear":
        return u
    if kind == "tanh":
        return torch.tanh(1.5 * u)
    if kind == "cubic":
        return u * u * u
    if kind == "softplus":
        return torch.nn.functional.softplus(2.0 * u)
    if kind == "bump":  # even and bounded: the one non-monotone link of the calibration
        return torch.exp(-u * u)
    if kind == "sin":
        return torch.sin(2.0 * u)
    if kind == "quadratic":
        return u * u - 1.0
    raise ValueError(f"unknown link {kind!r}; choose one of {', '.join(LINKS)}")


def _link(rng: np.random.Generator, kind: str, z: torch.Tensor, e: torch.Tensor, heteroscedastic: bool):
    """``a(Z) + s(Z) · E`` for one side, with E standardized per coordinate and a(Z) of a random strength."""
    dz, d = z.shape[1], e.shape[1]
    e = (e - e.mean(0)) / e.std(0).clamp_min(1e-12)
    hidden = max(dz, 2)
    w = torch.from_numpy(rng.normal(size=(dz, hidden)) / np.sqrt(dz))
    mix = torch.from_numpy(rng.normal(size=(hidden, d)) / np.sqrt(hidden))
    a = _features(kind, z, w) @ mix
    a = a / a.std(0).clamp_min(1e-12) * torch.from_numpy(rng.uniform(0.5, 3.0, size=d))
    scale = torch.ones(len(z), 1, dtype=z.dtype)
    if heteroscedastic:
        v = torch.from_numpy(rng.normal(size=(dz, 1)) / np.sqrt(dz))
        scale = torch.exp(rng.uniform(0.2, 0.8) * torch.tanh(z @ v))
    return a + scale * e


def sample_conditional_task(spec: ConditionalSpec, index: int, shape: tuple[int, int, int, int] | None = None):
    """Task ``index`` of ``spec`` (deterministic in ``(spec.seed, index)``); ``shape = (n, dx, dy, dz)``
    overrides the shape prior."""
    rng = word_rng(spec.seed, Word.CONDITIONAL, index)
    drawn = (_log_uniform(rng, *spec.n), *(_log_uniform(rng, *spec.dims) for _ in range(3)))
    n, dx, dy, dz = shape if shape is not None else drawn
    null = rng.uniform() < spec.null_fraction if spec.cmi is None else spec.cmi == 0.0
    kind = spec.links[int(rng.integers(len(spec.links)))]
    prior = MIPrior(max_nats=spec.max_cmi_nats, log_uniform_fraction=0.5)
    if spec.cmi:
        prior = MIPrior(max_nats=spec.cmi, min_log_nats=spec.cmi, log_uniform_fraction=1.0)
    inner = spec.inner.model_copy(update={"mi_prior": prior})
    first = index * inner.tasks_per_distribution  # a distribution of its own for every CMI task
    pair = sample_task(inner, first, spec.seed, shape=(n, dx, dy))
    ey, cmi, se, family = pair.y, pair.mi, pair.mi_se, pair.family
    if null:  # another task's E_y: independent of E_x, so I(X; Y | Z) = 0
        ey = sample_task(inner, first, spec.seed + CONDITIONAL_NULL_OFFSET, shape=(n, dx, dy)).y
        cmi, se, family = 0.0, 0.0, f"null({family})"
    z = torch.from_numpy(rng.normal(size=(n, dz)))
    het = [rng.uniform() < spec.heteroscedastic for _ in range(2)]
    x = _link(rng, kind, z, torch.from_numpy(pair.x.astype(np.float64)), het[0])
    y = _link(rng, kind, z, torch.from_numpy(ey.astype(np.float64)), het[1])
    maps = {side: draw_reshaping(rng, a.shape[1], spec.inner.transforms) for side, a in (("x", x), ("y", y), ("z", z))}
    arrays = {side: reshape(a[None].float(), [maps[side]], n)[0].numpy() for side, a in (("x", x), ("y", y), ("z", z))}
    return ConditionalTask(arrays["x"], arrays["y"], arrays["z"], float(cmi), float(se), family, kind, index,
                           {side: m.names() for side, m in maps.items()})  # fmt: skip
