"""Every error is an RFC 9457 problem+json body naming the field and the problem."""

from __future__ import annotations

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from model.validation import InputError

PROBLEM = "application/problem+json"
STATUS_TEXT = {
    400: "Bad request",
    408: "The body did not arrive within MIST_BODY_TIMEOUT_S",
    413: "Body too large",
    415: "Unsupported media type",
    422: "Invalid input: field names what to fix",
    503: "Busy or not ready (Retry-After says when to retry)",
    504: "The estimate ran past the request deadline",
}


class ProblemBody(BaseModel):
    type: str = "about:blank"
    title: str
    status: int
    detail: str
    field: str | None = None


class Busy(Exception):  # noqa: N818 (a state, not an error)
    """All heavy slots are taken: answered 503 with Retry-After."""


class DeadlineExceeded(Exception):  # noqa: N818 (the name says it)
    """The work did not finish within the request deadline: answered 504."""


class ClientGone(Exception):  # noqa: N818 (a state, not an error)
    """The client closed its connection before the answer: the work stops, the answer (499) reaches no one."""


class NotReady(Exception):  # noqa: N818 (a state, not an error)
    """The model is still loading."""


def problem(status: int, title: str, detail: str, field: str | None = None, headers: dict | None = None):
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    if field:
        body["field"] = field
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def input_error_body(err: InputError) -> dict:
    return {"field": err.field, "detail": str(err)}


async def on_input_error(request: Request, err: InputError) -> JSONResponse:
    return problem(422, "Invalid input", str(err), err.field)


async def on_validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
    first = err.errors()[0] if err.errors() else {"loc": (), "msg": "invalid request"}
    field = ".".join(str(p) for p in first["loc"] if p not in ("body", "query")) or "body"
    return problem(422, "Invalid input", f"{field}: {first['msg']}", field)


async def on_http_error(request: Request, err: HTTPException) -> JSONResponse:
    return problem(err.status_code, str(err.detail), str(err.detail), headers=getattr(err, "headers", None))


async def on_busy(request: Request, err: Busy) -> JSONResponse:
    return problem(503, "Busy", "all estimation slots are taken; retry shortly", headers={"Retry-After": "1"})


async def on_deadline(request: Request, err: DeadlineExceeded) -> JSONResponse:
    return problem(504, "Deadline exceeded", "the estimate ran past the request deadline (MIST_DEADLINE_S)")


async def on_client_gone(request: Request, err: ClientGone) -> JSONResponse:
    return problem(499, "Client closed request", "the client left before the answer; the work was stopped")


async def on_not_ready(request: Request, err: NotReady) -> JSONResponse:
    return problem(503, "Not ready", "model not loaded yet", headers={"Retry-After": "2"})


async def on_unexpected(request: Request, err: Exception) -> JSONResponse:
    return problem(500, "Internal error", "the server failed to answer; see its log")


HANDLERS = {
    InputError: on_input_error,
    RequestValidationError: on_validation_error,
    HTTPException: on_http_error,
    Busy: on_busy,
    DeadlineExceeded: on_deadline,
    ClientGone: on_client_gone,
    NotReady: on_not_ready,
    Exception: on_unexpected,
}
