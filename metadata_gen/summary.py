"""Text summaries of a meta-dataset: the MI histogram and the family mix."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import numpy as np


def mi_histogram(mis: Iterable[float], bin_width: float = 0.5, bar_width: int = 40) -> str:
    """A text histogram of true MI values (nats), one row per bin."""
    mis = np.asarray(list(mis), dtype=float)
    if mis.size == 0:
        return "(no tasks)"
    edges = np.arange(0.0, max(mis.max(), bin_width) + bin_width, bin_width)
    counts, _ = np.histogram(mis, bins=edges)
    top = max(counts.max(), 1)
    rows = [f"MI histogram ({mis.size} tasks, nats)"]
    for lo, hi, c in zip(edges[:-1], edges[1:], counts, strict=True):
        rows.append(f"  [{lo:5.2f}, {hi:5.2f})  {c:7d}  {'#' * round(bar_width * c / top)}")
    return "\n".join(rows)


def family_table(families: Iterable[str]) -> str:
    counts = Counter(families)
    total = sum(counts.values())
    return "\n".join(f"  {name:18s} {c:7d}  {100 * c / total:5.1f}%" for name, c in counts.most_common())
