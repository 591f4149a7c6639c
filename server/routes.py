"""The HTTP routes. Each estimation request takes one path: body bytes → (in a worker thread, within an
admission slot) parse to numpy → :meth:`Estimator.estimate` → response model."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from model.estimator import DEFAULT_QUANTILES, METHODS, Estimate, Estimator
from model.validation import InputError
from server import errors, parsing
from server.schemas import BatchRequest, BatchResponse, BatchResult, EstimateRequest, EstimateResponse

router = APIRouter()

ESTIMATE_FIELDS = ("x", "y", "quantiles", "method", "model")
BATCH_FIELDS = ("items", "quantiles", "method", "model")


class Models:
    """The loaded models by name; the request's ``model`` field picks one ("default" when absent)."""

    def __init__(self, loaded: dict[str, Estimator]):
        self.loaded = loaded

    def pick(self, name) -> Estimator:
        name = "default" if name is None else name
        if not isinstance(name, str) or name not in self.loaded:
            raise InputError("model", f"unknown model {name!r}; known: {', '.join(sorted(self.loaded))}")
        return self.loaded[name]


def models(request: Request) -> Models:
    if request.app.state.estimator is None:
        raise errors.NotReady
    return Models(request.app.state.estimators)


def estimator(request: Request) -> Estimator:
    return models(request).pick(None)


Est = Annotated[Estimator, Depends(estimator)]
ModelsDep = Annotated[Models, Depends(models)]


def _response(est: Estimate, seconds: float) -> EstimateResponse:
    return EstimateResponse(
        method=est.method, mi_nats=est.median, mi_bits=est.median_bits, quantiles=est.quantiles,
        interval_90=est.interval_90, n=est.n, dx=est.dx, dy=est.dy, checkpoint_version=est.version or "-",
        seconds=seconds,
    )  # fmt: skip


def _method(value) -> str:
    if value is None:
        return "mist"
    if value not in METHODS:
        raise InputError("method", f"unknown method {value!r}; choose one of {', '.join(METHODS)}")
    return value


def _estimate_json(body: bytes, available: Models) -> EstimateResponse:
    start = time.perf_counter()
    obj = parsing.json_object(body, ESTIMATE_FIELDS)
    est = available.pick(obj.get("model"))
    x, y = parsing.json_matrix(obj.get("x"), "x"), parsing.json_matrix(obj.get("y"), "y")
    result = est.estimate(x, y, parsing.json_quantiles(obj.get("quantiles")), _method(obj.get("method")))
    return _response(result, time.perf_counter() - start)


def _batch_json(body: bytes, available: Models, max_items: int, max_cells: int) -> BatchResponse:
    start = time.perf_counter()
    obj = parsing.json_object(body, BATCH_FIELDS)
    est = available.pick(obj.get("model"))
    items = obj.get("items")
    if not isinstance(items, list):
        raise InputError("items", "must be a list of {x, y} objects")
    if len(items) > max_items:
        raise InputError("items", f"has {len(items)} entries; at most {max_items}")
    qs, method = parsing.json_quantiles(obj.get("quantiles")), _method(obj.get("method"))
    results, cells = [], 0
    for i, item in enumerate(items):  # each item stands alone: a bad one fails without the others
        try:
            if not isinstance(item, dict) or set(item) - {"x", "y"}:
                raise InputError(f"items[{i}]", "must be an object with fields x and y")
            x = parsing.json_matrix(item.get("x"), f"items[{i}].x")
            y = parsing.json_matrix(item.get("y"), f"items[{i}].y")
            cells += x.size + y.size
            if cells > max_cells:
                raise InputError("items", f"the batch holds more than {max_cells} numbers; split it")
            results.append(BatchResult(ok=True, result=_response(est.estimate(x, y, qs, method), 0.0)))
        except InputError as err:
            if err.field == "items":
                raise
            results.append(BatchResult(ok=False, error=errors.input_error_body(err)))
    return BatchResponse(results=results, seconds=time.perf_counter() - start)


def _estimate_npz(body: bytes, quantiles: str, method: str, est: Estimator) -> EstimateResponse:
    start = time.perf_counter()
    x, y = parsing.npz_pair(body, est.limits)
    try:
        qs = [float(q) for q in quantiles.split(",")]
    except ValueError:
        raise InputError("quantiles", "must be comma-separated numbers") from None
    result = est.estimate(x, y, qs, _method(method))
    return _response(result, time.perf_counter() - start)


JSON_BODY = {
    "description": "problem+json",
    "content": {errors.PROBLEM: {"schema": errors.ProblemBody.model_json_schema()}},
}
PROBLEMS = {code: {**JSON_BODY, "description": text} for code, text in errors.STATUS_TEXT.items()}


def _body_doc(model) -> dict:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


@router.post("/estimate", response_model=EstimateResponse, responses=PROBLEMS, openapi_extra=_body_doc(EstimateRequest))
async def estimate(request: Request, available: ModelsDep) -> EstimateResponse:
    """Estimate I(X; Y): the body is an :class:`EstimateRequest` (rows of numbers)."""
    return await request.app.state.admission.run(_estimate_json, await request.body(), available)


@router.post("/estimate/batch", response_model=BatchResponse, responses=PROBLEMS, openapi_extra=_body_doc(BatchRequest))
async def estimate_batch(request: Request, available: ModelsDep) -> BatchResponse:
    """Many samples in one request; each item is answered (or refused) on its own."""
    settings = request.app.state.settings
    body = await request.body()
    return await request.app.state.admission.run(_batch_json, body, available, settings.max_batch_items,
                                                 settings.max_batch_numbers)  # fmt: skip


NPZ_SCHEMA = {"type": "string", "format": "binary", "description": "an .npz file holding arrays x (n × dx), y (n × dy)"}
NPZ_QUANTILES = ",".join(map(str, DEFAULT_QUANTILES))
NPZ_BODY = {"requestBody": {"required": True, "content": {"application/octet-stream": {"schema": NPZ_SCHEMA}}}}


@router.post("/estimate/npz", response_model=EstimateResponse, responses=PROBLEMS, openapi_extra=NPZ_BODY)
async def estimate_npz(
    request: Request,
    available: ModelsDep,
    quantiles: Annotated[str, Query()] = NPZ_QUANTILES,
    method: str = "mist",
    model: str = "default",
) -> EstimateResponse:
    """Binary upload: the body is an ``.npz`` file holding arrays ``x`` and ``y``."""
    est = available.pick(model)
    return await request.app.state.admission.run(_estimate_npz, await request.body(), quantiles, method, est)


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
        "limits": {"min_n": lim.min_n, "max_n": lim.max_n, "max_dim": lim.max_dim,
                   "network_max_dim": est.trained_max_dim},
        "quantile_range": [float(est.grid[0]), float(est.grid[-1])],
    }  # fmt: skip


@router.get("/v1/model")
async def model_info(est: Est) -> JSONResponse:
    """The default model: its checkpoint's metadata (including its stored evaluation) and limits."""
    return JSONResponse({**est.info, **_describe("default", est)})


@router.get("/v1/models")
async def models_info(available: ModelsDep) -> JSONResponse:
    """Every loaded model: name, version, training summary and supported ranges."""
    return JSONResponse({"default": "default", "models": [_describe(k, v) for k, v in available.loaded.items()]})


@router.get("/metrics")
async def metrics(request: Request) -> PlainTextResponse:
    return PlainTextResponse(generate_latest(request.app.state.registry).decode(), media_type=CONTENT_TYPE_LATEST)
