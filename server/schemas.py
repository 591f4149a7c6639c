"""Request and response bodies of the HTTP API. The request models are what parsing checks
(:mod:`server.parsing`), so the OpenAPI and the run-time behaviour are one contract."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from model.validation import DEFAULT_QUANTILES, MAX_QUANTILE_LEVELS, METHODS

Matrix = list[list[float]] | list[float]
Method = Literal[METHODS]
ARRAY_FIELDS = ("x", "y")  # parsed to numpy by orjson + numpy (pydantic would build millions of floats one by one)
CONDITION_FIELD = "z"  # the conditioning set of POST /estimate, parsed like the arrays


class EstimateOptions(BaseModel):
    """What a request asks for besides its arrays."""

    model_config = ConfigDict(extra="forbid", strict=True)

    quantiles: list[float] | None = Field(
        None, min_length=1, max_length=MAX_QUANTILE_LEVELS,
        description=f"levels within the model's quantile_range (GET /v1/models); default {list(DEFAULT_QUANTILES)}; "
        "mist only (the baselines answer a point estimate)",
    )  # fmt: skip
    method: Method = "mist"
    model: str = Field("default", description="a loaded model's name (GET /v1/models)")


def _flag(value: Any) -> Any:
    """One message for a bad discreteness (pydantic would name each member of the union)."""
    if isinstance(value, bool) or value == "auto":
        return value
    raise ValueError(f"must be true, false or 'auto', got {value!r}")


def _features(value: Any) -> Any:
    if isinstance(value, list) and all(isinstance(v, str | int) and not isinstance(v, bool) for v in value):
        return value
    return _flag(value)


Discreteness = Annotated[bool | Literal["auto"], BeforeValidator(_flag)]
DiscreteFeatures = Annotated[bool | Literal["auto"] | list[str | int], BeforeValidator(_features)]
DISCRETE_DOC = ("true: answered by the discrete estimators (Miller–Madow plug-in, or Ross's kNN beside a continuous "
                "side); 'auto': integer-valued with at most 32 distinct values and 5 rows per value")  # fmt: skip


class PairOptions(EstimateOptions):
    discrete_x: Discreteness = Field(False, description=f"x is discrete; {DISCRETE_DOC}")
    discrete_y: Discreteness = Field(False, description=f"y is discrete; {DISCRETE_DOC}")
    discrete_z: Discreteness = Field("auto", description="with z: z is discrete, so I(X; Y | Z) is estimated "
                                     "within each of its classes (method mist_stratified; each class needs 10 rows); "
                                     "false: the chain rule; 'auto' as for discrete_x")  # fmt: skip


class TableOptions(EstimateOptions):
    columns: list[str] | None = Field(None, description="names of x's columns (default: 0, 1, …)")
    discrete_features: DiscreteFeatures = Field(
        "auto", description=f"which columns are discrete: all, none, or a list of names or indices; {DISCRETE_DOC}"
    )


class ScreenOptions(TableOptions):
    discrete_target: Discreteness = Field(False, description=f"the target is discrete; {DISCRETE_DOC}")


class ScreenRequest(ScreenOptions):
    x: list[list[float]] = Field(description="the table: n rows of p columns")
    target: Matrix = Field(description="the target: n values, or n rows of several columns")


class PairwiseRequest(TableOptions):
    x: list[list[float]] = Field(description="the table: n rows of p columns; quantiles do not apply (the bounds "
                                 "are the 90 % interval)")  # fmt: skip


class ScreenResult(BaseModel):
    column: str
    result: EstimateResponse


class ScreenResponse(BaseModel):
    results: list[ScreenResult] = Field(description="one per column, ranked by mi_nats")
    seconds: float


class PairwiseResponse(BaseModel):
    columns: list[str]
    mi_nats: list[list[float | None]] = Field(description="p × p medians, nats; null on the diagonal")
    lower: list[list[float | None]] = Field(description="5 % quantiles (null for a baseline)")
    upper: list[list[float | None]] = Field(description="95 % quantiles (null for a baseline)")
    warnings: list[str] = Field([], description="columns with tied values read as continuous")
    seconds: float


class EstimateRequest(PairOptions):
    x: Matrix = Field(description="n samples of X: a list of rows, or a flat list for one column")
    y: Matrix = Field(description="n samples of Y, same n as x")
    z: Matrix | None = Field(None, description="n samples of Z, same n as x: the answer is then I(X; Y | Z) (methods "
                             "mist, frenzel_pompe, gaussian_copula)")  # fmt: skip


class EstimateResponse(BaseModel):
    method: str
    mi_nats: float
    mi_bits: float
    quantiles: dict[str, float]
    interval_90: tuple[float, float] | None
    n: int
    dx: int
    dy: int
    dz: int = Field(0, description="dims of z: 0 for I(X; Y)")
    checkpoint_version: str
    warnings: list[str] = Field([], description="what to know about the answer (ties in a column read as continuous)")
    seconds: float


class BatchItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    x: Matrix
    y: Matrix


class BatchRequest(PairOptions):
    items: list[BatchItem] = Field(description="samples, each answered (or refused) on its own")


class BatchResult(BaseModel):
    ok: bool
    result: EstimateResponse | None = None
    error: dict | None = None


class BatchResponse(BaseModel):
    results: list[BatchResult]
    seconds: float
