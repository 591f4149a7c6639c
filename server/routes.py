"""The HTTP routes. Each estimation request takes one path: body bytes → (in a worker thread, within an
admission slot) parse to numpy → :meth:`Estimator.estimate` → response model."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic.json_schema import models_json_schema

from model.cost import conditional_seconds, pair_seconds, stratified_seconds
from model.discrete import resolve
from model.estimator import Estimate, Estimator
from model.screening import discrete_columns, ranked
from model.stratified import strata
from model.validation import DEFAULT_QUANTILES, MAX_QUANTILE_LEVELS, METHODS, InputError, as_matrix
from server import errors, parsing
from server.schemas import (
    BatchRequest,
    BatchResponse,
    BatchResult,
    EstimateRequest,
    EstimateResponse,
    Method,
    PairwiseRequest,
    PairwiseResponse,
    ScreenRequest,
    ScreenResponse,
    ScreenResult,
)

router = APIRouter()
SCHEMA_REF = "#/components/schemas/{model}"


class Models:
    """The loaded models by name; the request's ``model`` field picks one ("default" when absent)."""

    def __init__(self, loaded: dict[str, Estimator]):
        self.loaded = loaded

    def pick(self, name: str) -> Estimator:
        if name not in self.loaded:
            raise InputError("model", f"unknown model {name!r}; known: {', '.join(sorted(self.loaded))}")
        return self.loaded[name]


def models(request: Request) -> Models:
    if request.app.state.estimator is None:
        raise errors.NotReady
    return Models(request.app.state.estimators)


def estimator(request: Request) -> Estimator:
    return models(request).pick("default")


Est = Annotated[Estimator, Depends(estimator)]
ModelsDep = Annotated[Models, Depends(models)]


def _response(est: Estimate, seconds: float) -> EstimateResponse:
    return EstimateResponse(**{**est.to_dict(), "checkpoint_version": est.checkpoint_version or "-"}, seconds=seconds)


def _estimate(call: parsing.Call, est: Estimator, cancel: threading.Event) -> EstimateResponse:
    """In a worker thread, within an admission slot."""
    start, opts = time.perf_counter(), call.options
    if call.z is None:
        _no_discrete_z(opts.discrete_z)
        result = est.estimate(call.x, call.y, opts.quantiles, opts.method, discrete_x=opts.discrete_x,
                              discrete_y=opts.discrete_y)  # fmt: skip
    else:
        result = est.conditional(call.x, call.y, call.z, opts.quantiles, opts.method, discrete_z=opts.discrete_z,
                                 discrete_x=opts.discrete_x, discrete_y=opts.discrete_y)  # fmt: skip
    return _response(result, time.perf_counter() - start)


def _no_discrete_z(flag: bool | str) -> None:
    """``discrete_z`` names how z is read: without z it would be ignored, so it is refused."""
    if flag != "auto":
        raise InputError("discrete_z", "applies to z (conditional MI); send z, or omit discrete_z")


def _batch(call: parsing.BatchCall, est: Estimator, cancel: threading.Event) -> BatchResponse:
    start, opts = time.perf_counter(), call.options
    est.check_request(opts.quantiles, opts.method)  # a bad level or method fails the batch once, not every item
    _no_discrete_z(opts.discrete_z)
    results = []
    for item in call.items:
        if cancel.is_set():
            raise errors.ClientGone
        try:
            if isinstance(item, InputError):
                raise item
            x, y = item
            answer = est.estimate(x, y, opts.quantiles, opts.method, discrete_x=opts.discrete_x,
                                  discrete_y=opts.discrete_y)  # fmt: skip
            results.append(BatchResult(ok=True, result=_response(answer, 0)))
        except InputError as err:
            results.append(BatchResult(ok=False, error=errors.input_error_body(err)))
    return BatchResponse(results=results, seconds=time.perf_counter() - start)


def _stop_if_gone(cancel: threading.Event):
    """A ``between`` callback for screening: stops between steps of pairs once the client has left."""

    def check(done: int, total: int) -> None:
        if cancel.is_set():
            raise errors.ClientGone

    return check


def _screen(call: parsing.TableCall, est: Estimator, cancel: threading.Event) -> ScreenResponse:
    start, opts = time.perf_counter(), call.options
    answers = est.screen(call.x, call.target, method=opts.method, quantiles=opts.quantiles, columns=opts.columns,
                         between=_stop_if_gone(cancel), discrete_features=opts.discrete_features,
                         discrete_target=opts.discrete_target)  # fmt: skip
    results = [ScreenResult(column=name, result=_response(a, 0)) for name, a in ranked(answers)]
    return ScreenResponse(results=results, seconds=time.perf_counter() - start)


def _pairwise(call: parsing.TableCall, est: Estimator, cancel: threading.Event) -> PairwiseResponse:
    start, opts = time.perf_counter(), call.options
    result = est.pairwise(call.x, method=opts.method, columns=opts.columns, between=_stop_if_gone(cancel),
                          discrete_features=opts.discrete_features)  # fmt: skip

    def rows(matrix: np.ndarray) -> list[list[float | None]]:
        return [[None if np.isnan(v) else float(v) for v in row] for row in matrix]

    return PairwiseResponse(columns=result.names, mi_nats=rows(result.mi_nats), lower=rows(result.lower),
                            upper=rows(result.upper), warnings=result.warnings,
                            seconds=time.perf_counter() - start)  # fmt: skip


def _cost(call: parsing.Call | parsing.BatchCall | parsing.TableCall) -> tuple[float, str]:
    """Estimated seconds of work (:func:`model.cost.pair_seconds`) and the field a refusal names."""
    method, opts = call.options.method, call.options
    if isinstance(call, parsing.Call) and call.z is not None:
        n, dx, dy = _shape(call.x, call.y)
        stratify, sides = Estimator.conditioning(call.x, call.y, call.z, opts.discrete_z, opts.discrete_x,
                                                 opts.discrete_y, method)  # fmt: skip
        if stratify:
            return stratified_seconds(method, [len(rows) for rows in strata(as_matrix(call.z, "z"))], dx, dy,
                                      *sides), "z"  # fmt: skip
        return conditional_seconds(method, n, dx, dy, _shape(call.x, call.z)[2]), "z"
    if isinstance(call, parsing.Call):
        return pair_seconds(method, *_shape(call.x, call.y), *_sides(opts, call.x, call.y)), "x"
    if isinstance(call, parsing.TableCall):
        table = as_matrix(call.x, "x")
        n, p = table.shape
        mask = discrete_columns(table, opts.columns or [str(j) for j in range(p)], opts.discrete_features)
        if call.target is None:
            k = int(mask.sum())
            both, one, neither = k * (k - 1) / 2, k * (p - k), (p - k) * (p - k - 1) / 2
            seconds = [pair_seconds(method, n, 1, 1, *sides) for sides in ((True, True), (True, False), (False,) * 2)]
            return both * seconds[0] + one * seconds[1] + neither * seconds[2], "x"
        target = as_matrix(call.target, "target")
        discrete_target = resolve(opts.discrete_target, target, "discrete_target")
        dt = target.shape[1]
        return sum(pair_seconds(method, n, 1, dt, bool(m), discrete_target) for m in mask), "x"
    pairs = [p for p in call.items if isinstance(p, tuple)]
    return sum(pair_seconds(method, *_shape(x, y), *_sides(opts, x, y)) for x, y in pairs), "items"


def _sides(opts, x: np.ndarray, y: np.ndarray) -> tuple[bool, bool]:
    """A pair's declared discreteness, resolved as :meth:`Estimator.estimate_batch` will (for its cost)."""
    return (resolve(opts.discrete_x, as_matrix(x, "x"), "discrete_x"),
            resolve(opts.discrete_y, as_matrix(y, "y"), "discrete_y"))  # fmt: skip


def _shape(x: np.ndarray, y: np.ndarray) -> tuple[int, int, int]:
    return len(x), (x.shape[1] if x.ndim == 2 else 1), (y.shape[1] if y.ndim == 2 else 1)


async def _until_disconnect(request: Request, cancel: threading.Event) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
    cancel.set()


async def _admit(request: Request, available: Models, parse, args: tuple, work):
    """Parse in a worker process, refuse at once what cannot finish before the deadline, then ``work`` within an
    admission slot; a client that leaves stops it (between batch items) or keeps it from starting."""
    state = request.app.state
    admission, arrived = state.admission, asyncio.get_running_loop().time()
    try:
        call = await asyncio.wait_for(state.parsers.parse(parse, *args), admission.remaining_s(arrived))
    except TimeoutError:
        raise errors.DeadlineExceeded from None
    est = available.pick(call.options.model)
    cost, field = _cost(call)
    if cost > admission.deadline_s:
        raise InputError(field, f"{call.options.method} would need about {cost:.0f} s here, past the "
                         f"{admission.deadline_s:g} s deadline: split the work, subsample, or use mist")  # fmt: skip
    cancel = threading.Event()
    watcher = asyncio.create_task(_until_disconnect(request, cancel))
    try:
        return await admission.run(work, call, est, cancel, cost=cost, arrived=arrived, cancel=cancel)
    finally:
        watcher.cancel()


JSON_BODY = {
    "description": "problem+json",
    "content": {errors.PROBLEM: {"schema": errors.ProblemBody.model_json_schema()}},
}
PROBLEMS = {code: {**JSON_BODY, "description": text} for code, text in errors.STATUS_TEXT.items()}


REQUEST_MODELS = (
    EstimateRequest,
    BatchRequest,
    ScreenRequest,
    PairwiseRequest,
)  # bodies parsed by server.parsing, not by FastAPI


def request_schemas() -> dict:
    """The JSON Schemas of :data:`REQUEST_MODELS` and what they reference, for the OpenAPI components."""
    _, defs = models_json_schema([(m, "validation") for m in REQUEST_MODELS], ref_template=SCHEMA_REF)
    return defs["$defs"]


def _body_doc(model) -> dict:
    schema = {"$ref": SCHEMA_REF.format(model=model.__name__)}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


@router.post("/estimate", response_model=EstimateResponse, responses=PROBLEMS, openapi_extra=_body_doc(EstimateRequest))
async def estimate(request: Request, available: ModelsDep) -> EstimateResponse:
    """Estimate I(X; Y): the body is an :class:`EstimateRequest` (rows of numbers)."""
    return await _admit(request, available, parsing.estimate_call, (await request.body(),), _estimate)


@router.post("/estimate/batch", response_model=BatchResponse, responses=PROBLEMS, openapi_extra=_body_doc(BatchRequest))
async def estimate_batch(request: Request, available: ModelsDep) -> BatchResponse:
    """Many samples in one request; each item is answered (or refused) on its own."""
    settings = request.app.state.settings
    args = (await request.body(), settings.max_batch_items, settings.max_batch_numbers)
    return await _admit(request, available, parsing.batch_call, args, _batch)


@router.post("/estimate/screen", response_model=ScreenResponse, responses=PROBLEMS,
             openapi_extra=_body_doc(ScreenRequest))  # fmt: skip
async def estimate_screen(request: Request, available: ModelsDep) -> ScreenResponse:
    """I(x_j; target) for every column of a table, ranked, each with its interval."""
    return await _admit(request, available, parsing.screen_call, (await request.body(),), _screen)


@router.post("/estimate/pairwise", response_model=PairwiseResponse, responses=PROBLEMS,
             openapi_extra=_body_doc(PairwiseRequest))  # fmt: skip
async def estimate_pairwise(request: Request, available: ModelsDep) -> PairwiseResponse:
    """The p × p matrix of I(x_i; x_j) with its 90 % bounds."""
    return await _admit(request, available, parsing.pairwise_call, (await request.body(),), _pairwise)


QuantilesQuery = Annotated[str | None, Query(description="comma-separated levels (mist only)")]
MethodQuery = Annotated[Method, Query()]
FlagQuery = Annotated[str, Query(description="true, false or auto (see POST /estimate)")]
NPZ_SCHEMA = {"type": "string", "format": "binary", "description": "an .npz file holding arrays x (n × dx), y (n × dy)"}
NPZ_BODY = {"requestBody": {"required": True, "content": {"application/octet-stream": {"schema": NPZ_SCHEMA}}}}


@router.post("/estimate/npz", response_model=EstimateResponse, responses=PROBLEMS, openapi_extra=NPZ_BODY)
async def estimate_npz(
    request: Request,
    available: ModelsDep,
    quantiles: QuantilesQuery = None,
    method: MethodQuery = "mist",
    model: str = "default",
    discrete_x: FlagQuery = "false",
    discrete_y: FlagQuery = "false",
    discrete_z: FlagQuery = "auto",
) -> EstimateResponse:
    """Binary upload: the body is an ``.npz`` file holding arrays ``x`` and ``y`` (and ``z``)."""
    args = (await request.body(), available.pick(model).limits, quantiles, method, model, discrete_x, discrete_y,
            discrete_z)  # fmt: skip
    return await _admit(request, available, parsing.npz_call, args, _estimate)


TABLE_NPZ = {"type": "string", "format": "binary", "description": "an .npz file holding the table x (n × p) and, "
             "to screen, the target (n or n × d)"}  # fmt: skip
TABLE_NPZ_BODY = {"requestBody": {"required": True, "content": {"application/octet-stream": {"schema": TABLE_NPZ}}}}
Columns = Annotated[str | None, Query(description="comma-separated names of x's columns (default: 0, 1, …)")]
DiscreteFeatures = Annotated[str, Query(description="auto, true, false, or the discrete columns' names or indices, "
                                        "comma-separated")]  # fmt: skip


@router.post("/estimate/screen/npz", response_model=ScreenResponse, responses=PROBLEMS, openapi_extra=TABLE_NPZ_BODY)
async def estimate_screen_npz(
    request: Request,
    available: ModelsDep,
    quantiles: QuantilesQuery = None,
    method: MethodQuery = "mist",
    model: str = "default",
    columns: Columns = None,
    discrete_features: DiscreteFeatures = "auto",
    discrete_target: FlagQuery = "false",
) -> ScreenResponse:
    """Binary upload of :func:`estimate_screen`: an ``.npz`` holding arrays ``x`` and ``target``."""
    args = (await request.body(), available.pick(model).limits, True, quantiles, method, model, columns,
            discrete_features, discrete_target)  # fmt: skip
    return await _admit(request, available, parsing.npz_table_call, args, _screen)


@router.post("/estimate/pairwise/npz", response_model=PairwiseResponse, responses=PROBLEMS,
             openapi_extra=TABLE_NPZ_BODY)  # fmt: skip
async def estimate_pairwise_npz(
    request: Request,
    available: ModelsDep,
    method: MethodQuery = "mist",
    model: str = "default",
    columns: Columns = None,
    discrete_features: DiscreteFeatures = "auto",
) -> PairwiseResponse:
    """Binary upload of :func:`estimate_pairwise`: an ``.npz`` holding the array ``x``."""
    args = (await request.body(), available.pick(model).limits, False, None, method, model, columns,
            discrete_features)  # fmt: skip
    return await _admit(request, available, parsing.npz_table_call, args, _pairwise)


@router.get("/health/live")
@router.get("/v2/health/live")
async def live() -> dict:
    return {"live": True}


@router.get("/health/ready")
@router.get("/v2/health/ready")
async def ready(request: Request):
    if request.app.state.estimator is None:
        return errors.problem(503, "Not ready", "model not loaded yet")
    return {"ready": True}


def _describe(name: str, est: Estimator) -> dict:
    lim, meta = est.limits, est.info.get("meta_config") or {}
    train = est.info.get("train_config") or {}
    return {
        "name": name,
        "version": est.version,
        "training": {"steps": est.info.get("step"), "config": train.get("name"), "meta_config": meta.get("name"),
                     "trained_shapes": meta.get("dims"), "init_from": (est.info.get("init_from") or {}).get("version")},
        "limits": {"min_n": lim.min_n, "max_n": lim.max_n, "max_dim": lim.max_dim, "max_cells": lim.max_cells,
                   "network_max_dim": est.trained_max_dim},
        "quantile_range": list(est.quantile_range),
        # how its MI intervals were calibrated (model.intervals); null: the network's own quantiles
        "interval_calibration": est.interval_calibration and est.interval_calibration.to_dict(),
        # the checkpoint whose chain rule answers I(X; Y | Z) (this one, or one its .cmi.json names)
        "conditional": {"version": (cmi := est.conditional_by).version, "calibrated": cmi.calibration is not None},
    }  # fmt: skip


@router.get("/v1/model")
async def model_info(est: Est) -> JSONResponse:
    """The default model: its checkpoint's metadata (including its stored evaluation) and limits."""
    return JSONResponse({**est.info, **_describe("default", est)})


@router.get("/v1/models")
async def models_info(available: ModelsDep) -> JSONResponse:
    """Every loaded model: name, version, training summary and supported ranges."""
    return JSONResponse({"default": "default", "models": [_describe(k, v) for k, v in available.loaded.items()]})


def _picked(available: Models, name: str) -> Estimator:
    if name not in available.loaded:
        raise HTTPException(404, f"unknown model {name!r}; known: {', '.join(sorted(available.loaded))}")
    return available.loaded[name]


@router.get("/v2/models/{name}")
async def v2_model_metadata(name: str, available: ModelsDep) -> JSONResponse:
    """Open Inference Protocol (KServe v2) model metadata; ``parameters`` adds units, limits, quantile levels and
    the training summary. Estimates themselves are served by ``POST /estimate`` (no tensor inference route)."""
    est = _picked(available, name)
    described = _describe(name, est)
    lim = est.limits
    return JSONResponse({
        "name": name,
        "versions": [est.version],
        "platform": "pytorch",
        "inputs": [{"name": "x", "datatype": "FP64", "shape": [-1, -1]},
                   {"name": "y", "datatype": "FP64", "shape": [-1, -1]}],
        "outputs": [{"name": "mi_nats", "datatype": "FP64", "shape": [1]},
                    {"name": "quantiles", "datatype": "FP64", "shape": [-1]}],
        "parameters": {"units": "nats", "n_range": [lim.min_n, lim.max_n], "dims_range": [1, lim.max_dim],
                       "max_cells": lim.max_cells,
                       "default_quantiles": list(DEFAULT_QUANTILES), "quantile_range": described["quantile_range"],
                       "max_quantile_levels": MAX_QUANTILE_LEVELS, "training": described["training"],
                       "methods": list(METHODS)},
    })  # fmt: skip


@router.get("/v2/models/{name}/ready")
async def v2_model_ready(name: str, available: ModelsDep) -> dict:
    _picked(available, name)
    return {"name": name, "ready": True}


@router.get("/metrics")
async def metrics(request: Request) -> PlainTextResponse:
    return PlainTextResponse(generate_latest(request.app.state.registry).decode(), media_type=CONTENT_TYPE_LATEST)
