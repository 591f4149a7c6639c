"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from model.estimator import DEFAULT_QUANTILES, METHODS

Matrix = list[list[float]] | list[float]
Method = Literal[METHODS]


class EstimateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    x: Matrix = Field(description="n samples of X: a list of rows, or a flat list for one column")
    y: Matrix = Field(description="n samples of Y, same n as x")
    quantiles: list[float] = Field(default=list(DEFAULT_QUANTILES), description="levels in [0.025, 0.975]")
    method: Method = "mist"


class EstimateResponse(BaseModel):
    method: str
    mi_nats: float
    mi_bits: float
    quantiles: dict[str, float]
    interval_90: tuple[float, float] | None
    n: int
    dx: int
    dy: int
    checkpoint_version: str
    seconds: float


class BatchItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    x: Matrix
    y: Matrix


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[BatchItem]
    quantiles: list[float] = list(DEFAULT_QUANTILES)
    method: Method = "mist"


class BatchResult(BaseModel):
    ok: bool
    result: EstimateResponse | None = None
    error: dict | None = None


class BatchResponse(BaseModel):
    results: list[BatchResult]
    seconds: float
