"""Batched ground truths in torch, one call for many distributions (CPU or CUDA, same code).

- Gaussian: ½ log(det Σxx det Σyy / det Σ) by batched log-determinants;
- Student-t: the Gaussian term plus the ν-only correction (Arellano-Valle et al. 2013);
- uniform additive noise: a sum of closed forms;
- Gaussian mixtures: Monte Carlo of the pointwise MI from exact densities, with its standard error;
- noisy functional links: 1-D quadrature of h(f(U) + σε) on a fine grid (FFT convolution).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from metadata_gen import counter_rng
from metadata_gen.streams import monte_carlo_round

MC_ROUND = 8192
FUNCTION_TERMS = 4  # f(u) = a0 sin(ω u + φ) + a1 (u² − 1)/√2 + a2 u + a3 (|u| − √(2/π)), then standardized
QUAD_U = 16385  # nodes of the U grid
QUAD_Y = 16384  # bins of the Y grid


def gaussian_mi(covs: torch.Tensor, dx: int) -> torch.Tensor:
    """``(P,)`` MI of joint normals with covariances ``(P, D, D)``."""
    covs = covs.double()
    ld = torch.logdet(covs[:, :dx, :dx]) + torch.logdet(covs[:, dx:, dx:]) - torch.logdet(covs)
    return (0.5 * ld).clamp_min(0.0)


def student_t_correction(nu: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """``(P,)`` MI of a multivariate t beyond the Gaussian term of its dispersion (families.student_t_correction)."""
    nu = nu.double()

    def g(d: int) -> torch.Tensor:
        a, b = nu / 2, (nu + d) / 2
        return torch.lgamma(a) - torch.lgamma(b) + b * (torch.digamma(b) - torch.digamma(a))

    return g(dx) + g(dy) - g(dx + dy)


def uniform_noise_mi(eps: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """``(P,)`` Σ_j I(X; X + U(0, ε_j)) over the active pairs of ``eps: (P, k)``."""
    eps = eps.double()
    per = torch.where(eps <= 1, eps / 2 - torch.log(eps), 1 / (2 * eps))
    return (per * active).sum(1)


# ---------------------------------------------------------------- Gaussian mixtures


class MixtureDensities:
    """Log-densities of P Gaussian mixtures (K components, padded with zero weights) and of their X and Y
    marginals. Components are diagonal (``variances: (P, K, D)``) or full (``covs: (P, K, D, D)``)."""

    def __init__(self, weights: torch.Tensor, means: torch.Tensor, dx: int, variances=None, covs=None):
        self.log_w = torch.log(weights.double().clamp_min(1e-300))
        self.means, self.dx = means.double(), dx
        self.variances = None if variances is None else variances.double()
        self.covs = None if covs is None else covs.double()
        if self.covs is not None:
            self.factors = torch.linalg.cholesky(self.covs)

    @classmethod
    def stacked(cls, group: list[dict], dx: int, device="cpu") -> MixtureDensities:
        """P mixtures from their parameter dicts, K padded to the largest (zero weights, unit variances)."""
        k = max(len(p["weights"]) for p in group)
        dim = group[0]["means"].shape[1]
        diag = "variances" in group[0]
        w, mu = np.zeros((len(group), k)), np.zeros((len(group), k, dim))
        var = np.ones((len(group), k, dim)) if diag else np.broadcast_to(np.eye(dim), (len(group), k, dim, dim)).copy()
        for b, p in enumerate(group):
            m = len(p["weights"])
            w[b, :m], mu[b, :m] = p["weights"], p["means"]
            var[b, :m] = p["variances" if diag else "covs"]
        t = lambda a: torch.as_tensor(a, device=device)  # noqa: E731
        return cls(t(w), t(mu), dx, **({"variances": t(var)} if diag else {"covs": t(var)}))

    def sample(self, keys: torch.Tensor, streams: tuple[int, int], m: int) -> torch.Tensor:
        """``(P, m, D)`` draws, counter-based in ``keys``: components from ``streams[0]``, noise from ``streams[1]``."""
        p, k, d = self.means.shape
        u = counter_rng.uniforms(keys, streams[0], m)
        cdf = torch.cumsum(self.log_w.exp(), 1)
        labels = torch.searchsorted(cdf / cdf[:, -1:], u.contiguous()).clamp_max(k - 1)  # (P, m)
        eps = counter_rng.normals(keys, streams[1], (m, d))
        mu = torch.gather(self.means, 1, labels[..., None].expand(-1, -1, d))
        if self.covs is None:
            sd = torch.gather(self.variances, 1, labels[..., None].expand(-1, -1, d)).sqrt()
            return mu + sd * eps
        chol = self.factors[torch.arange(p, device=u.device)[:, None], labels]  # (P, m, D, D)
        return mu + (chol @ eps[..., None]).squeeze(-1)

    def log_density(self, z: torch.Tensor, sl: slice) -> torch.Tensor:
        """``(P, m)`` log-density of the mixture's marginal on coordinates ``sl`` at ``z: (P, m, d_sl)``."""
        mu = self.means[:, :, sl]
        d = z.shape[-1]
        if self.covs is None:
            prec = 1.0 / self.variances[:, :, sl]  # (P, K, d)
            quad = (z * z) @ prec.transpose(1, 2) - 2 * z @ (mu * prec).transpose(1, 2)
            quad = quad + (mu * mu * prec).sum(-1)[:, None, :]
            log_norm = -0.5 * (torch.log(self.variances[:, :, sl]).sum(-1) + d * math.log(2 * math.pi))
        else:
            chol = torch.linalg.cholesky(self.covs[:, :, sl, sl])  # (P, K, d, d)
            diff = z[:, None] - mu[:, :, None, :]  # (P, K, m, d)
            white = torch.linalg.solve_triangular(chol, diff.transpose(-1, -2), upper=False)
            quad = white.square().sum(-2).transpose(1, 2)  # (P, m, K)
            log_norm = -(torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)) - 0.5 * d * math.log(2 * math.pi)
        return torch.logsumexp(self.log_w[:, None, :] + log_norm[:, None, :] - 0.5 * quad, dim=-1)

    def pointwise_mi(self, z: torch.Tensor) -> torch.Tensor:
        dx = self.dx
        joint = self.log_density(z, slice(None))
        return joint - self.log_density(z[..., :dx], slice(0, dx)) - self.log_density(z[..., dx:], slice(dx, None))


def mixture_mi(
    mix: MixtureDensities, keys: torch.Tensor, max_se: float, max_samples: int, round_size: int = MC_ROUND
) -> tuple[torch.Tensor, torch.Tensor]:
    """Monte Carlo of E[log p(x,y) − log p(x) − log p(y)] for P mixtures at once, in rounds (each with its own
    counter streams) until every standard error is ≤ ``max_se`` or ``max_samples`` are spent. Returns ``(mi, se)``,
    both ``(P,)``."""
    total = torch.zeros(len(keys), dtype=torch.float64, device=keys.device)
    square, count = torch.zeros_like(total), 0
    for r in range(max(1, max_samples // round_size)):
        pmi = mix.pointwise_mi(mix.sample(keys, monte_carlo_round(r), round_size))
        total += pmi.sum(1)
        square += pmi.square().sum(1)
        count += round_size
        mean = total / count
        se = ((square / count - mean.square()).clamp_min(0.0) / (count - 1)).sqrt()
        if bool((se <= max_se).all()):
            break
    return mean.clamp_min(0.0), se


# ---------------------------------------------------------------- noisy functional links


def _u_grid(radius_dims: torch.Tensor, device, nodes: int = QUAD_U) -> tuple[torch.Tensor, torch.Tensor]:
    """Per channel a U grid ``(C, nodes)`` and its probability weights: N(0, 1) for coordinate channels,
    the χ distribution with m degrees of freedom (the norm of m standard normals) for radius channels."""
    m = radius_dims.double()[:, None]
    radial = m > 0
    lo = torch.where(radial, torch.zeros_like(m), torch.full_like(m, -7.5))
    hi = torch.where(radial, m.sqrt() + 7.5, torch.full_like(m, 7.5))
    t = torch.linspace(0.0, 1.0, nodes, dtype=torch.float64, device=device)[None, :]
    u = lo + (hi - lo) * t
    log_p = torch.where(radial, (m - 1).clamp_min(0) * torch.log(u.clamp_min(1e-300)) - 0.5 * u * u, -0.5 * u * u)
    w = torch.softmax(log_p, dim=1)  # uniform grid: normalized densities are the quadrature weights
    return u, w


def _links(u: torch.Tensor, coef: torch.Tensor, freq: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
    terms = torch.stack(
        [
            torch.sin(freq[:, None] * u + phase[:, None]),
            (u * u - 1) / math.sqrt(2),
            u,
            u.abs() - math.sqrt(2 / math.pi),
        ],
        dim=-1,
    )
    return (terms * coef[:, None, :]).sum(-1)


def _channels(params_list: list[dict], device) -> dict[str, torch.Tensor]:
    def cat(key: str) -> torch.Tensor:
        return torch.as_tensor(np.concatenate([np.atleast_1d(p[key]) for p in params_list]), device=device)

    counts = [len(p["noise"]) for p in params_list]
    radius = np.concatenate([np.full(c, p["radius_dims"]) for c, p in zip(counts, params_list, strict=True)])
    return {
        "coef": cat("coef").reshape(-1, FUNCTION_TERMS).double(),
        "freq": cat("freq").double(),
        "phase": cat("phase").double(),
        "noise": cat("noise").double(),
        "hetero": torch.as_tensor(
            np.concatenate([np.asarray(p["hetero"]).reshape(-1, 3) for p in params_list]), device=device
        ).double(),
        "radius": torch.as_tensor(radius, device=device),
        "owner": torch.as_tensor(np.repeat(np.arange(len(params_list)), counts), device=device),
    }


def link_moments(params_list: list[dict], device="cpu") -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Mean and standard deviation of each channel's raw link f(U) (to standardize it), by quadrature."""
    ch = _channels(params_list, device)
    u, w = _u_grid(ch["radius"], device)
    f = _links(u, ch["coef"], ch["freq"], ch["phase"])
    mean = (w * f).sum(1)
    sd = ((w * (f - mean[:, None]).square()).sum(1)).sqrt().clamp_min(1e-6)
    return mean, sd, ch


def standardized_links(u: torch.Tensor, ch: dict, mean: torch.Tensor, sd: torch.Tensor) -> torch.Tensor:
    """Each channel's link f_c(u) standardized by its moments under U (see :func:`link_moments`)."""
    return (_links(u, ch["coef"], ch["freq"], ch["phase"]) - mean[:, None]) / sd[:, None]


def noise_scales(u: torch.Tensor, ch: dict) -> torch.Tensor:
    """Each channel's noise scale σ_c(u) = σ_c exp(γ_c tanh(a_c u + b_c)) at ``u: (C, m)`` (constant when γ = 0)."""
    gamma, slope, shift = (ch["hetero"][:, i, None] for i in range(3))
    return ch["noise"][:, None] * torch.exp(gamma * torch.tanh(slope * u + shift))


def functional_mi(params_list: list[dict], device="cpu") -> torch.Tensor:
    """``(P,)`` MI of functional-link distributions: per channel h(Y) − E[½ log(2πe σ(U)²)]. For a constant σ the
    density of Y = f(U) + σε is the pushforward of U's grid mass onto a fine Y grid (linear binning), convolved
    with N(0, σ²) by FFT; for a heteroscedastic σ(u) it is the grid mixture Σ_i w_i N(f(u_i), σ(u_i)²) summed
    directly on a Y grid (:func:`_heteroscedastic_mi`)."""
    mean, sd, ch = link_moments(params_list, device)
    u, w = _u_grid(ch["radius"], device)
    f = standardized_links(u, ch, mean, sd)
    sigma = ch["noise"]
    lo = f.min(1).values - 9 * sigma
    hi = f.max(1).values + 9 * sigma
    step = (hi - lo) / (QUAD_Y - 1)
    pos = (f - lo[:, None]) / step[:, None]
    left = pos.floor().long().clamp(0, QUAD_Y - 2)
    frac = (pos - left).clamp(0.0, 1.0)
    hist = torch.zeros(len(sigma), 2 * QUAD_Y, dtype=torch.float64, device=f.device)
    hist.scatter_add_(1, left, w * (1 - frac)).scatter_add_(1, left + 1, w * frac)
    offsets = torch.arange(2 * QUAD_Y, device=f.device, dtype=torch.float64)
    offsets = torch.where(offsets < QUAD_Y, offsets, offsets - 2 * QUAD_Y)[None, :] * step[:, None]
    kernel = torch.exp(-0.5 * (offsets / sigma[:, None]).square())
    kernel = kernel / kernel.sum(1, keepdim=True)
    p = torch.fft.irfft(torch.fft.rfft(hist) * torch.fft.rfft(kernel), n=2 * QUAD_Y)[:, :QUAD_Y].clamp_min(0.0)
    p = p / p.sum(1, keepdim=True)
    entropy = -(p * torch.log((p / step[:, None]).clamp_min(1e-300))).sum(1)
    per_channel = entropy - 0.5 * torch.log(2 * math.pi * math.e * sigma.square())
    hetero = (ch["hetero"][:, 0] != 0).nonzero().flatten()
    if len(hetero):
        per_channel[hetero] = _heteroscedastic_mi(ch, mean, sd, hetero)
    out = torch.zeros(len(params_list), dtype=torch.float64, device=f.device)
    return out.index_add_(0, ch["owner"], per_channel).clamp_min(0.0)


HETERO_U = 1025  # U nodes of the direct heteroscedastic quadrature (4097 × 8192 agree to 1e-4)
HETERO_Y = 2048  # Y bins


def _heteroscedastic_mi(ch: dict, mean: torch.Tensor, sd: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
    """h(Y) − E[½ log(2πe σ(U)²)] for the channels ``which``, with p(y) = Σ_i w_i N(y; f(u_i), σ(u_i)²) on a grid."""
    sub = {k: v[which] for k, v in ch.items()}
    u, w = _u_grid(sub["radius"], which.device, HETERO_U)
    f = standardized_links(u, sub, mean[which], sd[which])
    s = noise_scales(u, sub)
    lo = (f - 8 * s).min(1).values
    hi = (f + 8 * s).max(1).values
    step = (hi - lo) / (HETERO_Y - 1)
    y = lo[:, None] + step[:, None] * torch.arange(HETERO_Y, dtype=torch.float64, device=u.device)[None, :]
    density = torch.zeros_like(y)
    for start in range(0, HETERO_U, 256):
        fi, si, wi = (t[:, start : start + 256, None] for t in (f, s, w))
        z = (y[:, None, :] - fi) / si
        density += (wi * torch.exp(-0.5 * z * z) / (si * math.sqrt(2 * math.pi))).sum(1)
    p = density * step[:, None]
    p = p / p.sum(1, keepdim=True)
    entropy = -(p * torch.log((p / step[:, None]).clamp_min(1e-300))).sum(1)
    return entropy - (w * (0.5 * math.log(2 * math.pi * math.e) + torch.log(s))).sum(1)
