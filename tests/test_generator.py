"""Config validation, determinism, sharding, streaming and the MI prior of the generator."""

from __future__ import annotations

import hashlib
import itertools
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from metadata_gen.batched import BatchGenerator, sample_task
from metadata_gen.config import ConfigError, load_config, parse_config
from metadata_gen.shards import ShardReader, shard_range, write_shards
from metadata_gen.summary import mi_histogram
from mist.cli import main
from tests.conftest import DEFAULT_META, HELDOUT_META, meta_variant

SMALL_DIMS = {"dx": {"low": 1, "high": 4}, "dy": {"low": 1, "high": 4}, "n": {"low": 32, "high": 128}}


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"families": {"gaussian_dense": {"weight": -1}}}, "families.gaussian_dense.weight"),
        ({"families": {"no_such_family": {}}}, "families.no_such_family"),
        ({"families": {"independent": {}}, "dims": {"n": {"low": 5, "high": 10}}}, "dims"),
        ({"families": {"independent": {}}, "dims": {"dx": {"low": 4, "high": 2}}}, "dims.dx"),
        ({"families": {"independent": {}}, "mi_prior": {"max_nats": -1}}, "mi_prior.max_nats"),
        ({"families": {"independent": {}}, "transforms": {"flow": {"kinds": ["planar"]}}}, "transforms.flow.kinds"),
        ({"families": {"student_t": {"nu": {"low": 0, "high": 3}}}}, "families.student_t"),
        ({"families": {}}, "families"),
        ({}, "families"),
    ],
)
def test_bad_config_names_the_field(data, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        parse_config(data)


def test_config_file_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("seed = [")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(bad)
    j = tmp_path / "c.json"
    j.write_text('{"families": {"independent": {"weight": 1}}}')
    assert load_config(j).families.enabled().keys() == {"independent"}


def test_shipped_configs_load_and_heldout_is_disjoint(default_meta, heldout_meta):
    train = set(default_meta.families.enabled())
    assert "uniform_noise" not in train
    assert "uniform_noise" in heldout_meta.families.enabled()
    t, h = default_meta.transforms, heldout_meta.transforms
    assert t.spiral.probability == 0 and h.spiral.probability > 0
    assert not set(t.flow.kinds) & set(h.flow.kinds)
    assert not set(t.coordinatewise.kinds) & set(h.coordinatewise.kinds)


def test_sample_task_is_deterministic_and_shapes_are_free(default_meta):
    a, b = sample_task(default_meta, 17), sample_task(default_meta, 17)
    np.testing.assert_array_equal(a.x, b.x)
    assert a.mi == b.mi
    t = sample_task(default_meta, 3, shape=(16, 1, 32))
    assert t.x.shape == (16, 1) and t.y.shape == (16, 32) and t.x.dtype == np.float32
    assert np.isfinite(t.x).all() and np.isfinite(t.y).all()
    big = sample_task(default_meta, 4, shape=(10_000, 3, 2))
    assert big.x.shape == (10_000, 3)


def _digest(directory: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(directory.glob("chunk-*")):
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


def test_shards_deterministic_across_workers_and_machines(tmp_path: Path):
    config = meta_variant(dims=SMALL_DIMS)
    write_shards(config, 1200, tmp_path / "a", workers=1, progress=False)
    write_shards(config, 1200, tmp_path / "b", workers=2, progress=False)
    for i in range(3):
        write_shards(config, 1200, tmp_path / "c", shard_index=i, num_shards=3, progress=False)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b") == _digest(tmp_path / "c")
    reader = ShardReader(tmp_path / "a")
    assert len(reader) == 1200
    # Shards come from the batched path: task 777 drawn alone equals task 777 drawn inside its chunk, and its
    # distribution (family, truth) is the reference path's.
    alone = BatchGenerator(config).generate([777])[0].tasks()[0]
    stored = reader[777]
    np.testing.assert_array_equal(stored.x, alone.x)
    np.testing.assert_array_equal(stored.y, alone.y)
    reference = sample_task(config, 777)
    assert stored.x.shape == reference.x.shape and stored.y.shape == reference.y.shape
    assert stored.family == reference.family
    assert stored.mi == pytest.approx(reference.mi, abs=max(4 * reference.mi_se, 1e-9))


def test_shard_range_covers_everything_once():
    ranges = [shard_range(10_001, i, 7) for i in range(7)]
    assert ranges[0][0] == 0 and ranges[-1][1] == 10_001
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    with pytest.raises(ValueError):
        shard_range(10, 3, 3)


def _with_small_n(path: Path, high: int = 64) -> Path:
    """The default meta-distribution with n at most ``high`` (fast tests); fails loudly if its n line changed."""
    text, count = re.subn(r"(?m)^n = \{ low = (\d+), high = \d+ \}$", rf"n = {{ low = \1, high = {high} }}",
                          DEFAULT_META.read_text())  # fmt: skip
    assert count == 1, "configs/meta/default.toml no longer has one [dims] n line"
    path.write_text(text)
    return path


def test_training_stream_workers_and_ranks_draw_disjoint_tasks(tmp_path: Path):
    from model.training.train import BatchStream, DataSection

    path = _with_small_n(tmp_path / "meta.toml")
    data = DataSection(meta_config=str(path), cells_per_batch=256, max_batch=4, workers=2)
    seen = []
    for rank in range(2):
        stream = BatchStream(load_config(path), data, rank=rank, world_size=2)
        loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=2)
        for k, batch in enumerate(loader):
            seen += batch["index"].tolist()
            if k == 5:
                break
    assert len(seen) >= 12 and len(set(seen)) == len(seen)  # at least one task per batch, never one twice


def test_mi_prior_spans_zero_to_eight_nats(default_meta):
    per = default_meta.tasks_per_distribution  # one task of each of 400 distributions
    tasks = [sample_task(default_meta, i * per, shape=(16, 2, 2)) for i in range(400)]
    mis = np.array([t.mi for t in tasks])
    assert mis.min() < 0.05 and mis.max() > 8.0
    # Gaussian families hit the target exactly, so their truths follow the prior: every 1-nat bin of 0..8 holds
    # at least 4 % of them (the non-monotone families' MI is bounded by their geometry, e.g. log K components)
    gaussian = np.array([t.mi for t in tasks if t.family.startswith("gaussian")])
    counts, _ = np.histogram(gaussian, bins=np.arange(0, 9))
    assert len(gaussian) > 100 and counts.min() >= 0.04 * len(gaussian)
    assert "MI histogram (400 tasks" in mi_histogram(mis)


def test_cli_generate_and_bad_input(tmp_path: Path, capsys):
    cfg = _with_small_n(tmp_path / "c.toml")
    assert main(["generate", "--config", str(cfg), "--tasks", "20", "--out", str(tmp_path / "o")]) == 0
    assert "MI histogram (20 tasks" in capsys.readouterr().out
    assert main(["generate", "--config", str(tmp_path / "nope.toml"), "--tasks", "5", "--out", "x"]) == 2
    assert "config file not found" in capsys.readouterr().err
    assert main(["generate", "--config", str(HELDOUT_META), "--tasks", "0", "--out", "x"]) == 2


def test_log_uniform_dims_prior_favours_small_dims(default_meta):
    from metadata_gen.sampler import draw_dims

    rng = np.random.default_rng(0)
    dims = np.array([draw_dims(rng, default_meta) for _ in range(4000)])
    assert default_meta.dims.dims_prior == "log_uniform"
    assert 0.14 < np.mean(dims[:, 0] == 1) < 0.2  # log(2) / log(65) = 0.166
    assert dims.min() == 1 and dims.max() == 64
    uniform = meta_variant(dims={"dx": {"low": 1, "high": 16}, "dy": {"low": 1, "high": 16}})
    flat = np.array([draw_dims(rng, uniform) for _ in range(4000)])
    assert np.mean(flat[:, 0] == 1) < 0.1
