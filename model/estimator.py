"""The one estimation API used by the CLI, the server and Python users.

    est = Estimator.load()                  # the shipped checkpoint
    result = est.estimate(x, y)             # median, quantiles, 90 % interval
    results = est.estimate_batch([(x1, y1), (x2, y2)])

Constant columns carry no information: their Gaussian scores are all 0 and they contribute nothing. Ties get
average ranks. Requested quantiles are interpolated linearly between the network's grid levels.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from model import baselines
from model.assets import DEFAULT_CHECKPOINT, resolve
from model.ties import tie_broken_ranks
from model.validation import (
    DEFAULT_QUANTILES,
    InputError,
    Limits,
    check_method,
    check_work,
    validate_pair,
    validate_quantiles,
)

LN2 = float(np.log(2.0))
BATCH_CELLS = 1 << 21  # numbers per batched forward pass (pairs x n x (dx + dy)): bounds its memory


@dataclass
class Estimate:
    """One answer, in the vocabulary every interface shares (Python, CLI JSON, HTTP): ``mi_nats`` is the median
    estimate (``mi_bits`` in bits), ``quantiles`` maps levels to nats, ``interval_90`` is the 5 %–95 % range.
    Baseline methods give no quantiles or interval. ``median``, ``median_bits`` and ``version`` are aliases kept
    for code written against 0.3.0."""

    method: str
    mi_nats: float
    quantiles: dict[str, float] = field(default_factory=dict)
    interval_90: tuple[float, float] | None = None
    n: int = 0
    dx: int = 0
    dy: int = 0
    checkpoint_version: str = ""

    @property
    def mi_bits(self) -> float:
        return self.mi_nats / LN2

    median = property(lambda self: self.mi_nats, doc="alias of mi_nats")
    median_bits = property(lambda self: self.mi_bits, doc="alias of mi_bits")
    version = property(lambda self: self.checkpoint_version, doc="alias of checkpoint_version")

    def to_dict(self) -> dict:
        return {**asdict(self), "mi_bits": self.mi_bits}


def quantile_key(q: float) -> str:
    """The response key of a quantile level: the shortest text that reads back as the same float, so distinct
    levels never share a key (0.5 and 0.5000000001 stay apart)."""
    return repr(float(q))


def _drop_constant_columns(a: np.ndarray) -> np.ndarray:
    """Constant columns carry no information about the other side (their scores would all be 0)."""
    return a[:, np.ptp(a, axis=0) > 0]


def estimate_baseline(x, y, method: str, limits: Limits = Limits(), k: int | None = None) -> Estimate:
    """A classical estimator (:data:`model.baselines.BASELINES`) on validated arrays; needs no checkpoint (and no
    torch). Baselines give a point estimate: ``interval_90`` is None and ``quantiles`` is empty. ``k`` is KSG's
    neighbour count (default 5)."""
    check_method(method)
    if method == "mist":
        raise InputError("method", "mist needs a checkpoint: use Estimator.load().estimate")
    if k is not None and method != "ksg":
        raise InputError("k", f"k is KSG's neighbour count; {method} takes none")
    x, y = validate_pair(x, y, limits)
    check_work(method, x, y)
    options = {} if k is None else {"k": k}
    if k is not None and not 1 <= k < len(x):
        raise InputError("k", f"must lie in [1, n - 1] = [1, {len(x) - 1}], got {k}")
    value = float(baselines.BASELINES[method](x, y, **options))
    return Estimate(method, value, n=len(x), dx=x.shape[1], dy=y.shape[1])


def default_checkpoint_path() -> Path:
    """``MIST_CHECKPOINT`` if set, else the shipped checkpoint."""
    return resolve(os.environ.get("MIST_CHECKPOINT", DEFAULT_CHECKPOINT))


class Estimator:
    """A loaded checkpoint: estimates MI quantiles for samples of any supported shape."""

    def __init__(self, ckpt: dict, limits: Limits = Limits()):
        from model.checkpoint import network_from_checkpoint  # torch is imported only with a network

        self.network = network_from_checkpoint(ckpt)
        self.version: str = ckpt.get("version", "unknown")
        keys = ("version", "step", "network", "evaluation", "train_config", "meta_config", "init_from")
        self.info = {k: ckpt.get(k) for k in keys}
        self.limits = limits
        self.grid = np.asarray(self.network.cfg.quantiles)
        self.quantile_range = (float(self.grid[0]), float(self.grid[-1]))  # levels answered, by interpolation
        dims = (ckpt.get("meta_config") or {}).get("dims") or {}
        # The network answers only inside the dims it was trained on (0.2 outside them was measured confidently
        # wrong); 0.3 trains on 1..64 per side and on n down to 10, below dx + dy included.
        self.trained_max_dim = max([dims[k]["high"] for k in ("dx", "dy") if k in dims] or [limits.max_dim])

    @classmethod
    def load(cls, path: str | Path | None = None, limits: Limits = Limits()) -> Estimator:
        from model.checkpoint import load_checkpoint

        return cls(load_checkpoint(resolve(path) if path else default_checkpoint_path()), limits)

    def grid_quantiles(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """The network's quantiles on its grid for a batch of validated pairs of one shape, ``(B, n, dx)`` and
        ``(B, n, dy)`` (float32 into the network); ``(B, len(grid))``."""
        import torch

        with torch.no_grad():
            xt = torch.from_numpy(np.ascontiguousarray(xs, dtype=np.float32))
            yt = torch.from_numpy(np.ascontiguousarray(ys, dtype=np.float32))
            return self.network(xt, yt).double().numpy()

    def _answer(self, grid_q: np.ndarray, quantiles: tuple[float, ...], x: np.ndarray, y: np.ndarray) -> Estimate:
        interp = np.interp(quantiles, self.grid, grid_q)
        lo, med, hi = np.interp([0.05, 0.5, 0.95], self.grid, grid_q)
        return Estimate(
            "mist", float(med), {quantile_key(q): float(v) for q, v in zip(quantiles, interp, strict=True)},
            (float(lo), float(hi)), len(x), x.shape[1], y.shape[1], self.version,
        )  # fmt: skip

    def check_request(self, quantiles: Sequence[float] | None, method: str) -> tuple[float, ...]:
        """The quantile levels a request will be answered at (:data:`DEFAULT_QUANTILES` when it names none). The
        baselines answer no quantiles, so naming levels with a baseline is refused rather than ignored."""
        check_method(method)
        if method != "mist":
            if quantiles is not None:
                raise InputError("quantiles", f"{method} gives a point estimate without quantiles; omit quantiles, "
                                 "or use method=mist for quantiles and an interval")  # fmt: skip
            return ()
        return validate_quantiles(DEFAULT_QUANTILES if quantiles is None else quantiles, *self.quantile_range)

    def estimate(self, x, y, quantiles: Sequence[float] | None = None, method: str = "mist") -> Estimate:
        """Estimate I(X; Y) in nats for one sample (rows are samples); see :meth:`check_request` for
        ``quantiles`` and ``method``."""
        return self.estimate_batch([(x, y)], quantiles, method)[0]

    def screen(self, X, target, *, method: str = "mist", quantiles: Sequence[float] | None = None,
               columns: Sequence[str] | None = None) -> dict[str, Estimate]:  # fmt: skip
        """I(X_j; target) for every column of ``X``, by name (:func:`model.screening.screen`)."""
        from model.screening import screen

        return screen(self, X, target, method=method, quantiles=quantiles, columns=columns)

    def pairwise(self, X, *, method: str = "mist", columns: Sequence[str] | None = None):
        """The matrix of I(X_i; X_j) with 90 % bounds (:func:`model.screening.pairwise`)."""
        from model.screening import pairwise

        return pairwise(self, X, method=method, columns=columns)

    def _check_trained_range(self, x: np.ndarray, y: np.ndarray) -> None:
        for side, a in (("x", x), ("y", y)):
            if a.shape[1] > self.trained_max_dim:
                raise InputError(side, f"has {a.shape[1]} dimensions; this checkpoint was trained on at most "
                                 f"{self.trained_max_dim} per side: reduce {side}, serve the default checkpoint "
                                 "(1–64 dims), or use method=gaussian_copula (exact for Gaussian-copula data, blind "
                                 "to non-monotone dependence; KSG is biased low in high dimensions)")  # fmt: skip

    def estimate_batch(
        self, pairs: Sequence[tuple], quantiles: Sequence[float] | None = None, method: str = "mist"
    ) -> list[Estimate]:
        """:meth:`estimate` for each pair, the one path every caller takes. Pairs of one shape (after constant
        columns are dropped) share forward passes of up to :data:`BATCH_CELLS` numbers. Raises on the first bad
        pair."""
        qs = self.check_request(quantiles, method)
        if method != "mist":
            return [estimate_baseline(x, y, method, self.limits) for x, y in pairs]
        checked = [validate_pair(x, y, self.limits) for x, y in pairs]
        used = []
        for x, y in checked:
            self._check_trained_range(x, y)
            used.append((_drop_constant_columns(x), _drop_constant_columns(y)))
        grids: list[np.ndarray] = [np.zeros(len(self.grid))] * len(checked)  # a constant side: exactly 0
        shapes: dict[tuple[int, int, int], list[int]] = defaultdict(list)
        for i, (xu, yu) in enumerate(used):
            if xu.shape[1] and yu.shape[1]:
                shapes[(len(xu), xu.shape[1], yu.shape[1])].append(i)
        for (n, dx, dy), members in shapes.items():
            per_pass = max(1, BATCH_CELLS // (n * (dx + dy)))
            for start in range(0, len(members), per_pass):
                part = members[start : start + per_pass]
                ranked = [tie_broken_ranks(*used[i]) for i in part]
                out = self.grid_quantiles(np.stack([r[0] for r in ranked]), np.stack([r[1] for r in ranked]))
                for i, grid_q in zip(part, out, strict=True):
                    grids[i] = grid_q
        return [self._answer(g, qs, x, y) for g, (x, y) in zip(grids, checked, strict=True)]
