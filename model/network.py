"""The set network: row tokens over samples, a regularized copula anchor, kNN and copula statistics for the head,
and a monotone quantile head.

Invariances hold by construction:
- samples: the body is induced set attention (ISAB) with attention pooling; the statistics are symmetric sums;
  rows are put in the order of a hash of their own values (:func:`in_hash_order`) and cut into chunks, so the
  chunks are permutation-equivariant, not positional;
- coordinates within X (or Y): a row token is built from the mean over a side's coordinates of one shared cell
  embedding (DeepSets); the statistics are log-determinants and max-norm distances, both symmetric;
- monotone maps of a coordinate: the input is rank → Gaussian scores;
- swapping X and Y: both sides share every weight and every feature is symmetric in (X, Y).

Consistency in n (0.3): every input of the head reads every row, so none carries noise that stays fixed as n
grows. The copula and Hermite statistics use all rows; the kNN statistic is KSG averaged over all disjoint chunks
of 32, 128 and 512 rows among the first ``knn_max_rows`` in hash order (the trend across scales lets the head
extrapolate each estimator's bias); the body runs on disjoint chunks of ``body_rows`` rows and averages the pooled
features over the chunks, up to ``body_cells`` cells at inference (``train_chunks`` chunks in training, to keep a
step cheap).
The cost is linear in n · (dx + dy) for the statistics and bounded by ``body_cells`` for the body.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from model.preprocess import gaussian_scores, soft_gaussian_scores, sort_last

QUANTILE_GRID = (0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5,
                 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.975)  # fmt: skip

# The head's scalar inputs, in order; a network reads the first ``head_stats`` of them (fewer = an ablation).
# gc_shrunk is the anchor: the Gaussian-copula MI of a correlation matrix shrunk toward I by (dx + dy) / n, which
# stays finite and small when n is close to dx + dy. The Hermite pair flags non-Gaussian dependence; the kNN pair
# (KSG on the Gaussian scores, max-norm over the two sides) reads non-monotone dependence that no rank
# correlation sees.
BODY_PROBES = ((10, 1, 1), (64, 1, 1), (600, 2, 3), (3000, 1, 1), (100, 16, 16), (40, 64, 64))  # (n, dx, dy)
FOLD_TOLERANCE = 1e-5  # the shipped body's pooled output varies by 4e-7 over the probes; its scale is 0.045
KNN_SCALES = (32, 128, 512)  # rows per chunk of the multi-scale kNN statistic
STAT_NAMES = ("log_n", "log_min_dim", "log_max_dim", "dims_over_n", "log1p_gc_shrunk", "log1p_gc",
              "log1p_hermite", "hermite_excess", *(f"log1p_knn_{m}" for m in KNN_SCALES), "knn_minus_gc",
              "log1p_gc_256", "knn_spread")  # fmt: skip

Scale = Literal["nats", "log1p"]
SCALES: tuple[str, ...] = get_args(Scale)


@dataclass(frozen=True)
class NetworkConfig:
    width: int = 64
    heads: int = 4
    blocks: int = 2
    inducing: int = 16
    head_stats: int = len(STAT_NAMES)
    body_rows: int = 256  # rows per chunk of the attention body
    body_cells: int = 1 << 17  # at inference the body reads chunks while chunks · body_rows · (dx + dy) ≤ this
    train_chunks: int = 2  # body chunks read per task in training (their mean is unbiased for the all-chunk mean)
    knn_k: int = 5
    knn_max_rows: int = 8192  # rows the kNN statistics read (all rows up to this; the first in hash order above)
    # The scale the quantiles are produced (and trained) on: "log1p" models u = log(1 + MI), so small-MI errors are
    # not drowned by high-MI ones; quantiles commute with monotone maps, so the outputs stay MI quantiles in nats.
    scale: Scale = "log1p"
    quantiles: tuple[float, ...] = field(default=QUANTILE_GRID)

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, got {self.scale!r}")
        for name, lo, hi in (("width", 8, 512), ("heads", 1, 16), ("blocks", 1, 8), ("inducing", 1, 128),
                             ("head_stats", 1, len(STAT_NAMES)), ("body_rows", 16, 8192),
                             ("body_cells", 1024, 1 << 24), ("train_chunks", 1, 64), ("knn_k", 1, 32),
                             ("knn_max_rows", 512, 1 << 20)):  # fmt: skip
            if not lo <= getattr(self, name) <= hi:
                raise ValueError(f"{name} must lie in [{lo}, {hi}], got {getattr(self, name)}")
        if self.width % self.heads:
            raise ValueError(f"width ({self.width}) must be a multiple of heads ({self.heads})")
        if 0.5 not in self.quantiles or list(self.quantiles) != sorted(set(self.quantiles)):
            raise ValueError("quantiles must be increasing, distinct, and include 0.5 (the median)")
        if self.quantiles.index(0.5) != len(self.quantiles) // 2:
            raise ValueError("0.5 must be the middle level of quantiles (the head steps away from it both ways)")

    def to_dict(self) -> dict:
        return asdict(self)


class MAB(nn.Module):
    """Multi-head attention block (Lee et al. 2019): pre-norm attention of queries on keys, then an MLP."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm_q, self.norm_k, self.norm_out = nn.LayerNorm(width), nn.LayerNorm(width), nn.LayerNorm(width)
        self.q, self.kv, self.out = nn.Linear(width, width), nn.Linear(width, 2 * width), nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        return t.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # (S, heads, L, w / heads)

    def forward(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        k, v = self.kv(self.norm_k(kv)).chunk(2, dim=-1)
        att = F.scaled_dot_product_attention(self._split(self.q(self.norm_q(q))), self._split(k), self._split(v))
        h = q + self.out(att.transpose(1, 2).flatten(-2))
        return h + self.mlp(self.norm_out(h))


class ISAB(nn.Module):
    """Induced set attention over a set axis: O(n·m) instead of O(n²)."""

    def __init__(self, width: int, heads: int, inducing: int):
        super().__init__()
        self.points = nn.Parameter(torch.randn(1, inducing, width) / math.sqrt(width))
        self.summarize, self.broadcast = MAB(width, heads), MAB(width, heads)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (S, n, w)
        summary = self.summarize(self.points.expand(h.shape[0], -1, -1), h)
        return self.broadcast(h, summary)


# ---------------------------------------------------------------- statistics of the Gaussian scores


def in_hash_order(sx: torch.Tensor, sy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows sorted by a hash of each row's own values, symmetric in coordinates and sides: the order follows the
    rows under any permutation of samples, of coordinates, or of X with Y, so chunks of consecutive rows
    (:func:`chunks`) are permutation-equivariant, not positional."""
    z = torch.cat([sx, sy], dim=-1).double()
    # summed in fixed point: integer sums are exact, so the key is bit-identical under any order of coordinates or
    # sides (d · 2^bits < 2^62 cannot overflow)
    bits = 62 - z.shape[-1].bit_length()
    fixed = torch.sin(z * 12.9898 + 78.233).mul_(2.0**bits).round_().long().sum(-1)
    key = torch.frac(fixed.double() * (43758.5453 / 2.0**bits))
    b, n = key.shape
    rows = (key.argsort(dim=1, stable=True) + n * torch.arange(b, device=key.device)[:, None]).reshape(-1)
    return tuple(s.reshape(b * n, -1).index_select(0, rows).reshape(s.shape) for s in (sx, sy))  # 20× gather's speed


def chunks(
    sx: torch.Tensor, sy: torch.Tensor, rows: int, max_chunks: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Consecutive rows cut into disjoint chunks of ``rows``: ``(B, C, rows, d)`` per side with C = n // rows (at
    most ``max_chunks``; the remainder rows are left out). With n ≤ rows: one chunk of all n rows. Give rows in
    hash order (:func:`in_hash_order`) for exact invariances."""
    b, n = sx.shape[:2]
    if n <= rows:
        return sx[:, None], sy[:, None]
    c = n // rows if max_chunks is None else max(1, min(n // rows, max_chunks))
    return tuple(s[:, : c * rows].reshape(b, c, rows, s.shape[-1]) for s in (sx, sy))


def _correlation(z: torch.Tensor) -> torch.Tensor:
    """Correlations over the rows of ``(..., n, d)`` float64, in one pass (E[zzᵀ] − E[z]E[z]ᵀ: the callers' columns
    have means near 0, or near 1 against a second moment near 3, so nothing cancels; a centered copy of the
    rows cost as much as the product)."""
    mean = z.mean(-2)
    cov = z.transpose(-1, -2) @ z / z.shape[-2] - mean[..., :, None] * mean[..., None, :]
    std = cov.diagonal(dim1=-2, dim2=-1).clamp_min(1e-12).sqrt()
    return cov / (std[..., :, None] * std[..., None, :])


def _gaussian_mi_from_correlation(corr: torch.Tensor, dx: int, shrink: float = 0.0, ridge: float = 1e-6):
    eye = torch.eye(corr.shape[-1], dtype=corr.dtype, device=corr.device)
    corr = (1.0 - shrink) * corr + (shrink + ridge) * eye
    ld = torch.logdet(corr[..., :dx, :dx]) + torch.logdet(corr[..., dx:, dx:]) - torch.logdet(corr)
    return (0.5 * ld).clamp_min(0.0)


def copula_shrinkage(n: int, d: int) -> float:
    """Weight of I in the shrunk correlation: (dx + dy) / n, capped at 1 (then the anchor is 0)."""
    return min(1.0, d / n)


def gaussian_copula_mi(scores_x: torch.Tensor, scores_y: torch.Tensor, shrink: float = 0.0) -> torch.Tensor:
    """Batched Gaussian plug-in MI of Gaussian scores, optionally of the correlation shrunk toward I."""
    corr = _correlation(torch.cat([scores_x, scores_y], dim=-1).double())
    return _gaussian_mi_from_correlation(corr, scores_x.shape[-1], shrink).to(scores_x.dtype)


def hermite_excess(
    scores_x: torch.Tensor, scores_y: torch.Tensor, corr: torch.Tensor | None = None,
    joint: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Gaussian plug-in MI of the second Hermite features h₂(s) = (s² − 1)/√2, and its excess over what a
    Gaussian copula with the same correlations R implies (h₂ features then have correlations R ∘ R); ``corr``: R
    and ``joint``: the two sides' scores side by side (float64), when the caller has them."""
    z = torch.cat([scores_x, scores_y], dim=-1).double() if joint is None else joint
    dx = scores_x.shape[-1]
    shrink = copula_shrinkage(z.shape[-2], z.shape[-1])
    implied = _gaussian_mi_from_correlation((_correlation(z) if corr is None else corr).square(), dx, shrink)
    observed = _gaussian_mi_from_correlation(_correlation(z * z), dx, shrink)  # h₂ is an affine map of s²
    return observed.to(scores_x.dtype), (observed - implied).to(scores_x.dtype)


def _distances(a: torch.Tensor) -> torch.Tensor:
    """Euclidean distances within each of ``(S, m, d)``: ``(S, m, m)`` (exact differences for one coordinate)."""
    return (a - a.transpose(1, 2)).abs_() if a.shape[-1] == 1 else torch.cdist(a, a)


Sorted = tuple[torch.Tensor, torch.Tensor]  # one coordinate's values sorted along the last dim, and the argsort


def _in_rows_order(in_sorted_order: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Per-point values given in the sorted order that ``order`` (an argsort along the last dim) made, put back
    in the rows' own order."""
    return torch.empty_like(in_sorted_order).scatter_(-1, order, in_sorted_order)


def _closer_than(a: torch.Tensor, dist: torch.Tensor | None, eps: torch.Tensor, sort: Sorted | None = None):
    """Points strictly closer than ``eps`` ``(S, m, 1)`` to each point, itself included: for one coordinate by
    binary search in the sorted values (O(m log m); ``sort``: :func:`model.preprocess.sort_last` of them, when
    the caller has it), the points searched in sorted order (a third faster than in the rows' order), else by
    counting the row of ``dist``."""
    if a.shape[-1] != 1:
        return (dist < eps).sum(-1)
    srt, order = sort_last(a[..., 0]) if sort is None else sort
    e = eps[..., 0].gather(-1, order)
    inside = torch.searchsorted(srt, srt + e, right=False) - torch.searchsorted(srt, srt - e, right=True)
    return _in_rows_order(inside.clamp_min(1), order)  # rounding at the edges must not drop the point itself


INSERTION_MAX_ROWS = 128  # rows per matrix up to which many short rows take :func:`_kth_smallest`'s insertion net
INSERTION_MIN_WIDTH = 1 << 14  # ... when a piece holds at least this many rows in all (else per-call overhead wins)


def _kth_smallest(d: torch.Tensor, k: int, symmetric: bool = False) -> torch.Tensor:
    """The k-th smallest value of each row of ``(S, m, m)``: ``(S, m, 1)``. ``topk`` pays a per-row cost that
    dominates short rows, so many short rows instead run a sorted buffer of k values through the columns (an
    insertion network of elementwise min and max over all S·m rows at once: the same values, 2.5× faster on
    screening batches). ``symmetric``: each matrix is its own transpose (then no transposed copy is made)."""
    s, m, _ = d.shape
    if m > INSERTION_MAX_ROWS or s * m < INSERTION_MIN_WIDTH:
        return d.topk(k, dim=-1, largest=False).values[..., -1:]
    cols = d if symmetric else d.transpose(1, 2).contiguous()  # cols[:, c] is column c of every row
    buf = torch.full((k, s, m), float("inf"), dtype=d.dtype, device=d.device)  # sorted: buf[0] <= ... <= buf[k-1]
    tmp = torch.empty(k - 1, s, m, dtype=d.dtype, device=d.device)
    for c in range(m):
        _insert_sorted(buf, tmp, cols[:, c])
    return buf[-1][..., None]


def _insert_sorted(buf: torch.Tensor, tmp: torch.Tensor, v: torch.Tensor) -> None:
    """Insert ``v`` into the sorted buffer ``buf`` (k, ...) elementwise, keeping its k smallest (``tmp``: scratch
    of k − 1 levels)."""
    torch.maximum(buf[:-1], v, out=tmp)  # every level from the old buffer at once: v inserted in order
    torch.minimum(buf[1:], tmp, out=buf[1:])
    torch.minimum(buf[0], v, out=buf[0])


WINDOW_SCALE = 1.0  # places each side a one-coordinate kNN search reads first: ceil(WINDOW_SCALE · √(k·m))
FALLBACK_CELLS = 1 << 22  # distances per piece of the rows that search must finish over all points
WINDOW_CELLS = 1 << 22  # window buffer entries (k per row) per piece of one-coordinate chunks
WINDOW_MIN_ROWS = 1 << 12  # rows per piece below which the full matrix is cheaper (the window pays per offset,
# not per row: one chunk of 1 024 rows takes 3.2 ms there against 1.8 ms for the matrix)


def _window_places(m: int, k: int) -> int:
    """Places a one-coordinate window reads on each side of a point: ceil(WINDOW_SCALE · √(k·m)), at most m − 1."""
    return min(m - 1, math.ceil(WINDOW_SCALE * math.sqrt(k * m)))


def _window_pass(a: torch.Tensor, b: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k-th smallest max-norm distance from each point to the w nearest places on each side in a's order
    (``a`` ``(S, m)`` sorted, ``b`` in its order; an insertion net over the offsets), and where it is the k-th
    over all points: a point outside the window is at least the a-gap to the first place left out away."""
    s, m = a.shape
    w = _window_places(m, k)
    buf = torch.full((k, s, m), float("inf"), dtype=a.dtype, device=a.device)
    tmp = torch.empty(k - 1, s, m, dtype=a.dtype, device=a.device)
    for o in range(1, w + 1):
        d = torch.maximum(a[:, o:] - a[:, :-o], (b[:, o:] - b[:, :-o]).abs_())  # point i to i + o, both ways
        _insert_sorted(buf[:, :, : m - o], tmp[:, :, : m - o], d)
        _insert_sorted(buf[:, :, o:], tmp[:, :, o:], d)
    eps = buf[-1]
    gap = torch.full_like(eps, float("inf"))
    if w + 1 < m:
        left_out = a[:, w + 1 :] - a[:, : m - w - 1]
        gap[:, : m - w - 1] = left_out
        gap[:, w + 1 :] = torch.minimum(gap[:, w + 1 :], left_out)
    return eps, eps <= gap


def _window_kth(a: torch.Tensor, b: torch.Tensor, k: int) -> tuple[torch.Tensor, Sorted, Sorted]:
    """The k-th smallest max-norm distance from each point to the others, for one coordinate a side: ``a``, ``b``
    ``(S, m)`` in the rows' own order; ``(S, m)``, exactly what the full distance matrix gives, and each side's
    sort (:data:`Sorted`). Every point first reads a window in a's order (:func:`_window_pass`). That is too
    narrow for a point where a is dense and b sparse (3–12 % of rows on independent data, m = 32–512), and a window
    in b's order is then narrow enough, so those rows read one (:func:`_b_window`); the few left (0.05–0.6 %) are
    searched over all points."""
    srt_a, order_a = sort_last(a)
    srt_b, order_b = sort_last(b)
    eps, proven = _window_pass(srt_a, b.gather(1, order_a), k)
    eps, proven = _in_rows_order(eps, order_a), _in_rows_order(proven, order_a)
    si, ri = (~proven).nonzero(as_tuple=True)
    step = max(1, FALLBACK_CELLS // a.shape[1])  # points per step: at most FALLBACK_CELLS distances each
    rank_b = _in_rows_order(torch.arange(a.shape[1], device=a.device).expand_as(order_b).contiguous(), order_b)
    for start in range(0, len(si), step):
        rs, rr = si[start : start + step], ri[start : start + step]
        found, proven = _b_window(a, b, (srt_b, order_b), rank_b, rs, rr, k)
        eps[rs, rr] = found
        rs, rr = rs[~proven], rr[~proven]
        d = torch.maximum((a[rs] - a[rs, rr, None]).abs_(), (b[rs] - b[rs, rr, None]).abs_())  # over all points
        d[torch.arange(len(rr), device=a.device), rr] = float("inf")
        eps[rs, rr] = d.topk(k, dim=-1, largest=False).values[:, -1]
    return eps, (srt_a, order_a), (srt_b, order_b)


def _take(t: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
    """``t``'s entries at flat indices ``flat`` (any shape): 3× the speed of 2-D advanced indexing on CPU."""
    return t.reshape(-1).index_select(0, flat.reshape(-1)).reshape(flat.shape)


def _b_window(
    a: torch.Tensor, b: torch.Tensor, sort_b: Sorted, rank_b: torch.Tensor, si: torch.Tensor, ri: torch.Tensor,
    k: int,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """For the points ``(si, ri)`` of ``(S, m)`` ``a``, ``b`` (the rows' own order; ``sort_b``: b's sort, and
    ``rank_b`` each point's place in it): the k-th smallest max-norm distance to the w nearest places on each
    side in b's order, and where it is the k-th over all points (no larger than the b-gap to the first place left
    out)."""
    m = a.shape[1]
    w = _window_places(m, k)
    if 2 * w < k:  # fewer places than neighbours sought: nothing is proven
        nothing = torch.zeros_like(si, dtype=torch.bool)
        return torch.full(si.shape, float("inf"), dtype=a.dtype, device=a.device), nothing
    srt_b, order_b = sort_b
    base = si * m  # flat index of each point's chunk
    point = base + ri
    at = _take(rank_b, point)  # each point's place in b's order
    steps = torch.arange(-w, w + 1, device=a.device)
    places = at[:, None] + steps[steps != 0]  # (F, 2w)
    others = base[:, None] + _take(order_b, base[:, None] + places.clamp(0, m - 1))
    d = torch.maximum((_take(a, others) - _take(a, point)[:, None]).abs_(),
                      (_take(b, others) - _take(b, point)[:, None]).abs_())  # fmt: skip
    d.masked_fill_((places < 0) | (places >= m), float("inf"))
    found = d.topk(k, dim=-1, largest=False).values[:, -1]
    here = _take(srt_b, base + at)
    above, below = at + w + 1, at - w - 1
    gap_above = torch.where(above < m, _take(srt_b, base + above.clamp_max(m - 1)) - here, float("inf"))
    gap_below = torch.where(below >= 0, here - _take(srt_b, base + below.clamp_min(0)), float("inf"))
    gap = torch.minimum(gap_above, gap_below)
    return found, found <= gap


def _ksg(a: torch.Tensor, b: torch.Tensor, k: int) -> torch.Tensor:
    """KSG estimator 1 on ``(S, m, d)`` pairs, max-norm over the two sides (Euclidean inside each): ``(S,)``. One
    coordinate a side reads neighbours in sorted order (:func:`_window_kth`), not the m × m distances, once the
    piece holds ``WINDOW_MIN_ROWS`` rows in all (the same k-th distances either way)."""
    m, sort_a, sort_b = a.shape[1], None, None
    if a.shape[-1] == b.shape[-1] == 1 and a.shape[0] * m >= WINDOW_MIN_ROWS:
        eps, sort_a, sort_b = _window_kth(a[..., 0], b[..., 0], k)
        eps, da, db = eps[..., None], None, None
    else:
        da, db = _distances(a), _distances(b)
        joint = torch.maximum(da, db)  # symmetric, as both distances are
        joint.diagonal(dim1=1, dim2=2).fill_(float("inf"))
        eps = _kth_smallest(joint, k, symmetric=True)
    # Tied rows (duplicates after ranking) put the k-th neighbour at distance 0: a floor on the radius keeps the
    # point itself inside, so n_x, n_y ≥ 0 and ψ stays finite.
    eps = eps.clamp_min(1e-6)
    nx = (_closer_than(a, da, eps, sort_a) - 1).clamp_min(0)  # minus the point itself
    ny = (_closer_than(b, db, eps, sort_b) - 1).clamp_min(0)
    psi = torch.digamma((nx + 1).float()) + torch.digamma((ny + 1).float())
    return torch.digamma(torch.tensor(float(k))) + torch.digamma(torch.tensor(float(m))) - psi.mean(-1)


def knn_mi(
    scores_x: torch.Tensor, scores_y: torch.Tensor, k: int = 5, rows: int = 512, max_rows: int | None = None
) -> torch.Tensor:
    """KSG on the Gaussian scores, averaged over all disjoint chunks of ``rows`` rows (:func:`chunks`; at
    most ``max_rows`` rows in all), so its noise shrinks with n while its bias is that of ``rows`` rows. Batched,
    in pieces to bound memory."""
    cap = None if max_rows is None else max(1, max_rows // rows)
    cx, cy = chunks(scores_x.float(), scores_y.float(), rows, cap)
    b, c, m = cx.shape[:3]
    k = max(1, min(k, m - 1))
    flat_x, flat_y = cx.reshape(b * c, m, -1), cy.reshape(b * c, m, -1)
    # on CPU, pieces that stay in cache for topk, and wide enough for the insertion net (_kth_smallest); one
    # coordinate a side holds k·m numbers per chunk, not m²
    cells = 2**23 if scores_x.is_cuda else 2**21 if m <= INSERTION_MAX_ROWS else 2**19
    one_coordinate = flat_x.shape[-1] == flat_y.shape[-1] == 1
    per_piece = max(1, WINDOW_CELLS // (k * m) if one_coordinate else cells // (m * m))
    out = [_ksg(flat_x[s : s + per_piece], flat_y[s : s + per_piece], k) for s in range(0, b * c, per_piece)]
    return torch.cat(out).reshape(b, c).mean(1).clamp_min(0.0).to(scores_x.dtype)


def chunked_copula_mi(
    scores_x: torch.Tensor, scores_y: torch.Tensor, rows: int, max_rows: int | None = None
) -> torch.Tensor:
    """The shrunk Gaussian-copula MI averaged over disjoint chunks of ``rows`` rows (at most ``max_rows`` rows in
    all): its small-sample bias, read against the all-row value, tells the head how far the copula estimate still
    is from its limit."""
    cx, cy = chunks(scores_x, scores_y, rows, None if max_rows is None else max(1, max_rows // rows))
    m, d = cx.shape[2], cx.shape[-1] + cy.shape[-1]
    return gaussian_copula_mi(cx, cy, copula_shrinkage(m, d)).mean(1)


def sample_statistics(sx: torch.Tensor, sy: torch.Tensor, cfg: NetworkConfig) -> torch.Tensor:
    """All :data:`STAT_NAMES` for a batch of Gaussian scores, as ``(B, len(STAT_NAMES))`` float32."""
    n, dx, dy = sx.shape[1], sx.shape[2], sy.shape[2]
    with torch.autocast(sx.device.type, enabled=False):
        sx, sy = sx.float(), sy.float()
        joint = torch.cat([sx, sy], dim=-1).double()
        corr = _correlation(joint)  # one R for the copula and Hermite statistics
        gc = _gaussian_mi_from_correlation(corr, dx).float()
        gc_shrunk = _gaussian_mi_from_correlation(corr, dx, copula_shrinkage(n, dx + dy)).float()
        hermite, excess = hermite_excess(sx, sy, corr, joint)
        knn = torch.stack([knn_mi(sx, sy, cfg.knn_k, m, cfg.knn_max_rows) for m in KNN_SCALES], dim=-1)  # (B, scales)
        gc_256 = chunked_copula_mi(sx, sy, 256, cfg.knn_max_rows)
    const = lambda v: torch.full_like(gc, v)  # noqa: E731
    log_knn = torch.log1p(knn)
    stats = [const(math.log(n) / 5.0), const(math.log(min(dx, dy))), const(math.log(max(dx, dy))),
             const(min((dx + dy) / n, 4.0)), torch.log1p(gc_shrunk), torch.log1p(gc).clamp_max(5.0),
             torch.log1p(hermite).clamp_max(5.0), excess.clamp(-2.0, 5.0), *log_knn.unbind(-1),
             (knn[:, -1] - gc_shrunk).clamp(-5.0, 5.0), torch.log1p(gc_256),
             log_knn.std(-1) + (log_knn[:, -1] - torch.log1p(gc_shrunk)).abs()]  # fmt: skip
    return torch.stack(stats, dim=-1).float()


class MISTNetwork(nn.Module):
    """Reads ``(x: (B, n, dx), y: (B, n, dy))`` and returns non-crossing, non-negative MI quantiles ``(B, Q)``."""

    def __init__(self, cfg: NetworkConfig = NetworkConfig()):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.register_buffer("taus", torch.tensor(cfg.quantiles, dtype=torch.float32))
        self.cell = nn.Sequential(nn.Linear(3, w), nn.GELU(), nn.Linear(w, w), nn.GELU(), nn.Linear(w, w))
        self.side = nn.Sequential(nn.Linear(w, w), nn.GELU(), nn.Linear(w, w))
        self.pair = nn.Sequential(nn.Linear(w, w), nn.GELU(), nn.Linear(w, w))
        self.blocks = nn.ModuleList(ISAB(w, cfg.heads, cfg.inducing) for _ in range(cfg.blocks))
        self.pool = MAB(w, cfg.heads)
        self.pool_seed = nn.Parameter(torch.randn(1, 1, w) / math.sqrt(w))
        self.head = nn.Sequential(
            nn.Linear(w + cfg.head_stats, 2 * w), nn.GELU(), nn.Linear(2 * w, 2 * w), nn.GELU(),
            nn.Linear(2 * w, len(cfg.quantiles)),
        )  # fmt: skip
        self.constant_pool: torch.Tensor | None = None  # set by fold_constant_body: the body's output, if constant

    def forward(self, x: torch.Tensor, y: torch.Tensor, soft: bool = False) -> torch.Tensor:
        return self.forward_scores(*self.scores_and_statistics(x, y, soft))

    def scores_and_statistics(
        self, x: torch.Tensor, y: torch.Tensor, soft: bool = False,
        orders: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
        """The Gaussian scores of each side in hash order and the :data:`STAT_NAMES` statistics: what
        :meth:`forward_scores` reads. ``orders``: each side's argsort per coordinate ``(B, d, n)``, when the caller
        has them (:func:`model.preprocess.gaussian_scores`; not with ``soft``)."""
        with torch.autocast(x.device.type, enabled=False):  # ranks and log-dets need full precision
            if soft:
                rx, ry = soft_gaussian_scores(x.float()), soft_gaussian_scores(y.float())
            else:
                ox, oy = (None, None) if orders is None else orders
                rx, ry = gaussian_scores(x.float(), ox), gaussian_scores(y.float(), oy)
            sx, sy = in_hash_order(rx, ry)
            return sx, sy, sample_statistics(sx, sy, self.cfg)

    def _side_tokens(self, s: torch.Tensor) -> torch.Tensor:
        s = s.unsqueeze(-1)
        return self.cell(torch.cat([s, s * s - 1.0, s.abs()], dim=-1)).mean(2)  # (B, m, w): mean over coordinates

    def body_chunks(self, n: int, d: int) -> int:
        """Body chunks read for a sample of n rows and d = dx + dy dims: all of them up to ``body_cells`` cells at
        inference, ``train_chunks`` in training."""
        if self.training:
            return self.cfg.train_chunks
        return max(1, self.cfg.body_cells // (self.cfg.body_rows * d))

    def forward_scores(self, sx: torch.Tensor, sy: torch.Tensor, stats: torch.Tensor) -> torch.Tensor:
        if self.constant_pool is not None and not self.training:
            return self.head_quantiles(self.constant_pool.expand(len(stats), -1), stats)
        return self.head_quantiles(self._pooled_scores(sx, sy), stats)

    def _pooled_scores(self, sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
        d = sx.shape[-1] + sy.shape[-1]
        return self.pooled(*chunks(sx, sy, self.cfg.body_rows, self.body_chunks(sx.shape[1], d)))

    @torch.no_grad()
    def fold_constant_body(self, tolerance: float = FOLD_TOLERANCE) -> float:
        """If the body's pooled output is the same for every probe sample (:data:`BODY_PROBES`: shapes from
        10 rows to 64 + 64 dims, independent and strongly dependent, monotone and not) within ``tolerance``, store
        its mean and answer from it without running the body (a dead body costs a third of a forward pass and
        informs nothing). Returns the probes' largest deviation from their mean; inference only."""
        gen = torch.Generator().manual_seed(0)
        outs = []
        for n, dx, dy in BODY_PROBES:
            z = torch.randn(3, n, max(dx, dy), generator=gen)
            noise = torch.randn(3, n, dy, generator=gen)
            y = torch.stack([noise[0], 0.9 * z[1, :, :dy] + 0.44 * noise[1], torch.sin(3 * z[2, :, :dy])])
            outs.append(self._pooled_scores(*self.scores_and_statistics(z[:, :, :dx], y)[:2]))
        pooled = torch.cat(outs)
        spread = float((pooled - pooled.mean(0)).abs().max())
        self.constant_pool = pooled.mean(0, keepdim=True) if spread <= tolerance else None
        return spread

    def pooled(self, bx: torch.Tensor, by: torch.Tensor) -> torch.Tensor:
        """The body: chunks ``(B, C, m, d)`` per side → attention-pooled features averaged over the chunks,
        ``(B, width)`` (the mean over chunks: its noise shrinks with n)."""
        b, c, m = bx.shape[:3]
        px, py = self._side_tokens(bx.reshape(b * c, m, -1)), self._side_tokens(by.reshape(b * c, m, -1))
        tokens = self.side(px) + self.side(py) + self.pair(px * py)
        for block in self.blocks:
            tokens = block(tokens)
        pooled = self.pool(self.pool_seed.expand(tokens.shape[0], -1, -1), tokens).squeeze(1).float()
        return pooled.reshape(b, c, -1).mean(1)

    def head_quantiles(self, pooled: torch.Tensor, stats: torch.Tensor) -> torch.Tensor:
        """The quantile head on the pooled body features ``(B, width)`` and the statistics ``(B, S)``: MI
        quantiles in nats, ``(B, Q)``."""
        raw = self.head(torch.cat([pooled, stats[:, : self.cfg.head_stats]], dim=-1)).float()
        anchor = self.to_scale(torch.expm1(stats[:, STAT_NAMES.index("log1p_gc_shrunk")]))
        mid = self.cfg.quantiles.index(0.5)  # the middle level (checked by NetworkConfig)
        # Monotone by construction: the median is a softplus, other quantiles step away by softplus gaps;
        # the lower ones are clamped at 0 (the clamp keeps them ordered).
        median = F.softplus(raw[:, mid] + anchor, beta=4.0)
        up = median[:, None] + torch.cumsum(F.softplus(raw[:, mid + 1 :]), dim=1)
        down = median[:, None] - torch.cumsum(F.softplus(raw[:, :mid].flip(1)), dim=1)
        quantiles = torch.cat([down.flip(1).clamp_min(0.0), median[:, None], up], dim=1)
        return self.from_scale(quantiles)

    def to_scale(self, mi: torch.Tensor) -> torch.Tensor:
        """Map MI in nats to the scale the network's quantiles are trained on (see ``NetworkConfig.scale``)."""
        return torch.log1p(mi) if self.cfg.scale == "log1p" else mi

    def from_scale(self, u: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`to_scale`: back to nats."""
        return torch.expm1(u) if self.cfg.scale == "log1p" else u
