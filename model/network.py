"""The set network: one token per (sample, coordinate) cell, two-axis attention, monotone quantile head.

Invariances hold by construction:
- samples: attention over samples is induced set attention (ISAB) and pooling is attention pooling, both
  permutation-equivariant/invariant, and the per-column preprocessing uses average ranks;
- coordinates within X (or Y): cells carry no position; attention across a sample's cells is a set operation;
- monotone maps of a coordinate: the input is rank → Gaussian scores;
- swapping X and Y: X and Y cells go through the same weights, cells attend to "own side" and "other side"
  with shared modules, and every pooled feature is symmetric in (X, Y).
Memory and time are linear in n (ISAB with a fixed number of inducing points).
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


# The head's scalar inputs, in order; a network uses the first ``head_stats`` of them. The sixth and seventh
# tell it how far the Gaussian-copula anchor can be inflated by sampling noise (≈ dx·dy / 2n when X, Y are
# independent); the last two come from :func:`hermite_excess` and flag dependence a Gaussian copula cannot show.
STAT_NAMES = ("log_n", "log_min_dim", "log_max_dim", "log1p_gc", "gc", "log1p_dxdy_over_2n", "gc_deflated",
              "log1p_hermite_mi", "hermite_excess")  # fmt: skip


Scale = Literal["nats", "log1p"]
SCALES: tuple[str, ...] = get_args(Scale)


@dataclass(frozen=True)
class NetworkConfig:
    width: int = 32
    heads: int = 4
    blocks: int = 2
    inducing: int = 16
    head_stats: int = 9  # scalar statistics beside the pooled features (5 in checkpoints before 0.2)
    # The scale the quantiles are produced (and trained) on: "nats" models MI itself; "log1p" models
    # u = log(1 + MI), so a 0.1-nat error at MI 0.5 weighs as much as a 0.7-nat error at MI 6. Quantiles commute
    # with monotone maps, so either way the network returns quantiles of MI in nats. In our one comparison
    # (checkpoints/README.md, stage 5) log1p helped held-in accuracy and hurt held-out generalization.
    scale: Scale = "nats"
    quantiles: tuple[float, ...] = field(default=QUANTILE_GRID)

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, got {self.scale!r}")

    def to_dict(self) -> dict:
        return asdict(self)


class MAB(nn.Module):
    """Multi-head attention block (Lee et al. 2019): pre-norm attention of queries on keys, then an MLP.

    ``bias`` (broadcastable to (S, heads, q, k)) is added to the attention logits.
    """

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm_q, self.norm_k, self.norm_out = nn.LayerNorm(width), nn.LayerNorm(width), nn.LayerNorm(width)
        self.q, self.kv, self.out = nn.Linear(width, width), nn.Linear(width, 2 * width), nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        return t.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # (S, heads, L, w / heads)

    def forward(self, q: torch.Tensor, kv: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        k, v = self.kv(self.norm_k(kv)).chunk(2, dim=-1)
        att = F.scaled_dot_product_attention(self._split(self.q(self.norm_q(q))), self._split(k), self._split(v), bias)
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


class CellBlock(nn.Module):
    """Attention across all cells of a sample, then induced attention across samples for each coordinate.

    Row attention carries one learned logit bias per head for same-side pairs and one for cross-side pairs:
    coordinates stay anonymous (permutation invariance) and swapping X with Y changes nothing.
    """

    def __init__(self, cfg: NetworkConfig):
        super().__init__()
        self.row = MAB(cfg.width, cfg.heads)
        self.side_bias = nn.Parameter(torch.zeros(2, cfg.heads))
        self.column = ISAB(cfg.width, cfg.heads, cfg.inducing)

    def forward(self, h: torch.Tensor, dx: int) -> torch.Tensor:  # (B, n, d, w)
        bsz, n, d, w = h.shape
        side = torch.arange(d, device=h.device) < dx
        same = (side[:, None] == side[None, :]).long()  # (d, d): 1 same side, 0 cross
        bias = self.side_bias[1 - same].permute(2, 0, 1).unsqueeze(0).to(h.dtype)  # (1, heads, d, d)
        rows = h.reshape(bsz * n, d, w)
        h = self.row(rows, rows, bias).reshape(bsz, n, d, w)
        cols = h.transpose(1, 2).reshape(bsz * d, n, w)
        return self.column(cols).reshape(bsz, d, n, w).transpose(1, 2)


def _correlation(z: torch.Tensor) -> torch.Tensor:
    z = z - z.mean(-2, keepdim=True)
    cov = z.transpose(-1, -2) @ z / z.shape[-2]
    std = cov.diagonal(dim1=-2, dim2=-1).clamp_min(1e-12).sqrt()
    return cov / (std[..., :, None] * std[..., None, :])


def _gaussian_mi_from_correlation(corr: torch.Tensor, dx: int, ridge: float = 1e-3) -> torch.Tensor:
    corr = corr + ridge * torch.eye(corr.shape[-1], dtype=corr.dtype, device=corr.device)
    ld = torch.logdet(corr[..., :dx, :dx]) + torch.logdet(corr[..., dx:, dx:]) - torch.logdet(corr)
    return (0.5 * ld).clamp_min(0.0)


def gaussian_copula_mi(scores_x: torch.Tensor, scores_y: torch.Tensor, ridge: float = 1e-3) -> torch.Tensor:
    """Batched Gaussian plug-in MI of Gaussian scores: ½ (log det Cxx + log det Cyy − log det C)."""
    corr = _correlation(torch.cat([scores_x, scores_y], dim=-1).double())
    return _gaussian_mi_from_correlation(corr, scores_x.shape[-1], ridge).to(scores_x.dtype)


def hermite_excess(scores_x: torch.Tensor, scores_y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian plug-in MI of the second Hermite features h₂(s) = (s² − 1)/√2, and its excess over what a
    Gaussian copula with the same correlations R implies (h₂ features then have correlations R ∘ R).

    The excess is ≈ 0 for Gaussian copulas and grows with non-Gaussian dependence (tails, variance coupling)
    that the anchor cannot see.
    """
    z = torch.cat([scores_x, scores_y], dim=-1).double()
    dx = scores_x.shape[-1]
    implied = _gaussian_mi_from_correlation(_correlation(z).square(), dx)
    observed = _gaussian_mi_from_correlation(_correlation((z * z - 1.0) / math.sqrt(2.0)), dx)
    return observed.to(scores_x.dtype), (observed - implied).to(scores_x.dtype)


class MISTNetwork(nn.Module):
    """Reads ``(x: (B, n, dx), y: (B, n, dy))`` and returns non-crossing, non-negative MI quantiles ``(B, Q)``."""

    def __init__(self, cfg: NetworkConfig = NetworkConfig()):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.register_buffer("taus", torch.tensor(cfg.quantiles, dtype=torch.float32))
        self.embed = nn.Sequential(nn.Linear(3, w), nn.GELU(), nn.Linear(w, w))
        self.blocks = nn.ModuleList(CellBlock(cfg) for _ in range(cfg.blocks))
        self.sample_sum = nn.Sequential(nn.Linear(w, w), nn.GELU(), nn.Linear(w, w))
        self.sample_prod = nn.Sequential(nn.Linear(w, w), nn.GELU(), nn.Linear(w, w))
        self.samples = ISAB(w, cfg.heads, cfg.inducing)
        self.pool = MAB(w, cfg.heads)
        self.pool_seed = nn.Parameter(torch.randn(1, 1, w) / math.sqrt(w))
        if not 1 <= cfg.head_stats <= len(STAT_NAMES):
            raise ValueError(f"head_stats must lie in [1, {len(STAT_NAMES)}], got {cfg.head_stats}")
        self.head = nn.Sequential(nn.Linear(w + cfg.head_stats, 2 * w), nn.GELU(), nn.Linear(2 * w, len(cfg.quantiles)))

    def _embed(self, s: torch.Tensor) -> torch.Tensor:
        s = s.unsqueeze(-1)
        return self.embed(torch.cat([s, s * s - 1.0, s.abs()], dim=-1))

    def forward(self, x: torch.Tensor, y: torch.Tensor, soft: bool = False) -> torch.Tensor:
        rank = soft_gaussian_scores if soft else gaussian_scores
        with torch.autocast(x.device.type, enabled=False):  # ranks and log-dets need full precision
            sx, sy = rank(x.float()), rank(y.float())
            gc = gaussian_copula_mi(sx, sy)
        return self.forward_scores(sx, sy, gc)

    def _head_stats(self, sx: torch.Tensor, sy: torch.Tensor, gc: torch.Tensor) -> torch.Tensor:
        """The first ``cfg.head_stats`` scalar statistics of :data:`STAT_NAMES`, as ``(B, head_stats)``."""
        n, dx, dy = sx.shape[1], sx.shape[2], sy.shape[2]
        overfit = dx * dy / (2.0 * n)  # first-order bias of the Gaussian plug-in MI under independence
        stats = [
            torch.full_like(gc, math.log(n) / 5.0),
            torch.full_like(gc, math.log(min(dx, dy))),
            torch.full_like(gc, math.log(max(dx, dy))),
            torch.log1p(gc),
            gc / 5.0,
            torch.full_like(gc, math.log1p(overfit)),
            gc / (1.0 + overfit),
        ]
        if self.cfg.head_stats > len(stats):
            with torch.autocast(sx.device.type, enabled=False):
                hermite, excess = hermite_excess(sx.float(), sy.float())
            stats += [torch.log1p(hermite), excess / (1.0 + overfit)]
        return torch.stack(stats[: self.cfg.head_stats], dim=-1)

    def forward_scores(self, sx: torch.Tensor, sy: torch.Tensor, gc: torch.Tensor) -> torch.Tensor:
        dx = sx.shape[2]
        h = self._embed(torch.cat([sx, sy], dim=2))
        for block in self.blocks:
            h = block(h, dx)
        px, py = h[:, :, :dx].mean(2), h[:, :, dx:].mean(2)  # (B, n, w) per side
        tokens = self.sample_sum(px) + self.sample_sum(py) + self.sample_prod(px * py)
        tokens = self.samples(tokens)
        pooled = self.pool(self.pool_seed.expand(tokens.shape[0], -1, -1), tokens).squeeze(1).float()
        stats = self._head_stats(sx, sy, gc)
        raw = self.head(torch.cat([pooled, stats], dim=-1)).float()
        anchor = self.to_scale(gc)
        mid = len(self.cfg.quantiles) // 2
        # Monotone by construction: the median is a softplus, other quantiles step away by softplus gaps;
        # the lower ones are clamped at 0 (the clamp keeps them ordered).
        median = F.softplus(raw[:, mid] + anchor)
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
