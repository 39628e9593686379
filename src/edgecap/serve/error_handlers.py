"""Every error the app raises, answered as application/problem+json (problems.Problem).

    Problem                   its own status, code, detail and headers
    RequestValidationError    422 validation-error, with `errors` [{field, location, message, type}] and never
                              the offending input (it may be image bytes)
    Starlette HTTPException   400 bad-request (an unparsable multipart body), 404 not-found, 405
                              method-not-allowed, else http-error
    any other exception       500 internal-error; the traceback goes to the log with the request id

Errors of the middleware (408, 413 before the body, 504) never reach these handlers: see middleware.py.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from edgecap.serve.problems import PROBLEM_MEDIA_TYPE, REQUEST_ID_KEY, Problem

log = logging.getLogger("edgecap.serve")

_PARSE_ERROR = "There was an error parsing the body"  # FastAPI's detail for a body it cannot parse


def problem_response(request: Request, problem: Problem) -> JSONResponse:
    return JSONResponse(
        problem.body(request.scope.get(REQUEST_ID_KEY)),
        status_code=problem.status,
        headers=problem.headers,
        media_type=PROBLEM_MEDIA_TYPE,
    )


def _validation_problem(exc: RequestValidationError) -> Problem:
    errors = []
    for e in exc.errors():  # never the offending input itself: it may be image bytes
        loc = [str(x) for x in e.get("loc", ())]
        field = ".".join(loc[1:]) if len(loc) > 1 else ".".join(loc)
        errors.append(
            {"field": field, "location": loc[0] if loc else "", "message": e.get("msg", ""), "type": e.get("type", "")}
        )
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    if any(e["field"] == "frontal" and e["type"] == "missing" for e in errors):
        received = sorted(exc.body.keys()) if hasattr(exc.body, "keys") else []
        detail += ". Send the image as a multipart/form-data file field named 'frontal'" + (
            f" (received fields: {', '.join(received)})" if received else ""
        )
    return Problem(422, "validation-error", detail, errors=errors)


def _http_problem(request: Request, exc: StarletteHTTPException) -> Problem:
    detail = str(exc.detail)
    code = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
    if exc.status_code == 400:  # FastAPI's or Starlette's multipart parser gave up
        code = "bad-request"
        detail = "the multipart/form-data body cannot be parsed (malformed or truncated)" + (
            "" if detail == _PARSE_ERROR else f": {detail.rstrip('.')}"
        )
    elif exc.status_code == 404:
        detail = f"no such route: {request.url.path} (see /docs)"
    elif exc.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path}"
    return Problem(exc.status_code, code, detail, headers=getattr(exc, "headers", None))


def add_error_handlers(app: FastAPI) -> None:
    """Register the four handlers of the module docstring on `app`."""

    @app.exception_handler(Problem)
    async def on_problem(request: Request, exc: Problem) -> JSONResponse:
        log.info("%s %s: %s (id=%s)", request.method, request.url.path, exc.code, request.scope.get(REQUEST_ID_KEY))
        return problem_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return problem_response(request, _validation_problem(exc))

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem_response(request, _http_problem(request, exc))

    @app.exception_handler(Exception)
    async def on_error(request: Request, exc: Exception) -> JSONResponse:
        rid = request.scope.get(REQUEST_ID_KEY)
        log.error(
            "internal error on %s %s (id=%s): %s",
            request.method,
            request.url.path,
            rid,
            type(exc).__name__,
            exc_info=(type(exc), exc, exc.__traceback__),
        )
        return problem_response(
            request,
            Problem(500, "internal-error", f"internal error (request id {rid}); the server log has the details"),
        )
