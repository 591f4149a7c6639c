"""Normalizing flows fitted to a lab's own data, used by the generator as an MI-preserving reshaping stage.

A flow is fitted by maximum likelihood to the Gaussian scores (per-column rank → Φ⁻¹) of one side of the user's
sample: the network reads only scores, so what it can learn from a lab's data is the dependence *within* a side
(its copula), not the marginals. A 1-D side has no such structure and gets no flow. The generator then pushes the
X (or Y) of each synthetic task, whose MI is known, through the flow's sampling direction: an invertible map of one
side, so the MI is unchanged while the within-side structure resembles the lab's.

Files hold plain tensors and numbers and load with ``weights_only=True``.
"""

from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass
from pathlib import Path

import normflows as nf
import numpy as np
import torch
from tqdm import tqdm

from metadata_gen.config import AdaptError

FORMAT = 1
MIN_ROWS = 100


def build_flow(d: int, layers: int = 8, hidden: int = 64) -> nf.NormalizingFlow:
    """RealNVP-style: masked affine couplings with alternating masks and fixed random permutations."""
    gen = torch.Generator().manual_seed(d * 1000 + layers)
    flows: list[nf.flows.Flow] = []
    for i in range(layers):
        mask = torch.tensor([(j + i) % 2 for j in range(d)], dtype=torch.float32)
        s = nf.nets.MLP([d, hidden, hidden, d], init_zeros=True, output_fn="tanh")
        t = nf.nets.MLP([d, hidden, hidden, d], init_zeros=True)
        flows.append(nf.flows.MaskedAffineFlow(mask, t, s))
        flows.append(_FixedPermutation(torch.randperm(d, generator=gen)))
    return nf.NormalizingFlow(nf.distributions.DiagGaussian(d, trainable=False), flows)


class _FixedPermutation(nf.flows.Flow):
    """A coordinate permutation stored as a buffer (saved with the weights)."""

    def __init__(self, perm: torch.Tensor):
        super().__init__()
        self.register_buffer("perm", perm)
        self.register_buffer("inv", torch.argsort(perm))

    def forward(self, z):
        return z[:, self.perm], torch.zeros(len(z), dtype=z.dtype, device=z.device)

    def inverse(self, z):
        return z[:, self.inv], torch.zeros(len(z), dtype=z.dtype, device=z.device)


def check_side(a: np.ndarray, name: str) -> np.ndarray:
    """A 2-D finite float array with enough rows and no constant column, or :class:`AdaptError` saying why."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise AdaptError(f"{name}: expected rows of numbers (n × d), got a {a.ndim}-D array")
    if len(a) < MIN_ROWS:
        raise AdaptError(f"{name}: {len(a)} rows; fitting a flow needs at least {MIN_ROWS}")
    if not np.isfinite(a).all():
        row = int(np.argwhere(~np.isfinite(a))[0][0])
        raise AdaptError(f"{name}: row {row} holds NaN or infinity; drop or impute such rows first")
    constant = np.flatnonzero(np.ptp(a, axis=0) == 0)
    if constant.size:
        raise AdaptError(f"{name}: column {int(constant[0])} is constant; drop it (it carries no information)")
    return a


@dataclass
class FitReport:
    """Held-out negative log-likelihood of the scores in nats per dimension: the flow against a Gaussian fit."""

    d: int
    epochs: int
    heldout_nll_flow: float
    heldout_nll_gaussian: float


def fit_flow(
    scores: np.ndarray, name: str, max_epochs: int = 200, patience: int = 15, seed: int = 0, progress: bool = True
) -> tuple[nf.NormalizingFlow, FitReport]:
    """Fit a flow to the Gaussian scores of one side (n × d, d ≥ 2; per-column rank → Φ⁻¹, as
    :func:`model.baselines.rank_gaussianize` makes them) by maximum likelihood, with early stopping on a held-out
    fifth; returns the best flow and its report."""
    scores = check_side(scores, name)
    d = scores.shape[1]
    if d < 2:
        raise AdaptError(f"{name}: a 1-D side has no within-side structure for a flow (ranks remove marginals)")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(scores))
    cut = max(len(scores) // 5, 20)
    held, train = (torch.tensor(scores[order[:cut]]), torch.tensor(scores[order[cut:]]))
    torch.manual_seed(seed)
    flow = build_flow(d).double()
    opt = torch.optim.Adam(flow.parameters(), lr=2e-3)
    cov = np.cov(train.numpy(), rowvar=False) + 1e-6 * np.eye(d)
    gauss = -float(np.mean(_mvn_logpdf(held.numpy(), cov))) / d
    best, best_state, stale, epochs = math.inf, None, 0, 0
    bar = tqdm(range(max_epochs), desc=f"fit flow {name}", disable=not progress)
    for _ in bar:
        epochs += 1
        flow.train()
        for batch in torch.split(train[torch.randperm(len(train))], 256):
            loss = flow.forward_kld(batch)
            if torch.isfinite(loss):
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(flow.parameters(), 5.0)
                opt.step()
        flow.eval()
        with torch.no_grad():
            nll = -float(flow.log_prob(held).mean()) / d
        bar.set_postfix(heldout_nll=f"{nll:.3f}", gaussian=f"{gauss:.3f}")
        if nll < best - 1e-4:
            best, best_state, stale = nll, {k: v.clone() for k, v in flow.state_dict().items()}, 0
        else:
            stale += 1
            if stale >= patience:
                break
    flow.load_state_dict(best_state)
    return flow.eval(), FitReport(d, epochs, best, gauss)


def _mvn_logpdf(x: np.ndarray, cov: np.ndarray) -> np.ndarray:
    _, logdet = np.linalg.slogdet(cov)
    sol = np.linalg.solve(cov, (x - x.mean(0)).T).T
    return -0.5 * ((x - x.mean(0)) * sol).sum(1) - 0.5 * (logdet + x.shape[1] * math.log(2 * math.pi))


def save_flow(flow: nf.NormalizingFlow, path: str | Path) -> None:
    d = flow.q0.d
    layers = sum(isinstance(f, nf.flows.MaskedAffineFlow) for f in flow.flows)
    hidden = flow.flows[0].s.net[0].out_features
    torch.save({"format": FORMAT, "d": int(d), "layers": layers, "hidden": hidden, "state": flow.state_dict()}, path)


@functools.lru_cache(maxsize=16)
def load_flow(path: str) -> nf.NormalizingFlow:
    """A fitted flow, in float64 and eval mode (cached per path)."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if saved.get("format") != FORMAT:
        raise AdaptError(f"{path}: not a fitted-flow file (format {saved.get('format')!r})")
    flow = build_flow(saved["d"], saved["layers"], saved["hidden"]).double()
    flow.load_state_dict(saved["state"])
    return flow.eval()


class FittedFlowMap:
    """A fitted flow as one side's reshaping stage: standardized latent → the flow's sampling direction."""

    name = "fitted_flow"

    def __init__(self, path: str):
        self.path, self.flow = path, load_flow(path)

    @property
    def d(self) -> int:
        return int(self.flow.q0.d)

    @torch.no_grad()
    def apply(self, z: torch.Tensor, inverse: bool = False) -> torch.Tensor:
        """Rows ``(m, d)`` through the flow's sampling direction (``inverse``: back), in float64."""
        flow = self.flow if z.device.type == "cpu" else _on_device(self.path, str(z.device))
        return flow.inverse(z.double()) if inverse else flow.forward(z.double())


@functools.lru_cache(maxsize=16)
def _on_device(path: str, device: str) -> nf.NormalizingFlow:
    return copy.deepcopy(load_flow(path)).to(device)  # a copy: the cached CPU flow stays on the CPU
