"""Shared fixtures: configs shipped with the project and small variants of them."""

from __future__ import annotations

import copy
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
