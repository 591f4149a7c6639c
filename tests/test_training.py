"""Training: loss goes down, resume, head-only fine-tuning, configs, evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from metadata_gen.batched import sample_task
from metadata_gen.config import load_config
from model.checkpoint import export_for_serving, load_checkpoint, network_from_checkpoint
from model.network import MISTNetwork, NetworkConfig
from model.training.evaluate import TEXTBOOK_GROUPS, TEXTBOOK_N
from model.training.train import (
    OptimSection,
    _bar_total,
    load_train_config,
    optimizer_groups,
    pinball_loss,
    train,
)
from tests.conftest import ROOT, paired_tensors


def _tiny_config(tmp_path: Path, steps: int):
    cfg = load_train_config(ROOT / "configs/train/tiny.toml")
    data = cfg.data.model_copy(update={"meta_config": str(ROOT / "configs/meta/default.toml")})
    return cfg.model_copy(
        update={
            "out_dir": str(tmp_path),
            "data": data,
            "optim": cfg.optim.model_copy(update={"steps": steps}),
            "checkpoint_every": 25,
            "log_every": 5,
        }
    )


@torch.no_grad()
def _mean_pinball(net: MISTNetwork, tasks: list) -> float:
    losses = []
    for t in tasks:
        pred = net(torch.from_numpy(t.x)[None], torch.from_numpy(t.y)[None])
        losses.append(pinball_loss(pred, torch.tensor([t.mi]), net.taus))
    return float(torch.stack(losses).mean())


@pytest.mark.slow
def test_training_lowers_loss_saves_resumes_and_loads(tmp_path: Path):
    cfg = _tiny_config(tmp_path, 50)
    torch.manual_seed(cfg.data.seed)  # the trainer seeds the same way, so this is its initial network
    initial = MISTNetwork(cfg.model).eval()
    meta = load_config(cfg.data.meta_config)
    held = [sample_task(meta, 10**9 + i) for i in range(48)]  # fixed unseen tasks, shapes as in training
    last = train(cfg, progress=False)
    ckpt = load_checkpoint(last)
    trained = network_from_checkpoint(ckpt)
    before, after = _mean_pinball(initial, held), _mean_pinball(trained, held)
    assert ckpt["step"] == 50 and after < 0.97 * before  # deterministic: fixed init, data and held-out tasks

    # resume continues from the saved step to the new total
    longer = cfg.model_copy(update={"optim": cfg.optim.model_copy(update={"steps": 60})})
    assert load_checkpoint(train(longer, resume=True, progress=False))["step"] == 60

    # fine-tuning with --init records what it started from
    short = cfg.optim.model_copy(update={"steps": 2})
    tuned = cfg.model_copy(update={"out_dir": str(tmp_path / "tuned"), "optim": short})
    start = load_checkpoint(last)
    lineage = load_checkpoint(train(tuned, init=str(last), progress=False))["init_from"]
    assert (lineage["version"], lineage["step"]) == (start["version"], 60)

    # exported checkpoint: no optimizer, identical outputs after load
    ckpt = load_checkpoint(last)
    export_for_serving(last, tmp_path / "ship.pt", evaluation={"note": "test"})
    shipped = load_checkpoint(tmp_path / "ship.pt")
    assert "optimizer" not in shipped and shipped["evaluation"] == {"note": "test"}
    x, y = paired_tensors()
    with torch.no_grad():
        assert torch.equal(network_from_checkpoint(ckpt)(x, y), network_from_checkpoint(shipped)(x, y))


def test_head_only_training_changes_the_head_and_nothing_else(tmp_path: Path):
    cfg = _tiny_config(tmp_path / "start", 3)
    start = load_checkpoint(train(cfg, progress=False))["model"]
    head_only = cfg.optim.model_copy(update={"trainable": "head"})
    tuned_cfg = cfg.model_copy(update={"out_dir": str(tmp_path / "head"), "optim": head_only})
    tuned = load_checkpoint(train(tuned_cfg, init=str(tmp_path / "start" / "last.pt"), progress=False))["model"]
    changed = {k for k in start if not torch.equal(start[k], tuned[k])}
    assert changed and all(k.startswith("head.") for k in changed)


def test_cached_head_reads_what_inference_reads_and_trains_only_the_head(tmp_path: Path):
    from model.training.cached_head import StatisticsCache, held_back, validation_loss
    from model.training.train import BatchStream

    cfg = _tiny_config(tmp_path / "start", 2)
    start_path = train(cfg, progress=False)
    data = cfg.data.model_copy(update={"cached_tasks": 40, "cache_batch": 16})
    optim = cfg.optim.model_copy(update={"trainable": "head", "steps": 40, "warmup": 2})
    cached = cfg.model_copy(update={"out_dir": str(tmp_path / "cached"), "data": data, "optim": optim})
    ckpt = load_checkpoint(train(cached, init=str(start_path), progress=False))
    start = load_checkpoint(start_path)["model"]
    changed = {k for k in start if not torch.equal(start[k], ckpt["model"][k])}
    assert changed and all(k.startswith("head.") for k in changed)
    cache = StatisticsCache.load(tmp_path / "cached" / "statistics.pt")
    assert len(cache) >= 40 and cache.batches == ckpt["history"][0]["generator_batches"]
    assert torch.allclose(cache.weight[: int(1 / cache.weight[0])].sum(), torch.tensor(1.0))  # a batch weighs 1

    # the cached features of the first batch are what the trained network reads from those tasks at inference
    batch = next(iter(BatchStream(load_config(data.meta_config), data)))
    net = network_from_checkpoint(ckpt)
    b = len(batch["mi"])
    with torch.no_grad():
        assert torch.allclose(net.head_quantiles(cache.pooled[:b], cache.stats[:b]), net(batch["x"], batch["y"]))
    assert torch.equal(cache.mi[:b], batch["mi"])

    # the chosen head is the best on the held-back tasks (whole batches), the start included
    held = held_back(cache, data.seed)
    assert held.any() and not held.all() and set(cache.batch[held].tolist()).isdisjoint(cache.batch[~held].tolist())
    losses = [h["validation_loss"] for h in ckpt["history"][1:]]
    chosen = validation_loss(net, cache, held)
    assert chosen == pytest.approx(min(losses), rel=1e-5)
    assert chosen <= validation_loss(network_from_checkpoint(load_checkpoint(start_path)), cache, held) + 1e-6

    # resume reuses the cache: no further generator batches when it is full
    again = load_checkpoint(train(cached, resume=True, init=str(start_path), progress=False))
    assert again["history"][0] == ckpt["history"][0]


def test_cached_tasks_need_a_frozen_body(tmp_path: Path):
    from metadata_gen.config import ConfigError

    bad = tmp_path / "bad.toml"
    bad.write_text("[data]\ncached_tasks = 10\n")
    with pytest.raises(ConfigError, match=r"cached_tasks needs optim\.trainable"):
        load_train_config(bad)


def test_checkpoint_load_refuses_code(tmp_path: Path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"format_version": 1, "payload": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(Exception, match=r"(?i)weights_only|unsupported|global"):
        load_checkpoint(tmp_path / "evil.pt")


@pytest.mark.slow
def test_evaluate_cli_writes_reports_and_ships_the_evaluation(tmp_path: Path, capsys):
    from mist.cli import main

    ship = tmp_path / "ship.pt"
    argv = ["evaluate", "--tasks-per-bucket", "1", "--check-tasks", "2", "--out", str(tmp_path), "--quiet",
            "--ship", str(ship)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "MAE KSG" in printed and "independent X, Y at n = 1000" in printed
    report = json.loads((tmp_path / "evaluation.json").read_text())
    assert [s["suite"] for s in report["suites"]] == ["held-in", "held-out", "textbook"]
    assert all(s["overall"]["tasks"] == 3 for s in report["suites"][:2])
    assert report["suites"][2]["overall"]["tasks"] == len(TEXTBOOK_GROUPS) * len(TEXTBOOK_N)
    assert report["quality_checks"]["high_mi_n5000"]["tasks"] == 2
    assert (tmp_path / "evaluation.md").is_file() and (tmp_path / "evaluation.png").is_file()
    shipped = load_checkpoint(ship)
    assert set(shipped["evaluation"]["suites"]) == {"held-in", "held-out", "textbook"}
    assert "optimizer" not in shipped


def test_train_config_errors_name_the_field(tmp_path: Path):
    from metadata_gen.config import ConfigError

    bad = tmp_path / "bad.toml"
    bad.write_text("[model]\nhead_stats = 99\n[optim]\nlr = -1\n")
    with pytest.raises(ConfigError, match=r"model: .*head_stats.*optim\.lr"):
        load_train_config(bad)
    bad.write_text('[model]\nscale = "log"\n')
    with pytest.raises(ConfigError, match=r"model\.scale"):
        load_train_config(bad)
    bad.write_text('[optim]\ntrainable = "body"\n')
    with pytest.raises(ConfigError, match=r"optim\.trainable"):
        load_train_config(bad)
    overridden = load_train_config(ROOT / "configs/train/tiny.toml", steps=7, out_dir=str(tmp_path))
    assert (overridden.optim.steps, overridden.out_dir) == (7, str(tmp_path))


TRAIN_CONFIGS = [*sorted((ROOT / "configs/train").glob("*.toml")), ROOT / "examples/lab_finetune.toml"]


@pytest.mark.parametrize("path", TRAIN_CONFIGS, ids=lambda p: p.name)
def test_every_training_config_in_the_repo_is_valid(path: Path):
    from metadata_gen.config import load_config

    cfg = load_train_config(path)
    assert cfg.optim.steps >= 1 and load_config(ROOT / cfg.data.meta_config).families.enabled()


def test_fine_tune_configs_match_the_shipped_network():
    """A config meant for --init checkpoints/mist-default.pt must build the shipped network's shape."""
    shipped = load_checkpoint(ROOT / "checkpoints/mist-default.pt")["network"]
    for path in (ROOT / "configs/train/head_refit.toml", ROOT / "examples/lab_finetune.toml"):
        model = load_train_config(path).model.to_dict()
        assert {k: v for k, v in model.items() if k in shipped} == {k: shipped[k] for k in model if k in shipped}


def test_evaluation_suites_draw_one_task_per_distribution():
    from model.training.evaluate import suite_tasks

    tasks = suite_tasks(load_config(ROOT / "configs/meta/default.toml"), 8)
    per = load_config(ROOT / "configs/meta/default.toml").tasks_per_distribution
    assert all(t.index % per == 0 for t in tasks) and len({t.index // per for t in tasks}) == len(tasks)


def test_weight_decay_spares_biases_norms_and_learned_point_sets():
    net = MISTNetwork(NetworkConfig(width=16, heads=2, blocks=1, inducing=4))
    decay, keep = optimizer_groups(net, list(net.parameters()), 1e-4)
    names = {id(p): n for n, p in net.named_parameters()}
    assert {id(p) for p in decay["params"]} | {id(p) for p in keep["params"]} == set(names)
    assert not {id(p) for p in decay["params"]} & {id(p) for p in keep["params"]}
    for p in decay["params"]:
        assert p.ndim >= 2 and not names[id(p)].endswith(("points", "pool_seed")), names[id(p)]
    kept = [names[id(p)] for p in keep["params"]]
    assert any(n.endswith("points") for n in kept) and any("norm" in n or n.endswith("bias") for n in kept)
    assert keep["weight_decay"] == 0.0 and decay["weight_decay"] == 1e-4


def test_progress_bar_total_follows_the_budget_that_stops_the_job():
    by_time = OptimSection(steps=100_000, max_minutes=12.0)
    assert _bar_total(100, 0, by_time, 60.0) == 100 + 100 * 11  # 100 steps a minute, 11 minutes left
    assert _bar_total(5100, 5000, by_time, 60.0) == 5100 + 1100  # a resumed run: the pace of this run only
    assert _bar_total(100, 0, OptimSection(steps=500), 60.0) == 500  # steps alone
    assert _bar_total(100, 0, OptimSection(steps=500, max_minutes=12.0), 60.0) == 500  # steps stop it first
