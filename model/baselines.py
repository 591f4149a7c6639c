"""Classical MI estimators for comparison: KSG, Gaussian plug-in, Gaussian-copula plug-in; and the
Frenzel–Pompe conditional MI estimator.

All take ``x: (n, dx)``, ``y: (n, dy)`` (and ``z: (n, dz)``) float arrays that have already been validated and
return nats.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree
from scipy.special import digamma, ndtri
from scipy.stats import rankdata

from model.ties import value_keyed_jitter


def _check_k(k: int, n: int) -> None:
    if not 0 < k < n:
        raise ValueError(f"k must lie in [1, n - 1], got k={k}, n={n}")


def _counts_within(points: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Points strictly closer than ``radius`` (max-norm) to each point, the point itself excluded."""
    return cKDTree(points).query_ball_point(points, radius, p=np.inf, return_length=True) - 1


def _kth_joint_radius(joint: np.ndarray, k: int) -> np.ndarray:
    eps = cKDTree(joint).query(joint, k=k + 1, p=np.inf)[0][:, -1]
    return np.nextafter(eps, 0)  # strictly inside


def ksg(x: np.ndarray, y: np.ndarray, k: int = 5) -> float:
    """Kraskov–Stögbauer–Grassberger estimator 1 (max-norm), Kraskov et al. 2004, eq. (8).

    I = ψ(k) + ψ(n) − ⟨ψ(n_x + 1) + ψ(n_y + 1)⟩, where n_x counts points strictly closer than the k-th
    joint neighbour in the X subspace. Coordinates are standardized and moved by at most 1e-10 to break ties
    (:func:`model.ties.value_keyed_jitter`, so the answer does not depend on row or column order).
    """
    jx, jy = value_keyed_jitter(x, y)
    x, y = _standardize(x) + 1e-10 * jx, _standardize(y) + 1e-10 * jy
    n = len(x)
    _check_k(k, n)
    radius = _kth_joint_radius(np.hstack([x, y]), k)
    nx, ny = _counts_within(x, radius), _counts_within(y, radius)
    return max(float(digamma(k) + digamma(n) - np.mean(digamma(nx + 1) + digamma(ny + 1))), 0.0)


def frenzel_pompe(x: np.ndarray, y: np.ndarray, z: np.ndarray, k: int = 5) -> float:
    """Frenzel & Pompe 2007 (the KSG idea for I(X; Y | Z), max-norm over all coordinates):

    I = ψ(k) − ⟨ψ(n_xz + 1) + ψ(n_yz + 1) − ψ(n_z + 1)⟩, counts strictly inside each point's k-th neighbour
    distance in (X, Y, Z). Coordinates are standardized and jittered as in :func:`ksg`.
    """
    jx, jyz = value_keyed_jitter(x, np.hstack([y, z]))
    x, yz = _standardize(x) + 1e-10 * jx, _standardize(np.hstack([y, z])) + 1e-10 * jyz
    y, z = yz[:, : y.shape[1]], yz[:, y.shape[1] :]
    _check_k(k, len(x))
    radius = _kth_joint_radius(np.hstack([x, yz]), k)
    nxz, nyz, nz = (_counts_within(np.hstack(p), radius) for p in ((x, z), (y, z), (z,)))
    return max(float(digamma(k) - np.mean(digamma(nxz + 1) + digamma(nyz + 1) - digamma(nz + 1))), 0.0)


def _standardize(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    std = a.std(0)
    return (a - a.mean(0)) / np.where(std > 0, std, 1.0)


def gaussian(x: np.ndarray, y: np.ndarray, ridge: float = 1e-6) -> float:
    """Gaussian (CCA) plug-in: ½ log(det Cxx det Cyy / det C) of the sample correlation matrix."""
    dx = x.shape[1]
    z = _standardize(np.hstack([x, y]))
    corr = z.T @ z / len(z) + ridge * np.eye(z.shape[1])
    ld = [np.linalg.slogdet(m)[1] for m in (corr[:dx, :dx], corr[dx:, dx:], corr)]
    return max(0.5 * (ld[0] + ld[1] - ld[2]), 0.0)


def rank_gaussianize(a: np.ndarray) -> np.ndarray:
    """Per-coordinate Φ⁻¹(average rank / (n + 1))."""
    return ndtri(rankdata(a, axis=0) / (len(a) + 1))


def gaussian_copula(x: np.ndarray, y: np.ndarray) -> float:
    """Gaussian plug-in on rank-Gaussianized coordinates (invariant to monotone maps of each coordinate)."""
    return gaussian(rank_gaussianize(x), rank_gaussianize(y))


def gaussian_copula_conditional(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> float:
    """I(X; YZ) − I(X; Z) of the Gaussian-copula plug-in: exact in the limit for Gaussian-copula (X, Y, Z)."""
    rx, ryz = rank_gaussianize(x), rank_gaussianize(np.hstack([y, z]))
    return max(gaussian(rx, ryz) - gaussian(rx, ryz[:, y.shape[1] :]), 0.0)


BASELINES = {"ksg": ksg, "gaussian": gaussian, "gaussian_copula": gaussian_copula}
CONDITIONAL_BASELINES = {"frenzel_pompe": frenzel_pompe, "gaussian_copula": gaussian_copula_conditional}
