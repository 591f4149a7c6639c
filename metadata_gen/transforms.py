"""MI-preserving reshaping: invertible maps of X alone or of Y alone, in torch, batched over tasks.

Every stage follows one contract (normflows-style): ``Stage.apply(z, stages, inverse=False)`` maps a batch
``z: (B, n, d)`` through the B tasks' own parameters ``stages`` (one per task), forward or back. Parameters are
drawn once per task in numpy (a few small arrays, never from the task's data). :func:`reshape` composes one side's
stages as a list, each preceded by a standardization fitted on the pilot rows (the first ``pilot`` rows of z),
so the whole chain is a fixed bijection of one side: I(f(X); g(Y)) = I(X; Y).
"""

from __future__ import annotations

import contextlib
import functools
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import normflows as nf
import normflows.utils.splines
import numpy as np
import torch

from metadata_gen.config import FlowSpec, TransformsConfig

# ---------------------------------------------------------------- standardization


def standardize(z: torch.Tensor, pilot: int) -> torch.Tensor:
    """Per task and coordinate: median 0 and robust scale 1 (IQR / 1.349; the standard deviation where the IQR is
    0), fitted on the first ``pilot`` rows."""
    q = torch.quantile(z[:, :pilot], torch.tensor([0.25, 0.5, 0.75], dtype=z.dtype, device=z.device), dim=1)
    scale = (q[2] - q[0]) / 1.349
    fallback = z[:, :pilot].std(1).clamp_min(1e-12)
    scale = torch.where(scale > 1e-12, scale, fallback)
    return (z - q[1][:, None]) / scale[:, None]


def _stack(arrays, z: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.stack(arrays), dtype=z.dtype, device=z.device)


# ---------------------------------------------------------------- linear maps and spiral


@dataclass
class Linear:
    """z ↦ z Mᵀ for a random invertible M with singular values in [1/√c, √c]."""

    matrix: np.ndarray
    name = "linear"

    @classmethod
    def random(cls, rng: np.random.Generator, d: int, max_cond: float = 10.0) -> Linear:
        q1, _ = np.linalg.qr(rng.standard_normal((d, d)))
        q2, _ = np.linalg.qr(rng.standard_normal((d, d)))
        s = np.exp(rng.uniform(-0.5, 0.5, d) * np.log(max_cond))
        return cls(q1 @ np.diag(s) @ q2)

    @staticmethod
    def apply(z: torch.Tensor, stages: list[Linear], inverse: bool = False) -> torch.Tensor:
        m = _stack([s.matrix for s in stages], z)
        return torch.linalg.solve(m, z.transpose(1, 2)).transpose(1, 2) if inverse else z @ m.transpose(1, 2)


@dataclass
class Spiral:
    """Rotation in a random 2-plane by an angle θ = speed · ‖z‖²; the norm is kept, so it inverts exactly."""

    u: np.ndarray
    v: np.ndarray
    speed: float
    name = "spiral"

    @classmethod
    def random(cls, rng: np.random.Generator, d: int) -> Spiral:
        q, _ = np.linalg.qr(rng.standard_normal((d, 2)))
        return cls(q[:, 0], q[:, 1], float(rng.uniform(0.3, 1.5) / d))

    @staticmethod
    def apply(z: torch.Tensor, stages: list[Spiral], inverse: bool = False) -> torch.Tensor:
        u, v = (_stack([getattr(s, k) for s in stages], z)[:, None, :] for k in ("u", "v"))
        speed = torch.tensor([s.speed for s in stages], dtype=z.dtype, device=z.device)[:, None, None]
        theta = (-1.0 if inverse else 1.0) * speed * z.square().sum(-1, keepdim=True)
        a, b = (z * u).sum(-1, keepdim=True), (z * v).sum(-1, keepdim=True)
        c, sn = torch.cos(theta), torch.sin(theta)
        return z + (a * (c - 1) - b * sn) * u + (a * sn + b * (c - 1)) * v


# ---------------------------------------------------------------- coordinatewise diffeomorphisms

MONOTONE_KINDS = ("half_cube", "asinh", "normal_cdf", "wiggly", "monotone")


@dataclass
class Monotone1D:
    """The parameters of one strictly increasing map of the real line (see :func:`monotone_map`)."""

    kind: str
    params: np.ndarray = field(default_factory=lambda: np.zeros(0))

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


def monotone_map(kind: str, v: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Map kind ``kind`` on rows ``v: (m, rows)`` with per-row parameters ``p: (m, 1, P)``."""
    if kind == "half_cube":
        return v * v.abs().sqrt()
    if kind == "asinh":
        return torch.asinh(v)
    if kind == "normal_cdf":
        return torch.special.ndtr(v)
    if kind == "wiggly":  # x + Σ a sin(w x + φ), Σ |a w| < 1 keeps it increasing
        a, w, ph = p[..., 0:3], p[..., 3:6], p[..., 6:9]
        return v + (a * torch.sin(v[..., None] * w + ph)).sum(-1)
    if kind == "monotone":  # α x + Σ β tanh((x − t) / s), α, β > 0
        alpha, beta, t, sc = p[..., 0], p[..., 1:5], p[..., 5:9], p[..., 9:13]
        return alpha * v + (beta * torch.tanh((v[..., None] - t) / sc)).sum(-1)
    raise ValueError(f"unknown coordinatewise kind {kind!r}")


def _monotone_inverse(kind: str, y: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    if kind == "half_cube":
        return torch.sign(y) * y.abs().pow(2.0 / 3.0)
    if kind == "asinh":
        return torch.sinh(y)
    if kind == "normal_cdf":
        return torch.special.ndtri(y)
    if kind == "wiggly":
        reach = p[..., 0:3].abs().sum(-1)
        lo, hi = y - reach - 1e-9, y + reach + 1e-9
    else:
        alpha, reach = p[..., 0], p[..., 1:5].sum(-1) / p[..., 0]
        lo, hi = y / alpha - reach - 1e-9, y / alpha + reach + 1e-9
    for _ in range(64):  # bisection on a bracket that holds the root
        mid = 0.5 * (lo + hi)
        above = monotone_map(kind, mid, p) > y
        lo, hi = torch.where(above, lo, mid), torch.where(above, mid, hi)
    return 0.5 * (lo + hi)


@dataclass
class Coordinatewise:
    """A strictly increasing map per coordinate (half-cube, asinh, wiggly, normal-CDF, random monotone)."""

    maps: list[Monotone1D]
    name = "coordinatewise"

    @classmethod
    def random(cls, rng: np.random.Generator, d: int, kinds: tuple[str, ...]) -> Coordinatewise:
        return cls([Monotone1D.random(rng, kinds[rng.integers(len(kinds))]) for _ in range(d)])

    @staticmethod
    def apply(z: torch.Tensor, stages: list[Coordinatewise], inverse: bool = False) -> torch.Tensor:
        """Each kind computed only on its own (task, coordinate) columns."""
        kind = torch.tensor([[MONOTONE_KINDS.index(m.kind) for m in s.maps] for s in stages], device=z.device)
        cols = z.transpose(1, 2).clone()  # (B, d, rows)
        for k, name in enumerate(MONOTONE_KINDS):
            where = kind == k
            if not bool(where.any()):
                continue
            params = [m.params for s in stages for m in s.maps if m.kind == name]  # row-major, as where's order
            p = _stack(params, z)[:, None, :] if params[0].size else z.new_zeros(len(params), 1, 0)
            cols[where] = (_monotone_inverse if inverse else monotone_map)(name, cols[where], p)
        return cols.transpose(1, 2)


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


SLOW_SOFTMAX_COLUMNS = 16  # below this many columns torch's CPU softmax kernel is the slow one


class _SplineFunctional:
    """``torch.nn.functional`` as normflows' splines see it, with ``softmax`` over a short last dim taken as
    exp / sum: torch 2.13's CPU softmax kernel is 4–5× slower than that for fewer than
    :data:`SLOW_SOFTMAX_COLUMNS` columns (the splines' 8 bins; it was 18 % of batched generation). Same values to
    rounding (float32: 1.2e-7), and like the kernel it replaces each row gets the same bits whatever rows share
    its batch."""

    def __getattr__(self, name: str):
        return getattr(torch.nn.functional, name)

    @staticmethod
    def softmax(x: torch.Tensor, dim: int = -1, **kwargs) -> torch.Tensor:
        if x.device.type != "cpu" or dim not in (-1, x.dim() - 1) or x.shape[-1] >= SLOW_SOFTMAX_COLUMNS or kwargs:
            return torch.nn.functional.softmax(x, dim=dim, **kwargs)
        e = torch.exp(x - x.amax(-1, keepdim=True))
        total = e[..., 0].clone()
        for j in range(1, e.shape[-1]):  # column by column: a row's sum never depends on the rows beside it
            total += e[..., j]
        return e / total[..., None]


_SPLINE_FUNCTIONAL = _SplineFunctional()


@contextlib.contextmanager
def _fast_spline_softmax() -> Iterator[None]:
    """Run normflows' splines with :class:`_SplineFunctional` (only that module's ``F``, only inside)."""
    splines = normflows.utils.splines
    saved, splines.F = splines.F, _SPLINE_FUNCTIONAL
    try:
        yield
    finally:
        splines.F = saved


class RandomFlow:
    """A stack of normflows layers with random weights. Autoregressive splines run in their fast direction (the
    flow's ``inverse``): any invertible direction preserves MI. Needs d ≥ 2 (in one dimension use
    :class:`Coordinatewise`)."""

    name = "flow"

    def __init__(self, layers: list[nf.flows.Flow], fast_is_inverse: list[bool], kinds: list[str]):
        self.layers, self.fast_is_inverse, self.kinds = layers, fast_is_inverse, kinds

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
            layers.append(layer.double().eval())
            fast.append(kind == "autoregressive_spline")
            kinds.append(kind)
        return cls(layers, fast, kinds)

    @torch.no_grad()
    def run(self, flat: torch.Tensor, inverse: bool = False, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Rows ``(m, d)`` through the flow on a copy of its layers in ``dtype`` on ``flat``'s device. Generation
        runs float32 (the forward direction needs no more); float64 keeps steep splines exactly invertible."""
        layers = _layers_on(self, str(flat.device), dtype)
        t = flat.to(dtype)
        order = list(zip(layers, self.fast_is_inverse, strict=True))
        with _fast_spline_softmax():
            for layer, fast_inv in reversed(order) if inverse else order:
                t, _ = layer.inverse(t) if fast_inv != inverse else layer.forward(t)
        return t.to(flat.dtype)


@functools.lru_cache(maxsize=256)
def _layers_on(flow: RandomFlow, device: str, dtype: torch.dtype) -> list[nf.flows.Flow]:
    import copy

    return [copy.deepcopy(layer).to(device=device, dtype=dtype) for layer in flow.layers]


FLOW_BANK = 8  # random flows per (dimension, flow spec); each task composes one with its own linear map


@functools.lru_cache(maxsize=1024)
def banked_flow(d: int, spec: FlowSpec, flow_id: int) -> RandomFlow:
    """Flow ``flow_id`` of a fixed bank of random normflows flows for dimension ``d``.

    A task composes a bank flow with its own random linear map and standardizations, so tasks stay diverse
    while all tasks that share a flow go through it in one call (normflows layers are modules with their own
    weights; one module per task would mean one call per task).
    """
    key = zlib.crc32(f"{d}|{spec.model_dump_json()}|{flow_id}".encode())
    return RandomFlow.build(torch.Generator().manual_seed(key), d, spec)


@dataclass
class BankFlow:
    """One task's flow stage: flow ``flow_id`` of the bank for its dimension and spec."""

    d: int
    spec: FlowSpec
    flow_id: int
    name = "flow"

    @staticmethod
    def apply(z: torch.Tensor, stages: list[BankFlow], inverse: bool = False) -> torch.Tensor:
        out = torch.empty_like(z)
        ids = [(s.d, s.spec, s.flow_id) for s in stages]
        for key in dict.fromkeys(ids):  # tasks sharing a bank flow go through it in one call
            members = [i for i, k in enumerate(ids) if k == key]
            flat = z[members].reshape(-1, z.shape[-1])
            dtype = torch.float64 if inverse else torch.float32
            out[members] = banked_flow(*key).run(flat, inverse, dtype).reshape(len(members), -1, z.shape[-1])
        return out


@dataclass
class Fitted:
    """A flow fitted to a lab's data (:mod:`metadata_gen.fitted_flows`), shared by every task of a side."""

    flow: object  # metadata_gen.fitted_flows.FittedFlowMap (imported only when configured)
    name = "fitted_flow"

    @staticmethod
    def apply(z: torch.Tensor, stages: list[Fitted], inverse: bool = False) -> torch.Tensor:
        flat = z.reshape(-1, z.shape[-1])
        return stages[0].flow.apply(flat, inverse).reshape(z.shape).to(z.dtype)


# ---------------------------------------------------------------- one side's chain


@dataclass
class Reshaping:
    """One side's randomly drawn maps, in the order they are applied (absent stages are skipped)."""

    stages: list = field(default_factory=list)

    def names(self) -> list[str]:
        return [s.name for s in self.stages]


def draw_reshaping(rng: np.random.Generator, d: int, spec: TransformsConfig, fitted=None) -> Reshaping:
    """Draw one side's maps (no data involved). ``fitted``: that side's fitted flow, applied first when given."""
    out = Reshaping([Fitted(fitted)] if fitted is not None else [])
    if rng.uniform() < spec.linear.probability:
        out.stages.append(Linear.random(rng, d))
    if d >= 2 and rng.uniform() < spec.spiral.probability:
        out.stages.append(Spiral.random(rng, d))
    if d >= 2 and rng.uniform() < spec.flow.probability:
        out.stages.append(BankFlow(d, spec.flow, int(rng.integers(FLOW_BANK))))
    if rng.uniform() < spec.coordinatewise.probability:
        out.stages.append(Coordinatewise.random(rng, d, spec.coordinatewise.kinds))
    return out


STAGE_ORDER = (Fitted, Linear, Spiral, BankFlow, Coordinatewise)


def reshape(z: torch.Tensor, maps: list[Reshaping], pilot: int) -> torch.Tensor:
    """Each task's chain, stage by stage for the whole batch: tasks with a stage are standardized (on the pilot
    rows) and mapped together; the others skip it (the identity)."""
    z = z.clone()
    for kind in STAGE_ORDER:
        members = [(b, s) for b, m in enumerate(maps) for s in m.stages if isinstance(s, kind)]
        if not members:
            continue
        idx = [b for b, _ in members]
        z[idx] = kind.apply(standardize(z[idx], pilot), [s for _, s in members])
    return z
