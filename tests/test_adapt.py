"""mist adapt: flows fitted to a lab's data shape the meta-distribution without changing any task's MI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from metadata_gen.batched import BatchGenerator, sample_task
from metadata_gen.config import AdaptError, parse_config, read_config_file
from metadata_gen.fitted_flows import fit_flow, save_flow
from model.baselines import rank_gaussianize
from model.estimator import default_checkpoint_path
from model.training.adapt import adapt, adapted_meta
from tests.conftest import DEFAULT_META


def _lab_data(n: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Far from Gaussian within each side: a curve, heavy tails and two modes in X; a ring in Y."""
    rng = np.random.default_rng(seed)
    u = rng.standard_normal(n)
    x = np.c_[u, u**2 + 0.2 * rng.standard_normal(n), rng.standard_t(1.5, n),
              np.where(rng.uniform(size=n) < 0.5, -3.0, 3.0) + 0.3 * rng.standard_normal(n)]  # fmt: skip
    angle = rng.uniform(0, 2 * np.pi, n) + 0.3 * u
    y = np.c_[np.cos(angle), np.sin(angle), rng.exponential(size=n)] + 0.05 * rng.standard_normal((n, 3))
    return x, y


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("flows")
    x, y = _lab_data()
    paths = {}
    for side, data in (("x", x), ("y", y)):
        flow, report = fit_flow(rank_gaussianize(data), side, max_epochs=40, progress=False)
        assert report.heldout_nll_flow < report.heldout_nll_gaussian - 0.05, report  # the flow learned structure
        save_flow(flow, out / f"{side}.pt")
        paths[side] = str(out / f"{side}.pt")
    return paths


def test_fitted_flows_keep_every_truth_and_shape_both_paths(fitted):
    base = read_config_file(DEFAULT_META)
    with_flows = parse_config(adapted_meta(base, 4, 3, 600, fitted, "lab"))
    without = parse_config(adapted_meta(base, 4, 3, 600, {}, "lab"))
    for i in range(0, 64, 5):
        a, b = sample_task(with_flows, i), sample_task(without, i)
        assert a.x.shape[1] == 4 and a.y.shape[1] == 3 and "fitted_flow" in a.transforms_x
        assert a.mi == b.mi and a.family == b.family  # an invertible map of one side keeps the MI
        assert np.isfinite(a.x).all() and np.isfinite(a.y).all()
    for batch in BatchGenerator(with_flows).generate(range(40)):
        assert batch.x.shape[2] == 4 and bool(batch.x.isfinite().all()) and bool(batch.y.isfinite().all())


def test_a_flow_for_other_dims_is_refused(fitted):
    from metadata_gen.config import ConfigError

    meta = parse_config(adapted_meta(read_config_file(DEFAULT_META), 2, 3, 600, fitted, "lab"))
    with pytest.raises(ConfigError, match="fitted for dx = 4"):
        sample_task(meta, 0)


@pytest.mark.parametrize(
    ("x", "y", "message"),
    [
        (np.zeros((50, 3)), np.zeros((50, 2)), "at least 100"),
        (np.full((200, 3), np.nan), np.ones((200, 2)), "NaN"),
        (np.c_[np.ones(200), np.arange(200.0)], np.random.default_rng(0).standard_normal((200, 2)), "column 0"),
        (np.random.default_rng(0).standard_normal((200, 2)), np.random.default_rng(1).standard_normal((150, 2)),
         "150 rows"),
    ],
)  # fmt: skip
def test_bad_input_says_what_to_fix(tmp_path: Path, x, y, message):
    with pytest.raises(AdaptError, match=message):
        adapt(x, y, tmp_path, progress=False)


def test_adapt_end_to_end_at_tiny_size(tmp_path: Path):
    x, y = _lab_data(400, seed=1)
    summary = adapt(x, y, tmp_path / "lab", init=str(default_checkpoint_path()), minutes=0.2, steps=3,
                    flow_epochs=5, eval_tasks=1, progress=False)  # fmt: skip
    for name in ("flow_x.pt", "flow_y.pt", "meta.json", "train.json", "adapted.pt", "evaluation.md", "adapt.json"):
        assert (tmp_path / "lab" / name).is_file(), name
    meta = json.loads((tmp_path / "lab" / "meta.json").read_text())
    assert meta["dims"]["dx"] == {"low": 4, "high": 4} and meta["transforms"]["fitted"]["y"].endswith("flow_y.pt")
    assert set(summary["mae"]) == {"start", "adapted"} and "MAE start" in summary["table"]


def test_adapt_cli_and_config_errors_name_the_problem(tmp_path: Path, capsys):
    from metadata_gen.config import ConfigError
    from mist.cli import main

    x, y = _lab_data(200)
    np.savez(tmp_path / "lab.npz", x=x, y=y)
    assert main(["adapt", str(tmp_path / "lab.npz"), "--out", str(tmp_path / "o"), "--flow-epochs", "0"]) == 2
    assert "--flow-epochs must be > 0" in capsys.readouterr().err
    meta = parse_config(adapted_meta(read_config_file(DEFAULT_META), 4, 3, 600, {"x": str(tmp_path / "nope.pt")}, "l"))
    with pytest.raises(ConfigError, match=r"transforms.fitted.x: flow file not found"):
        sample_task(meta, 0)
