"""The HTTP API: the same runtime as `edgecap caption`, behind FastAPI. Device-safe (never TensorFlow).

    app = create_app(Settings(bundle=Path("bundles/int8")))      # loads one Captioner per worker
    uvicorn.run(app, host="127.0.0.1", port=8000)                  # or: edgecap serve --bundle bundles/int8

Routes:
    POST /v1/reports   multipart/form-data: frontal (file), lateral (file, optional), beam (1..5, default 3),
                       attention (bool, default true) -> the edgecap-report/1 JSON of `edgecap caption
                       --format json` (Report.to_dict, attention rounded to ATTENTION_DECIMALS)
    GET  /v1/bundle    the bundle's manifest.json
    GET  /v1/health    liveness, version, bundle mode, queue figures (no key needed)
    GET  /openapi.json, /docs (Swagger UI from local files when fastapi-offline is installed; never a CDN)

A request to /v1/reports passes, in order: RequestLimits (body size, deadline) -> API key -> request
content type -> admission to the InferencePool (503 when full) -> multipart parsing and validation ->
check_image on each upload (format, pixel count from the header) -> a worker: Captioner.caption -> JSON.
Every error is application/problem+json (serve.limits.Problem); docs/serve.md has the status table.
"""

from __future__ import annotations

import hmac
import logging
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Optional

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from edgecap import __version__
from edgecap.runtime.report import ATTENTION_DECIMALS
from edgecap.serve.limits import PROBLEM_MEDIA_TYPE, REQUEST_ID_KEY, InferencePool, Problem, RequestLimits, check_image
from edgecap.serve.settings import Settings

log = logging.getLogger("edgecap.serve")

MAX_BEAM = 5
REPORTS_PATH, BUNDLE_PATH, HEALTH_PATH = "/v1/reports", "/v1/bundle", "/v1/health"
DOCS_ASSETS = "/docs-assets"
_TICKET_KEY = "edgecap.ticket"
_PARSE_ERROR = "There was an error parsing the body"  # FastAPI's detail for a body it cannot parse


# ---- documented shapes (OpenAPI only: responses are built by the runtime, not re-validated) ---------
class NoticeOut(BaseModel):
    code: str
    message: str


class ReportOut(BaseModel):
    """edgecap-report/1, as runtime.report.Report.to_dict writes it."""

    model_config = ConfigDict(extra="allow", title="Report")
    format: Literal["edgecap-report/1"]
    text: str = Field(description="The generated report. Check `flagged` before showing it.")
    flagged: bool = Field(description="True when the input does not look like a chest X-ray: the text does not "
                                      "describe the image and must not be shown as its report.")
    warnings: list[NoticeOut]
    findings: dict[str, Optional[Literal["positive", "negative", "uncertain"]]]
    tokens: list[str]
    attention: Optional[list[list[float]]] = Field(None, description="(tokens, positions); absent when "
                                                                     "attention=false")
    attention_layout: Optional[dict[str, Any]] = None
    timings: dict[str, float]
    beam: int
    finished: bool
    inputs: dict[str, Optional[str]]
    image_stats: dict[str, Optional[dict[str, float]]]
    bundle: dict[str, Any]


class HealthOut(BaseModel):
    status: Literal["ok"]
    version: str
    bundle: dict[str, Optional[str]]
    queue: dict[str, int]


PROBLEM_SCHEMA = {
    "title": "Problem", "type": "object", "required": ["type", "title", "status", "detail"],
    "description": "RFC 9457 problem details; `code` is the stable machine-readable part of `type`.",
    "properties": {
        "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
        "detail": {"type": "string"}, "code": {"type": "string"}, "instance": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object"}},
    },
}
_WHY = {
    400: "Malformed request (a multipart body that cannot be parsed, a bad Content-Length).",
    401: "Missing or wrong API key (X-API-Key header or Authorization: Bearer).",
    408: "The request body did not arrive within the deadline.",
    413: "Request body over the size limit, or an image with more pixels than the limit (read from its header).",
    415: "Not multipart/form-data, or an upload that is not PNG, JPEG or DICOM.",
    422: "Missing or invalid fields (no frontal file, beam outside 1..5), an empty, truncated or unreadable "
         "image, or a lateral view for a one-view bundle.",
    500: "Internal error (logged with a request id; no patient data in logs).",
    503: "Every worker busy and the queue full: retry after Retry-After seconds.",
    504: "No answer within the per-request deadline.",
}


def _problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {c: {"description": _WHY[c], "content": {PROBLEM_MEDIA_TYPE: {"schema": PROBLEM_SCHEMA}}} for c in codes}


# ---- guards run before the body is read -----------------------------------------------------------
def check_api_key(request: Request, key: str) -> None:
    """X-API-Key or Authorization: Bearer, compared in constant time; Problem 401 otherwise."""
    presented = []
    if (k := request.headers.get("x-api-key")) is not None:
        presented.append(k)
    scheme, _, credentials = (request.headers.get("authorization") or "").partition(" ")
    if scheme.lower() == "bearer":
        presented.append(credentials.strip())
    expected = key.encode()
    ok = False
    for candidate in presented:  # every candidate compared, so timing does not tell which header matched
        ok |= hmac.compare_digest(candidate.encode("latin-1", "replace"), expected)
    if not ok:
        detail = ("the API key is not valid" if presented else
                  "a valid API key is required: send it as the X-API-Key header or as Authorization: Bearer KEY")
        raise Problem(401, "unauthorized", detail, headers={"WWW-Authenticate": 'Bearer realm="edgecap"'})


def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    if length is not None:
        return length.strip() != "0"
    return "transfer-encoding" in request.headers


def check_upload_request(request: Request) -> None:
    """An empty request is a 422 (nothing sent); a body of another type is a 415."""
    if not _has_body(request):
        raise Problem(422, "missing-image", "the request is empty: send multipart/form-data with the image as a "
                                            "file field named 'frontal' (e.g. curl -F frontal=@chest.png ...)")
    media = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if media != "multipart/form-data":
        raise Problem(415, "unsupported-media-type",
                      f"the request body is {media or 'untyped'}; send multipart/form-data with the image as a "
                      f"file field named 'frontal' (e.g. curl -F frontal=@chest.png ...)",
                      headers={"Accept-Post": "multipart/form-data"})


class KeyedRoute(APIRoute):
    """A route that needs the API key (when the server has one), checked before the body is read."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            key = request.app.state.settings.api_key
            if key:
                check_api_key(request, key)
            return await self.before_body(request, handler)

        return guarded

    async def before_body(self, request: Request, handler: Callable) -> Response:
        return await handler(request)


class UploadRoute(KeyedRoute):
    """KeyedRoute + content type check + a place in the InferencePool, all before the upload is read."""

    async def before_body(self, request: Request, handler: Callable) -> Response:
        check_upload_request(request)
        ticket = request.app.state.pool.admit()
        request.scope[_TICKET_KEY] = ticket
        try:
            return await handler(request)
        finally:
            if not ticket.handed_over:  # else the worker releases it when the job ends
                ticket.release()


# ---- inference job (runs on a worker thread) ------------------------------------------------------
def caption_job(frontal: bytes, lateral: Optional[bytes], beam: int, attention: bool, captioner) -> bytes:
    """Captioner.caption -> the report's JSON bytes; runtime errors -> Problem 422."""
    from edgecap.runtime.captioner import CaptionError
    from edgecap.runtime.preprocess import ImageError, read_image

    try:
        report = captioner.caption(frontal, lateral=lateral, beam=beam)
    except ImageError as e:
        role = "frontal"
        if lateral is not None:  # which one failed? (the error path only: decode the frontal view again)
            try:
                read_image(frontal)
                role = "lateral"
            except ImageError:
                pass
        message = str(e).removeprefix("<bytes>: ")
        raise Problem(422, "unreadable-image", f"{role} image: {message}") from None
    except CaptionError as e:
        raise Problem(422, "invalid-request", str(e)) from None
    return report.to_json(attention_decimals=ATTENTION_DECIMALS, attention=attention).encode()


async def _read_upload(upload: UploadFile, role: str, max_pixels: int) -> bytes:
    data = await upload.read()
    check_image(data, max_pixels, role)
    return data


# ---- the app --------------------------------------------------------------------------------------
def load_captioners(settings: Settings) -> list:
    """One Captioner per worker. Raises BundleError / InterpreterUnavailable (the CLI exits 2)."""
    from edgecap.runtime.captioner import Captioner

    return [Captioner.from_bundle(settings.bundle, num_threads=settings.threads) for _ in range(settings.workers)]


def create_app(settings: Settings, captioners: Optional[list] = None) -> FastAPI:
    """The FastAPI app for `settings`.

    Args:
        settings: serve.settings.Settings.
        captioners: one per worker (default: load_captioners(settings)); anything with Captioner's
            `caption`, `bundle.manifest.to_json()` and `bundle_info` works (tests use slow fakes).
    """
    if captioners is None:
        captioners = load_captioners(settings)
    # python-multipart warns with bytes of a malformed body ("Expected boundary character 98, got 122"):
    # upload content never reaches the log
    for name in ("python_multipart", "multipart"):
        logging.getLogger(name).setLevel(logging.ERROR)
    pool = InferencePool(captioners, settings.queue_size, settings.retry_after_s)
    manifest = captioners[0].bundle.manifest.to_json()
    info = captioners[0].bundle_info
    bundle_summary = {"mode": info.get("mode"), "interpreter": info.get("interpreter"),
                      "notice": info.get("notice"), "edgecap_version": info.get("edgecap_version")}

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        pool.close()

    app = FastAPI(title="edgecap", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Chest X-ray reports from a converted edgecap bundle, offline. Demonstration "
                              "models are not validated for clinical use: read `flagged` and `warnings`.")
    app.state.settings, app.state.pool = settings, pool
    security = [{"ApiKeyHeader": []}, {"BearerAuth": []}] if settings.api_key else None
    keyed = {"openapi_extra": {"security": security}} if security else {}
    auth_problem = (401,) if settings.api_key else ()

    async def create_report(
        request: Request,
        frontal: Annotated[UploadFile, File(description="Frontal (PA/AP) chest X-ray: PNG (8/16-bit), JPEG or "
                                                        "DICOM Part 10.")],
        lateral: Annotated[Optional[UploadFile], File(description="Lateral view of the same study (bundles "
                                                                  "with two views).")] = None,
        beam: Annotated[int, Form(ge=1, le=MAX_BEAM, description="Beam size (1 = greedy).")] = 3,
        attention: Annotated[bool, Form(description="Include per-token attention.")] = True,
    ) -> Response:
        """Write the report for one study, exactly as `edgecap caption --format json` does."""
        form = await request.form()  # already parsed for the parameters above: FastAPI caches it
        for role in ("frontal", "lateral"):
            if len(form.getlist(role)) > 1:  # never report on one image of several silently
                raise Problem(422, "validation-error", f"{len(form.getlist(role))} '{role}' fields: send one study "
                                                       f"(one frontal, at most one lateral image) per request")
        front = await _read_upload(frontal, "frontal", settings.max_pixels)
        lat = None
        if lateral is not None and (lateral.filename or lateral.size):  # an HTML form's empty file input: absent
            lat = await _read_upload(lateral, "lateral", settings.max_pixels)
        body = await pool.run(request.scope[_TICKET_KEY], partial(caption_job, front, lat, beam, attention))
        return Response(body, media_type="application/json")

    async def bundle() -> JSONResponse:
        """The bundle's manifest.json (files, checksums, mode, input contract, verification)."""
        return JSONResponse(manifest)

    async def health() -> JSONResponse:
        """Liveness and load; no API key needed, no patient data."""
        return JSONResponse({"status": "ok", "version": __version__, "bundle": bundle_summary,
                             "queue": pool.stats()})

    app.router.add_api_route(REPORTS_PATH, create_report, methods=["POST"], route_class_override=UploadRoute,
                             summary="Write a report", response_model=None, tags=["reports"],
                             responses={200: {"model": ReportOut, "description": "The report (edgecap-report/1)."},
                                        **_problems(400, *auth_problem, 408, 413, 415, 422, 500, 503, 504)},
                             **keyed)
    app.router.add_api_route(BUNDLE_PATH, bundle, methods=["GET"], route_class_override=KeyedRoute,
                             summary="The bundle manifest", tags=["bundle"], response_model=None,
                             responses={200: {"description": "manifest.json (edgecap-bundle/1)",
                                              "content": {"application/json": {"schema": {"type": "object"}}}},
                                        **_problems(*auth_problem, 500, 504)}, **keyed)
    app.router.add_api_route(HEALTH_PATH, health, methods=["GET"], summary="Health", tags=["health"],
                             response_model=None,
                             responses={200: {"model": HealthOut, "description": "Serving."},
                                        **_problems(500, 504)})
    _add_docs(app)
    _add_error_handlers(app)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            if settings.api_key:
                schema.setdefault("components", {})["securitySchemes"] = {
                    "ApiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                    "BearerAuth": {"type": "http", "scheme": "bearer"},
                }
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(RequestLimits, max_request_bytes=settings.max_request_bytes, timeout_s=settings.timeout_s)
    return app


# ---- docs without a CDN ---------------------------------------------------------------------------
def _swagger_assets() -> Optional[Path]:
    """Swagger UI files shipped by the fastapi-offline package (the `serve` extra), if installed."""
    try:
        import fastapi_offline
    except ImportError:
        return None
    folder = Path(fastapi_offline.__file__).parent / "static"
    return folder if (folder / "swagger-ui-bundle.js").is_file() else None


def _add_docs(app: FastAPI) -> None:
    from fastapi.openapi.docs import get_swagger_ui_html

    assets = _swagger_assets()
    if assets is not None:
        from fastapi.staticfiles import StaticFiles

        app.mount(DOCS_ASSETS, StaticFiles(directory=assets), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        if assets is None:  # an offline product never points a browser at a CDN
            return HTMLResponse(
                "<!doctype html><title>edgecap API</title><h1>edgecap API</h1><p>The interactive docs need "
                "the Swagger UI files: <code>pip install 'edgecap[serve]'</code> (fastapi-offline). The OpenAPI "
                f"description is at <a href=\"{root}/openapi.json\">/openapi.json</a>.</p>")
        return get_swagger_ui_html(openapi_url=f"{root}/openapi.json", title="edgecap API",
                                   swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png")


# ---- errors as application/problem+json -----------------------------------------------------------
def problem_response(request: Request, problem: Problem) -> JSONResponse:
    return JSONResponse(problem.body(request.scope.get(REQUEST_ID_KEY)), status_code=problem.status,
                        headers=problem.headers, media_type=PROBLEM_MEDIA_TYPE)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def on_problem(request: Request, exc: Problem) -> JSONResponse:
        log.info("%s %s: %s (id=%s)", request.method, request.url.path, exc.code, request.scope.get(REQUEST_ID_KEY))
        return problem_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for e in exc.errors():  # never the offending input itself: it may be image bytes
            loc = [str(x) for x in e.get("loc", ())]
            field = ".".join(loc[1:]) if len(loc) > 1 else ".".join(loc)
            errors.append({"field": field, "location": loc[0] if loc else "", "message": e.get("msg", ""),
                           "type": e.get("type", "")})
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        if any(e["field"] == "frontal" and e["type"] == "missing" for e in errors):
            received = sorted(exc.body.keys()) if hasattr(exc.body, "keys") else []
            detail += (". Send the image as a multipart/form-data file field named 'frontal'"
                       + (f" (received fields: {', '.join(received)})" if received else ""))
        return problem_response(request, Problem(422, "validation-error", detail, errors=errors))

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = str(exc.detail)
        code = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        if exc.status_code == 400:  # FastAPI's or Starlette's multipart parser gave up
            code = "bad-request"
            detail = "the multipart/form-data body cannot be parsed (malformed or truncated)" + (
                "" if detail == _PARSE_ERROR else f": {detail.rstrip('.')}")
        elif exc.status_code == 404:
            detail = f"no such route: {request.url.path} (see /docs)"
        elif exc.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path}"
        return problem_response(request, Problem(exc.status_code, code, detail, headers=getattr(exc, "headers", None)))

    @app.exception_handler(Exception)
    async def on_error(request: Request, exc: Exception) -> JSONResponse:
        rid = request.scope.get(REQUEST_ID_KEY)
        log.error("internal error on %s %s (id=%s): %s", request.method, request.url.path, rid, type(exc).__name__,
                  exc_info=(type(exc), exc, exc.__traceback__))
        return problem_response(request, Problem(500, "internal-error", f"internal error (request id {rid}); the "
                                                                        f"server log has the details"))
