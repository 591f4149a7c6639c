"""Data-parallel training under torchrun: 2 CPU processes (gloo) keep identical weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from model.checkpoint import load_checkpoint
from tests.conftest import ROOT


@pytest.mark.slow
def test_torchrun_two_cpu_ranks_keep_identical_weights(tmp_path: Path):
    config = tmp_path / "ddp.json"
    config.write_text(
        json.dumps(
            {
                "name": "ddp-test",
                "checkpoint_every": 10,
                "log_every": 5,
                "model": {"width": 16, "heads": 2, "blocks": 1, "inducing": 4},
                "data": {
                    "meta_config": str(ROOT / "configs/meta/default.toml"),
                    "cells_per_batch": 2048,
                    "max_batch": 8,
                    "workers": 0,
                },
                "optim": {"steps": 10, "warmup": 2},
            }
        )
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(ROOT / "tests/ddp_worker.py"), str(config), str(tmp_path)]  # fmt: skip
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]

    initial = torch.load(tmp_path / "rank0.pt", weights_only=True)
    other = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert initial.keys() == other.keys()
    for name in initial:
        assert torch.equal(initial[name], other[name]), name
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["step"] == 10
    # the checkpoint holds the synchronized weights, and training moved them
    assert all(torch.equal(ckpt["model"][k], initial[k]) for k in initial)
    assert any(not torch.equal(v, initial[k]) for k, v in _fresh_weights().items())


def _fresh_weights() -> dict[str, torch.Tensor]:
    from model.network import MISTNetwork, NetworkConfig

    torch.manual_seed(0)  # the trainer seeds with data.seed = 0 before building the network
    return MISTNetwork(NetworkConfig(width=16, heads=2, blocks=1, inducing=4)).state_dict()
