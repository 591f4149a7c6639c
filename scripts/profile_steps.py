"""Profile a few training steps of a config with torch.profiler; writes the top operators by device and CPU time.

python scripts/profile_steps.py --config configs/train/gpu.toml --out profile.txt [--steps 8]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from metadata_gen.config import load_config
from model.network import MISTNetwork
from model.training.train import BatchStream, load_train_config, pinball_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    cfg = load_train_config(args.config)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net = MISTNetwork(cfg.model).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    batches = iter(BatchStream(load_config(cfg.data.meta_config), cfg.data, device=device))
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])

    def step() -> None:
        batch = next(batches)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            pred = net(batch["x"].to(device), batch["y"].to(device))
        loss = pinball_loss(net.to_scale(pred.float()), net.to_scale(batch["mi"].to(device)), net.taus)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    with profile(activities=activities) as prof:
        for _ in range(args.steps):
            step()
    sort = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    text = prof.key_averages().table(sort_by=sort, row_limit=25)
    text += "\n\n" + prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
    Path(args.out).write_text(text)
    print(text[:1500])


if __name__ == "__main__":
    main()
