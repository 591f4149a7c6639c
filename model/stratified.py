"""I(X; Y | Z) for a discrete Z, by strata, and a conditional-independence test that is exact whatever the data.

For a discrete Z (labels, counts, a joint label over several columns),

    I(X; Y | Z) = Σ_c P(Z = c) · I(X; Y | Z = c),

so each term is a plain MI on the rows of one class, which the MI network answers with its calibrated quantiles
in one batched pass (the estimator's grid path). The answer's quantiles are the share-weighted sums of the classes'
quantiles at each level: the classes' errors are taken as comonotone, not independent, because they share the
network's bias at their size (a convolution of independent class errors covered 0.00–0.30 at 5–10 classes, model
card).

The chain rule (:mod:`model.conditional`) reads a discrete Z as a continuous one with its ties broken, which is
biased upward: 0.08–0.10 nats at a truth of 0 with 5–10 classes at n = 1 000 (its CI test stayed valid, and
powerless). The CI test here permutes Y within each class of Z: under X ⫫ Y | Z that leaves the joint law of
(X, Y, Z) unchanged, so the permutation p-value is exact at any n, for any distribution, whatever the network's
errors; the network only supplies the statistic (the weighted sum of the classes' MI medians).
"""

from __future__ import annotations

import numpy as np

from model.discrete import codes
from model.validation import MIN_N, InputError

PERMUTATIONS = 199  # within-class permutations of the CI test by default: p-values in steps of 1 / 200
MAX_PERMUTATIONS = 9_999


def strata(z: np.ndarray) -> list[np.ndarray]:
    """The rows of each class of ``z`` (the distinct rows of a multi-column z are its classes). Every class needs
    :data:`model.validation.MIN_N` rows, the fewest the network answers."""
    labels = codes(z)
    classes = [np.flatnonzero(labels == c) for c in range(int(labels.max()) + 1)]
    small = [len(rows) for rows in classes if len(rows) < MIN_N]
    if small:
        raise InputError("z", f"is read as discrete ({len(classes)} classes) but {len(small)} of its classes have "
                         f"fewer than {MIN_N} rows (the smallest {min(small)}): I(X; Y | Z) is estimated within each "
                         "class, so merge rare classes, or declare z continuous (discrete_z=false)")  # fmt: skip
    return classes


def class_weights(classes: list[np.ndarray]) -> np.ndarray:
    """P(Z = c), the classes' shares of the rows."""
    sizes = np.array([len(rows) for rows in classes], dtype=float)
    return sizes / sizes.sum()


def weighted_sum_quantiles(grids: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The quantile function of Σ_c w_c · M_c on the grid levels when the M_c err together (comonotone): the
    weighted sum of the classes' quantiles at each level (``grids``: (classes, levels))."""
    return weights @ grids


def within_class_permutations(classes: list[np.ndarray], n: int, count: int, seed: int = 0) -> np.ndarray:
    """``count`` row orders ``(count, n)``, each permuting the rows within every class and fixing the classes."""
    rng = np.random.default_rng(seed)
    orders = np.tile(np.arange(n), (count, 1))
    for rows in classes:
        orders[:, rows] = rows[rng.permuted(np.tile(np.arange(len(rows)), (count, 1)), axis=1)]
    return orders


def permutation_p_value(observed: float, permuted: np.ndarray) -> float:
    """(1 + #{permuted ≥ observed}) / (1 + #permuted): exact under exchangeability (never 0)."""
    return float((1 + np.count_nonzero(permuted >= observed)) / (1 + len(permuted)))


def check_permutations(permutations: int) -> None:
    if not isinstance(permutations, int | np.integer) or not 19 <= permutations <= MAX_PERMUTATIONS:
        raise InputError("permutations", f"must be an integer in [19, {MAX_PERMUTATIONS}] (19 is the fewest for a "
                         f"p-value of 0.05), got {permutations!r}")  # fmt: skip
