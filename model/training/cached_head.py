"""Head-only training on cached statistics.

With the body frozen, a task reaches the quantile head only through its pooled body features and its
:data:`~model.network.STAT_NAMES` statistics, both fixed once the task is drawn. So they are computed once per task,
exactly as inference computes them (eval mode: every body chunk up to ``body_cells``, or the folded constant), and
the head is then fitted for many passes over them: a step costs microseconds instead of a generation and a forward
pass, and the head sees each of tens of thousands of tasks many times instead of once.

Each task is weighted by 1 / (its batch's size), as in :func:`model.training.train.fit`, where every batch (one
shape) weighs the same in the loss; a held-back share of the batches picks the best head by its loss.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from model.network import STAT_NAMES, MISTNetwork

VALIDATION_SHARE = 0.05  # tasks held back to choose the best head (by weighted pinball loss)


@dataclass
class StatisticsCache:
    """What the head reads, per task: ``pooled (N, width)``, ``stats (N, S)``; the truth ``mi (N,)``, the task's
    ``weight (N,)``, ``rows (N,)`` (its n) and ``batch (N,)`` (which generator batch it came from), and ``batches``:
    how many generator batches were read (to resume)."""

    pooled: torch.Tensor
    stats: torch.Tensor
    mi: torch.Tensor
    weight: torch.Tensor
    rows: torch.Tensor
    batch: torch.Tensor
    batches: int

    def __len__(self) -> int:
        return len(self.mi)

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        torch.save(self.__dict__, tmp)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> StatisticsCache:
        return cls(**torch.load(path, weights_only=True))

    @classmethod
    def empty(cls, width: int) -> StatisticsCache:
        zeros = torch.zeros
        long = torch.long
        return cls(zeros(0, width), zeros(0, len(STAT_NAMES)), zeros(0), zeros(0), zeros(0, dtype=long),
                   zeros(0, dtype=long), 0)  # fmt: skip

    def extend(self, parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]]) -> None:
        """Append batches of ``(pooled, stats, mi, n)`` (one concatenation for many batches)."""
        if not parts:
            return
        pooled, stats, mi, rows = zip(*parts, strict=True)
        sizes = [len(m) for m in mi]
        self.pooled, self.stats = torch.cat([self.pooled, *pooled]), torch.cat([self.stats, *stats])
        self.mi = torch.cat([self.mi, *(m.float() for m in mi)])
        self.weight = torch.cat([self.weight, *(torch.full((b,), 1.0 / b) for b in sizes)])
        full = lambda b, v: torch.full((b,), v, dtype=torch.long)  # noqa: E731
        self.rows = torch.cat([self.rows, *(full(b, r) for b, r in zip(sizes, rows, strict=True))])
        self.batch = torch.cat([self.batch, *(full(b, self.batches + i) for i, b in enumerate(sizes))])
        self.batches += len(parts)


@torch.no_grad()
def collect(
    net: MISTNetwork, batches: Iterator[dict], cache: StatisticsCache, tasks: int, minutes: float | None,
    save_to: Path | None = None, progress: bool = True,
) -> StatisticsCache:  # fmt: skip
    """Add tasks from ``batches`` to ``cache`` until it holds ``tasks`` or ``minutes`` have passed, saving it to
    ``save_to`` every minute (a stopped run resumes from there)."""
    net.eval()
    net.fold_constant_body()  # a dead body answers its constant, as the estimator does
    started = saved = time.perf_counter()
    bar = tqdm(total=tasks, initial=len(cache), desc="statistics", disable=not progress)
    parts, pending = [], 0
    while len(cache) + pending < tasks and (minutes is None or time.perf_counter() - started < 60 * minutes):
        batch = next(batches)
        sx, sy, stats = net.scores_and_statistics(batch["x"], batch["y"])
        pooled = net.constant_pool if net.constant_pool is not None else net._pooled_scores(sx, sy)
        parts.append((pooled.expand(len(stats), -1).float(), stats, batch["mi"], batch["x"].shape[1]))
        pending += len(stats)
        bar.update(len(stats))
        if time.perf_counter() - saved > 60:
            cache.extend(parts)
            parts, pending = [], 0
            if save_to is not None:
                cache.save(save_to)
            saved = time.perf_counter()
    bar.close()
    cache.extend(parts)
    if save_to is not None:
        cache.save(save_to)
    return cache


def held_back(cache: StatisticsCache, seed: int) -> torch.Tensor:
    """The tasks held back to choose the head: :data:`VALIDATION_SHARE` of the generator batches (whole batches,
    since a batch's tasks share a shape and may share a distribution), as a boolean mask."""
    gen = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(cache.batches, generator=gen)[: max(1, int(VALIDATION_SHARE * cache.batches))]
    return torch.isin(cache.batch, chosen)


def validation_loss(net: MISTNetwork, cache: StatisticsCache, held: torch.Tensor) -> float:
    """The weighted pinball loss of ``net``'s head on the held-back tasks (a mask)."""
    with torch.no_grad():
        return float(_loss(net, cache, held.nonzero()[:, 0], weighted=True))


def _loss(net: MISTNetwork, cache: StatisticsCache, idx: torch.Tensor, weighted: bool) -> torch.Tensor:
    from model.training.train import pinball_loss

    pred = net.head_quantiles(cache.pooled[idx], cache.stats[idx])
    weight = cache.weight[idx] if weighted else None
    return pinball_loss(net.to_scale(pred), net.to_scale(cache.mi[idx]), net.taus, weight)


def fit_head(
    net: MISTNetwork, cache: StatisticsCache, optim, batch_size: int, seed: int, progress: bool = True
) -> tuple[list[dict], torch.optim.Optimizer]:
    """Fit ``net.head`` to the cache: AdamW on minibatches drawn with probability ∝ weight, the schedule of
    :func:`model.training.train._lr_at`, and at the end the head with the lowest validation loss (the start
    included; :func:`held_back`). Returns the history (the start, then one record per validation) and the
    optimizer."""
    from model.training.train import _lr_at, optimizer_groups, trainable_parameters

    held = held_back(cache, seed)
    fit_idx = (~held).nonzero()[:, 0]
    gen = torch.Generator().manual_seed(seed + 1)
    params = trainable_parameters(net, "head")
    opt = torch.optim.AdamW(optimizer_groups(net, params, optim.weight_decay), lr=optim.lr)
    best = validation_loss(net, cache, held)
    best_state = {k: v.clone() for k, v in net.head.state_dict().items()}
    history = [{"step": 0, "validation_loss": best}]
    every = max(1, optim.steps // 50)
    net.head.train()
    for step in tqdm(range(optim.steps), desc="head", disable=not progress):
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, optim)
        # minibatches are drawn ∝ weight, so their loss is unweighted
        idx = fit_idx[torch.multinomial(cache.weight[fit_idx], batch_size, replacement=True, generator=gen)]
        loss = _loss(net, cache, idx, weighted=False)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, optim.grad_clip)
        opt.step()
        if (step + 1) % every == 0 or step + 1 == optim.steps:
            val = validation_loss(net, cache, held)
            history.append({"step": step + 1, "loss": loss.item(), "validation_loss": val})
            if val < best:
                best, best_state = val, {k: v.clone() for k, v in net.head.state_dict().items()}
    net.head.load_state_dict(best_state)
    net.eval()
    return history, opt
