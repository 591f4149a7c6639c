"""Checkpoints are plain dicts of tensors and JSON-like values, saved with ``torch.save`` and loaded with
``weights_only=True``: a checkpoint file can never run code when loaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from model.network import MISTNetwork, NetworkConfig

FORMAT_VERSION = 1


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write atomically (temp file + rename) so an interrupted save never leaves a broken checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"format_version": FORMAT_VERSION, **payload}, tmp)
    tmp.replace(path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    if ckpt.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported checkpoint format {ckpt.get('format_version')!r}")
    return ckpt


def network_config(ckpt: dict[str, Any]) -> NetworkConfig:
    cfg = dict(ckpt["network"])
    cfg["quantiles"] = tuple(cfg["quantiles"])
    cfg.setdefault("set_norm", False)  # written before 0.3.1
    cfg.setdefault("readout", False)
    cfg.setdefault("body_head", False)
    known = set(NetworkConfig.__dataclass_fields__)
    if not set(cfg) <= known or "body_cells" not in cfg:
        raise ValueError("checkpoint was written for an older network (before 0.3); retrain or use an older release")
    return NetworkConfig(**cfg)


def network_from_checkpoint(ckpt: dict[str, Any]) -> MISTNetwork:
    net = MISTNetwork(network_config(ckpt))
    net.load_state_dict(ckpt["model"])
    return net.eval()


def load_start_weights(net: MISTNetwork, state: dict[str, torch.Tensor], start_cfg: NetworkConfig) -> None:
    """Load ``state`` (of a network with ``start_cfg``) into ``net`` so that ``net`` computes what it did:

    - if ``net``'s head reads more scalar statistics, the new input columns start at zero;
    - if ``net`` has a body module the start lacks (``set_norm``, ``readout``), its body computes something else:
      the start's pooled features (constant in 0.3.0; read on a probe sample) are folded into the head's bias and
      their weights start at zero, so the body learns from there without changing the start's answers."""
    key = "head.0.weight"
    state = dict(state)
    have, want = state[key], net.state_dict()[key]
    if have.shape[1] < want.shape[1]:
        state[key] = torch.cat([have, have.new_zeros(have.shape[0], want.shape[1] - have.shape[1])], dim=1)
    new_modules = [m for m in ("set_norm", "readout") if getattr(net.cfg, m) and not getattr(start_cfg, m)]
    if new_modules:
        start = MISTNetwork(start_cfg)
        start.load_state_dict({k: v.cpu() for k, v in state.items() if k != key} | {key: have.cpu()})
        width = net.cfg.width
        with torch.no_grad():
            probe = torch.randn(1, 1, 512, 2, generator=torch.Generator().manual_seed(0))
            pooled = start.eval().pooled(probe[..., :1], probe[..., 1:])[0].to(state[key].device)
        state["head.0.bias"] = state["head.0.bias"] + state[key][:, :width] @ pooled
        state[key] = torch.cat([torch.zeros_like(state[key][:, :width]), state[key][:, width:]], dim=1)
        for m in new_modules:
            state |= {f"{m}.{k}": v.to(state[key].device) for k, v in getattr(net, m).state_dict().items()}
    if net.body_head is not None and "body_head.weight" not in state:  # training only: starts from its init
        state |= {f"body_head.{k}": v for k, v in net.body_head.state_dict().items()}
    net.load_state_dict(state)


def export_for_serving(src: str | Path, dst: str | Path, evaluation: dict | None = None) -> None:
    """Copy a training checkpoint without its optimizer state (small enough to ship), adding an evaluation."""
    ckpt = load_checkpoint(src)
    ckpt.pop("optimizer", None)
    ckpt.pop("format_version", None)
    if evaluation is not None:
        ckpt["evaluation"] = evaluation
    save_checkpoint(dst, ckpt)
