"""Families of joint distributions (X, Y) with known mutual information: each one registered :class:`Family`.

A family is three functions: its parameters for one distribution (drawn in numpy from the distribution's stream,
a few small arrays; the target MI only steers the dependence strength), its batched torch sampler, and its batched
torch truth (closed form, quadrature, or Monte Carlo with a standard error) computed from the parameters, never
copied from the target. The generator (:mod:`metadata_gen.batched`) is their only caller; the tests check every
truth against independent computations (scipy densities and quadrature).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from metadata_gen import counter_rng, truth
from metadata_gen.config import FamilySpec, FunctionalSpec, GeometricMixtureSpec, MixtureSpec, StudentTSpec
from metadata_gen.streams import Counter

# ---------------------------------------------------------------- parameters: Gaussian helpers


def correlation_for_mi(mi: float) -> float:
    """Correlation of a bivariate normal pair with the given MI: ρ = sqrt(1 − e^{−2I})."""
    return float(np.sqrt(-np.expm1(-2.0 * mi)))


def _split(rng: np.random.Generator, total: float, k: int) -> np.ndarray:
    """Split ``total`` into k non-negative parts with a flat Dirichlet."""
    return total * rng.dirichlet(np.ones(k)) if k > 1 else np.array([total])


def _random_rotation(rng: np.random.Generator, d: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def _random_well_conditioned(rng: np.random.Generator, d: int, max_cond: float = 10.0) -> np.ndarray:
    s = np.exp(rng.uniform(0.0, np.log(max_cond), d))
    return _random_rotation(rng, d) @ np.diag(s / s.max() ** 0.5) @ _random_rotation(rng, d)


def _equicorrelation(d: int, a: float) -> np.ndarray:
    return (1 - a) * np.eye(d) + a * np.ones((d, d))


def _canonical_cov(rng: np.random.Generator, dx: int, dy: int, target: float) -> np.ndarray:
    """Joint covariance with min(dx, dy) canonical pairs splitting ``target``, mixed by random linear maps."""
    k = min(dx, dy)
    rho = np.array([correlation_for_mi(m) for m in _split(rng, target, rng.integers(1, k + 1))])
    cov = np.eye(dx + dy)
    for i, r in enumerate(rho):
        cov[i, dx + i] = cov[dx + i, i] = r
    mix = np.zeros((dx + dy, dx + dy))
    mix[:dx, :dx] = _random_well_conditioned(rng, dx)
    mix[dx:, dx:] = _random_well_conditioned(rng, dy)
    return mix @ cov @ mix.T


# ---------------------------------------------------------------- parameters: Gaussian families


def gaussian_dense(rng: np.random.Generator, dx: int, dy: int, target: float, spec: FamilySpec) -> dict:
    """Equicorrelated blocks within X and Y and one shared cross-correlation b (BMI's 'dense')."""
    ax, ay = rng.uniform(0.0, 0.5, 2)
    scale = np.sqrt((1 + (dx - 1) * ax) * (1 + (dy - 1) * ay) / (dx * dy))
    b = correlation_for_mi(target) * scale
    cov = np.block(
        [[_equicorrelation(dx, ax), b * np.ones((dx, dy))], [b * np.ones((dy, dx)), _equicorrelation(dy, ay)]]
    )
    return _gaussian(cov, within_x=ax, within_y=ay, cross=b)


def gaussian_sparse(rng: np.random.Generator, dx: int, dy: int, target: float, spec: FamilySpec) -> dict:
    """k interacting coordinate pairs at random positions, the rest independent (BMI's 'sparse')."""
    k = int(rng.integers(1, min(dx, dy) + 1))
    ix, iy = rng.permutation(dx)[:k], rng.permutation(dy)[:k]
    cov = np.eye(dx + dy)
    for i, j, m in zip(ix, iy, _split(rng, target, k), strict=True):
        cov[i, dx + j] = cov[dx + j, i] = correlation_for_mi(m)
    return _gaussian(cov, pairs=k)


def _latent_cov(a: np.ndarray, b: np.ndarray, noise: float) -> np.ndarray:
    load = np.vstack([a, b])
    cov = load @ load.T
    cov[np.diag_indices_from(cov)] += noise**2
    return cov


def _latent_mi(sa: np.ndarray, sb: np.ndarray, sl: np.ndarray, log_noise: float) -> float:
    """MI of the latent model from the singular values of A, B and [A; B]: log det(M Mᵀ + σ² I) is
    Σ log(s² + σ²) + (rows − rank) log σ², and the rows cancel in ½ (ld_xx + ld_yy − ld)."""
    var = np.exp(2.0 * log_noise)

    def ld(s: np.ndarray) -> float:
        return float(np.log1p(s**2 / var).sum())  # log det relative to σ² I

    return 0.5 * (ld(sa) + ld(sb) - ld(sl))


def gaussian_latent(rng: np.random.Generator, dx: int, dy: int, target: float, spec: FamilySpec) -> dict:
    """X = A Z + σ E, Y = B Z + σ E' with a shared k-dim latent Z; σ is set by bisection for the target
    (on singular values: no determinant per step); the truth is the closed form of the final covariance."""
    k = int(rng.integers(1, min(dx, dy) + 1))
    a, b = rng.standard_normal((dx, k)), rng.standard_normal((dy, k))
    sa, sb, sl = (np.linalg.svd(m, compute_uv=False) for m in (a, b, np.vstack([a, b])))
    lo, hi = -12.0, 8.0  # log σ: MI decreases in σ
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if _latent_mi(sa, sb, sl, mid) > target:
            lo = mid
        else:
            hi = mid
    noise = float(np.exp(0.5 * (lo + hi)))
    return _gaussian(_latent_cov(a, b, noise), latent_dim=k, noise=noise)


def gaussian_random(rng: np.random.Generator, dx: int, dy: int, target: float, spec: FamilySpec) -> dict:
    """Random canonical correlations mixed by random well-conditioned linear maps within X and Y."""
    return _gaussian(_canonical_cov(rng, dx, dy, target))


def _within_sides_cov(rng: np.random.Generator, dx: int, dy: int) -> np.ndarray:
    """Random covariances within X and within Y, none across: Σxy = 0."""
    cov = np.zeros((dx + dy, dx + dy))
    for sl, d in ((slice(0, dx), dx), (slice(dx, None), dy)):
        m = _random_well_conditioned(rng, d)
        cov[sl, sl] = m @ m.T
    return cov


def independent(rng: np.random.Generator, dx: int, dy: int, target: float, spec: FamilySpec) -> dict:
    """X and Y independent normals with random covariances: MI = 0 whatever the target."""
    return _gaussian(_within_sides_cov(rng, dx, dy))


def _gaussian(cov: np.ndarray, **params: Any) -> dict:
    """Gaussian parameters with the covariance's square root, computed once per distribution (eigh, not Cholesky:
    valid for the nearly singular covariances of high MI; a batched eigh could pick another basis of a repeated
    eigenvalue, and the sample would then depend on its batch)."""
    w, v = np.linalg.eigh(cov)
    return {"cov": cov, "root": v * np.sqrt(np.clip(w, 0.0, None)), **params}


# ---------------------------------------------------------------- parameters: other families


def student_t_nu(rng: np.random.Generator, spec: StudentTSpec) -> float:
    """ν log-uniform in the spec's range, rounded to a whole number (≥ 1): the sampler draws χ²_ν as a sum of ν
    squared normals, which is exact only for whole ν."""
    nu = np.exp(rng.uniform(np.log(spec.nu.low), np.log(spec.nu.high)))
    return float(max(1, min(round(nu), MAX_NU)))


MAX_NU = 30


def student_t(rng: np.random.Generator, dx: int, dy: int, target: float, spec: StudentTSpec) -> dict:
    """Multivariate t with shared dispersion Σ and ν degrees of freedom (ν from :func:`student_t_nu`); a share
    ``spec.tails_only`` has Σxy = 0 (uncorrelated, MI from the shared scale alone)."""
    nu = student_t_nu(rng, spec)
    correction = float(truth.student_t_correction(torch.tensor([nu]), dx, dy)[0])
    if spec.tails_only > 0 and rng.uniform() < spec.tails_only:  # Σxy = 0: dependence only through the tails
        cov = _within_sides_cov(rng, dx, dy)
    else:
        cov = _canonical_cov(rng, dx, dy, max(target - correction, 0.0))
    return {**_gaussian(cov), "nu": nu}


def _noise_widths_for_mi(mi: np.ndarray) -> np.ndarray:
    """ε with I(X; X + U(0, ε)) = mi for each entry (closed form above 1, bisection on log ε below)."""
    mi = np.maximum(mi, 1e-6)
    lo, hi = torch.full((len(mi),), math.log(1e-12), dtype=torch.float64), torch.zeros(len(mi), dtype=torch.float64)
    goal, one = torch.as_tensor(mi), torch.ones(len(mi), 1, dtype=torch.float64)
    for _ in range(80):  # log ε in (0, 1]: MI decreases in ε
        mid = 0.5 * (lo + hi)
        above = truth.uniform_noise_mi(mid.exp()[:, None], one) > goal
        lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
    return np.where(mi < 0.5, 1.0 / (2 * mi), (0.5 * (lo + hi)).exp().numpy())


def uniform_noise(rng: np.random.Generator, dx: int, dy: int, target: float, spec: FamilySpec) -> dict:
    """X ~ U(0,1)^dx; k coordinates of Y are X coordinates plus U(0, ε_j) noise, the rest pure noise."""
    k = int(rng.integers(1, min(dx, dy) + 1))
    ix, iy = rng.permutation(dx)[:k], rng.permutation(dy)[:k]
    return {"eps": _noise_widths_for_mi(_split(rng, target, k)), "pairs": k, "ix": ix, "iy": iy}


def mixture(rng: np.random.Generator, dx: int, dy: int, target: float, spec: MixtureSpec) -> dict:
    """Parameters of the ``mixture`` family: a few components with correlated covariances and random means."""
    k = int(rng.integers(spec.components.low, spec.components.high + 1))
    weights = rng.dirichlet(np.full(k, 2.0))
    share = rng.uniform(0.2, 0.8)  # part of the target carried by within-component correlation
    covs = np.stack([_canonical_cov(rng, dx, dy, target * share) for _ in range(k)])
    means = rng.uniform(0.5, 3.0) * rng.standard_normal((k, dx + dy))
    return {"weights": weights, "means": means, "covs": covs}


def _layout_means(rng: np.random.Generator, layout: str, k: int, d: int) -> np.ndarray:
    """k component means in R^d on a random geometry; see :class:`GeometricMixtureSpec`."""
    if layout in ("ring", "curve"):  # a random Fourier curve: closed (ring) or an open arc of it (curve)
        span = 2 * np.pi if layout == "ring" else rng.uniform(0.4, 1.2) * 2 * np.pi
        t = (np.arange(k) + (0.5 if layout == "ring" else 0.0)) * span / (k if layout == "ring" else k - 1)
        harmonics = int(rng.integers(1, 4))
        coef = rng.standard_normal((harmonics, 2, d)) / np.arange(1, harmonics + 1)[:, None, None]
        m = np.arange(1, harmonics + 1)[:, None] * t[None, :]  # (H, k)
        return np.einsum("hk,hd->kd", np.cos(m), coef[:, 0]) + np.einsum("hk,hd->kd", np.sin(m), coef[:, 1])
    if layout == "cross":  # two (or three) lines through one point
        lines = int(rng.integers(2, 4))
        dirs = rng.standard_normal((lines, d))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        t = rng.uniform(-1.0, 1.0, k)
        return t[:, None] * dirs[np.arange(k) % lines]
    if layout == "grid":  # k random cells of a small lattice (checkerboard-like)
        side = int(rng.integers(2, 5))
        return rng.integers(0, side, size=(k, d)).astype(float) + 0.1 * rng.standard_normal((k, d))
    raise ValueError(f"unknown layout {layout!r}")


def gmm(rng: np.random.Generator, dx: int, dy: int, target: float, spec: GeometricMixtureSpec) -> dict:
    """Means on a random geometry, scaled to unit spread per coordinate; diagonal component covariances whose
    width (relative to the spacing of the means) shrinks as the target MI grows. MI ≤ log k."""
    k = int(rng.integers(spec.components.low, spec.components.high + 1))
    layout = spec.layouts[rng.integers(len(spec.layouts))]
    means = _layout_means(rng, layout, k, dx + dy)
    means = (means - means.mean(0)) / np.maximum(means.std(0), 1e-3)
    gaps = np.linalg.norm(means[:, None] - means[None], axis=-1) + np.diag(np.full(k, np.inf))
    spacing = np.median(gaps.min(1))
    width = np.clip(1.2 * np.exp(-0.5 * target + rng.uniform(-0.7, 0.7)), 0.08, 3.0)
    stds = spacing * width * np.exp(rng.uniform(-0.3, 0.3, size=(k, dx + dy)))
    return {"weights": rng.dirichlet(np.full(k, 5.0)), "means": means, "variances": stds**2, "layout": layout}


def functional(rng: np.random.Generator, dx: int, dy: int, target: float, spec: FunctionalSpec) -> dict:
    """Channels c = 0..k−1: U_c is X_c (``smooth``, ``periodic``) or, for ``radius``, one channel whose U is the
    norm of the first m coordinates of X; Y_c = f_c(U_c) + σ_c ε; the other coordinates are independent noise.
    ``radius_dims`` is 0 for coordinate channels."""
    kind = spec.kinds[rng.integers(len(spec.kinds))]
    most = 1 if kind == "radius" else min(dx, dy, spec.channels.high)
    k = int(rng.integers(min(spec.channels.low, most), most + 1))
    coef = rng.standard_normal((k, FUNCTION_TERMS)) * np.array([1.0, 0.8, 0.4, 0.6])
    freq = rng.uniform(3.0, 6.0, k) if kind == "periodic" else rng.uniform(0.5, 2.0, k)
    if kind == "periodic":
        coef[:, 0] = np.abs(coef[:, 0]) + 1.0
        coef[:, 1:] *= 0.3
    noise = np.clip(np.exp(-_split(rng, target, k) + rng.uniform(-0.5, 0.5, k)), 0.03, 3.0)
    params = {
        "kind": kind,
        "coef": coef,
        "freq": freq,
        "phase": rng.uniform(0, 2 * np.pi, k),
        "noise": noise,
        "radius_dims": int(rng.integers(1, dx + 1)) if kind == "radius" else 0,
        "hetero": np.zeros((k, 3)),
    }
    if kind == "heteroscedastic":  # σ(u) = σ exp(γ tanh(a u + b)), kept in [0.05, 3.3] for the quadrature grid
        gamma = rng.uniform(0.4, 1.2, k)
        slope = rng.uniform(0.5, 2.0, k) * rng.choice([-1.0, 1.0], k)
        params["hetero"] = np.stack([gamma, slope, rng.uniform(-1.0, 1.0, k)], axis=1)
        params["noise"] = np.clip(noise, 0.05 * np.exp(gamma), 1.0)
    return params


FUNCTION_TERMS = truth.FUNCTION_TERMS

# ---------------------------------------------------------------- batched samplers and truths
# Each sampler takes P distributions' parameters of one family and dims, their counter keys and a row count, and
# returns ``(P, rows, dx + dy)`` float64; each truth returns ``(mi, se)``, both ``(P,)``.


def _stacked(group: list[dict], key: str, device) -> torch.Tensor:
    return torch.as_tensor(np.stack([np.asarray(p[key], dtype=np.float64) for p in group]), device=device)


def _gaussian_sample(group, keys, rows, dx, dy):
    root = _stacked(group, "root", keys.device)
    return counter_rng.normals(keys, Counter.SAMPLE, (rows, dx + dy)) @ root.transpose(1, 2)


def _student_t_sample(group, keys, rows, dx, dy):
    z = _gaussian_sample(group, keys, rows, dx, dy)
    nu = _stacked(group, "nu", keys.device)
    g = counter_rng.normals(keys, Counter.CHI2, (rows, MAX_NU))
    mask = torch.arange(MAX_NU, device=keys.device)[None, :] < nu[:, None]
    chi2 = (g.square() * mask[:, None, :]).sum(-1)
    return z / (chi2 / nu[:, None]).sqrt()[..., None]


def _gaussian_truth(group, dx, dy, spec, device):
    mi = truth.gaussian_mi(_stacked(group, "cov", device), dx)
    return mi, torch.zeros_like(mi)


def _independent_truth(group, dx, dy, spec, device):
    zero = torch.zeros(len(group), dtype=torch.float64, device=device)  # exact by construction (log-dets leave ~1e-16)
    return zero, zero


def _student_t_truth(group, dx, dy, spec, device):
    mi, se = _gaussian_truth(group, dx, dy, spec, device)
    return mi + truth.student_t_correction(_stacked(group, "nu", device), dx, dy), se


def _uniform_noise_sample(group, keys, rows, dx, dy):
    u = counter_rng.uniforms(keys, Counter.SAMPLE, rows * (dx + dy)).reshape(len(group), rows, dx + dy)
    x, y = u[..., :dx], u[..., dx:].clone()
    select = torch.zeros(len(group), dx, dy, dtype=torch.float64, device=keys.device)
    width = torch.ones(len(group), dy, dtype=torch.float64, device=keys.device)
    for b, p in enumerate(group):  # index bookkeeping only (a few integers per distribution)
        select[b, p["ix"], p["iy"]] = 1.0
        width[b, p["iy"]] = torch.as_tensor(p["eps"], dtype=torch.float64)
    return torch.cat([x, y * width[:, None, :] + x @ select], dim=-1)


def _uniform_noise_truth(group, dx, dy, spec, device):
    k = max(len(p["eps"]) for p in group)
    eps, active = np.ones((len(group), k)), np.zeros((len(group), k))
    for b, p in enumerate(group):
        eps[b, : len(p["eps"])], active[b, : len(p["eps"])] = p["eps"], 1.0
    mi = truth.uniform_noise_mi(torch.as_tensor(eps, device=device), torch.as_tensor(active, device=device))
    return mi, torch.zeros_like(mi)


def _mixture_sample(group, keys, rows, dx, dy):
    streams = (Counter.MIXTURE_LABELS, Counter.MIXTURE_NOISE)
    return truth.MixtureDensities.stacked(group, dx, keys.device).sample(keys, streams, rows)


def _mixture_truth(group, dx, dy, spec, device):
    keys = torch.tensor([p["_key"] for p in group], device=device)
    mix = truth.MixtureDensities.stacked(group, dx, device)
    return truth.mixture_mi(mix, keys, spec.max_se_nats, spec.max_mc_samples)


def _functional_sample(group, keys, rows, dx, dy):
    z = counter_rng.normals(keys, Counter.SAMPLE, (rows, dx + dy))
    x, y = z[..., :dx], z[..., dx:].clone()
    mean, sd, ch = truth.link_moments(group, keys.device)
    counts = [len(p["noise"]) for p in group]
    owner = ch["owner"]
    slot = torch.tensor([c for k in counts for c in range(k)], device=keys.device)
    radius = ch["radius"]
    coord_u = x[owner, :, slot.clamp_max(dx - 1)]  # (C, rows)
    mask = torch.arange(dx, device=keys.device)[None, :] < radius[:, None]
    radial_u = (x[owner].square() * mask[:, None, :]).sum(-1).sqrt()
    u = torch.where((radius > 0)[:, None], radial_u, coord_u)
    f = truth.standardized_links(u, ch, mean, sd)
    y[owner, :, slot] = f + truth.noise_scales(u, ch) * y[owner, :, slot]
    return torch.cat([x, y], dim=-1)


def _functional_truth(group, dx, dy, spec, device):
    mi = truth.functional_mi(group, device)
    return mi, torch.zeros_like(mi)


# ---------------------------------------------------------------- the registry

Parameters = Callable[[np.random.Generator, int, int, float, Any], dict]
Sampler = Callable[[list[dict], torch.Tensor, int, int, int], torch.Tensor]
Truth = Callable[[list[dict], int, int, Any, torch.device], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class Family:
    """One family: its parameter draw, its batched sampler and its batched truth."""

    name: str
    parameters: Parameters
    sample: Sampler
    truth: Truth


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("gaussian_dense", gaussian_dense, _gaussian_sample, _gaussian_truth),
        Family("gaussian_sparse", gaussian_sparse, _gaussian_sample, _gaussian_truth),
        Family("gaussian_latent", gaussian_latent, _gaussian_sample, _gaussian_truth),
        Family("gaussian_random", gaussian_random, _gaussian_sample, _gaussian_truth),
        Family("independent", independent, _gaussian_sample, _independent_truth),
        Family("student_t", student_t, _student_t_sample, _student_t_truth),
        Family("uniform_noise", uniform_noise, _uniform_noise_sample, _uniform_noise_truth),
        Family("mixture", mixture, _mixture_sample, _mixture_truth),
        Family("gmm", gmm, _mixture_sample, _mixture_truth),
        Family("functional", functional, _functional_sample, _functional_truth),
    )
}
