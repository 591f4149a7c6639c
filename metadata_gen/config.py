"""The meta-distribution config: a TOML or JSON file validated by pydantic.

A bad file fails with :class:`ConfigError`, whose message names the offending field.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

COORDINATEWISE_KINDS = ("half_cube", "asinh", "wiggly", "normal_cdf", "monotone")
FLOW_KINDS = ("masked_affine", "coupling_spline", "autoregressive_spline")

PositiveWeight = Annotated[float, Field(ge=0.0)]


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the field."""


class AdaptError(ConfigError):
    """User data that cannot shape a meta-distribution (``mist adapt``); the message says what to fix."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IntRange(_Strict):
    low: int
    high: int

    @model_validator(mode="after")
    def _ordered(self) -> IntRange:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must be <= high ({self.high})")
        return self


class FloatRange(_Strict):
    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self) -> FloatRange:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must be <= high ({self.high})")
        return self


class DimsConfig(_Strict):
    """Ranges of the sample shape; n is drawn log-uniformly, dims uniformly or log-uniformly (``dims_prior``)."""

    dx: IntRange = IntRange(low=1, high=8)
    dy: IntRange = IntRange(low=1, high=8)
    n: IntRange = IntRange(low=64, high=1024)
    # "log_uniform" favours small dims (with 1..16 a side is 1-D a quarter of the time; uniform: 1/16)
    dims_prior: Literal["uniform", "log_uniform"] = "uniform"
    # n is capped at max_cells / (dx + dy): a task of many dims gets fewer rows, so one task's cost stays bounded
    max_cells: int = Field(1 << 30, ge=64)

    @model_validator(mode="after")
    def _limits(self) -> DimsConfig:
        for name, rng, lo, hi in (("dx", self.dx, 1, 64), ("dy", self.dy, 1, 64), ("n", self.n, 8, 1_000_000)):
            if rng.low < lo or rng.high > hi:
                raise ValueError(f"{name} must lie in [{lo}, {hi}], got [{rng.low}, {rng.high}]")
        return self


class MIPrior(_Strict):
    """Prior of the target MI (nats): a mix of uniform on [0, max] and log-uniform on [min_log, max]."""

    max_nats: float = Field(8.0, gt=0.0, le=20.0)
    log_uniform_fraction: float = Field(0.5, ge=0.0, le=1.0)
    min_log_nats: float = Field(0.01, gt=0.0)


class FamilySpec(_Strict):
    weight: PositiveWeight = 1.0


class StudentTSpec(FamilySpec):
    nu: FloatRange = FloatRange(low=1.0, high=30.0)
    # Share of distributions with no cross-dispersion (Σxy = 0): X and Y uncorrelated, dependent only through the
    # shared heavy-tailed scale, MI = the ν-only correction.
    tails_only: float = Field(0.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _positive(self) -> StudentTSpec:
        if self.nu.low <= 0:
            raise ValueError("nu must be > 0")
        return self


class MixtureSpec(FamilySpec):
    components: IntRange = IntRange(low=2, high=5)
    max_se_nats: float = Field(0.01, gt=0.0)
    max_mc_samples: int = Field(400_000, ge=1000)


class GeometricMixtureSpec(FamilySpec):
    """Many-component Gaussian mixture in the joint (X, Y) space whose means lie on a random geometry
    (closed or open curves, crossing lines, lattice cells): non-monotone dependence. MI by Monte Carlo."""

    components: IntRange = IntRange(low=4, high=24)
    layouts: tuple[Literal["ring", "curve", "cross", "grid"], ...] = ("ring", "curve", "cross")
    max_se_nats: float = Field(0.01, gt=0.0)
    max_mc_samples: int = Field(131_072, ge=4096)

    @model_validator(mode="after")
    def _valid(self) -> GeometricMixtureSpec:
        if not self.layouts:
            raise ValueError("layouts must not be empty")
        if self.components.low < 2:
            raise ValueError("components must be >= 2")
        return self


class FunctionalSpec(FamilySpec):
    """Noisy functional links Y_j = f_j(U_j) + σ_j(U_j) ε with random non-monotone f; U_j is a coordinate of X
    ("smooth", "periodic", "heteroscedastic") or the radius of a block of X coordinates ("radius"). The noise scale
    is constant except for "heteroscedastic", where σ_j(u) = σ_j exp(γ_j tanh(a_j u + b_j)). MI by 1-D quadrature."""

    kinds: tuple[Literal["smooth", "radius", "periodic", "heteroscedastic"], ...] = ("smooth", "radius")
    channels: IntRange = IntRange(low=1, high=3)

    @model_validator(mode="after")
    def _valid(self) -> FunctionalSpec:
        if not self.kinds:
            raise ValueError("kinds must not be empty")
        if self.channels.low < 1:
            raise ValueError("channels must be >= 1")
        return self


class FamiliesConfig(_Strict):
    """Weights and options of each family; a family left out is not drawn."""

    gaussian_dense: FamilySpec | None = None
    gaussian_sparse: FamilySpec | None = None
    gaussian_latent: FamilySpec | None = None
    gaussian_random: FamilySpec | None = None
    independent: FamilySpec | None = None
    student_t: StudentTSpec | None = None
    uniform_noise: FamilySpec | None = None
    mixture: MixtureSpec | None = None
    gmm: GeometricMixtureSpec | None = None
    functional: FunctionalSpec | None = None

    @model_validator(mode="after")
    def _some_weight(self) -> FamiliesConfig:
        if sum(spec.weight for spec in self.enabled().values()) <= 0:
            raise ValueError("at least one family needs a positive weight")
        return self

    def enabled(self) -> dict[str, FamilySpec]:
        return {name: spec for name, spec in self if spec is not None and spec.weight > 0}


class StageSpec(_Strict):
    probability: float = Field(0.0, ge=0.0, le=1.0)


class CoordinatewiseSpec(StageSpec):
    kinds: tuple[Literal["half_cube", "asinh", "wiggly", "normal_cdf", "monotone"], ...] = COORDINATEWISE_KINDS

    @model_validator(mode="after")
    def _nonempty(self) -> CoordinatewiseSpec:
        if self.probability > 0 and not self.kinds:
            raise ValueError("kinds must not be empty when probability > 0")
        return self


class FlowSpec(StageSpec):
    kinds: tuple[Literal["masked_affine", "coupling_spline", "autoregressive_spline"], ...] = ("masked_affine",)
    layers: IntRange = IntRange(low=1, high=3)
    hidden: int = Field(16, ge=2, le=256)
    strength: float = Field(1.0, gt=0.0, le=5.0)

    @model_validator(mode="after")
    def _nonempty(self) -> FlowSpec:
        if self.probability > 0 and not self.kinds:
            raise ValueError("kinds must not be empty when probability > 0")
        if self.layers.low < 1:
            raise ValueError("layers must be >= 1")
        return self


class FittedSpec(_Strict):
    """Flows fitted to a lab's data (``mist adapt``): files applied to every task's X and/or Y first."""

    x: str | None = None
    y: str | None = None


class TransformsConfig(_Strict):
    """MI-preserving reshaping, drawn separately for X and for Y, applied in this order."""

    fitted: FittedSpec = FittedSpec()
    linear: StageSpec = StageSpec()
    spiral: StageSpec = StageSpec()
    flow: FlowSpec = FlowSpec()
    coordinatewise: CoordinatewiseSpec = CoordinatewiseSpec()


class MetaConfig(_Strict):
    """A whole meta-distribution of tasks."""

    name: str = "unnamed"
    seed: int = Field(0, ge=0)
    dims: DimsConfig = DimsConfig()
    mi_prior: MIPrior = MIPrior()
    families: FamiliesConfig
    transforms: TransformsConfig = TransformsConfig()
    # Tasks drawn from each distribution (new samples, n and reshaping each time): a Monte Carlo or quadrature
    # truth is computed once per distribution and reused.
    tasks_per_distribution: int = Field(4, ge=1, le=64)


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid config {source}:"]
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "<root>"
        lines.append(f"  {field}: {e['msg']}")
    return "\n".join(lines)


def parse_config(data: dict, source: str = "<dict>") -> MetaConfig:
    """Validate a dict as a :class:`MetaConfig`, raising :class:`ConfigError` naming the field."""
    try:
        return MetaConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None


def read_config_file(path: str | Path) -> dict:
    """Read a TOML or JSON file into a dict, with a clear error for a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    text = path.read_text()
    try:
        if path.suffix == ".json":
            return json.loads(text)
        return tomllib.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"cannot parse {path}: {err}") from None


def load_config(path: str | Path) -> MetaConfig:
    """Load and validate a meta-distribution config file."""
    return parse_config(read_config_file(path), str(path))
