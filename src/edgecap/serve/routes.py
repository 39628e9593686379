"""The three API routes and the job a report request runs on a worker thread.

    POST /v1/reports   multipart/form-data: frontal (file), lateral (file, optional), beam (1..MAX_BEAM, default
                       3), attention (bool, default true), show_flagged_text (bool, default false) -> the
                       edgecap-report/1 JSON of `edgecap caption --format json` (Report.to_dict, attention
                       rounded to ATTENTION_DECIMALS; a flagged report's text withheld unless asked for)
    GET  /v1/bundle    the bundle's manifest.json (keyed)
    GET  /v1/health    liveness, version, bundle mode, queue figures (no key needed, no patient data)

add_routes registers them in this order (the order of /openapi.json); the endpoint names (create_report,
bundle, health) make the OpenAPI operation ids. Errors are raised as problems.Problem.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, Response

from edgecap import __version__
from edgecap.runtime.decoding import DEFAULT_BEAM, MAX_BEAM
from edgecap.runtime.report import ATTENTION_DECIMALS, is_demonstration
from edgecap.serve.guards import KeyedRoute, UploadRoute
from edgecap.serve.image_check import check_image, image_problem
from edgecap.serve.openapi import HealthOut, ReportOut, keyed_route_options, problem_responses
from edgecap.serve.pool import InferencePool
from edgecap.serve.problems import Problem
from edgecap.serve.settings import Settings

REPORTS_PATH, BUNDLE_PATH, HEALTH_PATH = "/v1/reports", "/v1/bundle", "/v1/health"


def caption_job(
    frontal: bytes, lateral: bytes | None, beam: int, attention: bool, captioner, show_flagged_text: bool = False
) -> bytes:
    """Captioner.caption -> the report's JSON bytes; image errors -> Problem 422 (413 / 415 by their kind),
    others -> 422. Runs on a pool worker."""
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
        raise image_problem(e, role) from None
    except CaptionError as e:
        raise Problem(422, "invalid-request", str(e)) from None
    return report.to_json(
        attention_decimals=ATTENTION_DECIMALS, attention=attention, show_flagged_text=show_flagged_text
    ).encode()


async def _read_upload(upload: UploadFile, role: str, max_pixels: int) -> bytes:
    data = await upload.read()
    check_image(data, max_pixels, role)
    return data


def _report_endpoint(max_pixels: int, pool: InferencePool) -> Callable:
    """POST /v1/reports; UploadRoute has checked the key, the content type and that `pool` had room."""

    async def create_report(
        request: Request,
        frontal: Annotated[
            UploadFile, File(description="Frontal (PA/AP) chest X-ray: PNG (8/16-bit), JPEG or DICOM Part 10.")
        ],
        lateral: Annotated[
            UploadFile | None,
            File(description="Lateral view of the same study (bundles with two views). Omit the part when absent."),
        ] = None,
        beam: Annotated[int, Form(ge=1, le=MAX_BEAM, description="Beam size (1 = greedy).")] = DEFAULT_BEAM,
        attention: Annotated[bool, Form(description="Include per-token attention.")] = True,
        show_flagged_text: Annotated[
            bool,
            Form(
                description="For a flagged input (not a chest X-ray, or too small to read), return the model's "
                "text anyway, in `flagged_text` (`text` stays null): for inspection only, it does not describe "
                "the image."
            ),
        ] = False,
    ) -> Response:
        """Write the report for one study, exactly as `edgecap caption --format json` does."""
        form = await request.form()  # already parsed for the parameters above: FastAPI caches it
        for role in ("frontal", "lateral"):
            if len(form.getlist(role)) > 1:  # never report on one image of several silently
                raise Problem(
                    422,
                    "validation-error",
                    f"{len(form.getlist(role))} '{role}' fields: send one study "
                    f"(one frontal, at most one lateral image) per request",
                )
        front = await _read_upload(frontal, "frontal", max_pixels)
        lat = None
        if lateral is not None and (lateral.filename or lateral.size):  # an HTML form's empty file input: absent
            lat = await _read_upload(lateral, "lateral", max_pixels)
        # a place in the queue only now that the whole upload has arrived and passed its header checks
        job = partial(caption_job, front, lat, beam, attention, show_flagged_text=show_flagged_text)
        body = await pool.run(job)
        return Response(body, media_type="application/json")

    return create_report


def _bundle_endpoint(manifest: dict[str, Any]) -> Callable:
    async def bundle() -> JSONResponse:
        """The bundle's manifest.json (files, checksums, mode, input contract, verification)."""
        return JSONResponse(manifest)

    return bundle


def _health_endpoint(bundle_info: dict[str, Any], pool: InferencePool) -> Callable:
    summary = {key: bundle_info.get(key) for key in ("mode", "interpreter", "notice", "edgecap_version")}
    demonstration = is_demonstration(bundle_info.get("notice"))

    async def health() -> JSONResponse:
        """Liveness and load; no API key needed, no patient data."""
        return JSONResponse(
            {
                "status": "ok",
                "version": __version__,
                "demonstration": demonstration,
                "bundle": summary,
                "queue": pool.stats(),
            }
        )

    return health


def add_routes(app: FastAPI, settings: Settings, pool: InferencePool, captioner) -> None:
    """The three routes of the module docstring, for `captioner`'s bundle (any one of the pool's)."""
    keyed = keyed_route_options(settings.api_key)
    auth_problem = (401,) if settings.api_key else ()
    app.router.add_api_route(
        REPORTS_PATH,
        _report_endpoint(settings.max_pixels, pool),
        methods=["POST"],
        route_class_override=UploadRoute,
        summary="Write a report",
        response_model=None,
        tags=["reports"],
        responses={
            200: {"model": ReportOut, "description": "The report (edgecap-report/1)."},
            **problem_responses(400, *auth_problem, 408, 413, 415, 422, 500, 503, 504),
        },
        **keyed,
    )
    app.router.add_api_route(
        BUNDLE_PATH,
        _bundle_endpoint(captioner.bundle.manifest.to_json()),
        methods=["GET"],
        route_class_override=KeyedRoute,
        summary="The bundle manifest",
        tags=["bundle"],
        response_model=None,
        responses={
            200: {
                "description": "manifest.json (edgecap-bundle/1)",
                "content": {"application/json": {"schema": {"type": "object"}}},
            },
            **problem_responses(*auth_problem, 500, 503, 504),
        },
        **keyed,
    )
    app.router.add_api_route(
        HEALTH_PATH,
        _health_endpoint(captioner.bundle_info, pool),
        methods=["GET"],
        summary="Health",
        tags=["health"],
        response_model=None,
        responses={200: {"model": HealthOut, "description": "Serving."}, **problem_responses(500, 504)},
    )
