"""The one validation layer for user arrays, shared by the Python API, the CLI and the server.

Every failure raises :class:`InputError` naming the field and the problem; estimators downstream trust
validated arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from model.sorting import in_row_blocks

METHODS = ("mist", "ksg", "gaussian", "gaussian_copula", "frenzel_pompe")  # the network, then model.baselines
CONDITIONAL_METHODS = ("mist", "frenzel_pompe", "gaussian_copula")  # those that estimate I(X; Y | Z)
MIN_N = 10
MAX_N = 1_000_000  # the network reads chunk statistics: 1.9 s at n = 10⁶, 2 + 2 dims (cost_bench.py)
MAX_CELLS = 2**24  # n · (dx + dy): bounds memory (134 MB per float64 copy) and time, whatever the shape
MAX_DIM = 64
DEFAULT_QUANTILES = (0.05, 0.5, 0.95)  # the levels answered when a caller names none
MAX_QUANTILE_LEVELS = 100  # bounds the answer's size: a 256-item batch at 20 000 levels once answered 193 MiB
MAX_SCREEN_COLUMNS = 10_000  # columns screened against one target in one request
MAX_PAIRWISE_COLUMNS = 300  # columns of a pairwise matrix (44 850 pairs)


class InputError(ValueError):
    """Bad user input; ``field`` names what was wrong."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message

    def __reduce__(self):  # picklable as it was built: the server parses requests in worker processes
        return type(self), (self.field, self.message)


# Work budget per method, in cells n · (dx + dy): KSG's k-d trees slow down steeply with dimension (measured:
# 2 s at n = 2000, d = 32 + 32; 50 s at n = 20 000, d = 10 + 10), the others stay fast at the shape limits.
WORK_LIMITS = {"ksg": 100_000, "frenzel_pompe": 100_000}


@dataclass(frozen=True)
class Limits:
    min_n: int = MIN_N
    max_n: int = MAX_N
    max_cells: int = MAX_CELLS
    max_dim: int = MAX_DIM


def check_method(method: str, conditional: bool = False) -> None:
    """``method`` must be known, and estimate what is asked: I(X; Y) or, with ``conditional``, I(X; Y | Z)."""
    if method not in METHODS:
        raise InputError("method", f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if conditional and method not in CONDITIONAL_METHODS:
        raise InputError("method", f"{method} does not estimate I(X; Y | Z); with z choose one of "
                         f"{', '.join(CONDITIONAL_METHODS)}")  # fmt: skip
    if not conditional and method not in METHODS[:4]:
        raise InputError("method", f"{method} estimates I(X; Y | Z): send z, or choose one of {', '.join(METHODS[:4])}")


def check_work(method: str, x: np.ndarray, y: np.ndarray) -> None:
    """Refuse a request whose method would run past its work budget (:data:`WORK_LIMITS`)."""
    cells = x.shape[0] * (x.shape[1] + y.shape[1])
    limit = WORK_LIMITS.get(method)
    if limit is not None and cells > limit:
        raise InputError("method", f"{method} accepts n·(dx+dy) ≤ {limit}; this sample has {cells}: use method=mist "
                         "(any accepted shape, with an interval) or gaussian_copula, or subsample")  # fmt: skip


def robust_rescale(a: np.ndarray) -> np.ndarray:
    """Per column: divide by the largest magnitude, then center on the median. An affine map of each coordinate
    leaves MI unchanged, and no later step (standardizing, squaring, distances) can overflow: ±1e308 is fine."""
    top = np.abs(a).max(axis=0)
    a = a / np.where(top > 0, top, 1.0)
    # columns as rows (15 % faster at 20 000 × 64), in row blocks on threads (15 → 8 ms there)
    return a - in_row_blocks(lambda rows: np.median(rows, axis=1), np.ascontiguousarray(a.T))


def as_matrix(values, field: str) -> np.ndarray:
    """A 2-D float64 array from a list, nested list or array; a 1-D input is one column."""
    try:
        arr = np.asarray(values)
        complex_values = np.iscomplexobj(arr)
        arr = arr if complex_values else arr.astype(np.float64, copy=False)
    except (ValueError, TypeError):
        raise InputError(field, "must be a numeric array with rows of equal length") from None
    if complex_values:  # a cast to float would drop the imaginary parts without a word
        raise InputError(field, "has complex values: send real numbers (the real and imaginary parts as columns of "
                         "their own)")  # fmt: skip
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise InputError(field, f"must be 1-D or 2-D, got {arr.ndim}-D")
    if arr.size == 0:
        raise InputError(field, "is empty")
    if not np.isfinite(arr).all():
        raise InputError(field, "contains NaN or infinite values")
    return arr


def validate_pair(x, y, limits: Limits = Limits()) -> tuple[np.ndarray, np.ndarray]:
    """Check shapes, finiteness and limits of a sample pair; returns float64 ``(n, dx)`` and ``(n, dy)``, each
    column rescaled by :func:`robust_rescale` (MI-preserving)."""
    x, y = as_matrix(x, "x"), as_matrix(y, "y")
    if len(x) != len(y):
        raise InputError("y", f"has {len(y)} rows but x has {len(x)}: x and y must have the same number of samples")
    check_pair_shape(len(x), x.shape[1], y.shape[1], limits)
    return robust_rescale(x), robust_rescale(y)


def check_pair_shape(n: int, dx: int, dy: int, limits: Limits = Limits(), names: tuple[str, str] = ("x", "y")) -> None:
    """The limits a pair of n rows and dx + dy dims must meet (:func:`validate_pair`; screening checks its pairs'
    one shape once). ``names``: the two sides' fields in the errors."""
    if n < limits.min_n:
        raise InputError(names[0], f"has {n} samples; at least {limits.min_n} are needed")
    if n > limits.max_n:
        raise InputError(names[0], f"has {n} samples; at most {limits.max_n} are supported")
    if n * (dx + dy) > limits.max_cells:
        raise InputError(names[0], f"n · (dx + dy) = {n * (dx + dy)} numbers; at most {limits.max_cells} "
                         "are supported: subsample rows")  # fmt: skip
    for field, d in zip(names, (dx, dy), strict=True):
        if d > limits.max_dim:
            raise InputError(field, f"has {d} dimensions; at most {limits.max_dim} are supported: reduce "
                             f"{field} first (PCA, or a learned embedding: MI can only drop, so the estimate is a "
                             "lower bound on the original)")  # fmt: skip


def validate_triple(x, y, z, limits: Limits = Limits()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`validate_pair` for ``(x, y)`` and for ``(x, z)``, plus what the chain rule needs: (Y, Z) and (X, Z)
    are read as one side each, so dy + dz and dx + dz are bounded like one side, and n · (dx + dy + dz) like a
    pair. A column of z equal to a column of x or y is refused: conditioning on a copy leaves no variation."""
    x, y = validate_pair(x, y, limits)
    z = as_matrix(z, "z")
    if len(z) != len(x):
        raise InputError("z", f"has {len(z)} rows but x has {len(x)}: x, y and z must have the same number of samples")
    for name, a in (("x", x), ("y", y)):
        if a.shape[1] + z.shape[1] > limits.max_dim:
            raise InputError("z", f"{name} and z have {a.shape[1]} + {z.shape[1]} dimensions; the chain rule reads "
                             f"them as one side, of at most {limits.max_dim}: reduce z or {name}")  # fmt: skip
    cells = len(x) * (x.shape[1] + y.shape[1] + z.shape[1])
    if cells > limits.max_cells:
        raise InputError("z", f"n · (dx + dy + dz) = {cells} numbers; at most {limits.max_cells}: subsample rows")
    z = robust_rescale(z)
    for name, a in (("x", x), ("y", y)):
        for j in range(z.shape[1]):
            same = np.flatnonzero((np.abs(a - z[:, j : j + 1]) <= 1e-9).all(axis=0))  # rescaled copies match
            if same.size:
                raise InputError("z", f"column {j} repeats column {same[0]} of {name} (up to scale): given it, "
                                 f"{name} has no variation left; drop it from z or from {name}")  # fmt: skip
    return x, y, z


def parse_levels(text: str | None) -> list[float] | None:
    """Quantile levels written as comma-separated numbers (a query parameter, a CLI flag); None stays None."""
    if text is None:
        return None
    try:
        return [float(q) for q in text.split(",")]
    except ValueError:
        raise InputError("quantiles", f"must be comma-separated numbers, got {text!r:.40}") from None


DISCRETENESS = {"true": True, "false": False, "auto": "auto"}  # a discreteness written as text


def parse_discreteness(text: str, field: str) -> bool | str:
    """A side's discreteness written as ``true``, ``false`` or ``auto`` (a query parameter, a CLI flag)."""
    if text.lower() not in DISCRETENESS:
        raise InputError(field, f"must be true, false or auto, got {text!r:.40}")
    return DISCRETENESS[text.lower()]


def parse_discrete_features(text: str) -> bool | str | list[str | int]:
    """``discrete_features`` written as text: ``auto``, ``true``, ``false``, or column names and indices,
    comma-separated (indices as digits)."""
    if text.lower() in DISCRETENESS:
        return DISCRETENESS[text.lower()]
    return [int(c.strip()) if c.strip().isdigit() else c.strip() for c in text.split(",")]


def validate_quantiles(quantiles: Sequence[float], low: float, high: float) -> tuple[float, ...]:
    """Quantile levels must lie in the network's grid range [low, high] (interpolated between grid points)."""
    qs = tuple(float(q) for q in quantiles)
    if not qs:
        raise InputError("quantiles", "must not be empty")
    if len(qs) > MAX_QUANTILE_LEVELS:
        raise InputError("quantiles", f"has {len(qs)} levels; at most {MAX_QUANTILE_LEVELS} are answered")
    if len(set(qs)) != len(qs):
        raise InputError("quantiles", "must not repeat a level")
    for q in qs:
        if not low <= q <= high:
            raise InputError("quantiles", f"{q} is outside the supported range [{low}, {high}]")
    return qs
