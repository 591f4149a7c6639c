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
    known = set(NetworkConfig.__dataclass_fields__)
    if not set(cfg) <= known or "body_cells" not in cfg:
        raise ValueError("checkpoint was written for an older network (before 0.3); retrain or use an older release")
    return NetworkConfig(**cfg)


def network_from_checkpoint(ckpt: dict[str, Any]) -> MISTNetwork:
    net = MISTNetwork(network_config(ckpt))
    net.load_state_dict(ckpt["model"])
    return net.eval()


def load_weights_widening_head(net: MISTNetwork, state: dict[str, torch.Tensor]) -> None:
    """Load ``state`` into ``net``; if ``net``'s head reads more scalar statistics than ``state``'s, the new
    input columns start at zero, so the loaded network computes exactly what the saved one did."""
    key = "head.0.weight"
    state = dict(state)
    have, want = state[key], net.state_dict()[key]
    if have.shape[1] < want.shape[1]:
        state[key] = torch.cat([have, have.new_zeros(have.shape[0], want.shape[1] - have.shape[1])], dim=1)
    net.load_state_dict(state)


def export_for_serving(src: str | Path, dst: str | Path, evaluation: dict | None = None) -> None:
    """Copy a training checkpoint without its optimizer state (small enough to ship), adding an evaluation."""
    ckpt = load_checkpoint(src)
    ckpt.pop("optimizer", None)
    ckpt.pop("format_version", None)
    if evaluation is not None:
        ckpt["evaluation"] = evaluation
    save_checkpoint(dst, ckpt)
