"""The FastAPI application factory: load the checkpoint once, bound every request, route to the estimator.

Estimation runs in worker threads within admission slots (:class:`server.limits.Admission`), so the event loop
keeps answering health checks whatever the requests cost.
"""

from __future__ import annotations

import time
from contextlib import asynccontextmanager

import torch
from fastapi import FastAPI, Request
from fastapi_offline import FastAPIOffline
from prometheus_client import CollectorRegistry, Counter, Histogram

from model.estimator import Estimator
from model.package_version import package_version
from server import errors
from server.limits import Admission, BodyLimit
from server.routes import router
from server.settings import Settings

UNMATCHED = "unmatched"
JSON_ROUTES = ("/estimate", "/estimate/batch")


def create_app(
    settings: Settings | None = None, estimator: Estimator | None = None, estimators: dict[str, Estimator] | None = None
) -> FastAPI:
    """The service; ``estimator`` / ``estimators`` inject loaded models (tests), else settings name the files."""
    settings = settings or Settings()
    registry = CollectorRegistry()
    requests = Counter("mist_requests", "HTTP requests", ["path", "status"], registry=registry)
    latency = Histogram("mist_request_seconds", "request latency", ["path"], registry=registry)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        torch.set_num_threads(settings.torch_threads)
        loaded = dict(estimators or {})
        if estimator is not None:
            loaded.setdefault("default", estimator)
        for name, path in settings.models().items():
            if name not in loaded:
                loaded[name] = Estimator.load(path)
        app.state.estimators = loaded
        app.state.estimator = loaded["default"]
        yield

    # fastapi-offline serves the Swagger UI and ReDoc assets from the installed package: /docs works in a cluster
    # without internet (FastAPI's default pages load them from a public CDN).
    app = FastAPIOffline(title="MIST mutual-information estimator", version=package_version(),
                         lifespan=lifespan)  # fmt: skip
    app.state.estimator, app.state.estimators = None, {}
    app.state.settings, app.state.registry = settings, registry
    app.state.admission = Admission(settings.estimate_slots, settings.deadline_s, settings.max_waiting)
    for exc, handler in errors.HANDLERS.items():
        app.add_exception_handler(exc, handler)
    app.include_router(router)

    @app.middleware("http")
    async def observe(request: Request, call_next):
        start = time.perf_counter()
        path = request.url.path
        if request.method == "POST" and path in (*JSON_ROUTES, "/estimate/npz"):
            ctype = request.headers.get("content-type", "").split(";")[0].strip()
            wanted = "application/json" if path in JSON_ROUTES else "application/octet-stream"
            if ctype != wanted:
                return errors.problem(415, "Unsupported media type", f"content-type must be {wanted}, got {ctype!r}")
        response = await call_next(request)
        route = request.scope.get("route")
        label = route.path if route is not None else UNMATCHED  # templates only: bounded label cardinality
        requests.labels(label, str(response.status_code)).inc()
        latency.labels(label).observe(time.perf_counter() - start)
        return response

    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    return app
