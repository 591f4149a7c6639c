"""The files this package ships (the default checkpoint, the meta-distribution and training configs), found the same
way in a source checkout and in an installed wheel, from any working directory.

In a checkout they sit at the repository root (``checkpoints/``, ``configs/``), where the product card puts them;
the wheel carries the same files as package data under ``model/assets/`` (``pyproject.toml`` maps the directories).
"""

from __future__ import annotations

from pathlib import Path

MODEL_DIR = Path(__file__).resolve().parent
ROOTS = (MODEL_DIR / "assets", MODEL_DIR.parent)  # installed wheel, then source checkout
DEFAULT_CHECKPOINT = "checkpoints/mist-default.pt"
DEFAULT_META = "configs/meta/default.toml"
HELDOUT_META = "configs/meta/heldout.toml"


def shipped(relative: str) -> Path:
    """The shipped file ``relative`` (as named in the repository, e.g. ``configs/meta/default.toml``)."""
    for root in ROOTS:
        if (root / relative).is_file():
            return root / relative
    raise FileNotFoundError(f"{relative} is not part of this installation (looked in {', '.join(map(str, ROOTS))})")


def resolve(path: str | Path) -> Path:
    """A user's path as given when it exists (absolute, or relative to the working directory); else the shipped file
    of that name, so ``configs/meta/default.toml`` works from any directory; else the path as given (its reader
    then names it in its own error)."""
    given = Path(path)
    if given.exists() or given.is_absolute():
        return given
    try:
        return shipped(str(path))
    except FileNotFoundError:
        return given
