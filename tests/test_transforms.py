"""Every MI-preserving transform inverts, acts on one side only, and composes as a list."""

from __future__ import annotations

import numpy as np
import pytest

from metadata_gen.config import COORDINATEWISE_KINDS, FLOW_KINDS, FlowSpec, TransformsConfig
from metadata_gen.sampler import build_reshaping, draw_reshaping
from metadata_gen.transforms import (
    Chain,
    Coordinatewise,
    Linear,
    Monotone1D,
    RandomFlow,
    Spiral,
    Standardize,
    _quartiles,
)


def _sample(d: int, n: int = 2000, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d))


@pytest.mark.parametrize("kind", COORDINATEWISE_KINDS)
def test_coordinatewise_is_increasing_and_inverts(kind):
    rng = np.random.default_rng(1)
    f = Monotone1D.random(rng, kind)
    x = np.linspace(-6, 6, 4001)
    y = f(x)
    assert np.all(np.diff(y) > 0)
    np.testing.assert_allclose(f.inverse(y), x, atol=1e-6)


@pytest.mark.parametrize(
    "make",
    [
        lambda rng, d: Linear.random(rng, d),
        lambda rng, d: Spiral.random(rng, d),
        lambda rng, d: Coordinatewise.random(rng, d, COORDINATEWISE_KINDS),
        lambda rng, d: Standardize.fit(_sample(d, seed=3) * 3 + 1),
    ],
    ids=["linear", "spiral", "coordinatewise", "standardize"],
)
@pytest.mark.parametrize("d", [2, 5])
def test_numpy_transforms_invert(make, d):
    rng = np.random.default_rng(d)
    t = make(rng, d)
    z = _sample(d)
    np.testing.assert_allclose(t.inverse(t.forward(z)), z, atol=1e-6)


@pytest.mark.parametrize("kind", FLOW_KINDS)
@pytest.mark.parametrize("d", [2, 6])
def test_random_flows_invert_and_are_not_identity(kind, d):
    rng = np.random.default_rng(7)
    flow = RandomFlow.random(rng, d, FlowSpec(probability=1.0, kinds=(kind,), layers={"low": 2, "high": 2}))
    z = _sample(d)
    out = flow.forward(z)
    assert np.abs(out - z).mean() > 0.05  # random weights: a real reshaping, not the identity
    np.testing.assert_allclose(flow.inverse(out), z, atol=2e-3)


def test_spiral_keeps_norm():
    t = Spiral.random(np.random.default_rng(0), 4)
    z = _sample(4)
    np.testing.assert_allclose(np.linalg.norm(t.forward(z), axis=1), np.linalg.norm(z, axis=1), rtol=1e-10)


def test_chain_composes_in_order_and_inverts():
    rng = np.random.default_rng(0)
    parts = [Linear.random(rng, 3), Spiral.random(rng, 3), Coordinatewise.random(rng, 3, ("asinh",))]
    chain = Chain(parts)
    z = _sample(3)
    expected = parts[2].forward(parts[1].forward(parts[0].forward(z)))
    np.testing.assert_allclose(chain.forward(z), expected)
    np.testing.assert_allclose(chain.inverse(chain.forward(z)), z, atol=1e-6)


def test_build_reshaping_is_fixed_by_pilot_not_by_task_data():
    spec = TransformsConfig.model_validate(
        {
            "linear": {"probability": 1},
            "spiral": {"probability": 1},
            "flow": {"probability": 1},
            "coordinatewise": {"probability": 1},
        }
    )
    pilot = _sample(3, 256, seed=5)
    chain = build_reshaping(draw_reshaping(np.random.default_rng(0), 3, spec), pilot)
    assert [n for n in chain.names() if n != "standardize"] == ["linear", "spiral", "flow", "coordinatewise"]
    a, b = _sample(3, 100, seed=8), _sample(3, 100, seed=9)
    # the same map applied to two batches equals the map applied to both at once (no data-dependent fit)
    both = chain.forward(np.vstack([a, b]))
    np.testing.assert_allclose(both[:100], chain.forward(a), atol=1e-5)
    np.testing.assert_allclose(chain.inverse(both), np.vstack([a, b]), atol=2e-3)


@pytest.mark.parametrize("n", [2, 3, 7, 256, 1001])
def test_quartiles_match_numpy_percentile(n):
    z = np.random.default_rng(n).standard_normal((n, 5))
    np.testing.assert_allclose(_quartiles(z), np.percentile(z, [25, 50, 75], axis=0), rtol=0, atol=1e-12)
