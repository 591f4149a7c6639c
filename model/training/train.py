"""Training: an explicit loop over bucketed batches drawn on the fly, pinball loss, resumable checkpoints.

Runs on one process, or under ``torchrun`` with DistributedDataParallel (gloo on CPU, NCCL on GPU): every
rank and every DataLoader worker draws its own disjoint task indices. Uses a GPU with bf16 autocast when
one is present.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.distributed as dist
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from metadata_gen.batched import BatchGenerator
from metadata_gen.config import ConfigError, MetaConfig, load_config, read_config_file
from metadata_gen.sampler import draw_shape
from metadata_gen.streams import TRAIN_SHAPE_OFFSET, task_rng
from model.assets import DEFAULT_META, resolve
from model.checkpoint import load_checkpoint, load_weights_widening_head, save_checkpoint
from model.network import MISTNetwork, NetworkConfig
from model.package_version import package_version


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSection(_Strict):
    meta_config: str = DEFAULT_META
    cells_per_batch: int = Field(65536, ge=256, description="batch size B is chosen so that B·n·(dx+dy) ≈ this")
    max_batch: int = Field(64, ge=1)
    workers: int = Field(1, ge=0)
    seed: int = Field(0, ge=0)
    cached_tasks: int = Field(
        0,
        ge=0,
        description="> 0: head-only training on the statistics of this many tasks, computed once "
        "(model.training.cached_head); needs optim.trainable = 'head'",
    )
    collect_minutes: float | None = Field(None, gt=0, description="wall-clock cap on collecting cached_tasks")
    cache_batch: int = Field(1024, ge=8, description="tasks per step when fitting the head on the cache")


Trainable = Literal["all", "head"]


class OptimSection(_Strict):
    steps: int = Field(1000, ge=1)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    warmup: int = Field(100, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    trainable: Trainable = Field("all", description='"head": train only the quantile head, the body stays frozen')
    max_minutes: float | None = Field(
        None, gt=0, description="wall-clock budget: stop when reached; the schedule follows max(step, time) progress"
    )


class TrainConfig(_Strict):
    name: str = "mist"
    out_dir: str = "runs/default"
    checkpoint_every: int = Field(500, ge=1)
    log_every: int = Field(25, ge=1)
    model: NetworkConfig = NetworkConfig()  # the network's own dataclass: one source of defaults and checks
    data: DataSection = DataSection()
    optim: OptimSection = OptimSection()

    @model_validator(mode="after")
    def _cache_needs_frozen_body(self) -> TrainConfig:
        if self.data.cached_tasks and self.optim.trainable != "head":
            raise ValueError("data.cached_tasks needs optim.trainable = 'head' (the cache holds frozen-body features)")
        return self


def load_train_config(path: str | Path, steps: int | None = None, out_dir: str | None = None) -> TrainConfig:
    """Read and validate a training config; ``steps`` and ``out_dir`` override the file's values (and are
    validated like them)."""
    data = read_config_file(resolve(path))
    if out_dir is not None:
        data["out_dir"] = out_dir
    if steps is not None:
        data["optim"] = {**data.get("optim", {}), "steps": steps}
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as err:
        fields = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise ConfigError(f"invalid training config {path}: {fields}") from None


def pinball_loss(
    pred: torch.Tensor, target: torch.Tensor, taus: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean quantile (pinball) loss of predictions ``(B, Q)`` for targets ``(B,)`` at levels ``taus``, optionally
    a ``weight (B,)``-weighted mean over the tasks."""
    diff = target[:, None] - pred
    per_task = torch.maximum(taus * diff, (taus - 1) * diff).mean(1)
    return per_task.mean() if weight is None else (per_task * weight).sum() / weight.sum()


class BatchStream(torch.utils.data.IterableDataset):
    """Endless batches of same-shape tasks: one (n, dx, dy) per batch, so nothing is padded.

    Batch ``j`` of stream ``s`` (a rank × worker pair) is deterministic; its tasks have indices
    ``(j * streams + s) * max_batch + k``, disjoint across streams.
    """

    def __init__(
        self, meta: MetaConfig, cfg: DataSection, rank: int = 0, world_size: int = 1, device: str | torch.device = "cpu"
    ):
        self.meta, self.cfg, self.rank, self.world_size = meta, cfg, rank, world_size
        self.device = device
        self.start_batch = 0

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = torch.utils.data.get_worker_info()
        workers, worker = (info.num_workers, info.id) if info else (1, 0)
        streams, stream = self.world_size * workers, self.rank * workers + worker
        j = self.start_batch // workers
        generator = BatchGenerator(self.meta, self.cfg.seed, self.device)
        while True:
            base = (j * streams + stream) * self.cfg.max_batch
            n, dx, dy = draw_shape(task_rng(self.cfg.seed + TRAIN_SHAPE_OFFSET, base), self.meta)
            size = int(np.clip(self.cfg.cells_per_batch // (n * (dx + dy)), 1, self.cfg.max_batch))
            batch = generator.generate(range(base, base + size), dims=(dx, dy), n=n)
            yield {"x": batch.x, "y": batch.y, "mi": batch.mi.float(), "index": torch.tensor(batch.indices)}
            j += 1


def _limit_worker_threads(_worker_id: int) -> None:
    """One BLAS/OpenMP thread per DataLoader worker: W workers × all-core BLAS pools oversubscribe the CPU."""
    torch.set_num_threads(1)
    threadpool_limits(1)


def _lr_at(step: int, cfg: OptimSection, elapsed_s: float = 0.0) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(cfg.steps - cfg.warmup, 1)
    if cfg.max_minutes:
        progress = max(progress, elapsed_s / (60 * cfg.max_minutes))
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def _out_of_time(started: float, cfg: OptimSection) -> bool:
    return cfg.max_minutes is not None and time.perf_counter() - started >= 60 * cfg.max_minutes


def trainable_parameters(net: MISTNetwork, trainable: Trainable) -> list[torch.nn.Parameter]:
    """The parameters to optimize; with ``"head"`` every other parameter is frozen (``requires_grad=False``), so
    the body builds no autograd graph and a step costs little more than a forward pass."""
    if trainable == "all":
        return list(net.parameters())
    net.requires_grad_(False)
    net.head.requires_grad_(True)
    return list(net.head.parameters())


def optimizer_groups(net: MISTNetwork, params: list[torch.nn.Parameter], weight_decay: float) -> list[dict]:
    """AdamW groups: weight matrices decay; biases, LayerNorm scales and the learned point sets (inducing points,
    the pooling seed) do not, since pulling those toward 0 is no prior anyone wants."""
    wanted = {id(p) for p in params}
    decay, keep = [], []
    for name, p in net.named_parameters():
        if id(p) in wanted:
            (decay if p.ndim >= 2 and not name.endswith(("points", "pool_seed")) else keep).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": keep, "weight_decay": 0.0}]


def _bar_total(step: int, first_step: int, cfg: OptimSection, elapsed_s: float) -> int:
    """The step at which the job will stop: ``steps``, or sooner when ``max_minutes`` runs out at the pace of this
    run so far (``first_step`` is where it started)."""
    done = step - first_step
    if not cfg.max_minutes or done == 0:
        return cfg.steps
    left_s = max(60 * cfg.max_minutes - elapsed_s, 0.0)
    return min(cfg.steps, step + int(left_s * done / max(elapsed_s, 1e-9)))


def _setup_distributed() -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


def train(cfg: TrainConfig, resume: bool = False, init: str | None = None, progress: bool = True) -> Path:
    """Train according to ``cfg``; returns the path of the final checkpoint (``out_dir/last.pt``)."""
    return fit(cfg, resume, init, progress)[1]


def fit(
    cfg: TrainConfig, resume: bool = False, init: str | None = None, progress: bool = True
) -> tuple[MISTNetwork, Path]:
    """:func:`train`, also returning this rank's trained network (under DDP, every rank has its own copy)."""
    rank, world, device = _setup_distributed()
    meta = load_config(resolve(cfg.data.meta_config))
    out = Path(cfg.out_dir)
    last = out / "last.pt"
    torch.manual_seed(cfg.data.seed)
    net = MISTNetwork(cfg.model).to(device)
    params = trainable_parameters(net, cfg.optim.trainable)
    opt = torch.optim.AdamW(optimizer_groups(net, params, cfg.optim.weight_decay), lr=cfg.optim.lr)
    step, history, init_from = 0, [], None
    if resume and last.exists():
        ckpt = load_checkpoint(last, device)
        net.load_state_dict(ckpt["model"])
        if len(ckpt["optimizer"]["param_groups"]) == len(opt.param_groups):
            opt.load_state_dict(ckpt["optimizer"])
        else:  # a run from before the decay groups: its moments do not map onto them
            print(f"resume: {last} has {len(ckpt['optimizer']['param_groups'])} optimizer groups; moments restart")
        step, history, init_from = ckpt["step"], list(ckpt.get("history", [])), ckpt.get("init_from")
    elif init:
        start = load_checkpoint(resolve(init), device)
        load_weights_widening_head(net, start["model"])
        init_from = lineage(start)
    if cfg.data.cached_tasks:
        return _fit_on_cache(net, cfg, meta, resume, init_from, device, progress)
    model = torch.nn.parallel.DistributedDataParallel(net) if world > 1 else net
    loader = _loader(meta, cfg.data, step, rank, world, device)
    use_amp = device.type == "cuda"
    bar = tqdm(total=cfg.optim.steps, initial=step, desc="train", disable=not progress or rank != 0)
    started, seen, window, waited, skipped, first_step = time.perf_counter(), 0, [], 0.0, 0, step
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    log = open(out / "metrics.jsonl", "a") if rank == 0 else None  # noqa: SIM115
    model.train()
    batches = iter(loader)
    while step < cfg.optim.steps and not _out_of_time(started, cfg.optim):
        wait_start = time.perf_counter()
        batch = next(batches)
        # Time the loop spent waiting for data: generation itself without workers, the queue with them.
        waited += time.perf_counter() - wait_start
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, cfg.optim, time.perf_counter() - started)
        x, y, mi = (batch[k].to(device, non_blocking=True) for k in ("x", "y", "mi"))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            pred = model(x, y)
        loss = pinball_loss(net.to_scale(pred.float()), net.to_scale(mi), net.taus)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
        if torch.isfinite(loss) and torch.isfinite(norm):
            opt.step()
        else:  # one bad batch must not poison the weights: skip it and count it
            skipped += 1
        step += 1
        seen += len(mi)
        if torch.isfinite(loss):
            window.append(loss.item())
        bar.update(1)
        if step % cfg.log_every == 0 or step == cfg.optim.steps:
            elapsed = time.perf_counter() - started
            rate = _all_ranks(seen, world, device) / elapsed  # ranks may draw batches of different sizes
            bar.total = _bar_total(step, first_step, cfg.optim, elapsed)
            bar.refresh()
            record = {"step": step, "loss": float(np.mean(window)), "lr": _lr_at(step, cfg.optim, elapsed),
                      "datasets_per_s": rate, "elapsed_s": elapsed, "data_wait_fraction": waited / elapsed,
                      "skipped_steps": skipped}  # fmt: skip
            window = []
            bar.set_postfix(loss=f"{record['loss']:.3f}", ds_s=f"{rate:.0f}", wait=f"{waited / elapsed:.0%}")
            if log:
                log.write(json.dumps(record) + "\n")
                log.flush()
                history.append(record)
        last_step = step == cfg.optim.steps or _out_of_time(started, cfg.optim)
        if rank == 0 and (step % cfg.checkpoint_every == 0 or last_step):
            _save(last, net, opt, step, cfg, meta, history, init_from)
    bar.close()
    if log:
        log.close()
    if world > 1:
        dist.barrier()
    return net, last


def _loader(
    meta: MetaConfig, cfg: DataSection, start_batch: int, rank: int, world: int, device: torch.device
) -> torch.utils.data.DataLoader:
    """Batches of :class:`BatchStream` from ``start_batch`` on. Without DataLoader workers the batches are generated
    on the training device itself (a GPU included)."""
    stream = BatchStream(meta, cfg, rank, world, device if cfg.workers == 0 else "cpu")
    stream.start_batch = start_batch
    return torch.utils.data.DataLoader(
        stream,
        batch_size=None,
        num_workers=cfg.workers,
        prefetch_factor=4 if cfg.workers else None,
        persistent_workers=False,
        worker_init_fn=_limit_worker_threads,
    )


def _fit_on_cache(
    net: MISTNetwork, cfg: TrainConfig, meta: MetaConfig, resume: bool, init_from, device, progress: bool
) -> tuple[MISTNetwork, Path]:
    """Head-only training on cached statistics (:mod:`model.training.cached_head`); ``resume`` continues an
    interrupted collection from ``out_dir/statistics.pt``. One process (not under DDP)."""
    from model.training.cached_head import StatisticsCache, collect, fit_head

    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "statistics.pt"
    cache = StatisticsCache.load(path) if resume and path.exists() else StatisticsCache.empty(net.cfg.width)
    loader = _loader(meta, cfg.data, cache.batches, 0, 1, device)
    collect(net, iter(loader), cache, cfg.data.cached_tasks, cfg.data.collect_minutes, path, progress)
    history, opt = fit_head(net, cache, cfg.optim, cfg.data.cache_batch, cfg.data.seed, progress)
    history = [{"cached_tasks": len(cache), "generator_batches": cache.batches}, *history]
    last = out / "last.pt"
    _save(last, net, opt, cfg.optim.steps, cfg, meta, history, init_from)
    return net, last


def _all_ranks(count: int, world: int, device: torch.device) -> int:
    if world == 1:
        return count
    total = torch.tensor([count], dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return int(total.item())


def lineage(ckpt: dict) -> dict:
    """What a fine-tuned checkpoint started from: that checkpoint's version, steps, configs and own lineage."""
    keys = ("version", "step", "train_config", "meta_config", "init_from")
    return {k: ckpt.get(k) for k in keys}


def _save(path: Path, net: MISTNetwork, opt, step: int, cfg: TrainConfig, meta: MetaConfig, history, init_from) -> None:
    save_checkpoint(
        path,
        {
            "init_from": init_from,
            "version": f"{cfg.name}-{package_version()}-step{step}",
            "model": {k: v.detach().cpu() for k, v in net.state_dict().items()},
            "optimizer": opt.state_dict(),
            "step": step,
            "network": net.cfg.to_dict(),
            "train_config": cfg.model_dump(mode="json"),
            "meta_config": meta.model_dump(mode="json"),
            "history": history,
            "evaluation": {},
        },
    )
