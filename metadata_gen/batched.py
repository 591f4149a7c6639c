"""Batched generation: one call draws many tasks of one dims pair (dx, dy) as tensors, on CPU or CUDA.

Task ``i`` is the same as in the reference path :func:`metadata_gen.sampler.sample_task` in everything but the
noise: the same distribution (family, parameters, truth) and the same reshaping maps, both drawn in numpy from
the same seeds (cheap, a few small arrays per distribution and per task). What is costly runs batched in torch:

- noise: counter-based normals and uniforms keyed by each task (:mod:`metadata_gen.counter_rng`), so a task's
  sample does not depend on the batch it is drawn in, its size, or the number of workers;
- sampling and reshaping: one tensor program per family and per stage for the whole batch;
- truth: one call per family for all distributions of the batch (:mod:`metadata_gen.truth`), computed once per
  distribution and cached (``tasks_per_distribution`` tasks share one).

Flows come from a fixed bank per dimension (:func:`metadata_gen.transforms.banked_flow`); tasks sharing a bank
flow go through it in one call.

On CPU a task is bit-identical whatever its batch, batch size or number of workers (tested). On CUDA the integer
hash and the distributions' parameters (drawn in numpy) are the same, but float kernels (log, cos, matmuls, flows)
round differently from the CPU's: samples and Monte Carlo truths are not bit-identical across devices, and within
CUDA they are only as deterministic as its kernels (not compared against CPU here beyond the H200 runs completing).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from metadata_gen import counter_rng, truth
from metadata_gen.config import MetaConfig
from metadata_gen.families import MAX_NU, draw_parameters
from metadata_gen.sampler import (
    PILOT_SAMPLES,
    Reshaping,
    Task,
    cap_rows,
    draw_distribution,
    draw_n,
    draw_reshaping,
    reshaping_rng,
    task_rng,
)
from metadata_gen.transforms import Monotone1D

# Counter-rng streams of a task: the joint sample, the Student-t scale, mixture labels.
_SAMPLE, _CHI2, _MIXTURE = 1, 2, 3
_KEY_STREAM = 911


@dataclass
class TaskBatch:
    """B tasks of one shape: ``x: (B, n, dx)``, ``y: (B, n, dy)`` float32; ``mi``, ``mi_se``: ``(B,)`` float64."""

    x: torch.Tensor
    y: torch.Tensor
    mi: torch.Tensor
    mi_se: torch.Tensor
    families: list[str]
    indices: list[int]

    def tasks(self) -> list[Task]:
        """As reference :class:`Task` objects (numpy, float32)."""
        x, y, mi, se = (t.cpu().numpy() for t in (self.x, self.y, self.mi, self.mi_se))
        return [
            Task(x[b], y[b], float(mi[b]), float(se[b]), self.families[b], self.indices[b])
            for b in range(len(self.indices))
        ]


@dataclass
class _Distribution:
    family: str
    params: dict
    mi: float | None = None
    mi_se: float = 0.0


class BatchGenerator:
    """Draws batches of tasks of a meta-distribution; keeps the truths of recent distributions."""

    def __init__(self, config: MetaConfig, seed: int | None = None, device: str | torch.device = "cpu"):
        self.config = config
        self.seed = config.seed if seed is None else seed
        self.device = torch.device(device)
        self._cache: OrderedDict[tuple, _Distribution] = OrderedDict()

    # ------------------------------------------------------------ public

    def generate(
        self, indices: Sequence[int], dims: tuple[int, int] | None = None, n: int | None = None
    ) -> TaskBatch | list[TaskBatch]:
        """Tasks ``indices`` with the given dims and n (both drawn per task when ``None``, as in the reference
        path). With fixed ``dims`` and ``n`` returns one :class:`TaskBatch`; otherwise a list, one batch per
        distinct (n, dx, dy), in order of first appearance."""
        indices = list(indices)
        dists = [self._distribution(i, dims) for i in indices]
        ns = [n if n is not None else cap_rows(draw_n(task_rng(self.seed, i), self.config), d.params["_dx"],
                                                d.params["_dy"], self.config) for i, d in zip(indices, dists, strict=True)]  # fmt: skip
        groups: OrderedDict[tuple[int, int], list[int]] = OrderedDict()
        for pos, d in enumerate(dists):
            groups.setdefault((d.params["_dx"], d.params["_dy"]), []).append(pos)
        out = []
        for (dx, dy), members in groups.items():
            batch = self._same_dims([indices[p] for p in members], [dists[p] for p in members], dx, dy,
                                    max(ns[p] for p in members))  # fmt: skip
            if n is not None:
                out.append(batch)
                continue
            for size in sorted({ns[p] for p in members}):
                keep = [k for k, p in enumerate(members) if ns[p] == size]
                out.append(TaskBatch(batch.x[keep, :size], batch.y[keep, :size], batch.mi[keep], batch.mi_se[keep],
                                     [batch.families[k] for k in keep], [batch.indices[k] for k in keep]))  # fmt: skip
        return out[0] if dims is not None and n is not None else out

    # ------------------------------------------------------------ distributions and truth

    def _distribution(self, index: int, dims: tuple[int, int] | None) -> _Distribution:
        dist_id = index // self.config.tasks_per_distribution
        key = (dist_id, dims)
        if key not in self._cache:
            draw = draw_distribution(self.config, self.seed, dist_id, dims)
            spec = self.config.families.enabled()[draw.family]
            params = draw_parameters(draw.rng, draw.family, draw.dx, draw.dy, draw.target, spec)
            params.update(_dx=draw.dx, _dy=draw.dy, _key=int(draw.rng.integers(2**32)))
            if "cov" in params:  # one root per distribution: a batched eigh may pick another basis of a repeated
                w, v = np.linalg.eigh(params["cov"])  # eigenvalue, and the sample would depend on its batch
                params["_root"] = v * np.sqrt(np.clip(w, 0.0, None))
            self._cache[key] = _Distribution(draw.family, params)
            while len(self._cache) > 4096:
                self._cache.popitem(last=False)
        return self._cache[key]

    def _fill_truths(self, dists: list[_Distribution], dx: int, dy: int) -> None:
        todo: dict[str, list[_Distribution]] = {}
        for d in dists:
            if d.mi is None and all(d is not e for e in todo.get(d.family, [])):
                todo.setdefault(d.family, []).append(d)
        for family, group in todo.items():
            mi, se = _TRUTHS[family](self, group, dx, dy)
            for d, m, s in zip(group, mi.tolist(), se.tolist(), strict=True):
                d.mi, d.mi_se = float(m), float(s)

    def _mixture_truth(self, group: list[_Distribution], dx: int, dy: int):
        spec = self.config.families.enabled()[group[0].family]
        mix = _mixture(group, dx, self.device)
        keys = torch.tensor([d.params["_key"] for d in group], device=self.device)
        return truth.mixture_mi(mix, keys, spec.max_se_nats, spec.max_mc_samples)

    def _closed_truth(self, group: list[_Distribution], dx: int, dy: int):
        fam = group[0].family
        if fam == "uniform_noise":
            eps, active = _padded([d.params["eps"] for d in group], self.device)
            mi = truth.uniform_noise_mi(eps, active)
        elif fam == "functional":
            mi = truth.functional_mi([d.params for d in group], device=self.device)
        else:
            mi = truth.gaussian_mi(self._stack(group, "cov"), dx)
            if fam == "student_t":
                mi = mi + truth.student_t_correction(self._stack(group, "nu"), dx, dy)
            if fam == "independent":
                mi = torch.zeros_like(mi)  # exact by construction
        return mi, torch.zeros_like(mi)

    def _stack(self, group: list[_Distribution], key: str) -> torch.Tensor:
        return torch.as_tensor(np.stack([np.asarray(d.params[key], dtype=np.float64) for d in group]),
                               device=self.device)  # fmt: skip

    # ------------------------------------------------------------ sampling

    def _same_dims(self, indices: list[int], dists: list[_Distribution], dx: int, dy: int, n: int) -> TaskBatch:
        self._fill_truths(dists, dx, dy)
        rows = n + PILOT_SAMPLES
        keys = torch.tensor([int(task_rng(self.seed, i).integers(2**32)) ^ _KEY_STREAM for i in indices],
                            device=self.device)  # fmt: skip
        z = torch.empty(len(indices), rows, dx + dy, dtype=torch.float64, device=self.device)
        by_family: dict[str, list[int]] = {}
        for pos, d in enumerate(dists):
            by_family.setdefault(d.family, []).append(pos)
        for family, members in by_family.items():
            group = [dists[p] for p in members]
            z[members] = _SAMPLERS[family](self, group, keys[members], rows, dx, dy)
        reshapings = [self._reshapings(i, dx, dy) for i in indices]
        x = _reshape(z[..., :dx], [r[0] for r in reshapings], self.device)
        y = _reshape(z[..., dx:], [r[1] for r in reshapings], self.device)
        return TaskBatch(
            x[:, PILOT_SAMPLES:].float(), y[:, PILOT_SAMPLES:].float(),
            torch.tensor([d.mi for d in dists], dtype=torch.float64, device=self.device),
            torch.tensor([d.mi_se for d in dists], dtype=torch.float64, device=self.device),
            [d.family for d in dists], indices,
        )  # fmt: skip

    def _reshapings(self, index: int, dx: int, dy: int) -> tuple[Reshaping, Reshaping]:
        """The task's maps, drawn from its own stream after its n and noise key (never from its data)."""
        rng = reshaping_rng(self.seed, index)
        spec = self.config.transforms
        return draw_reshaping(rng, dx, spec, "x"), draw_reshaping(rng, dy, spec, "y")

    def _gaussian_sample(self, group, keys, rows, dx, dy):
        root = self._stack(group, "_root")
        z = counter_rng.normals(keys, _SAMPLE, (rows, dx + dy)) @ root.transpose(1, 2)
        if group[0].family == "student_t":  # (tails-only ones too: their Σxy = 0 is in the root)
            nu = self._stack(group, "nu")
            g = counter_rng.normals(keys, _CHI2, (rows, MAX_NU))
            mask = torch.arange(MAX_NU, device=self.device)[None, :] < nu[:, None]
            chi2 = (g.square() * mask[:, None, :]).sum(-1)
            z = z / (chi2 / nu[:, None]).sqrt()[..., None]
        return z

    def _uniform_noise_sample(self, group, keys, rows, dx, dy):
        u = counter_rng.uniforms(keys, _SAMPLE, rows * (dx + dy)).reshape(len(group), rows, dx + dy)
        x, y = u[..., :dx], u[..., dx:].clone()
        select = torch.zeros(len(group), dx, dy, dtype=torch.float64, device=self.device)
        width = torch.ones(len(group), dy, dtype=torch.float64, device=self.device)
        for b, d in enumerate(group):  # index bookkeeping only (a few integers per distribution)
            select[b, d.params["ix"], d.params["iy"]] = 1.0
            width[b, d.params["iy"]] = torch.as_tensor(d.params["eps"], dtype=torch.float64)
        return torch.cat([x, y * width[:, None, :] + x @ select], dim=-1)

    def _mixture_sample(self, group, keys, rows, dx, dy):
        return _mixture(group, dx, self.device).sample(keys, _MIXTURE, rows)

    def _functional_sample(self, group, keys, rows, dx, dy):
        z = counter_rng.normals(keys, _SAMPLE, (rows, dx + dy))
        x, y = z[..., :dx], z[..., dx:].clone()
        mean, sd, ch = truth.link_moments([d.params for d in group], self.device)
        counts = [len(d.params["noise"]) for d in group]
        owner = ch["owner"]
        slot = torch.tensor([c for k in counts for c in range(k)], device=self.device)
        radius = ch["radius"]
        coord_u = x[owner, :, slot.clamp_max(dx - 1)]  # (C, rows)
        mask = torch.arange(dx, device=self.device)[None, :] < radius[:, None]
        radial_u = (x[owner].square() * mask[:, None, :]).sum(-1).sqrt()
        u = torch.where((radius > 0)[:, None], radial_u, coord_u)
        f = truth.standardized_links(u, ch, mean, sd)
        y[owner, :, slot] = f + truth.noise_scales(u, ch) * y[owner, :, slot]
        return torch.cat([x, y], dim=-1)


_TRUTHS = {
    "mixture": BatchGenerator._mixture_truth,
    "gmm": BatchGenerator._mixture_truth,
}
_SAMPLERS = {
    "uniform_noise": BatchGenerator._uniform_noise_sample,
    "mixture": BatchGenerator._mixture_sample,
    "gmm": BatchGenerator._mixture_sample,
    "functional": BatchGenerator._functional_sample,
}
for _name in ("gaussian_dense", "gaussian_sparse", "gaussian_latent", "gaussian_random", "independent", "student_t",
              "uniform_noise", "functional"):  # fmt: skip
    _TRUTHS.setdefault(_name, BatchGenerator._closed_truth)
    _SAMPLERS.setdefault(_name, BatchGenerator._gaussian_sample)


def _padded(arrays: list[np.ndarray], device) -> tuple[torch.Tensor, torch.Tensor]:
    k = max(len(a) for a in arrays)
    out = np.ones((len(arrays), k))
    active = np.zeros((len(arrays), k))
    for b, a in enumerate(arrays):
        out[b, : len(a)], active[b, : len(a)] = a, 1.0
    return torch.as_tensor(out, device=device), torch.as_tensor(active, device=device)


def _mixture(group: list[_Distribution], dx: int, device) -> truth.MixtureDensities:
    """Stack mixtures with K padded to the largest (zero weights, unit variances)."""
    k = max(len(d.params["weights"]) for d in group)
    dim = group[0].params["means"].shape[1]
    diag = "variances" in group[0].params
    w = np.zeros((len(group), k))
    mu = np.zeros((len(group), k, dim))
    var = np.ones((len(group), k, dim)) if diag else np.broadcast_to(np.eye(dim), (len(group), k, dim, dim)).copy()
    for b, d in enumerate(group):
        m = len(d.params["weights"])
        w[b, :m], mu[b, :m] = d.params["weights"], d.params["means"]
        var[b, :m] = d.params["variances" if diag else "covs"]
    t = lambda a: torch.as_tensor(a, device=device)  # noqa: E731
    return truth.MixtureDensities(t(w), t(mu), dx, **({"variances": t(var)} if diag else {"covs": t(var)}))


# ---------------------------------------------------------------- batched reshaping


def _standardize(z: torch.Tensor) -> torch.Tensor:
    """Per task and coordinate: median 0, robust scale 1, fitted on the pilot rows (the first PILOT_SAMPLES)."""
    q = torch.quantile(z[:, :PILOT_SAMPLES], torch.tensor([0.25, 0.5, 0.75], dtype=z.dtype, device=z.device), dim=1)
    scale = (q[2] - q[0]) / 1.349
    fallback = z[:, :PILOT_SAMPLES].std(1).clamp_min(1e-12)
    scale = torch.where(scale > 1e-12, scale, fallback)
    return (z - q[1][:, None]) / scale[:, None]


def _reshape(z: torch.Tensor, maps: list[Reshaping], device) -> torch.Tensor:
    """Apply each task's maps, stage by stage for the whole batch (a skipped stage is the identity). Each
    applied stage is preceded by a standardization fitted on the pilot rows, as in the reference chain."""
    d = z.shape[-1]

    def which(attr: str) -> list[int]:
        return [i for i, m in enumerate(maps) if getattr(m, attr) is not None]

    if idx := which("fitted"):  # one fitted flow per side, shared by every task
        z[idx] = _standardize(z[idx])
        z[idx] = maps[idx[0]].fitted.apply(z[idx].reshape(-1, d)).reshape(len(idx), -1, d)
    if idx := which("linear"):
        z[idx] = _standardize(z[idx])
        mats = torch.as_tensor(np.stack([maps[i].linear.matrix for i in idx]), device=device)
        z[idx] = z[idx] @ mats.transpose(1, 2)
    if idx := which("spiral"):
        z[idx] = _standardize(z[idx])
        u = torch.as_tensor(np.stack([maps[i].spiral.u for i in idx]), device=device)[:, None, :]
        v = torch.as_tensor(np.stack([maps[i].spiral.v for i in idx]), device=device)[:, None, :]
        speed = torch.tensor([maps[i].spiral.speed for i in idx], dtype=z.dtype, device=device)[:, None, None]
        s = z[idx]
        theta = speed * s.square().sum(-1, keepdim=True)
        a, bb = (s * u).sum(-1, keepdim=True), (s * v).sum(-1, keepdim=True)
        c, sn = torch.cos(theta), torch.sin(theta)
        z[idx] = s + (a * (c - 1) - bb * sn) * u + (a * sn + bb * (c - 1)) * v
    if idx := which("flow"):
        z[idx] = _standardize(z[idx])
        for flow_id in sorted({maps[i].flow_id for i in idx}):
            members = [i for i in idx if maps[i].flow_id == flow_id]
            flow = maps[members[0]].flow
            flat = z[members].reshape(-1, d)
            z[members] = _run_flow(flow, flat, device).reshape(len(members), -1, d)
    if idx := which("coordinatewise"):
        z[idx] = _coordinatewise(_standardize(z[idx]), [maps[i].coordinatewise.maps for i in idx])
    return z


_DEVICE_FLOWS: dict[tuple[int, str], object] = {}


@torch.no_grad()
def _run_flow(flow, flat: torch.Tensor, device) -> torch.Tensor:
    """A bank flow on a float32 copy of its layers (generation only runs the forward direction, where float32
    suffices; the reference path keeps float64 for exact inverses), cached per device."""
    key = (id(flow), str(device))
    if key not in _DEVICE_FLOWS:
        import copy

        _DEVICE_FLOWS[key] = copy.deepcopy(flow)
        for layer in _DEVICE_FLOWS[key].layers:
            layer.float().to(device)
    flow = _DEVICE_FLOWS[key]
    t = flat.float()
    for layer, fast_inv in zip(flow.layers, flow.fast_is_inverse, strict=True):
        t, _ = layer.inverse(t) if fast_inv else layer.forward(t)
    return t.to(flat.dtype)


def _coordinatewise(z: torch.Tensor, maps: list[list[Monotone1D]]) -> torch.Tensor:
    """Per (task, coordinate) strictly increasing maps: each kind is computed only on its own columns."""
    kinds = ("half_cube", "asinh", "normal_cdf", "wiggly", "monotone")
    kind = torch.tensor([[kinds.index(m.kind) for m in row] for row in maps], device=z.device)  # (b, d)
    cols = z.transpose(1, 2).clone()  # (b, d, rows)
    for k, name in enumerate(kinds):
        where = kind == k
        if not bool(where.any()):
            continue
        v = cols[where]  # (m, rows)
        if name == "half_cube":
            out = v * v.abs().sqrt()
        elif name == "asinh":
            out = torch.asinh(v)
        elif name == "normal_cdf":
            out = torch.special.ndtr(v)
        else:
            params = [m.params for row in maps for m in row if m.kind == name]  # row-major, as where's order
            p = torch.as_tensor(np.stack(params), dtype=v.dtype, device=v.device)[:, None, :]  # (m, 1, P)
            if name == "wiggly":  # x + Σ a sin(w x + φ)
                a, w, ph = p[..., 0:3], p[..., 3:6], p[..., 6:9]
                out = v + (a * torch.sin(v[..., None] * w + ph)).sum(-1)
            else:  # α x + Σ β tanh((x − t) / s)
                alpha, beta, t, sc = p[..., 0], p[..., 1:5], p[..., 5:9], p[..., 9:13]
                out = alpha * v + (beta * torch.tanh((v[..., None] - t) / sc)).sum(-1)
        cols[where] = out
    return cols.transpose(1, 2)
