"""Run by ``torchrun`` in tests/test_distributed.py: train a tiny config under DDP, save this rank's weights.

torchrun --standalone --nproc-per-node 2 tests/ddp_worker.py CONFIG OUT_DIR
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from model.training.train import fit, load_train_config

if __name__ == "__main__":
    config, out = sys.argv[1], Path(sys.argv[2])
    cfg = load_train_config(config, out_dir=str(out))
    net, _ = fit(cfg, progress=False)
    rank = int(os.environ["RANK"])
    torch.save(net.state_dict(), out / f"rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()
