"""The set network: invariances, shapes, statistics and checkpoint format."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.network import MISTNetwork, NetworkConfig, copula_shrinkage, gaussian_copula_mi
from model.preprocess import gaussian_scores, soft_gaussian_scores
from tests.conftest import paired_tensors

TOL = 1e-4


@pytest.fixture(scope="module", params=["nats", "log1p"])
def net(request) -> MISTNetwork:
    torch.manual_seed(0)
    # Few body and kNN rows, so that the tests also run the value-hashed row subsample (n above them).
    cfg = NetworkConfig(width=16, heads=2, blocks=1, inducing=4, body_rows=40, knn_max_rows=512, scale=request.param)
    return MISTNetwork(cfg).eval()


@torch.no_grad()
@pytest.mark.parametrize("n", [30, 120])
def test_invariances(net, n):
    x, y = paired_tensors(n)
    q = net(x, y)
    perm = torch.randperm(x.shape[1])
    assert torch.allclose(net(x[:, perm], y[:, perm]), q, atol=TOL)  # sample order
    assert torch.allclose(net(x[..., [2, 0, 1]], y[..., [1, 0]]), q, atol=TOL)  # coordinate order
    mono = x.clone()
    mono[..., 1] = torch.exp(3 * mono[..., 1]) - 5  # strictly increasing map of one coordinate
    assert torch.allclose(net(mono, y), q, atol=TOL)
    assert torch.allclose(net(y, x), q, atol=TOL)  # swap X and Y


@torch.no_grad()
@pytest.mark.parametrize(("n", "dx", "dy"), [(10, 1, 1), (100, 1, 64), (300, 64, 5), (20_000, 2, 3)])
def test_any_shape_and_monotone_nonnegative_quantiles(net, n, dx, dy):
    x, y = paired_tensors(n, dx, dy)
    q = net(x, y)
    assert q.shape == (2, len(net.cfg.quantiles))
    assert torch.isfinite(q).all() and (q >= 0).all() and (q.diff(dim=1) >= 0).all()


def test_ties_and_constant_columns_are_defined():
    z = torch.tensor([[[1.0, 5.0], [1.0, 5.0], [2.0, 5.0], [0.0, 5.0]]])
    s = gaussian_scores(z)
    assert s[0, 0, 0] == s[0, 1, 0]  # ties share a score
    assert torch.all(s[..., 1] == 0)  # a constant column carries nothing


@pytest.mark.parametrize("levels", [3, 40, None])  # heavy ties, some ties, none
def test_gaussian_scores_are_those_of_average_ranks(levels):
    from scipy.stats import norm, rankdata

    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 300, 3, generator=g) if levels is None else torch.randint(0, levels, (2, 300, 3), generator=g)
    z = z.double()
    expected = norm.ppf(rankdata(z.numpy(), axis=1) / 301)
    assert np.allclose(gaussian_scores(z).numpy(), expected, atol=1e-9)


@pytest.mark.parametrize("levels", [3, 40, None])
def test_gaussian_scores_from_a_given_order_are_those_it_sorts_for(levels):
    # the estimator hands the network the argsort of the float64 values; cast to float32, close values merge into
    # ties, which must still share their average rank, exactly as if the network had sorted the float32 values
    rng = np.random.default_rng(levels or 0)
    raw = rng.integers(0, levels, (2, 2000, 3)) if levels else 1.0 + rng.standard_normal((2, 2000, 3)) * 1e-6
    order = torch.from_numpy(np.argsort(raw.transpose(0, 2, 1), axis=-1))
    z = torch.from_numpy(raw).float()
    assert levels or len(torch.unique(z[0, :, 0])) < 2000  # float32 merged some of the distinct values
    assert torch.equal(gaussian_scores(z, order), gaussian_scores(z))


def test_row_order_is_bit_identical_under_permutations_of_coordinates_and_sides():
    from model.network import in_hash_order

    g = torch.Generator().manual_seed(3)
    sx, sy = torch.randn(3, 500, 7, generator=g), torch.randn(3, 500, 4, generator=g)
    ox, oy = in_hash_order(sx, sy)
    rows = torch.randperm(500, generator=g)
    px, py = in_hash_order(sy[:, rows][..., torch.randperm(4, generator=g)], sx[:, rows][..., [6, 0, 5, 1, 4, 2, 3]])
    assert torch.equal(py, ox[..., [6, 0, 5, 1, 4, 2, 3]])  # the same rows in the same order, whatever came in
    assert torch.equal(px.sort(-1).values, oy.sort(-1).values)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpu_sort_gives_torch_sorted_values_and_a_permutation_that_reproduces_them(dtype):
    from model.preprocess import sort_last

    g = torch.Generator().manual_seed(0)
    t = (torch.randn(3, 5, 2000, generator=g) * 4).round().to(dtype)  # many ties
    values, order = sort_last(t)
    assert torch.equal(values, t.sort(dim=-1).values)
    assert torch.equal(t.gather(-1, order), values)
    assert torch.equal(order.sort(dim=-1).values, torch.arange(2000).expand_as(order))  # each index once


def test_soft_path_has_finite_gradients_and_approximates_ranks(net):
    x, y = paired_tensors(n=50)
    x.requires_grad_(True)
    y.requires_grad_(True)
    net(x, y, soft=True)[:, 10].sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0 and torch.isfinite(y.grad).all()
    hard, soft = gaussian_scores(x.detach()), soft_gaussian_scores(x.detach(), temperature=0.01)
    assert (hard - soft).abs().mean() < 0.05


def test_widening_the_head_preserves_outputs():
    from model.checkpoint import load_weights_widening_head

    torch.manual_seed(0)
    narrow = MISTNetwork(NetworkConfig(width=16, heads=2, blocks=1, inducing=4, head_stats=5)).eval()
    wide = MISTNetwork(NetworkConfig(width=16, heads=2, blocks=1, inducing=4, head_stats=7)).eval()
    load_weights_widening_head(wide, narrow.state_dict())
    x, y = paired_tensors()
    with torch.no_grad():
        torch.testing.assert_close(wide(x, y), narrow(x, y))


def test_output_scale_is_recorded_and_old_checkpoints_are_refused_clearly():
    from model.checkpoint import network_config

    cfg = NetworkConfig(width=16, heads=2, blocks=1, inducing=4, scale="nats").to_dict()
    assert network_config({"network": cfg}).scale == "nats"
    old = {k: v for k, v in cfg.items() if k != "body_cells"}
    with pytest.raises(ValueError, match="older network"):
        network_config({"network": old})
    with pytest.raises(ValueError, match="scale"):
        NetworkConfig(scale="log")
    mi = torch.tensor([0.0, 0.5, 6.0])
    assert torch.equal(MISTNetwork(NetworkConfig(scale="nats")).to_scale(mi), mi)
    torch.testing.assert_close(MISTNetwork(NetworkConfig(scale="log1p")).to_scale(mi), torch.log1p(mi))


def test_hermite_excess_separates_gaussian_from_non_gaussian_dependence():
    from model.network import gaussian_copula_mi, hermite_excess

    torch.manual_seed(0)
    x, z = torch.randn(4, 2000, 3), torch.randn(4, 2000, 3)
    sx = gaussian_scores(x)
    for y, lo, hi in ((0.8 * x + 0.6 * z, -0.1, 0.1), (z, -0.05, 0.05), (x * z, 0.5, 5.0)):
        sy = gaussian_scores(y)
        _, excess = hermite_excess(sx, sy)
        assert ((lo < excess) & (excess < hi)).all(), excess
    # the anchor itself cannot see the variance coupling of x * z
    assert (gaussian_copula_mi(sx, gaussian_scores(x * z)) < 0.05).all()


def test_anchor_stays_honest_when_n_is_close_to_the_dimension():
    """n = 35, dx = dy = 31, independent: the raw copula plug-in explodes, the shrunk anchor does not."""
    torch.manual_seed(0)
    sx, sy = gaussian_scores(torch.randn(1, 35, 31)), gaussian_scores(torch.randn(1, 35, 31))
    assert gaussian_copula_mi(sx, sy) > 5.0
    assert gaussian_copula_mi(sx, sy, copula_shrinkage(35, 62)) == 0.0


def test_knn_statistic_is_finite_on_ties_and_reads_non_monotone_dependence():
    from model.network import knn_mi

    tied = torch.zeros(2, 100, 1)
    tied[:, 50:] = 1.0  # duplicate rows put the k-th neighbour at distance 0 (this once gave NaN losses)
    assert torch.isfinite(knn_mi(gaussian_scores(tied), gaussian_scores(tied))).all()
    torch.manual_seed(0)
    x = torch.randn(2, 1500, 2)
    y = x.norm(dim=-1, keepdim=True) + 0.1 * torch.randn(2, 1500, 1)  # Y depends on the radius of X
    sx, sy = gaussian_scores(x), gaussian_scores(y)
    assert (knn_mi(sx, sy, rows=1500) > 1.0).all() and (gaussian_copula_mi(sx, sy) < 0.05).all()


def test_a_constant_body_is_folded_without_moving_the_answers(shipped):
    """The shipped body's output does not depend on the sample (model card); folding it keeps every quantile
    within 1e-5 on the log1p scale the head answers on (1e-5 · (1 + MI) nats) on samples the probes never saw.
    A freshly initialized body is alive and is not folded."""
    import numpy as np

    from model.checkpoint import load_checkpoint
    from model.estimator import Estimator, default_checkpoint_path

    assert shipped.network.constant_pool is not None and shipped.info["body_folded"]
    unfolded = Estimator(load_checkpoint(default_checkpoint_path()), fold_body=False)
    rng = np.random.default_rng(11)
    for n, dx, dy in ((15, 1, 1), (200, 3, 2), (1000, 1, 1), (300, 32, 32)):
        x = rng.standard_normal((n, dx))
        y = np.tanh(x[:, :1]) + rng.standard_normal((n, dy))
        a, b = shipped.estimate(x, y).quantiles, unfolded.estimate(x, y).quantiles
        assert max(abs(np.log1p(a[k]) - np.log1p(b[k])) for k in a) < 1e-5
    live = MISTNetwork(NetworkConfig()).eval()
    assert live.fold_constant_body() > 1e-3 and live.constant_pool is None


def test_one_coordinate_knn_counts_match_the_distance_matrix():
    from model.network import _closer_than, _distances

    a = torch.randn(4, 300, 1)
    eps = torch.rand(4, 300, 1) * 0.3 + 1e-3
    by_matrix = (_distances(a) < eps).sum(-1)
    assert torch.equal(_closer_than(a, _distances(a), eps), by_matrix)


@pytest.mark.parametrize("m", [2, 7, 32, 128, 512])
@pytest.mark.parametrize("rho", [0.0, 0.9, 1.0])  # independent, dependent, a = b (every window exact)
@pytest.mark.parametrize("scale", [1.0, 0.05])  # the shipped windows, and windows of one place: all rows searched
def test_window_search_finds_the_kth_neighbour_of_the_full_distance_matrix(m, rho, scale, monkeypatch):
    import model.network as network

    monkeypatch.setattr(network, "WINDOW_SCALE", scale)
    g = torch.Generator().manual_seed(m)
    a = torch.randn(40, m, generator=g)
    b = rho * a + (1 - rho**2) ** 0.5 * torch.randn(40, m, generator=g)
    a[:5] = a[:5].round()  # ties in a and in b
    b[5:10] = (b[5:10] * 2).round()
    joint = torch.maximum((a[:, :, None] - a[:, None, :]).abs(), (b[:, :, None] - b[:, None, :]).abs())
    joint.diagonal(dim1=1, dim2=2).fill_(float("inf"))
    for k in {1, min(5, m - 1)}:
        eps, (srt_a, order_a), (srt_b, order_b) = network._window_kth(a, b, k)
        assert torch.equal(eps, joint.topk(k, dim=-1, largest=False).values[..., -1])
        assert torch.equal(srt_a, a.sort(dim=1).values) and torch.equal(srt_a, a.gather(1, order_a))
        assert torch.equal(srt_b, b.sort(dim=1).values) and torch.equal(srt_b, b.gather(1, order_b))


def test_b_order_window_proves_most_rows_the_a_order_window_leaves_and_proves_them_right():
    """The rows a's window cannot prove are mostly proven by b's (else the full search would do the work)."""
    import model.network as network
    from model.preprocess import sort_last

    g = torch.Generator().manual_seed(5)
    a, b, k = torch.randn(64, 512, generator=g), torch.randn(64, 512, generator=g), 5
    srt_a, order_a = sort_last(a)
    _, proven = network._window_pass(srt_a, b.gather(1, order_a), k)
    si, ri = (~network._in_rows_order(proven, order_a)).nonzero(as_tuple=True)
    srt_b, order_b = sort_last(b)
    rank_b = network._in_rows_order(torch.arange(512).expand_as(order_b).contiguous(), order_b)
    found, by_b = network._b_window(a, b, (srt_b, order_b), rank_b, si, ri, k)
    joint = torch.maximum((a[:, :, None] - a[:, None, :]).abs(), (b[:, :, None] - b[:, None, :]).abs())
    joint.diagonal(dim1=1, dim2=2).fill_(float("inf"))
    truth = joint.topk(k, dim=-1, largest=False).values[..., -1][si, ri]
    assert len(si) > 0.03 * a.numel() and by_b.float().mean() > 0.9
    assert torch.equal(found[by_b], truth[by_b])


def test_ksg_gives_the_same_value_by_window_and_by_distance_matrix(monkeypatch):
    """Which search a piece takes is a matter of speed only (``WINDOW_MIN_ROWS``): both give the same numbers."""
    import model.network as network

    g = torch.Generator().manual_seed(3)
    a = torch.randn(6, 200, 1, generator=g)
    b = 0.8 * a + 0.6 * torch.randn(6, 200, 1, generator=g)
    b[:2] = b[:2].round()  # ties
    monkeypatch.setattr(network, "WINDOW_MIN_ROWS", 0)
    by_window = network._ksg(a, b, 5)
    monkeypatch.setattr(network, "WINDOW_MIN_ROWS", 10**9)
    assert torch.equal(network._ksg(a, b, 5), by_window)


@pytest.mark.parametrize("s, m", [(600, 32), (130, 128), (2, 64), (3, 300)])
def test_kth_smallest_selects_what_topk_selects(s, m):
    from model.network import INSERTION_MAX_ROWS, INSERTION_MIN_WIDTH, _kth_smallest

    g = torch.Generator().manual_seed(m)
    d = torch.randint(0, 40, (s, m, m), generator=g).float()  # many ties
    d.diagonal(dim1=1, dim2=2).fill_(float("inf"))
    sym = torch.minimum(d, d.transpose(1, 2))
    for k in (1, 5):
        assert torch.equal(_kth_smallest(d, k), d.topk(k, dim=-1, largest=False).values[..., -1:])
        assert torch.equal(_kth_smallest(sym, k, symmetric=True), sym.topk(k, dim=-1, largest=False).values[..., -1:])
    insertion = m <= INSERTION_MAX_ROWS and s * m >= INSERTION_MIN_WIDTH  # both paths are covered
    assert insertion == ((s, m) in {(600, 32), (130, 128)})
