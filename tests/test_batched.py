"""The generator: truths against independent computations, honest standard errors over several Monte Carlo
rounds, disjoint random streams, and tasks that do not depend on their batch or on who draws them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from metadata_gen import counter_rng, streams, truth
from metadata_gen.batched import BatchGenerator, sample_task
from metadata_gen.config import GeometricMixtureSpec
from metadata_gen.families import gmm
from tests.conftest import meta_variant


def link_function(u, coef, freq, phase):
    """The raw link f(u), written out independently of metadata_gen.truth."""
    terms = [np.sin(freq * u + phase), (u * u - 1) / np.sqrt(2), u, np.abs(u) - np.sqrt(2 / np.pi)]
    return sum(c * t for c, t in zip(coef, terms, strict=True))


NON_MONOTONE = ("gmm", "functional")


def _lowbias32(x: int) -> int:
    m = 0xFFFFFFFF
    x &= m
    x ^= x >> 16
    x = (x * 0x7FEB352D) & m
    x ^= x >> 15
    x = (x * 0x846CA68B) & m
    return x ^ (x >> 16)


def test_counter_hash_matches_its_definition_and_draws_are_sane():
    xs = [0, 1, 12345, 2**32 - 1, 2**40 + 7]
    assert counter_rng.mix32(torch.tensor(xs)).tolist() == [_lowbias32(x) for x in xs]
    z = counter_rng.normals(torch.tensor([1, 2, 3]), 0, (100_000,))
    assert z.shape == (3, 100_000)
    assert abs(float(z.mean())) < 0.01 and abs(float(z.var()) - 1) < 0.01
    assert abs(float(stats.kurtosis(z[0].numpy()))) < 0.1
    u = counter_rng.uniforms(torch.tensor([9]), 5, 10)
    assert torch.equal(u, counter_rng.uniforms(torch.tensor([4, 9]), 5, 10)[1:])  # keyed, not positional


def _functional(coef, sigma, radius_dims=0, freq=1.0, phase=0.0) -> dict:
    return {"kind": "radius" if radius_dims else "smooth", "coef": np.array([coef], dtype=float),
            "freq": np.array([freq]), "phase": np.array([phase]), "noise": np.array([sigma]),
            "radius_dims": radius_dims, "hetero": np.zeros((1, 3))}  # fmt: skip


@pytest.mark.parametrize("sigma", [0.03, 0.3, 2.0])
def test_functional_truth_linear_link_is_the_gaussian_closed_form(sigma):
    mi = float(truth.functional_mi([_functional([0, 0, 1, 0], sigma)])[0])
    assert mi == pytest.approx(0.5 * np.log1p(1 / sigma**2), abs=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize(("coef", "sigma", "radius_dims", "freq"), [
    ([1.0, 0.7, 0.2, 0.5], 0.2, 0, 1.5),  # smooth, non-monotone
    ([1.5, 0.1, 0.1, 0.0], 0.1, 0, 5.0),  # periodic
    ([0.8, 0.3, 0.5, 0.0], 0.15, 3, 2.0),  # radius of 3 coordinates
])  # fmt: skip
def test_functional_truth_matches_scipy_quadrature_monte_carlo(coef, sigma, radius_dims, freq):
    """Independent: the density of Y by adaptive scipy quadrature at Monte Carlo draws of Y."""
    params = _functional(coef, sigma, radius_dims, freq, 0.4)
    mean, sd, _ = truth.link_moments([params])
    center, scale = mean.numpy(), sd.numpy()
    f = lambda u: (link_function(u, params["coef"][0], freq, 0.4) - center[0]) / scale[0]  # noqa: E731
    pu = stats.chi(radius_dims).pdf if radius_dims else stats.norm.pdf
    lo, hi = (0.0, np.sqrt(radius_dims) + 8) if radius_dims else (-8.0, 8.0)
    rng = np.random.default_rng(0)
    u = stats.chi(radius_dims).rvs(400, random_state=rng) if radius_dims else rng.standard_normal(400)
    y = f(u) + sigma * rng.standard_normal(400)
    logp = np.log([integrate.quad(lambda v, t=t: pu(v) * stats.norm.pdf(t, f(v), sigma), lo, hi, limit=500)[0]
                   for t in y])  # fmt: skip
    h, se = -logp.mean(), logp.std(ddof=1) / np.sqrt(len(logp))
    expected = h - 0.5 * np.log(2 * np.pi * np.e * sigma**2)
    assert float(truth.functional_mi([params])[0]) == pytest.approx(expected, abs=4 * se + 0.01)


def _mixture_mi(weights, means, variances, dx, key=1, max_samples=65_536):
    mix = truth.MixtureDensities(torch.tensor(weights)[None], torch.tensor(means)[None], dx,
                                 variances=torch.tensor(variances)[None])  # fmt: skip
    mi, se = truth.mixture_mi(mix, torch.tensor([key]), 0.002, max_samples)
    return float(mi[0]), float(se[0])


def test_mixture_limits():
    # one component is a Gaussian with diagonal covariance: X and Y independent
    assert _mixture_mi([1.0], [[0.3, -1.0]], [[1.0, 2.0]], 1)[0] == pytest.approx(0.0, abs=1e-9)
    # components on a product grid with equal weights and shared widths factorize: MI = 0
    means = [[a, b] for a in (0.0, 3.0) for b in (0.0, 5.0)]
    mi, se = _mixture_mi([0.25] * 4, means, [[1.0, 1.5]] * 4, 1)
    assert abs(mi) < 4 * se + 1e-3
    # well separated components along a line: MI → entropy of the weights
    w = np.array([0.1, 0.2, 0.3, 0.4])
    mi, se = _mixture_mi(w, [[10.0 * k, 10.0 * k] for k in range(4)], [[0.01, 0.01]] * 4, 1)
    assert mi == pytest.approx(-(w * np.log(w)).sum(), abs=4 * se + 1e-3)


def test_reported_standard_errors_are_honest_over_several_rounds():
    """Over repeated Monte Carlo truths of one mixture (4 rounds each), the spread of the values matches the
    reported SE: it would not if the rounds shared random streams."""
    p = gmm(np.random.default_rng(5), 1, 2, 1.0, GeometricMixtureSpec())
    mix = truth.MixtureDensities(torch.tensor(p["weights"])[None], torch.tensor(p["means"])[None], 1,
                                 variances=torch.tensor(p["variances"])[None])  # fmt: skip
    runs = [truth.mixture_mi(mix, torch.tensor([k]), 1e-9, 4 * 2048, 2048) for k in range(40)]
    values, ses = np.array([float(r[0][0]) for r in runs]), np.array([float(r[1][0]) for r in runs])
    ratio = values.std(ddof=1) / ses.mean()
    assert 1 / 1.5 < ratio < 1.5, ratio


def test_counter_streams_are_disjoint():
    """Every named stream, and every Monte Carlo round's pair, maps to its own raw hash streams."""
    raw = []
    for s in streams.Counter:
        if s != streams.Counter.MONTE_CARLO:
            raw += [2 * s, 2 * s + 1]
    for r in range(1000):
        for s in streams.monte_carlo_round(r):
            raw += [2 * s, 2 * s + 1]
    assert len(raw) == len(set(raw))
    # and the draws differ: round 1's labels are not round 0's noise angles (the 0.2 collision)
    keys = torch.tensor([7])
    labels1 = counter_rng.uniforms(keys, streams.monte_carlo_round(1)[0], 1000)
    for s in streams.monte_carlo_round(0):
        assert not torch.allclose(labels1, counter_rng.uniforms(keys, s, 1000))
    assert len({int(w) for w in streams.Word}) == len(streams.Word)


@pytest.fixture(scope="module")
def both_configs():
    return [meta_variant(), meta_variant(path=meta_variant.__defaults__[0].parent / "heldout.toml")]


def test_evaluation_tasks_equal_training_tasks(both_configs):
    """sample_task (evaluation, mist generate) and the training stream's batches are one generator: the same
    index gives the same task, arrays and truth."""
    for config in both_configs:
        for batch in BatchGenerator(config).generate(range(0, 160, 7)):
            for t in batch.tasks():
                one = sample_task(config, t.index)
                assert one.family == t.family and one.mi == t.mi
                np.testing.assert_array_equal(one.x, t.x)
                np.testing.assert_array_equal(one.y, t.y)
                assert np.isfinite(t.x).all() and np.isfinite(t.y).all()


def test_a_task_does_not_depend_on_its_batch():
    config = meta_variant()
    whole = BatchGenerator(config).generate(range(40, 56), dims=(3, 2), n=100)
    for pos in (0, 7, 15):
        alone = BatchGenerator(config).generate([40 + pos], dims=(3, 2), n=100)
        torch.testing.assert_close(alone.x[0], whole.x[pos], rtol=0, atol=0)
        torch.testing.assert_close(alone.y[0], whole.y[pos], rtol=0, atol=0)
        assert alone.mi[0] == whole.mi[pos]


def test_non_monotone_families_are_a_quarter_of_training_and_held_out_geometries_differ(both_configs):
    default, heldout = both_configs
    weights = {k: v.weight for k, v in default.families.enabled().items()}
    assert sum(weights[k] for k in NON_MONOTONE) / sum(weights.values()) >= 0.25
    # drawn in 1-D × 1-D too
    drawn = BatchGenerator(default).generate(range(400), dims=(1, 1), n=64)
    assert np.mean([f in NON_MONOTONE for f in drawn.families]) >= 0.2
    held = heldout.families.enabled()
    assert not set(held["gmm"].layouts) & set(default.families.gmm.layouts)
    assert not set(held["functional"].kinds) & set(default.families.functional.kinds)
