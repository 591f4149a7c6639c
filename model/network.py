"""The set network: row tokens over samples, a regularized copula anchor, kNN and copula statistics for the head,
and a monotone quantile head.

Invariances hold by construction:
- samples: the body is induced set attention (ISAB) with attention pooling; the statistics are symmetric sums;
  the row subsample (for n above ``body_rows`` or ``ksg_rows``) picks rows by a hash of their own values, so it is
  permutation-equivariant, not positional;
- coordinates within X (or Y): a row token is built from the mean over a side's coordinates of one shared cell
  embedding (DeepSets); the statistics are log-determinants and max-norm distances, both symmetric;
- monotone maps of a coordinate: the input is rank → Gaussian scores;
- swapping X and Y: both sides share every weight and every feature is symmetric in (X, Y).
The cost is linear in min(n, body_rows) · (dx + dy) for the body; the kNN statistic costs min(n, ksg_rows)².
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from model.preprocess import gaussian_scores, soft_gaussian_scores

QUANTILE_GRID = (0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5,
                 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.975)  # fmt: skip

# The head's scalar inputs, in order; a network reads the first ``head_stats`` of them (fewer = an ablation).
# gc_shrunk is the anchor: the Gaussian-copula MI of a correlation matrix shrunk toward I by (dx + dy) / n, which
# stays finite and small when n is close to dx + dy. The Hermite pair flags non-Gaussian dependence; the kNN pair
# (KSG on the Gaussian scores, max-norm over the two sides) reads non-monotone dependence that no rank
# correlation sees.
STAT_NAMES = ("log_n", "log_min_dim", "log_max_dim", "dims_over_n", "log1p_gc_shrunk", "log1p_gc",
              "log1p_hermite", "hermite_excess", "log1p_knn", "knn_minus_gc")  # fmt: skip

Scale = Literal["nats", "log1p"]
SCALES: tuple[str, ...] = get_args(Scale)


@dataclass(frozen=True)
class NetworkConfig:
    width: int = 64
    heads: int = 4
    blocks: int = 2
    inducing: int = 16
    head_stats: int = len(STAT_NAMES)
    body_rows: int = 512  # rows the attention body reads (a value-hashed subsample above this)
    knn_rows: int = 1024  # rows of the kNN statistic
    knn_k: int = 5
    # The scale the quantiles are produced (and trained) on: "log1p" models u = log(1 + MI), so small-MI errors are
    # not drowned by high-MI ones; quantiles commute with monotone maps, so the outputs stay MI quantiles in nats.
    scale: Scale = "log1p"
    quantiles: tuple[float, ...] = field(default=QUANTILE_GRID)

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, got {self.scale!r}")
        if not 1 <= self.head_stats <= len(STAT_NAMES):
            raise ValueError(f"head_stats must lie in [1, {len(STAT_NAMES)}], got {self.head_stats}")

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


def select_rows(sx: torch.Tensor, sy: torch.Tensor, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """At most ``rows`` rows, chosen by a hash of each row's own values (symmetric in coordinates and sides), so
    the choice follows the rows under any permutation of samples, of coordinates, or of X with Y."""
    if sx.shape[1] <= rows:
        return sx, sy
    z = torch.cat([sx, sy], dim=-1).double()
    # summed in sorted order, so the key is bit-identical under any order of coordinates or sides
    key = torch.frac(torch.sin(z * 12.9898 + 78.233).sort(dim=-1).values.sum(-1) * 43758.5453)
    idx = key.topk(rows, dim=1, largest=False).indices
    return (torch.gather(s, 1, idx[..., None].expand(-1, -1, s.shape[-1])) for s in (sx, sy))


def _correlation(z: torch.Tensor) -> torch.Tensor:
    z = z - z.mean(-2, keepdim=True)
    cov = z.transpose(-1, -2) @ z / z.shape[-2]
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


def hermite_excess(scores_x: torch.Tensor, scores_y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian plug-in MI of the second Hermite features h₂(s) = (s² − 1)/√2, and its excess over what a
    Gaussian copula with the same correlations R implies (h₂ features then have correlations R ∘ R)."""
    z = torch.cat([scores_x, scores_y], dim=-1).double()
    dx = scores_x.shape[-1]
    shrink = copula_shrinkage(z.shape[-2], z.shape[-1])
    implied = _gaussian_mi_from_correlation(_correlation(z).square(), dx, shrink)
    observed = _gaussian_mi_from_correlation(_correlation((z * z - 1.0) / math.sqrt(2.0)), dx, shrink)
    return observed.to(scores_x.dtype), (observed - implied).to(scores_x.dtype)


def knn_mi(scores_x: torch.Tensor, scores_y: torch.Tensor, k: int = 5, rows: int = 1024) -> torch.Tensor:
    """KSG estimator 1 on the Gaussian scores: ψ(k) + ψ(m) − ⟨ψ(n_x + 1) + ψ(n_y + 1)⟩, with Euclidean distance
    inside each side and the max over the two sides (so the joint ball is the product of the side balls), on at
    most ``rows`` rows (:func:`select_rows`). Batched, chunked to bound memory."""
    sx, sy = select_rows(scores_x.float(), scores_y.float(), rows)
    m = sx.shape[1]
    k = max(1, min(k, m - 1))
    per_chunk = max(1, 2**24 // (m * m))
    out = []
    for start in range(0, sx.shape[0], per_chunk):
        a, b = sx[start : start + per_chunk], sy[start : start + per_chunk]
        da, db = torch.cdist(a, a), torch.cdist(b, b)
        joint = torch.maximum(da, db)
        joint.diagonal(dim1=1, dim2=2).fill_(float("inf"))
        # Tied rows (duplicates after ranking) put the k-th neighbour at distance 0: a floor on the radius keeps the
        # point itself inside, so n_x, n_y ≥ 0 and ψ stays finite.
        eps = joint.topk(k, dim=-1, largest=False).values[..., -1:].clamp_min(1e-6)
        nx = ((da < eps).sum(-1) - 1).clamp_min(0)  # minus the point itself
        ny = ((db < eps).sum(-1) - 1).clamp_min(0)
        psi = torch.digamma((nx + 1).float()) + torch.digamma((ny + 1).float())
        out.append(torch.digamma(torch.tensor(float(k))) + torch.digamma(torch.tensor(float(m)))
                   - psi.mean(-1))  # fmt: skip
    return torch.cat(out).clamp_min(0.0).to(scores_x.dtype)


def sample_statistics(sx: torch.Tensor, sy: torch.Tensor, cfg: NetworkConfig) -> torch.Tensor:
    """All :data:`STAT_NAMES` for a batch of Gaussian scores, as ``(B, len(STAT_NAMES))`` float32."""
    n, dx, dy = sx.shape[1], sx.shape[2], sy.shape[2]
    with torch.autocast(sx.device.type, enabled=False):
        sx, sy = sx.float(), sy.float()
        gc = gaussian_copula_mi(sx, sy)
        gc_shrunk = gaussian_copula_mi(sx, sy, copula_shrinkage(n, dx + dy))
        hermite, excess = hermite_excess(sx, sy)
        knn = knn_mi(sx, sy, cfg.knn_k, cfg.knn_rows)
    const = lambda v: torch.full_like(gc, v)  # noqa: E731
    stats = [const(math.log(n) / 5.0), const(math.log(min(dx, dy))), const(math.log(max(dx, dy))),
             const(min((dx + dy) / n, 2.0)), torch.log1p(gc_shrunk), torch.log1p(gc), torch.log1p(hermite),
             excess.clamp(-2.0, 5.0), torch.log1p(knn), (knn - gc_shrunk).clamp(-5.0, 5.0)]  # fmt: skip
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

    def forward(self, x: torch.Tensor, y: torch.Tensor, soft: bool = False) -> torch.Tensor:
        rank = soft_gaussian_scores if soft else gaussian_scores
        with torch.autocast(x.device.type, enabled=False):  # ranks and log-dets need full precision
            sx, sy = rank(x.float()), rank(y.float())
            stats = sample_statistics(sx, sy, self.cfg)
        return self.forward_scores(sx, sy, stats)

    def _side_tokens(self, s: torch.Tensor) -> torch.Tensor:
        s = s.unsqueeze(-1)
        return self.cell(torch.cat([s, s * s - 1.0, s.abs()], dim=-1)).mean(2)  # (B, m, w): mean over coordinates

    def forward_scores(self, sx: torch.Tensor, sy: torch.Tensor, stats: torch.Tensor) -> torch.Tensor:
        bx, by = select_rows(sx, sy, self.cfg.body_rows)
        px, py = self._side_tokens(bx), self._side_tokens(by)
        tokens = self.side(px) + self.side(py) + self.pair(px * py)
        for block in self.blocks:
            tokens = block(tokens)
        pooled = self.pool(self.pool_seed.expand(tokens.shape[0], -1, -1), tokens).squeeze(1).float()
        raw = self.head(torch.cat([pooled, stats[:, : self.cfg.head_stats]], dim=-1)).float()
        anchor = self.to_scale(torch.expm1(stats[:, STAT_NAMES.index("log1p_gc_shrunk")]))
        mid = len(self.cfg.quantiles) // 2
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
