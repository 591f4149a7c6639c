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

from metadata_gen.config import FamilySpec, FunctionalSpec, GeometricMixtureSpec, MixtureSpec, StudentTSpec

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


def student_t_nu(rng: np.random.Generator, spec: StudentTSpec) -> float:
    """ν log-uniform in the spec's range, rounded to a whole number (≥ 1): the batched sampler draws χ²_ν as a
    sum of ν squared normals, which is exact only for whole ν."""
    nu = np.exp(rng.uniform(np.log(spec.nu.low), np.log(spec.nu.high)))
    return float(max(1, min(round(nu), MAX_NU)))


MAX_NU = 30


def student_t(rng: np.random.Generator, dx: int, dy: int, target: float, spec: StudentTSpec):
    """Multivariate t with shared dispersion Σ and ν degrees of freedom (ν from :func:`student_t_nu`); a share
    ``spec.tails_only`` has Σxy = 0 (uncorrelated, MI from the shared scale alone)."""
    nu = student_t_nu(rng, spec)
    correction = student_t_correction(nu, dx, dy)
    if spec.tails_only > 0 and rng.uniform() < spec.tails_only:  # Σxy = 0: dependence only through the tails
        cov = np.zeros((dx + dy, dx + dy))
        for sl, d in ((slice(0, dx), dx), (slice(dx, None), dy)):
            m = _random_well_conditioned(rng, d)
            cov[sl, sl] = m @ m.T
    else:
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
    return JointDistribution("uniform_noise", dx, dy, mi, sample, params={"eps": eps, "pairs": k, "ix": ix, "iy": iy})


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


def mixture_params(rng: np.random.Generator, dx: int, dy: int, target: float, spec: MixtureSpec) -> dict:
    """Parameters of the ``mixture`` family: a few components with correlated covariances and random means."""
    k = int(rng.integers(spec.components.low, spec.components.high + 1))
    weights = rng.dirichlet(np.full(k, 2.0))
    share = rng.uniform(0.2, 0.8)  # part of the target carried by within-component correlation
    covs = np.stack([_canonical_cov(rng, dx, dy, target * share) for _ in range(k)])
    means = rng.uniform(0.5, 3.0) * rng.standard_normal((k, dx + dy))
    return {"weights": weights, "means": means, "covs": covs}


def _mixture_distribution(family: str, rng, dx: int, dy: int, params: dict, max_se: float, max_samples: int):
    weights, means, covs = params["weights"], params["means"], params["covs"]
    mi, se = monte_carlo_mi(rng, dx, weights, means, covs, max_se, max_samples)

    def sample(r: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        z = _sample_mixture(r, n, weights, means, covs)
        return z[:, :dx], z[:, dx:]

    return JointDistribution(family, dx, dy, max(mi, 0.0), sample, mi_se=se, params=params)


def mixture(rng: np.random.Generator, dx: int, dy: int, target: float, spec: MixtureSpec):
    """Gaussian mixture in the joint (X, Y) space: MI has no closed form, so it is estimated by Monte Carlo
    of the pointwise MI from exact densities, with its standard error recorded."""
    params = mixture_params(rng, dx, dy, target, spec)
    return _mixture_distribution("mixture", rng, dx, dy, params, spec.max_se_nats, spec.max_mc_samples)


# ---------------------------------------------------------------- geometric mixture (non-monotone, Monte Carlo)


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


def gmm_params(rng: np.random.Generator, dx: int, dy: int, target: float, spec: GeometricMixtureSpec) -> dict:
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


def gmm(rng: np.random.Generator, dx: int, dy: int, target: float, spec: GeometricMixtureSpec):
    """Geometric Gaussian mixture (rings, arcs, crossing lines, lattice cells); MI by Monte Carlo."""
    params = gmm_params(rng, dx, dy, target, spec)
    full = {**params, "covs": np.stack([np.diag(v) for v in params["variances"]])}
    return _mixture_distribution("gmm", rng, dx, dy, full, spec.max_se_nats, spec.max_mc_samples)


# ---------------------------------------------------------------- noisy functional links (quadrature)

FUNCTION_TERMS = 4  # f(u) = a0 sin(ω u + φ) + a1 (u² − 1)/√2 + a2 u + a3 (|u| − √(2/π)), then standardized


def functional_params(rng: np.random.Generator, dx: int, dy: int, target: float, spec: FunctionalSpec) -> dict:
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


def noise_scale(u: np.ndarray, sigma: float, hetero: np.ndarray) -> np.ndarray:
    """σ(u) = σ exp(γ tanh(a u + b)) of one channel (constant σ when γ = 0)."""
    gamma, slope, shift = hetero
    return sigma * np.exp(gamma * np.tanh(slope * u + shift))


def link_function(u: np.ndarray, coef: np.ndarray, freq: float, phase: float) -> np.ndarray:
    """The raw (unstandardized) link f(u) of one channel; see :data:`FUNCTION_TERMS`."""
    terms = [np.sin(freq * u + phase), (u * u - 1) / np.sqrt(2), u, np.abs(u) - np.sqrt(2 / np.pi)]
    return sum(c * t for c, t in zip(coef, terms, strict=True))


def functional(rng: np.random.Generator, dx: int, dy: int, target: float, spec: FunctionalSpec):
    """Y_c = f_c(U_c) + σ_c ε with random non-monotone f_c; MI = Σ_c [h(f_c(U_c) + σ_c ε) − h(σ_c ε)] by
    quadrature (see :mod:`metadata_gen.truth`)."""
    from metadata_gen.truth import functional_mi, link_standardization

    params = functional_params(rng, dx, dy, target, spec)
    mi = float(functional_mi([params])[0])
    center, scale = link_standardization(params)
    k, m = len(params["noise"]), params["radius_dims"]

    def sample(r: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        x, y = r.standard_normal((n, dx)), r.standard_normal((n, dy))
        u = np.linalg.norm(x[:, :m], axis=1, keepdims=True) if m else x[:, :k]
        for c in range(k):
            f = (link_function(u[:, min(c, u.shape[1] - 1)], params["coef"][c], params["freq"][c],
                               params["phase"][c]) - center[c]) / scale[c]  # fmt: skip
            scale_c = noise_scale(u[:, min(c, u.shape[1] - 1)], params["noise"][c], params["hetero"][c])
            y[:, c] = f + scale_c * y[:, c]
        return x, y

    return JointDistribution("functional", dx, dy, mi, sample, params=params)


# Families whose truth is costly (Monte Carlo or quadrature): their parameters can be drawn without it, consuming
# the random stream exactly as the full builder does; the batched generator computes the truth in one call.
PARAMETERS: dict[str, Callable[..., dict]] = {
    "mixture": mixture_params,
    "gmm": gmm_params,
    "functional": functional_params,
}


def draw_parameters(rng: np.random.Generator, family: str, dx: int, dy: int, target: float, spec) -> dict:
    """The parameters of one distribution of ``family``, as the reference builder would draw them."""
    if family in PARAMETERS:
        return PARAMETERS[family](rng, dx, dy, target, spec)
    return FAMILIES[family](rng, dx, dy, target, spec).params


FAMILIES: dict[str, Callable[..., JointDistribution]] = {
    "gaussian_dense": gaussian_dense,
    "gaussian_sparse": gaussian_sparse,
    "gaussian_latent": gaussian_latent,
    "gaussian_random": gaussian_random,
    "independent": independent,
    "student_t": student_t,
    "uniform_noise": uniform_noise,
    "mixture": mixture,
    "gmm": gmm,
    "functional": functional,
}
