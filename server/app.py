"""The FastAPI application factory: load the checkpoint once, bound every request, route to the estimator.

Estimation runs in worker threads within admission slots (:class:`server.limits.Admission`), so the event loop
keeps answering health checks whatever the requests cost.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

import torch
from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from prometheus_client import CollectorRegistry, Counter, Histogram

from model.estimator import Estimator
from model.package_version import package_version
from server import errors
from server.limits import Admission, BodyLimit
from server.observe import Observe
from server.offload import Parsers
from server.routes import request_schemas, router
from server.settings import Settings

JSON_ROUTES = ("/estimate", "/estimate/batch", "/estimate/screen", "/estimate/pairwise")


def _document_request_bodies(app: FastAPI) -> None:
    """Add the request models, which the routes parse themselves, to the generated OpenAPI components."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            spec = generate()
            spec.setdefault("components", {}).setdefault("schemas", {}).update(request_schemas())
        return app.openapi_schema

    app.openapi = openapi


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
        app.state.parsers.warm_up()
        app.state.estimators = loaded
        app.state.estimator = loaded["default"]
        yield
        app.state.parsers.close()

    # fastapi-offline serves the Swagger UI and ReDoc assets from the installed package: /docs works in a cluster
    # without internet (FastAPI's default pages load them from a public CDN).
    app = FastAPIOffline(title="MIST mutual-information estimator", version=package_version(),
                         lifespan=lifespan)  # fmt: skip
    app.state.estimator, app.state.estimators = None, {}
    app.state.settings, app.state.registry = settings, registry
    app.state.parsers = Parsers(settings.parse_workers)
    app.state.admission = Admission(settings.estimate_slots, settings.deadline_s, settings.max_waiting)
    for exc, handler in errors.HANDLERS.items():
        app.add_exception_handler(exc, handler)
    app.include_router(router)
    _document_request_bodies(app)

    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, max_buffered=settings.max_buffered_bytes,
                       timeout_s=settings.body_timeout_s)  # fmt: skip
    npz = ("/estimate/npz", "/estimate/screen/npz", "/estimate/pairwise/npz")
    media = {path: "application/json" for path in JSON_ROUTES} | dict.fromkeys(npz, "application/octet-stream")
    known = tuple(route.path for route in router.routes)
    app.add_middleware(Observe, requests=requests, latency=latency, media=media, known=known)  # outermost
    return app
