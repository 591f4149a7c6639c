"""The Python estimator and the CLI on the shipped checkpoint; the baselines."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from model import baselines
from model.ties import value_keyed_jitter
from model.validation import InputError
from server.schemas import EstimateResponse
from tests.conftest import ROOT


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
        (np.zeros((20, 1)), np.ones((20, 1)) * (1 + 2j), {}, "y"),  # not cast to float, dropping the imaginary parts
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


@pytest.mark.parametrize("d", [1, 32, 64])
def test_every_shape_is_answered_and_independence_at_20000_rows_reads_near_zero(shipped, d):
    """The API's shape range end to end: n = 10, n close to dx + dy, and n = 20 000, for 1, 32 and 64 dims a side.
    Independent sides: every interval holds 0 (at 20 000 rows, 32 + 32 and 64 + 64 read about 0.06 [0, 1.4]:
    model card)."""
    rng = np.random.default_rng([4, d])
    for n in (10, max(10, 2 * d + 1)):
        est = shipped.estimate(rng.standard_normal((n, d)), rng.standard_normal((n, d)))
        assert est.interval_90[0] == 0.0 and np.isfinite(est.median), (n, d, est.interval_90)
    est = shipped.estimate(rng.standard_normal((20_000, d)), rng.standard_normal((20_000, d)))
    assert est.n == 20_000 and 0.0 <= est.median < 0.1 and est.interval_90[0] == 0.0, (d, est)


def test_error_on_a_gaussian_shrinks_with_n(shipped):
    """Consistency by design: on bivariate Gaussians (fixed seeds) the median's error at n = 5 000 is at most 0.6
    of that at n = 200 (0.3.0-step22854 failed this: its error did not shrink with n)."""
    errors = {}
    for n in (200, 5000):
        errs = []
        for rho in (0.6, 0.8, 0.95):
            for seed in range(6):
                rng = np.random.default_rng([5, seed, int(rho * 100)])
                x = rng.standard_normal((n, 1))
                y = rho * x + np.sqrt(1 - rho**2) * rng.standard_normal((n, 1))
                errs.append(abs(shipped.estimate(x, y).median + 0.5 * np.log(1 - rho**2)))
        errors[n] = float(np.mean(errs))
    assert errors[5000] <= 0.6 * errors[200], errors


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
    answer = json.loads(capsys.readouterr().out)
    from_npz = answer["mi_nats"]
    assert set(answer) == set(EstimateResponse.model_fields) - {"seconds"}  # the HTTP names, the same everywhere
    np.savetxt(tmp_path / "x.csv", x, delimiter=",", header="a,b", comments="")
    np.savetxt(tmp_path / "y.csv", y, delimiter=",")
    assert main(["estimate", "--x", str(tmp_path / "x.csv"), "--y", str(tmp_path / "y.csv"), "--method", "gaussian",
                 "--json"]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["mi_nats"] == pytest.approx(from_npz, rel=1e-5)
    # one table, columns picked by header name or index: the same pair as the npz
    np.savetxt(tmp_path / "xy.csv", np.hstack([x, y]), delimiter=",", header="a,b,c,d", comments="")
    table = str(tmp_path / "xy.csv")
    argv = ["estimate", "--x", table, "--x-cols", "a,1", "--y", table, "--y-cols", "c,d", "--method", "gaussian"]
    assert main([*argv, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["mi_nats"] == pytest.approx(from_npz, rel=1e-5)
    assert main(["estimate", "--x", table, "--x-cols", "zz", "--y", table, "--y-cols", "c"]) == 2
    assert "no column 'zz'; columns are a, b, c, d" in capsys.readouterr().err
    assert main(["estimate", str(tmp_path / "xy.npz"), "--method", "ksg", "--k", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["method"] == "ksg"
    assert main(["estimate", str(tmp_path / "xy.npz"), "--method", "ksg", "--quantiles", "0.5"]) == 2
    assert "--quantiles needs --method mist" in capsys.readouterr().err
    assert main(["estimate", str(tmp_path / "xy.npz"), "--quantiles", "0.1,half"]) == 2
    assert "quantiles: must be comma-separated numbers" in capsys.readouterr().err
    for k in ("0", "300"):  # k must lie in [1, n - 1]
        assert main(["estimate", str(tmp_path / "xy.npz"), "--method", "ksg", "--k", k]) == 2
        assert "k: must lie in [1, n - 1]" in capsys.readouterr().err
    assert main(["estimate", str(tmp_path / "xy.npz"), "--k", "3"]) == 2
    assert "--k is KSG's neighbour count" in capsys.readouterr().err
    (tmp_path / "bad.csv").write_text("a,b\n1,x\n")
    assert main(["estimate", "--x", str(tmp_path / "bad.csv"), "--y", str(tmp_path / "y.csv")]) == 2
    assert "bad.csv" in capsys.readouterr().err
    assert main(["estimate"]) == 2
    assert "DATA" in capsys.readouterr().err


def test_ksg_is_invariant_to_row_and_column_order_on_tied_data():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 4, (3000, 2)).astype(float)  # heavy ties, as in the probe that found 4.6e-3 nats
    y = np.round(x[:, :1] + rng.standard_normal((3000, 1)), 1)
    rows, cols = rng.permutation(3000), [1, 0]
    base = baselines.ksg(x, y)
    assert baselines.ksg(x[rows], y[rows]) == pytest.approx(base, abs=1e-12)
    assert baselines.ksg(x[:, cols], y) == pytest.approx(base, abs=1e-12)
    assert baselines.ksg(y, x) == pytest.approx(base, abs=1e-12)
    jx, jy = value_keyed_jitter(x, y)
    joint_noise = np.hstack([jx, jy])
    assert np.abs(joint_noise).max() <= 0.5 and len(np.unique(joint_noise, axis=0)) == len(x)  # every row its own


def test_cli_version_and_every_option_has_help(capsys):
    from mist.cli import build_parser, main
    from model.package_version import package_version

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"mist {package_version()}"
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices  # argparse keeps subparsers here
    for name, sub in commands.items():
        for action in sub._actions:
            assert action.help, f"mist {name} {'/'.join(action.option_strings) or action.dest} has no help text"
