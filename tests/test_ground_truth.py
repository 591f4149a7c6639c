"""Every family's ground-truth MI (the generator's torch truth) against an independent computation: Monte Carlo
of the pointwise MI with scipy densities on the generator's own samples, or quadrature."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from metadata_gen.config import FamilySpec, MixtureSpec, StudentTSpec
from metadata_gen.families import FAMILIES

SHAPES = [(1, 1), (3, 2), (2, 5)]
TARGETS = [0.3, 1.5]


def _draw(family: str, rng, dx: int, dy: int, target: float, spec, n: int = 40_000, key: int = 1):
    """Parameters, truth (mi, se) and an (x, y) sample of one distribution, all from the generator's code."""
    params = FAMILIES[family].parameters(rng, dx, dy, target, spec)
    params["_key"] = key
    mi, se = FAMILIES[family].truth([params], dx, dy, spec, torch.device("cpu"))
    z = FAMILIES[family].sample([params], torch.tensor([key * 7 + 3]), n, dx, dy)[0].numpy()
    return params, float(mi[0]), float(se[0]), z[:, :dx], z[:, dx:]


def _mc(pmi: np.ndarray) -> tuple[float, float]:
    return float(pmi.mean()), float(pmi.std(ddof=1) / np.sqrt(pmi.size))


def _gaussian_pmi(cov, dx, x, y) -> np.ndarray:
    joint = stats.multivariate_normal(cov=cov, allow_singular=True).logpdf(np.hstack([x, y]))
    px = stats.multivariate_normal(cov=cov[:dx, :dx]).logpdf(x)
    py = stats.multivariate_normal(cov=cov[dx:, dx:]).logpdf(y)
    return np.atleast_1d(joint - px - py)


@pytest.mark.parametrize("family", ["gaussian_dense", "gaussian_sparse", "gaussian_latent", "gaussian_random"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("target", TARGETS)
def test_gaussian_closed_form_matches_monte_carlo(family, shape, target):
    rng = np.random.default_rng([sum(map(ord, family)), *shape, int(target * 10)])  # stable across processes
    p, mi, _, x, y = _draw(family, rng, *shape, target, FamilySpec())
    assert mi == pytest.approx(target, rel=1e-4, abs=1e-6)  # the target is hit
    mean, se = _mc(_gaussian_pmi(p["cov"], shape[0], x, y))
    assert abs(mean - mi) < 4 * se + 1e-3


def _student_pmi(cov, dx, nu, x, y) -> np.ndarray:
    joint = stats.multivariate_t(shape=cov, df=nu).logpdf(np.hstack([x, y]))
    px = stats.multivariate_t(shape=cov[:dx, :dx], df=nu).logpdf(x)
    py = stats.multivariate_t(shape=cov[dx:, dx:], df=nu).logpdf(y)
    return np.atleast_1d(joint - px - py)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("nu", [1.0, 3.0, 25.0])
@pytest.mark.parametrize("tails_only", [0.0, 1.0])
def test_student_t_closed_form_matches_monte_carlo(shape, nu, tails_only):
    rng = np.random.default_rng(int(nu * 100) + shape[0] * 10 + shape[1])
    spec = StudentTSpec(nu={"low": nu, "high": nu}, tails_only=tails_only)
    p, mi, _, x, y = _draw("student_t", rng, *shape, 1.0, spec)
    if tails_only:
        assert np.all(p["cov"][: shape[0], shape[0] :] == 0) and mi > 0  # uncorrelated, still dependent
    mean, se = _mc(_student_pmi(p["cov"], shape[0], p["nu"], x, y))
    assert abs(mean - mi) < 4 * se + 1e-3


@pytest.mark.parametrize("shape", [(1, 1), (3, 2), (4, 4)])
@pytest.mark.parametrize("target", [0.1, 0.4, 2.0, 5.0])
def test_uniform_noise_closed_form_matches_quadrature(shape, target):
    rng = np.random.default_rng(int(target * 10) + shape[0])
    p, mi, _, x, y = _draw("uniform_noise", rng, *shape, target, FamilySpec())
    assert mi == pytest.approx(target, rel=1e-4)
    total = 0.0  # independent: numerical integration of h(Y_j) for each pair, h(Y_j | X) = log ε
    for e in p["eps"]:

        def f(t, e=e):
            return (min(t, 1.0) - max(t - e, 0.0)) / e

        h_y = -sum(
            integrate.quad(lambda t, e=e: f(t) * np.log(f(t)) if f(t) > 0 else 0.0, a, b, limit=200)[0]
            for a, b in ((0.0, min(e, 1.0)), (min(e, 1.0), max(e, 1.0)), (max(e, 1.0), 1.0 + e))
        )
        total += h_y - np.log(e)
    assert mi == pytest.approx(total, abs=1e-6)
    assert np.all(y.min(0) >= 0) and np.all(x.max(0) <= 1)


def test_independent_family_has_zero_mi():
    p, mi, _, x, y = _draw("independent", np.random.default_rng(3), 3, 4, 5.0, FamilySpec())
    assert mi == 0.0
    mean, se = _mc(_gaussian_pmi(p["cov"], 3, x, y))
    assert abs(mean) < 4 * se + 1e-3


def _scipy_mixture_logpdf(z, weights, means, covs):
    dens = sum(w * stats.multivariate_normal(m, c).pdf(z) for w, m, c in zip(weights, means, covs, strict=True))
    return np.log(dens)


@pytest.mark.parametrize(("family", "shape"), [("mixture", (1, 1)), ("mixture", (2, 3)), ("gmm", (1, 1)),
                                               ("gmm", (2, 3))])  # fmt: skip
def test_mixture_monte_carlo_agrees_with_independent_scipy_run(family, shape):
    from metadata_gen.config import GeometricMixtureSpec

    spec = MixtureSpec() if family == "mixture" else GeometricMixtureSpec()
    p, mi, mi_se, x, y = _draw(family, np.random.default_rng(11 + shape[1]), *shape, 1.5, spec, n=20_000, key=99)
    assert mi_se <= spec.max_se_nats
    dx = shape[0]
    w, m = p["weights"], p["means"]
    c = p["covs"] if "covs" in p else np.stack([np.diag(v) for v in p["variances"]])
    pmi = (_scipy_mixture_logpdf(np.hstack([x, y]), w, m, c) - _scipy_mixture_logpdf(x, w, m[:, :dx], c[:, :dx, :dx])
           - _scipy_mixture_logpdf(y, w, m[:, dx:], c[:, dx:, dx:]))  # fmt: skip
    mean, se = _mc(pmi)
    assert abs(mean - mi) < 4 * np.hypot(se, mi_se)


@pytest.mark.slow
def test_heteroscedastic_truth_matches_a_fine_grid_monte_carlo():
    """Independent: pointwise MI at Monte Carlo draws, p(y) summed on an 80 001-node U grid in numpy."""
    from metadata_gen.config import FunctionalSpec

    spec = FunctionalSpec(kinds=("heteroscedastic",), channels={"low": 1, "high": 1})
    p, mi, _, x, y = _draw("functional", np.random.default_rng(4), 1, 1, 1.2, spec, n=3000)
    from metadata_gen import truth

    mean, sd, _ = truth.link_moments([p])
    coef, freq, phase = p["coef"][0], p["freq"][0], p["phase"][0]
    gamma, slope, shift = p["hetero"][0]

    def f(u):
        terms = [np.sin(freq * u + phase), (u * u - 1) / np.sqrt(2), u, np.abs(u) - np.sqrt(2 / np.pi)]
        return (sum(c * t for c, t in zip(coef, terms, strict=True)) - float(mean[0])) / float(sd[0])

    def s(u):
        return p["noise"][0] * np.exp(gamma * np.tanh(slope * u + shift))

    u, yy = x[:, 0], y[:, 0]
    grid = np.linspace(-8, 8, 80_001)
    wg = stats.norm.pdf(grid)
    wg /= wg.sum()
    logp = np.concatenate([np.log((wg * stats.norm.pdf(part[:, None], f(grid), s(grid))).sum(1))
                           for part in np.array_split(yy, 30)])  # fmt: skip
    est, se = _mc(stats.norm.logpdf(yy, f(u), s(u)) - logp)
    assert p["hetero"][0, 0] > 0 and abs(est - mi) < 4 * se + 0.01
