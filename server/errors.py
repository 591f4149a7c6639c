"""Every error is an RFC 9457 problem+json body naming the field and the problem."""

from __future__ import annotations

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from model.validation import InputError

PROBLEM = "application/problem+json"


def problem(status: int, title: str, detail: str, field: str | None = None, errors: list | None = None) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    if field:
        body["field"] = field
    if errors:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, media_type=PROBLEM)


def input_error_problem(err: InputError) -> dict:
    return {"field": err.field, "detail": err.message}


async def on_input_error(request: Request, err: InputError) -> JSONResponse:
    return problem(422, "Invalid input", str(err), err.field)


async def on_validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
    errors = [{"field": ".".join(str(p) for p in e["loc"] if p != "body"), "detail": e["msg"]} for e in err.errors()]
    first = errors[0] if errors else {"field": None, "detail": "invalid body"}
    return problem(422, "Invalid request body", f"{first['field']}: {first['detail']}", first["field"], errors)


async def on_http_error(request: Request, err: HTTPException) -> JSONResponse:
    return problem(err.status_code, str(err.detail), str(err.detail))


async def on_unexpected(request: Request, err: Exception) -> JSONResponse:
    return problem(500, "Internal error", "the server failed to answer; see its log")
