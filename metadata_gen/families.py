"""Families of joint distributions (X, Y) with known mutual information.

Each builder takes ``(rng, dx, dy, target_mi, spec)`` and returns a :class:`JointDistribution`
whose ``mi`` is computed from its own parameters (closed form, or Monte Carlo with a standard
error), not copied from the target: the target only steers the dependence strength.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import digamma, gammaln

from metadata_gen.config import FamilySpec, MixtureSpec, StudentTSpec

Sampler = Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]]


@dataclass
class JointDistribution:
    """A distribution of (X, Y) with its true MI in nats and the standard error of that value."""

    family: str
    dx: int
    dy: int
    mi: float
    sampler: Sampler
    mi_se: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        return self.sampler(rng, n)


# ---------------------------------------------------------------- Gaussian helpers


def gaussian_mi(cov: np.ndarray, dx: int) -> float:
    """I(X;Y) = ½ log(det Σxx det Σyy / det Σ) for a joint normal with covariance ``cov``."""
    _, ld_xx = np.linalg.slogdet(cov[:dx, :dx])
    _, ld_yy = np.linalg.slogdet(cov[dx:, dx:])
    _, ld = np.linalg.slogdet(cov)
    return max(0.5 * (ld_xx + ld_yy - ld), 0.0)


def correlation_for_mi(mi: float) -> float:
    """Correlation of a bivariate normal pair with the given MI: ρ = sqrt(1 − e^{−2I})."""
    return float(np.sqrt(-np.expm1(-2.0 * mi)))


def _gaussian_sampler(cov: np.ndarray, dx: int) -> Sampler:
    # eigh instead of Cholesky: stays valid for the nearly singular covariances of high MI.
    w, v = np.linalg.eigh(cov)
    root = v * np.sqrt(np.clip(w, 0.0, None))

    def sample(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        z = rng.standard_normal((n, cov.shape[0])) @ root.T
        return z[:, :dx], z[:, dx:]

    return sample


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


# ---------------------------------------------------------------- Gaussian families


def gaussian_dense(rng: np.random.Generator, dx: int, dy: int, target: float, spec: FamilySpec):
    """Equicorrelated blocks within X and Y and one shared cross-correlation b (BMI's 'dense')."""
    ax, ay = rng.uniform(0.0, 0.5, 2)
    scale = np.sqrt((1 + (dx - 1) * ax) * (1 + (dy - 1) * ay) / (dx * dy))
    b = correlation_for_mi(target) * scale
    cov = np.block(
        [[_equicorrelation(dx, ax), b * np.ones((dx, dy))], [b * np.ones((dy, dx)), _equicorrelation(dy, ay)]]
    )
    return _gaussian(cov, dx, "gaussian_dense", within_x=ax, within_y=ay, cross=b)


def gaussian_sparse(rng: np.random.Generator, dx: int, dy: int, target: float, spec: FamilySpec):
    """k interacting coordinate pairs at random positions, the rest independent (BMI's 'sparse')."""
    k = int(rng.integers(1, min(dx, dy) + 1))
    ix, iy = rng.permutation(dx)[:k], rng.permutation(dy)[:k]
    cov = np.eye(dx + dy)
    for i, j, m in zip(ix, iy, _split(rng, target, k), strict=True):
        cov[i, dx + j] = cov[dx + j, i] = correlation_for_mi(m)
    return _gaussian(cov, dx, "gaussian_sparse", pairs=k)


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


def gaussian_latent(rng: np.random.Generator, dx: int, dy: int, target: float, spec: FamilySpec):
    """X = A Z + σ E, Y = B Z + σ E' with a shared k-dim latent Z; σ is set by bisection for the target
    (on singular values: no determinant per step); the recorded MI is the closed form of the final covariance."""
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
    return _gaussian(_latent_cov(a, b, noise), dx, "gaussian_latent", latent_dim=k, noise=noise)


def gaussian_random(rng: np.random.Generator, dx: int, dy: int, target: float, spec: FamilySpec):
    """Random canonical correlations mixed by random well-conditioned linear maps within X and Y."""
    return _gaussian(_canonical_cov(rng, dx, dy, target), dx, "gaussian_random")


def independent(rng: np.random.Generator, dx: int, dy: int, target: float, spec: FamilySpec):
    """X and Y independent normals with random covariances: MI = 0 whatever the target."""
    cov = np.zeros((dx + dy, dx + dy))
    for sl, d in ((slice(0, dx), dx), (slice(dx, dx + dy), dy)):
        m = _random_well_conditioned(rng, d)
        cov[sl, sl] = m @ m.T
    dist = _gaussian(cov, dx, "independent")
    dist.mi = 0.0  # exact by construction (the log-det formula leaves ~1e-16 of rounding)
    return dist


def _gaussian(cov: np.ndarray, dx: int, family: str, **params: Any) -> JointDistribution:
    return JointDistribution(
        family, dx, cov.shape[0] - dx, gaussian_mi(cov, dx), _gaussian_sampler(cov, dx), params={"cov": cov, **params}
    )


# ---------------------------------------------------------------- Student-t


def student_t_correction(nu: float, dx: int, dy: int) -> float:
    """MI of a multivariate t beyond the Gaussian term of its dispersion matrix.

    From the entropy of the multivariate t (Arellano-Valle, Contreras-Reyes & Genton 2013):
    h = ½ log det Σ + (d/2) log(νπ) + log Γ(ν/2) − log Γ((ν+d)/2) + (ν+d)/2 [ψ((ν+d)/2) − ψ(ν/2)].
    """

    def g(d: int) -> float:
        return gammaln(nu / 2) - gammaln((nu + d) / 2) + (nu + d) / 2 * (digamma((nu + d) / 2) - digamma(nu / 2))

    return float(g(dx) + g(dy) - g(dx + dy))


def student_t(rng: np.random.Generator, dx: int, dy: int, target: float, spec: StudentTSpec):
    """Multivariate t with shared dispersion Σ and ν degrees of freedom (ν log-uniform in the spec's range)."""
    nu = float(np.exp(rng.uniform(np.log(spec.nu.low), np.log(spec.nu.high))))
    correction = student_t_correction(nu, dx, dy)
    cov = _canonical_cov(rng, dx, dy, max(target - correction, 0.0))
    gauss = _gaussian_sampler(cov, dx)

    def sample(r: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        x, y = gauss(r, n)
        w = np.sqrt(r.chisquare(nu, size=(n, 1)) / nu)
        return x / w, y / w

    mi = gaussian_mi(cov, dx) + correction
    return JointDistribution("student_t", dx, dy, mi, sample, params={"cov": cov, "nu": nu})


# ---------------------------------------------------------------- uniform additive noise


def uniform_noise_mi(eps: float) -> float:
    """I(X; X + N) for X ~ U(0, 1) and N ~ U(0, ε): ε/2 − log ε if ε ≤ 1, else 1/(2ε)."""
    return eps / 2 - np.log(eps) if eps <= 1 else 1 / (2 * eps)


def _noise_width_for_mi(mi: float) -> float:
    if mi < 0.5:
        return 1.0 / (2 * max(mi, 1e-6))
    lo, hi = np.log(1e-12), 0.0  # log ε in (0, 1]: MI decreases in ε
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if uniform_noise_mi(np.exp(mid)) > mi:
            lo = mid
        else:
            hi = mid
    return float(np.exp(0.5 * (lo + hi)))


def uniform_noise(rng: np.random.Generator, dx: int, dy: int, target: float, spec: FamilySpec):
    """X ~ U(0,1)^dx; k coordinates of Y are X coordinates plus U(0, ε_j) noise, the rest pure noise."""
    k = int(rng.integers(1, min(dx, dy) + 1))
    ix, iy = rng.permutation(dx)[:k], rng.permutation(dy)[:k]
    eps = np.array([_noise_width_for_mi(m) for m in _split(rng, target, k)])

    def sample(r: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        x = r.uniform(size=(n, dx))
        y = r.uniform(size=(n, dy))
        y[:, iy] = x[:, ix] + eps * y[:, iy]
        return x, y

    mi = float(sum(uniform_noise_mi(e) for e in eps))
    return JointDistribution("uniform_noise", dx, dy, mi, sample, params={"eps": eps, "pairs": k})


# ---------------------------------------------------------------- Gaussian mixture (Monte Carlo)


@dataclass
class GaussianMixtureDensity:
    """Exact log-density of Σ_k w_k N(μ_k, Σ_k), with whitening matrices precomputed once."""

    log_weights: np.ndarray
    means: np.ndarray
    whiteners: np.ndarray  # (K, d, d): L_k^{-T}, so that ‖(z − μ_k) W_k‖² is the Mahalanobis distance
    log_norms: np.ndarray

    @classmethod
    def build(cls, weights: np.ndarray, means: np.ndarray, covs: np.ndarray) -> GaussianMixtureDensity:
        chols = np.linalg.cholesky(covs)
        whiteners = np.linalg.inv(chols).transpose(0, 2, 1)
        d = means.shape[1]
        log_norms = -np.log(np.diagonal(chols, axis1=1, axis2=2)).sum(1) - 0.5 * d * np.log(2 * np.pi)
        return cls(np.log(weights), means, whiteners, log_norms)

    def marginal(self, sl: slice, covs: np.ndarray) -> GaussianMixtureDensity:
        return self.build(np.exp(self.log_weights), self.means[:, sl], covs[:, sl, sl])

    def log_density(self, z: np.ndarray) -> np.ndarray:
        white = (z[None] - self.means[:, None, :]) @ self.whiteners  # (K, n, d)
        comps = (self.log_weights + self.log_norms)[:, None] - 0.5 * np.square(white).sum(-1)
        top = comps.max(0)
        return top + np.log(np.exp(comps - top).sum(0))


def _mixture_factors(covs: np.ndarray) -> np.ndarray:
    """Per-component square roots F_k with F_k F_kᵀ = Σ_k (symmetric eigen-decomposition)."""
    w, v = np.linalg.eigh(covs)
    return v * np.sqrt(np.clip(w, 0.0, None))[:, None, :]


def _sample_component(rng, n: int, mean: np.ndarray, factor: np.ndarray) -> np.ndarray:
    return mean + rng.standard_normal((n, len(mean))) @ factor.T


def _sample_mixture(rng, n, weights, means, covs) -> np.ndarray:
    labels = rng.choice(len(weights), size=n, p=weights)
    z = np.empty((n, means.shape[1]))
    for k, factor in enumerate(_mixture_factors(covs)):
        idx = np.flatnonzero(labels == k)
        z[idx] = _sample_component(rng, len(idx), means[k], factor)
    return z


def monte_carlo_mi(
    rng: np.random.Generator, dx: int, weights, means, covs, max_se: float, max_samples: int, batch: int = 4096
) -> tuple[float, float]:
    """Monte Carlo of E[log p(x,y) − log p(x) − log p(y)] until its standard error is ≤ ``max_se``.

    Stratified by component (proportional allocation): E = Σ_k w_k E_k[pmi], with standard error
    sqrt(Σ_k w_k² Var_k / n_k). Unbiased like plain sampling, and never higher in variance: the spread
    between components' means drops out.
    """
    joint = GaussianMixtureDensity.build(weights, means, covs)
    px, py = joint.marginal(slice(0, dx), covs), joint.marginal(slice(dx, None), covs)
    factors = _mixture_factors(covs)
    per_batch = np.maximum(np.ceil(batch * weights).astype(int), 2)
    sums, sq, counts = np.zeros(len(weights)), np.zeros(len(weights)), np.zeros(len(weights))
    while counts.sum() < max_samples:
        for k, m in enumerate(per_batch):
            z = _sample_component(rng, m, means[k], factors[k])
            pmi = joint.log_density(z) - px.log_density(z[:, :dx]) - py.log_density(z[:, dx:])
            sums[k] += pmi.sum()
            sq[k] += (pmi**2).sum()
            counts[k] += m
        means_k = sums / counts
        var_k = np.maximum(sq / counts - means_k**2, 0.0) * counts / (counts - 1)
        mean = float(weights @ means_k)
        se = float(np.sqrt((weights**2 * var_k / counts).sum()))
        if se <= max_se:
            break
    return mean, se


def mixture(rng: np.random.Generator, dx: int, dy: int, target: float, spec: MixtureSpec):
    """Gaussian mixture in the joint (X, Y) space: MI has no closed form, so it is estimated by Monte Carlo
    of the pointwise MI from exact densities, with its standard error recorded."""
    k = int(rng.integers(spec.components.low, spec.components.high + 1))
    d = dx + dy
    weights = rng.dirichlet(np.full(k, 2.0))
    share = rng.uniform(0.2, 0.8)  # part of the target carried by within-component correlation
    covs = np.stack([_canonical_cov(rng, dx, dy, target * share) for _ in range(k)])
    spread = rng.uniform(0.5, 3.0)
    means = spread * rng.standard_normal((k, d))
    mi, se = monte_carlo_mi(rng, dx, weights, means, covs, spec.max_se_nats, spec.max_mc_samples)

    def sample(r: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        z = _sample_mixture(r, n, weights, means, covs)
        return z[:, :dx], z[:, dx:]

    params = {"weights": weights, "means": means, "covs": covs}
    return JointDistribution("mixture", dx, dy, max(mi, 0.0), sample, mi_se=se, params=params)


FAMILIES: dict[str, Callable[..., JointDistribution]] = {
    "gaussian_dense": gaussian_dense,
    "gaussian_sparse": gaussian_sparse,
    "gaussian_latent": gaussian_latent,
    "gaussian_random": gaussian_random,
    "independent": independent,
    "student_t": student_t,
    "uniform_noise": uniform_noise,
    "mixture": mixture,
}
