"""The one estimation API used by the CLI, the server and Python users.

    est = Estimator.load()                  # the shipped checkpoint
    result = est.estimate(x, y)             # median, quantiles, 90 % interval
    results = est.estimate_batch([(x1, y1), (x2, y2)])
    cmi = est.conditional(x, y, z)          # I(X; Y | Z), calibrated on CMI tasks (model.conditional)
    test = est.ci_test(x, y, z, alpha=0.05) # X ⫫ Y | Z ?

Constant columns carry no information: their Gaussian scores are all 0 and they contribute nothing. Ties get
average ranks. Requested quantiles are interpolated linearly between the network's grid levels.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from model import baselines, discrete, stratified
from model.assets import DEFAULT_CHECKPOINT, resolve
from model.conditional import Calibration, CalibrationError, Combined, chain_pairs, combine
from model.intervals import DISAGREEMENT, IntervalCalibration
from model.ties import broken_orders, material_ties, sorted_columns, tie_broken_ranks, tied_columns
from model.validation import (
    DEFAULT_QUANTILES,
    InputError,
    Limits,
    as_matrix,
    check_method,
    check_work,
    validate_pair,
    validate_quantiles,
    validate_triple,
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
    dz: int = 0  # the conditioning set's dims: 0 for I(X; Y), more for I(X; Y | Z)
    warnings: list[str] = field(default_factory=list)  # what the caller should know (ties in a continuous column)

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


def quantile_map(levels: Sequence[float], values: Sequence[float]) -> dict[str, float]:
    """An answer's ``quantiles``: each level's :func:`quantile_key` to its value in nats."""
    return {quantile_key(q): float(v) for q, v in zip(levels, values, strict=True)}


Tied = tuple[np.ndarray, np.ndarray]  # each side's :func:`model.ties.tied_columns`
Orders = tuple[np.ndarray, np.ndarray]  # each side's column argsort (:func:`model.ties.sorted_columns`)


def tie_warnings(
    x: np.ndarray, y: np.ndarray, discrete_sides: tuple[bool, bool] = (False, False), tied: Tied | None = None
) -> list[str]:
    """A warning for each side read as continuous whose (non-constant) columns repeat values materially
    (:func:`model.ties.material_ties`): the ties are broken by value-keyed noise (:mod:`model.ties`), which is
    right for a discrete column only if it is declared (then :mod:`model.discrete` answers), and approximate for
    rounded measurements. ``tied``: the sides' :func:`model.ties.tied_columns`, when the caller has them."""
    out = []
    masks = (tied_columns(x), tied_columns(y)) if tied is None else tied
    for name, a, is_discrete, mask in zip("xy", (x, y), discrete_sides, masks, strict=True):
        material = [] if is_discrete else material_ties(a, mask)
        if material:
            cols, levels = [j for j, _ in material], min(distinct for _, distinct in material)
            out.append(f"{name} has tied values (column{'s' * (len(cols) > 1)} {', '.join(map(str, cols))}; as few "
                       f"as {levels} distinct in {len(a)} rows) but is read as continuous, its ties broken by "
                       f"noise; if {name} is discrete (labels, counts, flags), declare it: discrete_{name}=true "
                       "(screening: discrete_features, discrete_target)")  # fmt: skip
    return out


def estimate_baseline(x, y, method: str, limits: Limits = Limits(), k: int | None = None) -> Estimate:
    """A classical estimator (:data:`model.baselines.BASELINES`) on validated arrays; needs no checkpoint (and no
    torch). Baselines give a point estimate: ``interval_90`` is None and ``quantiles`` is empty. ``k`` is KSG's
    neighbour count (default 5)."""
    check_method(method)
    if method == "mist":
        raise InputError("method", "mist needs a checkpoint: use Estimator.load().estimate")
    if k is not None and method != "ksg":
        raise InputError("k", f"k is KSG's neighbour count; {method} takes none")
    return baseline_answer(*validate_pair(x, y, limits), method, k)


def baseline_answer(x: np.ndarray, y: np.ndarray, method: str, k: int | None = None, tied: Tied | None = None):
    """:func:`estimate_baseline` on a pair :func:`model.validation.validate_pair` has checked (``tied``: its
    sides' :func:`model.ties.tied_columns`, when the caller has them)."""
    check_work(method, x, y)
    options = {} if k is None else {"k": k}
    if k is not None and not 1 <= k < len(x):
        raise InputError("k", f"must lie in [1, n - 1] = [1, {len(x) - 1}], got {k}")
    value = float(baselines.BASELINES[method](x, y, **options))
    return Estimate(method, value, n=len(x), dx=x.shape[1], dy=y.shape[1], warnings=tie_warnings(x, y, tied=tied))


def estimate_conditional_baseline(x, y, z, method: str, limits: Limits = Limits()) -> Estimate:
    """A classical I(X; Y | Z) estimator (:data:`model.baselines.CONDITIONAL_BASELINES`), a point estimate."""
    check_method(method, conditional=True)
    if method == "mist":
        raise InputError("method", "mist needs a checkpoint: use Estimator.load().conditional")
    x, y, z = validate_triple(x, y, z, limits)
    check_work(method, x, np.hstack([y, z]))
    value = float(baselines.CONDITIONAL_BASELINES[method](x, y, z))
    return Estimate(method, value, n=len(x), dx=x.shape[1], dy=y.shape[1], dz=z.shape[1])


@dataclass
class CITest:
    """A conditional-independence test: ``dependent`` when ``p_value`` ≤ ``alpha``."""

    dependent: bool
    p_value: float
    alpha: float
    estimate: Estimate

    def to_dict(self) -> dict:
        return {"dependent": self.dependent, "p_value": self.p_value, "alpha": self.alpha,
                "estimate": self.estimate.to_dict()}  # fmt: skip


def calibration_path(checkpoint: str | Path) -> Path:
    """Where a checkpoint's CMI calibration lives: beside it, ``<name>.cmi.json``. Instead of a calibration the
    file may hold ``{"answered_by": "<sibling>.pt"}``: conditional MI is then answered by that checkpoint (and its
    own calibration), as the shipped one does (model card)."""
    return Path(checkpoint).with_suffix(".cmi.json")


def default_checkpoint_path() -> Path:
    """``MIST_CHECKPOINT`` if set, else the shipped checkpoint."""
    return resolve(os.environ.get("MIST_CHECKPOINT", DEFAULT_CHECKPOINT))


class Estimator:
    """A loaded checkpoint: estimates MI quantiles for samples of any supported shape."""

    def __init__(
        self, ckpt: dict, limits: Limits = Limits(), calibration: Calibration | None = None, fold_body: bool = True
    ):
        from model.checkpoint import network_from_checkpoint  # torch is imported only with a network

        self.network = network_from_checkpoint(ckpt)
        # A body whose output is the same for every probe sample is folded into that constant (model card: the
        # shipped one is; its answers move by < 1e-5 nats, tests/test_network.py)
        self.body_spread = self.network.fold_constant_body() if fold_body else float("nan")
        self.version: str = ckpt.get("version", "unknown")
        keys = ("version", "step", "network", "evaluation", "train_config", "meta_config", "init_from")
        self.info = {k: ckpt.get(k) for k in keys} | {"body_folded": self.network.constant_pool is not None}
        self.limits = limits
        self.grid = np.asarray(self.network.cfg.quantiles)
        self.quantile_range = (float(self.grid[0]), float(self.grid[-1]))  # levels answered, by interpolation
        dims = (ckpt.get("meta_config") or {}).get("dims") or {}
        # The network answers only inside the dims it was trained on (0.2 outside them was measured confidently
        # wrong); 0.3 trains on 1..64 per side and on n down to 10, below dx + dy included.
        self.trained_max_dim = max([dims[k]["high"] for k in ("dx", "dy") if k in dims] or [limits.max_dim])
        self.calibration = calibration  # for conditional MI; None: conditional() explains how to make one
        self.conditional_by: Estimator = self  # what answers conditional MI: this, or a checkpoint it names
        found = ckpt.get("interval_calibration")
        # MI intervals: conformal offsets fitted by `mist calibrate`; None: the network's own quantiles
        self.interval_calibration = IntervalCalibration.from_dict(found) if found else None

    @classmethod
    def load(cls, path: str | Path | None = None, limits: Limits = Limits()) -> Estimator:
        return cls._load(resolve(path) if path else default_checkpoint_path(), limits, follow=True)

    @classmethod
    def _load(cls, path: Path, limits: Limits, follow: bool) -> Estimator:
        """The checkpoint at ``path`` with its ``.cmi.json``: a calibration, or (when ``follow``) the sibling that
        answers its conditional MI, which must hold its own calibration (one step, so no file can loop)."""
        from model.checkpoint import load_checkpoint

        cal = calibration_path(path)
        found = json.loads(cal.read_text()) if cal.is_file() else {}
        named = found.get("answered_by")
        if named is None:
            return cls(load_checkpoint(path), limits, Calibration.from_fields(found, cal) if found else None)
        if not follow:
            raise CalibrationError(f"{cal}: names {named!r} to answer conditional MI, but a checkpoint named that way "
                             "must hold its own calibration (run `mist calibrate-cmi --checkpoint` on it)")  # fmt: skip
        est = cls(load_checkpoint(path), limits)
        est.conditional_by = cls._load(path.parent / named, limits, follow=False)
        return est

    def grid_quantiles(
        self, xs: np.ndarray, ys: np.ndarray, orders: Orders | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The network's raw quantiles on its grid for a batch of validated pairs of one shape, ``(B, n, dx)`` and
        ``(B, n, dy)`` (float32 into the network): ``(B, len(grid))``, with each pair's statistic disagreement
        (:data:`DISAGREEMENT`), ``(B,)``. ``orders``: each side's argsort per column, ``(B, d, n)``, when the
        caller has them (then the network sorts nothing for its ranks)."""
        import torch

        from model.network import STAT_NAMES

        with torch.no_grad():
            xt = torch.from_numpy(np.ascontiguousarray(xs, dtype=np.float32))
            yt = torch.from_numpy(np.ascontiguousarray(ys, dtype=np.float32))
            ot = None if orders is None else tuple(torch.from_numpy(o) for o in orders)
            sx, sy, stats = self.network.scores_and_statistics(xt, yt, orders=ot)
            q = self.network.forward_scores(sx, sy, stats)
            return q.double().numpy(), stats[:, STAT_NAMES.index(DISAGREEMENT)].double().numpy()

    def _answer(
        self, grid_q: np.ndarray, quantiles: tuple[float, ...], x: np.ndarray, y: np.ndarray, tied: Tied
    ) -> Estimate:
        interp = np.interp(quantiles, self.grid, grid_q)
        lo, med, hi = np.interp([0.05, 0.5, 0.95], self.grid, grid_q)
        return Estimate(
            "mist", float(med), quantile_map(quantiles, interp),
            (float(lo), float(hi)), len(x), x.shape[1], y.shape[1], self.version,
            warnings=tie_warnings(x, y, tied=tied),
        )  # fmt: skip

    def check_request(
        self, quantiles: Sequence[float] | None, method: str, conditional: bool = False
    ) -> tuple[float, ...]:
        """The quantile levels a request will be answered at (:data:`DEFAULT_QUANTILES` when it names none). The
        baselines answer no quantiles, so naming levels with a baseline is refused rather than ignored."""
        check_method(method, conditional)
        if method != "mist":
            if quantiles is not None:
                raise InputError("quantiles", f"{method} gives a point estimate without quantiles; omit quantiles, "
                                 "or use method=mist for quantiles and an interval")  # fmt: skip
            return ()
        return validate_quantiles(DEFAULT_QUANTILES if quantiles is None else quantiles, *self.quantile_range)

    def estimate(
        self, x, y, quantiles: Sequence[float] | None = None, method: str = "mist", *,
        discrete_x: discrete.Discreteness = False, discrete_y: discrete.Discreteness = False,
    ) -> Estimate:  # fmt: skip
        """Estimate I(X; Y) in nats for one sample (rows are samples); see :meth:`check_request` for
        ``quantiles`` and ``method``. A side declared discrete (True, or ``"auto"``: :func:`model.discrete.
        looks_discrete`) is answered by :mod:`model.discrete`, whatever the method."""
        return self.estimate_batch([(x, y)], quantiles, method, sides=[(discrete_x, discrete_y)])[0]

    def conditional(
        self, x, y, z, quantiles: Sequence[float] | None = None, method: str = "mist", *,
        discrete_z: discrete.Discreteness = "auto", discrete_x: discrete.Discreteness = False,
        discrete_y: discrete.Discreteness = False,
    ) -> Estimate:  # fmt: skip
        """Estimate I(X; Y | Z) in nats: rows are samples; ``mi_nats`` is the median. A continuous Z is answered by
        the chain rule (:mod:`model.conditional`, quantiles calibrated on CMI tasks, and 0 below the median where
        :meth:`ci_test` keeps CMI = 0 at their level); a discrete one (True, or
        ``"auto"``: :func:`model.discrete.looks_discrete`) by strata, each class's MI from this network
        (:mod:`model.stratified`, method ``mist_stratified``); then X or Y may be discrete too (``discrete_x``,
        ``discrete_y``: each class's MI from :mod:`model.discrete`, whatever the method). ``method`` may also be a
        baseline of :data:`model.baselines.CONDITIONAL_BASELINES` (a point estimate)."""
        qs = self.check_request(quantiles, method, conditional=True)
        stratify, sides = self.conditioning(x, y, z, discrete_z, discrete_x, discrete_y, method)
        if stratify:
            return self._stratified(*validate_triple(x, y, z, self.limits), qs, sides)[0]
        if method != "mist":
            return estimate_conditional_baseline(x, y, z, method, self.limits)
        return self.conditional_by._conditional(x, y, z, qs)[0]

    @staticmethod
    def conditioning(
        x, y, z, discrete_z, discrete_x, discrete_y, method: str = "mist"
    ) -> tuple[bool, tuple[bool, bool]]:
        """Whether I(X; Y | Z) is answered by strata (a discrete z, and ``method`` mist or a discrete side; a
        baseline method on continuous sides answers by itself), and each side's discreteness, which only strata can
        take. The server prices a request by it."""
        stratify = discrete.resolve(discrete_z, as_matrix(z, "z"), "discrete_z")
        sides = (discrete.resolve(discrete_x, as_matrix(x, "x"), "discrete_x"),
                 discrete.resolve(discrete_y, as_matrix(y, "y"), "discrete_y"))  # fmt: skip
        if any(sides) and not stratify:
            raise InputError("discrete_x" if sides[0] else "discrete_y", "a discrete side with z needs a discrete z "
                             "(then I(X; Y | Z) is estimated within each class of z); with a continuous z send the "
                             "side as continuous")  # fmt: skip
        return stratify and (method == "mist" or any(sides)), sides

    def ci_test(
        self, x, y, z, alpha: float = 0.05, *, discrete_z: discrete.Discreteness = "auto",
        permutations: int = stratified.PERMUTATIONS, discrete_x: discrete.Discreteness = False,
        discrete_y: discrete.Discreteness = False,
    ) -> CITest:  # fmt: skip
        """Test X ⫫ Y | Z. For a continuous Z the p-value is conformal against the calibration's null tasks
        (I(X; Y | Z) = 0), on the chain-rule difference less its fitted null location (:mod:`model.conditional`), so
        on tasks like them the false-positive rate is at most ``alpha``; on held-out null tasks (links and
        families calibration never draws) it measured 0 of 40 at each of 1, 2, 3 and 5 dims per block; the power
        is low (model card). Its estimate is :meth:`conditional`'s, whose quantiles below the median are 0 at levels
        under the p-value: a 90 % interval that excludes 0 comes with "dependent" at alpha 0.05. For a discrete Z
        (``discrete_z`` as in :meth:`conditional`) it is a permutation test of Y within the classes of Z
        (``permutations`` of them): exact for any distribution; X and Y may then be discrete (as in
        :meth:`conditional`)."""
        if not 0.0 < alpha < 1.0:
            raise InputError("alpha", f"must lie in (0, 1), got {alpha}")
        stratify, sides = self.conditioning(x, y, z, discrete_z, discrete_x, discrete_y)
        if stratify:
            stratified.check_permutations(permutations)
            return self._stratified_test(*validate_triple(x, y, z, self.limits), alpha, permutations, sides)
        cmi = self.conditional_by
        estimate, c = cmi._conditional(x, y, z, DEFAULT_QUANTILES)
        p = cmi._checked_calibration().null_level(c)
        return CITest(p <= alpha, p, alpha, estimate)

    def _stratified(
        self, x: np.ndarray, y: np.ndarray, z: np.ndarray, qs: tuple[float, ...], sides: tuple[bool, bool]
    ) -> tuple[Estimate, list[np.ndarray]]:
        """I(X; Y | Z) by the classes of a discrete z (:mod:`model.stratified`), with those classes."""
        classes = stratified.strata(z)
        pairs = [(x[rows], y[rows]) for rows in classes]
        name = "mist"
        if any(sides):  # each class by model.discrete, its normal quantiles on the network's grid
            answers = [discrete.estimate(a, b, *sides) for a, b in pairs]
            name = answers[0][0]
            grids = np.stack([discrete.quantiles(value, se, self.grid) for _, value, se in answers])
        else:
            self._check_trained_range(x, y)
            grids = np.stack(self._grids(pairs))
        combined = stratified.weighted_sum_quantiles(grids, stratified.class_weights(classes))
        values, (lo, med, hi) = np.interp(qs, self.grid, combined), np.interp((0.05, 0.5, 0.95), self.grid, combined)
        answer = Estimate(f"{name}_stratified", float(med), quantile_map(qs, values), (float(lo), float(hi)),
                          len(x), x.shape[1], y.shape[1], self.version, z.shape[1],
                          warnings=tie_warnings(x, y, sides))  # fmt: skip
        return answer, classes

    def _stratified_test(self, x, y, z, alpha: float, permutations: int, sides: tuple[bool, bool]) -> CITest:
        """The within-class permutation test of :mod:`model.stratified`: the statistic is the classes' weighted
        MI medians (the discrete estimators' values), for the data and for each permutation of Y (the network in
        one batched pass per class size)."""
        estimate, classes = self._stratified(x, y, z, DEFAULT_QUANTILES, sides)
        orders = np.vstack([np.arange(len(x)), stratified.within_class_permutations(classes, len(x), permutations)])
        pairs = [(x[rows], y[order[rows]]) for order in orders for rows in classes]
        if any(sides):
            medians = np.array([discrete.point(a, b, *sides) for a, b in pairs])
        else:
            medians = np.array([np.interp(0.5, self.grid, g) for g in self._grids(pairs, calibrated=False)])
        stat = medians.reshape(len(orders), len(classes)) @ stratified.class_weights(classes)
        p = stratified.permutation_p_value(stat[0], stat[1:])
        return CITest(p <= alpha, p, alpha, estimate)

    def chain_rule(self, x, y, z) -> Combined:
        """The uncalibrated chain-rule combination of the network's MI terms (:func:`model.conditional.combine`);
        what :func:`model.training.calibrate.calibrate` fits the offsets on."""
        return self._chain_rule(*validate_triple(x, y, z, self.limits))

    def _chain_rule(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> Combined:
        shape = (len(x), x.shape[1], y.shape[1], z.shape[1])
        return combine(np.stack(self._grids(chain_pairs(x, y, z), calibrated=False)), self.grid, shape)

    def _conditional(self, x, y, z, qs: tuple[float, ...]) -> tuple[Estimate, Combined]:
        x, y, z = validate_triple(x, y, z, self.limits)
        cal = self._checked_calibration()
        c = self._chain_rule(x, y, z)  # validated once, above
        *values, lo, hi = cal.quantiles(c, (*qs, 0.05, 0.95))  # one call: each ranks c among the null tasks
        answer = Estimate("mist", c.median, quantile_map(qs, values),
                          (float(lo), float(hi)), len(x), x.shape[1], y.shape[1], self.version, z.shape[1])  # fmt: skip
        return answer, c

    def _checked_calibration(self) -> Calibration:
        if self.calibration is None or self.calibration.checkpoint_version != self.version:
            found = "none" if self.calibration is None else f"one for {self.calibration.checkpoint_version}"
            raise InputError("z", f"checkpoint {self.version} has no CMI calibration ({found}): run "
                             "`mist calibrate-cmi --checkpoint PATH` to write PATH's .cmi.json, or use "
                             "method=frenzel_pompe")  # fmt: skip
        return self.calibration

    def screen(self, X, target, *, method: str = "mist", quantiles: Sequence[float] | None = None,
               columns: Sequence[str] | None = None, between=None, discrete_features="auto",
               discrete_target: discrete.Discreteness = False) -> dict[str, Estimate]:  # fmt: skip
        """I(X_j; target) for every column of ``X``, by name (:func:`model.screening.screen`; ``between`` is
        called with (done, total) between steps of pairs: a progress bar, or a check that may raise to stop;
        ``discrete_features``: ``"auto"``, a bool, or the discrete columns by name, index or mask)."""
        from model.screening import screen

        return screen(self, X, target, method=method, quantiles=quantiles, columns=columns, between=between,
                      discrete_features=discrete_features, discrete_target=discrete_target)  # fmt: skip

    def pairwise(self, X, *, method: str = "mist", columns: Sequence[str] | None = None, between=None,
                 discrete_features="auto"):  # fmt: skip
        """The matrix of I(X_i; X_j) with 90 % bounds (:func:`model.screening.pairwise`; ``between`` and
        ``discrete_features`` as in :meth:`screen`)."""
        from model.screening import pairwise

        return pairwise(self, X, method=method, columns=columns, between=between,
                        discrete_features=discrete_features)  # fmt: skip

    def _check_trained_range(self, x: np.ndarray, y: np.ndarray) -> None:
        for side, a in (("x", x), ("y", y)):
            if a.shape[1] > self.trained_max_dim:
                raise InputError(side, f"has {a.shape[1]} dimensions; this checkpoint was trained on at most "
                                 f"{self.trained_max_dim} per side: reduce {side}, serve the default checkpoint "
                                 "(1–64 dims), or use method=gaussian_copula (exact for Gaussian-copula data, blind "
                                 "to non-monotone dependence; KSG is biased low in high dimensions)")  # fmt: skip

    def estimate_batch(
        self, pairs: Sequence[tuple], quantiles: Sequence[float] | None = None, method: str = "mist", *,
        sides: Sequence[tuple[discrete.Discreteness, discrete.Discreteness]] | None = None,
    ) -> list[Estimate]:  # fmt: skip
        """:meth:`estimate` for each pair, the one path every caller takes (``sides``: each pair's
        ``(discrete_x, discrete_y)``, default continuous). Pairs of one shape (after constant columns are
        dropped) share forward passes of up to :data:`BATCH_CELLS` numbers. Raises on the first bad pair."""
        qs = self.check_request(quantiles, method)
        checked = [validate_pair(x, y, self.limits) for x, y in pairs]
        declared = sides or [(False, False)] * len(checked)
        if len(declared) != len(checked):
            raise InputError("sides", f"names {len(declared)} pairs; the batch has {len(checked)}")
        resolved = [(discrete.resolve(fx, as_matrix(x, "x"), "discrete_x"),  # as given: checked ones are rescaled
                     discrete.resolve(fy, as_matrix(y, "y"), "discrete_y"))
                    for (x, y), (fx, fy) in zip(pairs, declared, strict=True)]  # fmt: skip
        return self.estimate_checked(checked, resolved, qs, method)

    def estimate_checked(
        self, checked: Sequence[tuple[np.ndarray, np.ndarray]], sides: Sequence[tuple[bool, bool]],
        qs: tuple[float, ...], method: str, tied: Sequence[Tied] | None = None,
        orders: Sequence[Orders] | None = None,
    ) -> list[Estimate]:  # fmt: skip
        """:meth:`estimate_batch` on pairs :func:`model.validation.validate_pair` has checked, their sides'
        discreteness resolved (:func:`model.discrete.resolve`) and ``qs`` from :meth:`check_request`. ``tied``
        and ``orders``: each pair's :func:`model.ties.tied_columns` and its sides' column argsorts, when the
        caller has them (screening finds them once per column, not once per pair)."""
        if tied is None:  # one sort per column: the tie check, the warnings and the network's ranks
            tied, orders = zip(*(_sort_facts(x, y) for x, y in checked), strict=True) if checked else ((), ())
        answers: list[Estimate | None] = [None] * len(checked)
        for i, ((x, y), side) in enumerate(zip(checked, sides, strict=True)):
            if any(side):
                answers[i] = self._discrete_answer(x, y, side, qs, tied[i])
        rest = [i for i, a in enumerate(answers) if a is None]
        if method != "mist":
            for i in rest:
                answers[i] = baseline_answer(*checked[i], method, tied=tied[i])
            return answers
        for i in rest:
            self._check_trained_range(*checked[i])
        grids = self._grids([checked[i] for i in rest], tied=[tied[i] for i in rest],
                            orders=None if orders is None else [orders[i] for i in rest])  # fmt: skip
        for i, g in zip(rest, grids, strict=True):
            answers[i] = self._answer(g, qs, *checked[i], tied[i])
        return answers

    def _discrete_answer(
        self, x: np.ndarray, y: np.ndarray, side: tuple[bool, bool], qs: tuple[float, ...], tied: Tied
    ) -> Estimate:
        name, value, se = discrete.estimate(x, y, *side)
        values = discrete.quantiles(value, se, qs)
        lo, hi = discrete.quantiles(value, se, (0.05, 0.95))
        return Estimate(name, value, quantile_map(qs, values),
                        (float(lo), float(hi)), len(x), x.shape[1], y.shape[1],
                        warnings=tie_warnings(x, y, side, tied))  # fmt: skip

    def raw_grids(self, pairs: Sequence[tuple]) -> list[tuple[np.ndarray, float]]:
        """For each pair, the network's uncalibrated grid quantiles and its statistic disagreement (what
        :mod:`model.intervals` is fitted on)."""
        return self._raw_grids([validate_pair(x, y, self.limits) for x, y in pairs])

    def _grids(
        self, checked: Sequence[tuple[np.ndarray, np.ndarray]], calibrated: bool = True,
        tied: Sequence[Tied] | None = None, orders: Sequence[Orders] | None = None,
    ) -> list[np.ndarray]:  # fmt: skip
        """The grid quantiles of validated pairs, through the checkpoint's interval calibration when it has one
        and ``calibrated`` (the chain rule reads the raw quantiles its own calibration was fitted on)."""
        raw = self._raw_grids(checked, tied, orders)
        if self.interval_calibration is None or not calibrated:
            return [g for g, _ in raw]
        return [self.interval_calibration.apply(g, d)[0] for g, d in raw]

    def _raw_grids(
        self, checked: Sequence[tuple[np.ndarray, np.ndarray]], tied: Sequence[Tied] | None = None,
        orders: Sequence[Orders] | None = None,
    ) -> list[tuple[np.ndarray, float]]:  # fmt: skip
        """Pairs of one shape (after constant columns are dropped) share forward passes of up to
        :data:`BATCH_CELLS` numbers; a constant side answers exactly 0. ``tied`` and ``orders``: as for
        :meth:`estimate_checked`."""
        kept = [(np.ptp(x, axis=0) > 0, np.ptp(y, axis=0) > 0) for x, y in checked]  # constant columns carry nothing
        used = [(x[:, kx], y[:, ky]) for (x, y), (kx, ky) in zip(checked, kept, strict=True)]
        tied_used = [None if tied is None else (tied[i][0][kx], tied[i][1][ky]) for i, (kx, ky) in enumerate(kept)]
        orders_used = [None if orders is None else (orders[i][0][kx], orders[i][1][ky]) for i, (kx, ky) in
                       enumerate(kept)]  # fmt: skip
        out: list[tuple[np.ndarray, float]] = [(np.zeros(len(self.grid)), 0.0)] * len(checked)
        shapes: dict[tuple[int, int, int], list[int]] = defaultdict(list)
        for i, (xu, yu) in enumerate(used):
            if xu.shape[1] and yu.shape[1]:
                shapes[(len(xu), xu.shape[1], yu.shape[1])].append(i)
        for (n, dx, dy), members in shapes.items():
            per_pass = max(1, BATCH_CELLS // (n * (dx + dy)))
            for start in range(0, len(members), per_pass):
                part = members[start : start + per_pass]
                xs, ys, oxs, oys = zip(*(_ranked(*used[i], tied_used[i], orders_used[i]) for i in part), strict=True)
                grid_q, disagreement = self.grid_quantiles(np.stack(xs), np.stack(ys), (np.stack(oxs), np.stack(oys)))
                for i, g, d in zip(part, grid_q, disagreement, strict=True):
                    out[i] = (g, float(d))
        return out


def _sort_facts(x: np.ndarray, y: np.ndarray) -> tuple[Tied, Orders]:
    """Each side's :func:`model.ties.tied_columns` and column argsorts, from one sort per column."""
    (sx, ox), (sy, oy) = sorted_columns(x), sorted_columns(y)
    return (tied_columns(x, sx), tied_columns(y, sy)), (ox, oy)


def _ranked(
    x: np.ndarray, y: np.ndarray, tied: Tied | None, orders: Orders | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A pair with its ties broken (:func:`model.ties.tie_broken_ranks`) and each side's column orders after
    that: the network's input (``tied`` and ``orders`` are computed here when the caller has none)."""
    if orders is None:
        tied, orders = _sort_facts(x, y)  # constant columns are dropped, so tied_columns is has_ties here
    tx, ty = tied
    ox, oy = orders
    bx, by = tie_broken_ranks(x, y, (tx, ty))
    return bx, by, broken_orders(ox, bx, tx), broken_orders(oy, by, ty)
