"""Every family's ground-truth MI against an independent Monte Carlo computation (scipy densities)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from metadata_gen.config import FamilySpec, MixtureSpec, StudentTSpec
from metadata_gen.families import FAMILIES, JointDistribution

SHAPES = [(1, 1), (3, 2), (2, 5)]
TARGETS = [0.3, 1.5]


def _mc(pmi: np.ndarray) -> tuple[float, float]:
    return float(pmi.mean()), float(pmi.std(ddof=1) / np.sqrt(pmi.size))


def _gaussian_pmi(dist: JointDistribution, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    cov, dx = dist.params["cov"], dist.dx
    joint = stats.multivariate_normal(cov=cov, allow_singular=True).logpdf(np.hstack([x, y]))
    px = stats.multivariate_normal(cov=cov[:dx, :dx]).logpdf(x)
    py = stats.multivariate_normal(cov=cov[dx:, dx:]).logpdf(y)
    return np.atleast_1d(joint - px - py)


def _student_pmi(dist: JointDistribution, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    cov, dx, nu = dist.params["cov"], dist.dx, dist.params["nu"]
    joint = stats.multivariate_t(shape=cov, df=nu).logpdf(np.hstack([x, y]))
    px = stats.multivariate_t(shape=cov[:dx, :dx], df=nu).logpdf(x)
    py = stats.multivariate_t(shape=cov[dx:, dx:], df=nu).logpdf(y)
    return np.atleast_1d(joint - px - py)


@pytest.mark.parametrize("family", ["gaussian_dense", "gaussian_sparse", "gaussian_latent", "gaussian_random"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("target", TARGETS)
def test_gaussian_closed_form_matches_monte_carlo(family, shape, target):
    rng = np.random.default_rng([sum(map(ord, family)), *shape, int(target * 10)])  # stable across processes
    dist = FAMILIES[family](rng, *shape, target, FamilySpec())
    assert dist.mi == pytest.approx(target, rel=1e-4, abs=1e-6)  # the target is hit
    mean, se = _mc(_gaussian_pmi(dist, *dist.sample(rng, 40_000)))
    assert abs(mean - dist.mi) < 4 * se + 1e-3


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("nu", [1.0, 3.0, 25.0])
def test_student_t_closed_form_matches_monte_carlo(shape, nu):
    rng = np.random.default_rng(int(nu * 100) + shape[0] * 10 + shape[1])
    dist = FAMILIES["student_t"](rng, *shape, 1.0, StudentTSpec(nu={"low": nu, "high": nu}))
    mean, se = _mc(_student_pmi(dist, *dist.sample(rng, 40_000)))
    assert abs(mean - dist.mi) < 4 * se + 1e-3


def test_student_t_without_cross_dispersion_still_dependent():
    rng = np.random.default_rng(0)
    dist = FAMILIES["student_t"](rng, 2, 2, 0.0, StudentTSpec(nu={"low": 2.0, "high": 2.0}))
    assert dist.mi > 0.05  # shared χ² scale makes X and Y dependent even with Σxy = 0
    mean, se = _mc(_student_pmi(dist, *dist.sample(rng, 40_000)))
    assert abs(mean - dist.mi) < 4 * se + 1e-3


@pytest.mark.parametrize("shape", [(1, 1), (3, 2), (4, 4)])
@pytest.mark.parametrize("target", [0.1, 0.4, 2.0, 5.0])
def test_uniform_noise_closed_form_matches_monte_carlo(shape, target):
    rng = np.random.default_rng(int(target * 10) + shape[0])
    dist = FAMILIES["uniform_noise"](rng, *shape, target, FamilySpec())
    assert dist.mi == pytest.approx(target, rel=1e-4)
    x, y = dist.sample(rng, 40_000)
    # independent computation: numerical integration of h(Y_j) for each pair, h(Y_j | X) = log ε
    from scipy.integrate import quad

    total = 0.0
    for e in dist.params["eps"]:

        def f(t, e=e):
            return (min(t, 1.0) - max(t - e, 0.0)) / e

        h_y = -sum(
            quad(lambda t, e=e: f(t) * np.log(f(t)) if f(t) > 0 else 0.0, a, b, limit=200)[0]
            for a, b in ((0.0, min(e, 1.0)), (min(e, 1.0), max(e, 1.0)), (max(e, 1.0), 1.0 + e))
        )
        total += h_y - np.log(e)
    assert dist.mi == pytest.approx(total, abs=1e-6)
    assert np.all(y.min(0) >= 0) and np.all(x.max(0) <= 1)


def test_independent_family_has_zero_mi():
    rng = np.random.default_rng(3)
    dist = FAMILIES["independent"](rng, 3, 4, 5.0, FamilySpec())
    assert dist.mi == 0.0
    mean, se = _mc(_gaussian_pmi(dist, *dist.sample(rng, 40_000)))
    assert abs(mean) < 4 * se + 1e-3


def _scipy_mixture_logpdf(z, weights, means, covs):
    dens = sum(w * stats.multivariate_normal(m, c).pdf(z) for w, m, c in zip(weights, means, covs, strict=True))
    return np.log(dens)


@pytest.mark.parametrize("shape", [(1, 1), (2, 3)])
def test_mixture_monte_carlo_agrees_with_independent_scipy_run(shape):
    rng = np.random.default_rng(11 + shape[1])
    dist = FAMILIES["mixture"](rng, *shape, 1.5, MixtureSpec())
    assert dist.mi_se <= 0.01
    dx = dist.dx
    w, m, c = dist.params["weights"], dist.params["means"], dist.params["covs"]
    x, y = dist.sample(np.random.default_rng(999), 20_000)  # another seed, scipy densities
    z = np.hstack([x, y])
    pmi = (
        _scipy_mixture_logpdf(z, w, m, c)
        - _scipy_mixture_logpdf(x, w, m[:, :dx], c[:, :dx, :dx])
        - _scipy_mixture_logpdf(y, w, m[:, dx:], c[:, dx:, dx:])
    )
    mean, se = _mc(pmi)
    assert abs(mean - dist.mi) < 4 * np.hypot(se, dist.mi_se)


def test_mixture_standard_error_is_bounded(default_meta):
    spec = default_meta.families.mixture
    rng = np.random.default_rng(5)
    for target in (0.5, 3.0, 7.0):
        dist = FAMILIES["mixture"](rng, 4, 4, target, spec)
        assert 0 < dist.mi_se <= spec.max_se_nats
