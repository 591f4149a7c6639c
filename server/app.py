"""The FastAPI application: load the checkpoint once, validate at the edge, call the estimator.

Estimation endpoints are plain ``def`` functions, so FastAPI runs them in its thread pool and the event loop
keeps answering health checks while estimates run.
"""

from __future__ import annotations

import io
import time
from contextlib import asynccontextmanager

import numpy as np
import torch
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from model.estimator import Estimate, Estimator
from model.validation import InputError, validate_pair
from server import errors
from server.schemas import BatchRequest, BatchResponse, BatchResult, EstimateRequest, EstimateResponse
from server.settings import Settings

JSON_ROUTES = ("/estimate", "/estimate/batch")


def _response(est: Estimate, seconds: float) -> EstimateResponse:
    return EstimateResponse(
        method=est.method, mi_nats=est.median, mi_bits=est.median_bits, quantiles=est.quantiles,
        interval_90=est.interval_90, n=est.n, dx=est.dx, dy=est.dy, checkpoint_version=est.version or "-",
        seconds=seconds,
    )  # fmt: skip


def create_app(settings: Settings | None = None, estimator: Estimator | None = None) -> FastAPI:
    settings = settings or Settings()
    registry = CollectorRegistry()
    requests = Counter("mist_requests", "HTTP requests", ["path", "status"], registry=registry)
    latency = Histogram("mist_request_seconds", "request latency", ["path"], registry=registry)
    sizes = Histogram("mist_estimate_cells", "n * (dx + dy) per estimate", registry=registry,
                      buckets=(1e2, 1e3, 1e4, 1e5, 1e6))  # fmt: skip

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        torch.set_num_threads(settings.torch_threads)
        app.state.estimator = estimator or Estimator.load(settings.checkpoint)
        yield

    app = FastAPI(title="MIST mutual-information estimator", version="0.1.0", lifespan=lifespan)
    app.state.estimator = None
    app.add_exception_handler(InputError, errors.on_input_error)
    app.add_exception_handler(RequestValidationError, errors.on_validation_error)
    app.add_exception_handler(HTTPException, errors.on_http_error)
    app.add_exception_handler(Exception, errors.on_unexpected)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        start = time.perf_counter()
        path = request.url.path
        if request.method == "POST":
            declared = request.headers.get("content-length")
            # The limit is enforced before any byte is parsed; bodies must declare their length.
            if declared is None or not declared.isdigit():
                return errors.problem(411, "Length required", "POST bodies need a Content-Length header")
            if int(declared) > settings.max_body_bytes:
                return errors.problem(413, "Body too large", f"body exceeds {settings.max_body_bytes} bytes")
            ctype = request.headers.get("content-type", "").split(";")[0].strip()
            wanted = "application/json" if path in JSON_ROUTES else "application/octet-stream"
            if path in (*JSON_ROUTES, "/estimate/npz") and ctype != wanted:
                return errors.problem(415, "Unsupported media type", f"content-type must be {wanted}, got {ctype!r}")
        response = await call_next(request)
        requests.labels(path, str(response.status_code)).inc()
        latency.labels(path).observe(time.perf_counter() - start)
        return response

    def get_estimator(request: Request) -> Estimator:
        est = request.app.state.estimator
        if est is None:
            raise HTTPException(503, "model not loaded yet")
        return est

    @app.post("/estimate", response_model=EstimateResponse)
    def estimate(req: EstimateRequest, est: Estimator = Depends(get_estimator)) -> EstimateResponse:
        start = time.perf_counter()
        result = est.estimate(req.x, req.y, req.quantiles, req.method)
        sizes.observe(result.n * (result.dx + result.dy))
        return _response(result, time.perf_counter() - start)

    @app.post("/estimate/npz", response_model=EstimateResponse)
    async def estimate_npz(request: Request, quantiles: str = "0.05,0.5,0.95", method: str = "mist",
                           est: Estimator = Depends(get_estimator)) -> EstimateResponse:  # fmt: skip
        """Binary upload: the body is an ``.npz`` file holding arrays ``x`` and ``y``."""
        return await run_in_threadpool(_estimate_npz, await request.body(), quantiles, method, est)

    def _estimate_npz(body: bytes, quantiles: str, method: str, est: Estimator) -> EstimateResponse:
        start = time.perf_counter()
        try:
            with np.load(io.BytesIO(body), allow_pickle=False) as z:
                x, y = z["x"], z["y"]
        except KeyError:
            raise InputError("body", "the .npz must contain arrays named 'x' and 'y'") from None
        except (ValueError, OSError, EOFError):
            raise InputError("body", "is not a readable .npz file") from None
        try:
            qs = [float(q) for q in quantiles.split(",")]
        except ValueError:
            raise InputError("quantiles", "must be comma-separated numbers") from None
        result = est.estimate(x, y, qs, method)
        sizes.observe(result.n * (result.dx + result.dy))
        return _response(result, time.perf_counter() - start)

    @app.post("/estimate/batch", response_model=BatchResponse)
    def estimate_batch(req: BatchRequest, est: Estimator = Depends(get_estimator)) -> BatchResponse:
        if len(req.items) > settings.max_batch_items:
            raise InputError("items", f"has {len(req.items)} entries; at most {settings.max_batch_items}")
        start = time.perf_counter()
        results: list[BatchResult | None] = [None] * len(req.items)
        good: list[int] = []
        for i, item in enumerate(req.items):  # validate each on its own, then one pass for the good ones
            try:
                validate_pair(item.x, item.y, est.limits)
                good.append(i)
            except InputError as err:
                results[i] = BatchResult(ok=False, error=errors.input_error_problem(err))
        answers = est.estimate_batch([(req.items[i].x, req.items[i].y) for i in good], req.quantiles, req.method)
        elapsed = time.perf_counter() - start
        for i, a in zip(good, answers, strict=True):
            results[i] = BatchResult(ok=True, result=_response(a, elapsed))
        return BatchResponse(results=results, seconds=elapsed)

    @app.get("/health/live")
    @app.get("/v2/health/live")
    async def live() -> dict:
        return {"live": True}

    @app.get("/health/ready")
    @app.get("/v2/health/ready")
    async def ready(request: Request):
        if request.app.state.estimator is None:
            return errors.problem(503, "Not ready", "model not loaded yet")
        return {"ready": True}

    @app.get("/v1/model")
    async def model_info(est: Estimator = Depends(get_estimator)) -> JSONResponse:
        lim = est.limits
        return JSONResponse({**est.info, "limits": {"min_n": lim.min_n, "max_n": lim.max_n, "max_dim": lim.max_dim},
                             "quantile_range": [float(est.grid[0]), float(est.grid[-1])]})  # fmt: skip

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(registry).decode(), media_type=CONTENT_TYPE_LATEST)

    return app
