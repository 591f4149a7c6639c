"""Network invariances, shapes and limits, quantile shape, gradient path, baselines, training and checkpoints."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from metadata_gen.batched import sample_task
from metadata_gen.config import load_config
from model import baselines
from model.checkpoint import export_for_serving, load_checkpoint, network_from_checkpoint
from model.estimator import Estimator
from model.network import MISTNetwork, NetworkConfig, copula_shrinkage, gaussian_copula_mi
from model.preprocess import gaussian_scores, soft_gaussian_scores
from model.training.evaluate import TEXTBOOK_GROUPS, TEXTBOOK_N
from model.training.train import load_train_config, pinball_loss, train
from model.validation import InputError
from tests.conftest import ROOT

TOL = 1e-4


@pytest.fixture(scope="module", params=["nats", "log1p"])
def net(request) -> MISTNetwork:
    torch.manual_seed(0)
    # Few body and kNN rows, so that the tests also run the value-hashed row subsample (n above them).
    cfg = NetworkConfig(width=16, heads=2, blocks=1, inducing=4, body_rows=40, knn_max_rows=512, scale=request.param)
    return MISTNetwork(cfg).eval()


def _xy(n=64, dx=3, dy=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, n, dx, generator=g)
    y = x[..., :1].repeat(1, 1, dy) * 0.7 + torch.randn(2, n, dy, generator=g)
    return x, y


@torch.no_grad()
@pytest.mark.parametrize("n", [30, 120])
def test_invariances(net, n):
    x, y = _xy(n)
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
    x, y = _xy(n, dx, dy)
    q = net(x, y)
    assert q.shape == (2, len(net.cfg.quantiles))
    assert torch.isfinite(q).all() and (q >= 0).all() and (q.diff(dim=1) >= 0).all()


def test_ties_and_constant_columns_are_defined():
    z = torch.tensor([[[1.0, 5.0], [1.0, 5.0], [2.0, 5.0], [0.0, 5.0]]])
    s = gaussian_scores(z)
    assert s[0, 0, 0] == s[0, 1, 0]  # ties share a score
    assert torch.all(s[..., 1] == 0)  # a constant column carries nothing


def test_soft_path_has_finite_gradients_and_approximates_ranks(net):
    x, y = _xy(n=50)
    x.requires_grad_(True)
    y.requires_grad_(True)
    net(x, y, soft=True)[:, 10].sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0 and torch.isfinite(y.grad).all()
    hard, soft = gaussian_scores(x.detach()), soft_gaussian_scores(x.detach(), temperature=0.01)
    assert (hard - soft).abs().mean() < 0.05


def test_baselines_on_gaussian_with_known_mi():
    rng = np.random.default_rng(0)
    rho = 0.8
    x = rng.standard_normal((4000, 1))
    y = rho * x + np.sqrt(1 - rho**2) * rng.standard_normal((4000, 1))
    truth = -0.5 * np.log(1 - rho**2)
    assert baselines.gaussian(x, y) == pytest.approx(truth, abs=0.03)
    assert baselines.gaussian_copula(np.exp(x), y**3) == pytest.approx(truth, abs=0.04)
    assert baselines.ksg(x, y) == pytest.approx(truth, abs=0.05)
    ind = rng.standard_normal((4000, 2))
    assert baselines.ksg(ind[:, :1], ind[:, 1:]) < 0.03


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
    x, y = _xy()
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


def test_checkpoint_load_refuses_code(tmp_path: Path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"format_version": 1, "payload": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(Exception, match=r"(?i)weights_only|unsupported|global"):
        load_checkpoint(tmp_path / "evil.pt")


@pytest.fixture(scope="module")
def shipped() -> Estimator:
    return Estimator.load()


def test_shipped_checkpoint_gives_sane_estimate(shipped):
    rng = np.random.default_rng(1)
    rho = 0.7
    x = rng.standard_normal((1000, 2))
    y = rho * x + np.sqrt(1 - rho**2) * rng.standard_normal((1000, 2))
    truth = -np.log(1 - rho**2)  # two independent pairs
    est = shipped.estimate(x, y)
    lo, hi = est.interval_90
    assert lo <= truth <= hi
    assert est.n == 1000 and est.dx == 2 and est.dy == 2 and est.version
    assert shipped.estimate(x, y, method="ksg").median == pytest.approx(truth, abs=0.15)


@pytest.mark.parametrize(
    ("x", "y", "kwargs", "field"),
    [
        (np.zeros((20, 2)), np.zeros((21, 1)), {}, "y"),
        (np.zeros((5, 1)), np.zeros((5, 1)), {}, "x"),
        (np.full((20, 1), np.nan), np.zeros((20, 1)), {}, "x"),
        (np.zeros((20, 70)), np.zeros((20, 1)), {}, "x"),
        ([[1, 2], [3]], np.zeros((2, 1)), {}, "x"),
        (np.zeros((20, 1)), np.zeros((20, 1)), {"quantiles": [1.5]}, "quantiles"),
        (np.zeros((20, 1)), np.zeros((20, 1)), {"method": "magic"}, "method"),
        (np.zeros((20, 1)), np.zeros((20, 1)), {"method": "ksg", "quantiles": [0.5]}, "quantiles"),
        (
            np.zeros((20, 1)),
            np.zeros((20, 1)),
            {"quantiles": [0.5] + [0.03 + i / 200 for i in range(100)]},
            "quantiles",
        ),
        (np.zeros((0, 1)), np.zeros((0, 1)), {}, "x"),
    ],
)
def test_bad_input_names_the_field(shipped, x, y, kwargs, field):
    with pytest.raises(InputError) as info:
        shipped.estimate(x, y, **kwargs)
    assert info.value.field == field
    copy = pickle.loads(pickle.dumps(info.value))  # crosses the server's parsing processes intact
    assert (copy.field, copy.message, str(copy)) == (field, info.value.message, str(info.value))


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


def test_widening_the_head_preserves_outputs():
    from model.checkpoint import load_weights_widening_head

    torch.manual_seed(0)
    narrow = MISTNetwork(NetworkConfig(width=16, heads=2, blocks=1, inducing=4, head_stats=5)).eval()
    wide = MISTNetwork(NetworkConfig(width=16, heads=2, blocks=1, inducing=4, head_stats=7)).eval()
    load_weights_widening_head(wide, narrow.state_dict())
    x, y = _xy()
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


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["train", "--config", "configs/train/tiny.toml", "--steps", "0"], "optim.steps"),
        (["evaluate", "--tasks-per-bucket", "0"], "--tasks-per-bucket"),
        (["evaluate", "--check-tasks", "-1"], "--check-tasks"),
    ],
)
def test_cli_bad_flags_name_the_flag(argv, named, capsys, monkeypatch):
    from mist.cli import main

    monkeypatch.chdir(ROOT)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and named in err and "Traceback" not in err


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


def test_anchor_stays_honest_when_n_is_close_to_the_dimension():
    """n = 35, dx = dy = 31, independent: the raw copula plug-in explodes, the shrunk anchor does not."""
    torch.manual_seed(0)
    sx, sy = gaussian_scores(torch.randn(1, 35, 31)), gaussian_scores(torch.randn(1, 35, 31))
    assert gaussian_copula_mi(sx, sy) > 5.0
    assert gaussian_copula_mi(sx, sy, copula_shrinkage(35, 62)) == 0.0


def test_constant_side_gives_exactly_zero(shipped):
    rng = np.random.default_rng(0)
    y = rng.standard_normal((200, 2))
    for x in (np.full((200, 1), 3.0), np.ones((200, 3))):
        est = shipped.estimate(x, y)
        assert est.median == 0.0 and est.interval_90 == (0.0, 0.0)
    x = np.hstack([y[:, :1] + 0.1 * rng.standard_normal((200, 1)), np.ones((200, 1))])
    with_constant, without = shipped.estimate(x, y), shipped.estimate(x[:, :1], y)
    assert with_constant.median == pytest.approx(without.median)  # a constant column is dropped, not read


def test_shipped_checkpoint_is_honest_when_n_is_close_to_the_dimension(shipped):
    """Every API shape is answered; with few samples for many dims the interval is wide and holds the truth 0."""
    rng = np.random.default_rng(3)
    for n, d in ((10, 1), (40, 16), (30, 16), (10, 64), (129, 64)):
        est = shipped.estimate(rng.standard_normal((n, d)), rng.standard_normal((n, d)))
        assert est.interval_90[0] == 0.0, (n, d, est.interval_90)
        assert np.isfinite(est.median) and est.interval_90[1] >= est.median >= 0.0
    with pytest.raises(InputError, match="at most 64") as info:
        shipped.estimate(rng.standard_normal((1000, 65)), rng.standard_normal((1000, 2)))
    assert info.value.field == "x"


def test_serving_imports_no_training_or_generation_module():
    import subprocess
    import sys

    code = ("import sys, server.main; print(sorted({m.split('.')[0] + ('.training' if '.training' in m else '')"
            " for m in sys.modules}))")  # fmt: skip
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    # (tqdm is not checked here: torch itself imports it when installed; lint-imports checks our own imports)
    for name in ("metadata_gen", "model.training", "normflows", "matplotlib"):
        assert f"'{name}'" not in loaded, name


def test_cli_estimate_reads_the_service_npz_csv_with_header_and_names_bad_files(tmp_path: Path, capsys):
    from mist.cli import main

    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 2))
    y = x + rng.standard_normal((300, 2))
    np.savez(tmp_path / "xy.npz", x=x, y=y)
    assert main(["estimate", str(tmp_path / "xy.npz"), "--method", "gaussian", "--json"]) == 0
    from_npz = json.loads(capsys.readouterr().out)["median"]
    np.savetxt(tmp_path / "x.csv", x, delimiter=",", header="a,b", comments="")
    np.savetxt(tmp_path / "y.csv", y, delimiter=",")
    assert main(["estimate", "--x", str(tmp_path / "x.csv"), "--y", str(tmp_path / "y.csv"), "--method", "gaussian",
                 "--json"]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["median"] == pytest.approx(from_npz, rel=1e-5)
    (tmp_path / "bad.csv").write_text("a,b\n1,x\n")
    assert main(["estimate", "--x", str(tmp_path / "bad.csv"), "--y", str(tmp_path / "y.csv")]) == 2
    assert "bad.csv" in capsys.readouterr().err
    assert main(["estimate"]) == 2
    assert "DATA" in capsys.readouterr().err


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


def test_evaluation_suites_draw_one_task_per_distribution():
    from model.training.evaluate import suite_tasks

    tasks = suite_tasks(load_config(ROOT / "configs/meta/default.toml"), 8)
    per = load_config(ROOT / "configs/meta/default.toml").tasks_per_distribution
    assert all(t.index % per == 0 for t in tasks) and len({t.index // per for t in tasks}) == len(tasks)


def test_ksg_is_invariant_to_row_and_column_order_on_tied_data():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 4, (3000, 2)).astype(float)  # heavy ties, as in the probe that found 4.6e-3 nats
    y = np.round(x[:, :1] + rng.standard_normal((3000, 1)), 1)
    rows, cols = rng.permutation(3000), [1, 0]
    base = baselines.ksg(x, y)
    assert baselines.ksg(x[rows], y[rows]) == pytest.approx(base, abs=1e-12)
    assert baselines.ksg(x[:, cols], y) == pytest.approx(base, abs=1e-12)
    assert baselines.ksg(y, x) == pytest.approx(base, abs=1e-12)
    jx, jy = baselines.value_keyed_jitter(x, y)
    joint_noise = np.hstack([jx, jy])
    assert np.abs(joint_noise).max() <= 0.5  # distinct rows get distinct noise; equal rows stay equal
    assert len(np.unique(joint_noise, axis=0)) == len(np.unique(np.hstack([x, y]), axis=0))
