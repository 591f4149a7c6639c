"""Every MI-preserving stage inverts, acts on one side only, is batched over tasks with their own parameters, and
composes as a list."""

from __future__ import annotations

import contextlib

import normflows.utils.splines as splines
import numpy as np
import pytest
import torch

import metadata_gen.transforms as transforms
from metadata_gen.config import COORDINATEWISE_KINDS, FLOW_KINDS, FlowSpec, TransformsConfig
from metadata_gen.transforms import (
    FLOW_BANK,
    SLOW_SOFTMAX_COLUMNS,
    BankFlow,
    Coordinatewise,
    Linear,
    Monotone1D,
    Spiral,
    banked_flow,
    draw_reshaping,
    monotone_map,
    reshape,
    standardize,
)


def _batch(b: int, d: int, n: int = 2000, seed: int = 0) -> torch.Tensor:
    return torch.as_tensor(np.random.default_rng(seed).standard_normal((b, n, d)))


@pytest.mark.parametrize("kind", COORDINATEWISE_KINDS)
def test_coordinatewise_is_increasing_and_inverts(kind):
    stage = Coordinatewise([Monotone1D.random(np.random.default_rng(1), kind)])
    x = torch.linspace(-6, 6, 4001, dtype=torch.float64)[None, :, None]
    y = Coordinatewise.apply(x, [stage])
    assert bool((y.diff(dim=1) > 0).all())
    torch.testing.assert_close(Coordinatewise.apply(y, [stage], inverse=True), x, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("cls", "make"),
    [
        (Linear, lambda rng, d: Linear.random(rng, d)),
        (Spiral, lambda rng, d: Spiral.random(rng, d)),
        (Coordinatewise, lambda rng, d: Coordinatewise.random(rng, d, COORDINATEWISE_KINDS)),
    ],
    ids=["linear", "spiral", "coordinatewise"],
)
@pytest.mark.parametrize("d", [2, 5])
def test_stages_invert_with_each_tasks_own_parameters(cls, make, d):
    rng = np.random.default_rng(d)
    stages = [make(rng, d) for _ in range(3)]
    z = _batch(3, d)
    out = cls.apply(z, stages)
    torch.testing.assert_close(cls.apply(out, stages, inverse=True), z, rtol=0, atol=1e-6)
    for b in range(3):  # task b's rows go through task b's parameters only
        torch.testing.assert_close(cls.apply(z[b : b + 1], stages[b : b + 1]), out[b : b + 1], rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", FLOW_KINDS)
@pytest.mark.parametrize("d", [2, 6])
def test_bank_flows_invert_and_are_not_identity(kind, d):
    spec = FlowSpec(probability=1.0, kinds=(kind,), layers={"low": 2, "high": 2})
    stages = [BankFlow(d, spec, i % FLOW_BANK) for i in range(3)]
    z = _batch(3, d, 500)
    out = BankFlow.apply(z, stages)  # float32 forward, as in generation
    assert float((out - z).abs().mean()) > 0.05  # random weights: a real reshaping, not the identity
    for b, stage in enumerate(stages):
        flow = banked_flow(stage.d, spec, stage.flow_id)
        exact = flow.run(z[b], dtype=torch.float64)
        torch.testing.assert_close(out[b], exact, rtol=0, atol=1e-3)  # float32 rounds, it does not reshape
        # invertible (in float64: steep splines amplify float32 rounding in the inverse direction)
        torch.testing.assert_close(flow.run(exact, inverse=True, dtype=torch.float64), z[b], rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", ["coupling_spline", "autoregressive_spline"])
def test_spline_flows_answer_as_with_torchs_softmax(kind, monkeypatch):
    flow = banked_flow(4, FlowSpec(probability=1.0, kinds=(kind,), layers={"low": 3, "high": 3}), 0)
    z = _batch(1, 4, 1001)[0]
    for dtype, atol in [(torch.float32, 1e-3), (torch.float64, 1e-12)]:  # float32 as in its own test above
        fast = flow.run(z, dtype=dtype)
        assert splines.F is torch.nn.functional  # the shim is scoped to the call
        with monkeypatch.context() as m:  # normflows as it ships: torch's own softmax
            m.setattr(transforms, "_fast_spline_softmax", contextlib.nullcontext)
            plain = flow.run(z, dtype=dtype)
        assert not torch.equal(fast, plain)  # the shim really ran
        torch.testing.assert_close(fast, plain, rtol=0, atol=atol)


def test_spline_softmax_matches_torchs_and_gives_a_row_the_same_bits_in_any_batch():
    softmax = transforms._SplineFunctional.softmax
    for dtype, atol in [(torch.float32, 3e-7), (torch.float64, 1e-15)]:
        x = torch.as_tensor(np.random.default_rng(1).standard_normal((20_011, 8)) * 3, dtype=dtype)
        full = softmax(x, dim=-1)
        torch.testing.assert_close(full, torch.softmax(x, -1), rtol=0, atol=atol)
        for a, b in [(0, 1), (7, 12), (3, 40), (17, 1_017), (500, 5_503), (9, 20_011)]:
            assert torch.equal(softmax(x[a:b], dim=-1), full[a:b])
    wide = torch.randn(10, SLOW_SOFTMAX_COLUMNS)  # that many columns or more: torch's own kernel
    assert torch.equal(softmax(wide, dim=-1), torch.softmax(wide, -1))


def test_spiral_keeps_norm():
    stage = Spiral.random(np.random.default_rng(0), 4)
    z = _batch(1, 4)
    torch.testing.assert_close(Spiral.apply(z, [stage]).norm(dim=-1), z.norm(dim=-1), rtol=1e-10, atol=0)


def test_monotone_maps_match_their_closed_forms():
    v = torch.linspace(-3, 3, 101, dtype=torch.float64)[None]
    empty = v.new_zeros(1, 1, 0)
    torch.testing.assert_close(monotone_map("asinh", v, empty), torch.asinh(v))
    torch.testing.assert_close(monotone_map("half_cube", v, empty), v * v.abs().sqrt())


def test_reshaping_composes_in_order_and_is_fixed_by_the_pilot_rows_not_the_task_data():
    spec = TransformsConfig.model_validate(
        {
            "linear": {"probability": 1},
            "spiral": {"probability": 1},
            "flow": {"probability": 1},
            "coordinatewise": {"probability": 1},
        }
    )
    maps = draw_reshaping(np.random.default_rng(0), 3, spec)
    assert maps.names() == ["linear", "spiral", "flow", "coordinatewise"]
    pilot, a, b = _batch(1, 3, 256, seed=5), _batch(1, 3, 100, seed=8), _batch(1, 3, 100, seed=9)
    with_a = reshape(torch.cat([pilot, a], 1), [maps], 256)
    with_ab = reshape(torch.cat([pilot, a, b], 1), [maps], 256)
    # the same rows map to the same values whatever other rows follow the pilot: a fixed bijection of one side
    torch.testing.assert_close(with_ab[:, : 256 + 100], with_a, rtol=0, atol=1e-5)
    assert float((with_a[:, 256:] - a).abs().mean()) > 0.1


@pytest.mark.parametrize("n", [3, 7, 256, 1001])
def test_standardize_uses_the_pilot_quartiles(n):
    z = _batch(2, 5, n + 50, seed=n)
    q = np.percentile(z[:, :n].numpy(), [25, 50, 75], axis=1)
    expected = (z.numpy() - q[1][:, None]) / ((q[2] - q[0]) / 1.349)[:, None]
    np.testing.assert_allclose(standardize(z, n).numpy(), expected, rtol=1e-10, atol=1e-10)
