"""Shared fixtures: configs shipped with the project and small variants of them."""

from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from metadata_gen.config import MetaConfig, parse_config, read_config_file

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_META = ROOT / "configs" / "meta" / "default.toml"
HELDOUT_META = ROOT / "configs" / "meta" / "heldout.toml"

torch.set_num_threads(2)


def meta_variant(path: Path = DEFAULT_META, **overrides) -> MetaConfig:
    """The config at ``path`` with top-level sections replaced by ``overrides``."""
    data = copy.deepcopy(read_config_file(path))
    data.update(overrides)
    return parse_config(data)


@pytest.fixture(scope="session")
def default_meta() -> MetaConfig:
    return parse_config(read_config_file(DEFAULT_META))


@pytest.fixture(scope="session")
def heldout_meta() -> MetaConfig:
    return parse_config(read_config_file(HELDOUT_META))


def server_cpu_seconds(port: int) -> float:
    """User + system CPU seconds of the ``mist serve`` process listening on ``port`` (Linux /proc)."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
                if b"serve" in cmdline and str(port).encode() in cmdline:
                    fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
                    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            except OSError:
                continue
    raise LookupError(f"no mist serve on port {port}")


@contextmanager
def live_server(env: dict[str, str] | None = None) -> Iterator[int]:
    """A real ``mist serve`` (uvicorn) on a free loopback port, ready when entered; yields the port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "mist.cli", "serve", "--port", str(port)]
    env = {**os.environ, **(env or {})}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(150):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        yield port
    finally:
        proc.terminate()
        proc.wait(15)


def paired_tensors(n: int = 64, dx: int = 3, dy: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of two dependent (x, y) samples as the network takes them."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, n, dx, generator=g)
    y = x[..., :1].repeat(1, 1, dy) * 0.7 + torch.randn(2, n, dy, generator=g)
    return x, y


@pytest.fixture(scope="session")
def shipped():
    """The shipped checkpoint, loaded once."""
    from model.estimator import Estimator

    return Estimator.load()
