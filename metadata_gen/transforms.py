"""MI-preserving reshaping: invertible maps applied to X alone or to Y alone.

Every transform follows one contract (normflows-style): ``forward(z) -> z'`` and ``inverse(z') -> z`` on
an ``(n, d)`` float64 array, batched over samples. A :class:`Chain` composes a list of them. Because each
map is a bijection of one side only, I(f(X); g(Y)) = I(X; Y).
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import normflows as nf
import numpy as np
import torch
from scipy.special import ndtr, ndtri

from metadata_gen.config import FlowSpec


class Transform:
    """An invertible map of an ``(n, d)`` array; subclasses set ``name``."""

    name = "transform"

    def forward(self, z: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def inverse(self, z: np.ndarray) -> np.ndarray:
        raise NotImplementedError


@dataclass
class Chain(Transform):
    """Composition: applies ``parts`` in order; the inverse undoes them in reverse order."""

    parts: list[Transform] = field(default_factory=list)
    name = "chain"

    def forward(self, z: np.ndarray) -> np.ndarray:
        for t in self.parts:
            z = t.forward(z)
        return z

    def inverse(self, z: np.ndarray) -> np.ndarray:
        for t in reversed(self.parts):
            z = t.inverse(z)
        return z

    def names(self) -> list[str]:
        return [t.name for t in self.parts]


def _quartiles(z: np.ndarray) -> np.ndarray:
    """Per-column 25/50/75 % quantiles, numpy's default linear interpolation, from one sort (np.percentile's
    general machinery dominated the generator's profile)."""
    srt = np.sort(z, axis=0)
    pos = np.array([0.25, 0.5, 0.75]) * (len(z) - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, len(z) - 1)
    frac = (pos - lo)[:, None]
    return srt[lo] * (1 - frac) + srt[hi] * frac


@dataclass
class Standardize(Transform):
    """Per-coordinate affine map to median 0 and unit robust scale (IQR / 1.349), fitted once."""

    center: np.ndarray
    scale: np.ndarray
    name = "standardize"

    @classmethod
    def fit(cls, z: np.ndarray) -> Standardize:
        q1, med, q3 = _quartiles(z)
        scale = (q3 - q1) / 1.349
        scale = np.where(scale > 1e-12, scale, np.maximum(z.std(axis=0), 1e-12))
        return cls(med, scale)

    def forward(self, z: np.ndarray) -> np.ndarray:
        return (z - self.center) / self.scale

    def inverse(self, z: np.ndarray) -> np.ndarray:
        return z * self.scale + self.center


# ---------------------------------------------------------------- coordinatewise diffeomorphisms


def _bisect_inverse(f: Callable[[np.ndarray], np.ndarray], y: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Invert an increasing function elementwise by bisection on the bracket [lo, hi]."""
    lo, hi = lo.copy(), hi.copy()
    for _ in range(64):
        mid = 0.5 * (lo + hi)
        above = f(mid) > y
        hi = np.where(above, mid, hi)
        lo = np.where(above, lo, mid)
    return 0.5 * (lo + hi)


@dataclass
class Monotone1D:
    """A strictly increasing map of the real line with its inverse."""

    kind: str
    params: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        k, p = self.kind, self.params
        if k == "half_cube":
            return x * np.sqrt(np.abs(x))
        if k == "asinh":
            return np.arcsinh(x)
        if k == "normal_cdf":
            return ndtr(x)
        if k == "wiggly":  # x + Σ a sin(w x + φ), Σ |a w| < 1 keeps it increasing
            a, w, ph = p.reshape(3, -1)
            return x + (a * np.sin(np.multiply.outer(x, w) + ph)).sum(-1)
        if k == "monotone":  # α x + Σ β tanh((x − t) / s), α, β > 0
            alpha, beta, t, s = p[0], *p[1:].reshape(3, -1)
            return alpha * x + (beta * np.tanh((np.subtract.outer(x, t)) / s)).sum(-1)
        raise ValueError(f"unknown coordinatewise kind {k!r}")

    def inverse(self, y: np.ndarray) -> np.ndarray:
        k, p = self.kind, self.params
        if k == "half_cube":
            return np.sign(y) * np.abs(y) ** (2 / 3)
        if k == "asinh":
            return np.sinh(y)
        if k == "normal_cdf":
            return ndtri(y)
        if k == "wiggly":
            reach = np.abs(p.reshape(3, -1)[0]).sum()
            return _bisect_inverse(self, y, y - reach - 1e-9, y + reach + 1e-9)
        if k == "monotone":
            alpha, beta = p[0], p[1:].reshape(3, -1)[0]
            reach = beta.sum() / alpha
            return _bisect_inverse(self, y, y / alpha - reach - 1e-9, y / alpha + reach + 1e-9)
        raise ValueError(f"unknown coordinatewise kind {k!r}")

    @classmethod
    def random(cls, rng: np.random.Generator, kind: str) -> Monotone1D:
        if kind == "wiggly":
            m = 3
            w = rng.uniform(0.5, 3.0, m)
            a = rng.dirichlet(np.ones(m)) * rng.uniform(0.3, 0.9) / w
            return cls(kind, np.concatenate([a, w, rng.uniform(0, 2 * np.pi, m)]))
        if kind == "monotone":
            m = 4
            beta = rng.uniform(0.2, 2.0, m)
            return cls(
                kind, np.concatenate([[rng.uniform(0.05, 0.5)], beta, rng.normal(0, 1.5, m), rng.uniform(0.1, 1.0, m)])
            )
        return cls(kind)


@dataclass
class Coordinatewise(Transform):
    """A strictly increasing map per coordinate (half-cube, asinh, wiggly, normal-CDF, random monotone)."""

    maps: list[Monotone1D]
    name = "coordinatewise"

    def forward(self, z: np.ndarray) -> np.ndarray:
        return np.stack([m(z[:, j]) for j, m in enumerate(self.maps)], axis=1)

    def inverse(self, z: np.ndarray) -> np.ndarray:
        return np.stack([m.inverse(z[:, j]) for j, m in enumerate(self.maps)], axis=1)

    @classmethod
    def random(cls, rng: np.random.Generator, d: int, kinds: tuple[str, ...]) -> Coordinatewise:
        return cls([Monotone1D.random(rng, kinds[rng.integers(len(kinds))]) for _ in range(d)])


# ---------------------------------------------------------------- linear maps and spiral


@dataclass
class Linear(Transform):
    """z ↦ z Mᵀ for a random invertible M with singular values in [1/√c, √c]."""

    matrix: np.ndarray
    name = "linear"

    def forward(self, z: np.ndarray) -> np.ndarray:
        return z @ self.matrix.T

    def inverse(self, z: np.ndarray) -> np.ndarray:
        return np.linalg.solve(self.matrix, z.T).T

    @classmethod
    def random(cls, rng: np.random.Generator, d: int, max_cond: float = 10.0) -> Linear:
        q1, _ = np.linalg.qr(rng.standard_normal((d, d)))
        q2, _ = np.linalg.qr(rng.standard_normal((d, d)))
        s = np.exp(rng.uniform(-0.5, 0.5, d) * np.log(max_cond))
        return cls(q1 @ np.diag(s) @ q2)


@dataclass
class Spiral(Transform):
    """Rotation in a random 2-plane by an angle θ = speed · ‖z‖²; the norm is kept, so it inverts exactly."""

    u: np.ndarray
    v: np.ndarray
    speed: float
    name = "spiral"

    def _rotate(self, z: np.ndarray, sign: float) -> np.ndarray:
        theta = sign * self.speed * (z**2).sum(1, keepdims=True)
        a, b = z @ self.u[:, None], z @ self.v[:, None]
        c, s = np.cos(theta), np.sin(theta)
        return z + (a * (c - 1) - b * s) * self.u + (a * s + b * (c - 1)) * self.v

    def forward(self, z: np.ndarray) -> np.ndarray:
        return self._rotate(z, 1.0)

    def inverse(self, z: np.ndarray) -> np.ndarray:
        return self._rotate(z, -1.0)

    @classmethod
    def random(cls, rng: np.random.Generator, d: int) -> Spiral:
        q, _ = np.linalg.qr(rng.standard_normal((d, 2)))
        return cls(q[:, 0], q[:, 1], float(rng.uniform(0.3, 1.5) / d))


# ---------------------------------------------------------------- normalizing flows (normflows)


def _randomize(module: torch.nn.Module, gen: torch.Generator, strength: float) -> None:
    """Replace every weight with N(0, strength²/fan_in) and every bias with N(0, 0.1²) from ``gen``."""
    with torch.no_grad():
        for p in module.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, strength / np.sqrt(p.shape[1]), generator=gen)
            else:
                p.normal_(0.0, 0.1, generator=gen)


def _build_flow_layer(kind: str, d: int, hidden: int, strength: float, reverse: bool) -> nf.flows.Flow:
    if kind == "masked_affine":
        mask = torch.tensor([(i + int(reverse)) % 2 for i in range(d)], dtype=torch.float32)
        s = nf.nets.MLP([d, hidden, d], output_fn="tanh", output_scale=strength)
        t = nf.nets.MLP([d, hidden, d])
        return nf.flows.MaskedAffineFlow(mask, t, s)
    if kind == "coupling_spline":
        return nf.flows.CoupledRationalQuadraticSpline(d, 1, hidden, tail_bound=5.0, reverse_mask=reverse)
    if kind == "autoregressive_spline":
        return nf.flows.AutoregressiveRationalQuadraticSpline(d, 1, hidden, tail_bound=5.0, init_identity=False)
    raise ValueError(f"unknown flow kind {kind!r}")


class RandomFlow(Transform):
    """A stack of normflows layers with random weights, pushed over the whole sample at once.

    Runs in float64 (in float32 steep random splines lose invertibility at a few points).
    Autoregressive splines run in their fast direction (the flow's ``inverse``): any invertible
    direction preserves MI. Needs d ≥ 2 (in one dimension use :class:`Coordinatewise`).
    """

    name = "flow"

    def __init__(self, layers: list[nf.flows.Flow], fast_is_inverse: list[bool], kinds: list[str]):
        self.layers, self.fast_is_inverse, self.kinds = layers, fast_is_inverse, kinds

    @torch.no_grad()
    def _apply(self, z: np.ndarray, forward: bool) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(z, dtype=np.float64))
        order = zip(self.layers, self.fast_is_inverse, strict=True)
        for layer, fast_inv in order if forward else reversed(list(order)):
            use_inverse = fast_inv == forward
            t, _ = layer.inverse(t) if use_inverse else layer.forward(t)
        return t.numpy()

    def forward(self, z: np.ndarray) -> np.ndarray:
        return self._apply(z, True)

    def inverse(self, z: np.ndarray) -> np.ndarray:
        return self._apply(z, False)

    @classmethod
    def random(cls, rng: np.random.Generator, d: int, spec: FlowSpec) -> RandomFlow:
        """One flow of the bank (see :func:`banked_flow`), picked with ``rng``."""
        return banked_flow(d, spec, int(rng.integers(FLOW_BANK)))

    @classmethod
    def build(cls, gen: torch.Generator, d: int, spec: FlowSpec) -> RandomFlow:
        if d < 2:
            raise ValueError("a flow needs d >= 2")
        n_layers = int(torch.randint(spec.layers.low, spec.layers.high + 1, (1,), generator=gen))
        layers, fast, kinds = [], [], []
        for i in range(n_layers):
            kind = spec.kinds[int(torch.randint(len(spec.kinds), (1,), generator=gen))]
            layer = _build_flow_layer(kind, d, spec.hidden, spec.strength, reverse=bool(i % 2))
            _randomize(layer, gen, spec.strength if kind == "masked_affine" else 1.0)
            layers.append(layer.double().eval())  # float64: float32 splines lose invertibility
            fast.append(kind == "autoregressive_spline")
            kinds.append(kind)
        return cls(layers, fast, kinds)


FLOW_BANK = 8  # random flows per (dimension, flow spec); each task composes one with its own linear map


@functools.lru_cache(maxsize=1024)
def banked_flow(d: int, spec: FlowSpec, flow_id: int) -> RandomFlow:
    """Flow ``flow_id`` of a fixed bank of random normflows flows for dimension ``d``.

    A task composes a bank flow with its own random linear map and standardizations, so tasks stay diverse
    while the batched generator pushes all tasks that share a flow through it in one call (normflows layers
    are modules with their own weights; one module per task would mean one call per task).
    """
    key = zlib.crc32(f"{d}|{spec.model_dump_json()}|{flow_id}".encode())
    return RandomFlow.build(torch.Generator().manual_seed(key), d, spec)
