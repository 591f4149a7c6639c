"""The package version, from one source: the installed metadata, or pyproject.toml in a plain checkout (as on a
GPU machine that runs the code from the repository without installing it)."""

from __future__ import annotations

import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def package_version() -> str:
    try:
        return version("mist-estimator")
    except PackageNotFoundError:
        pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
        return tomllib.loads(pyproject.read_text())["project"]["version"]
