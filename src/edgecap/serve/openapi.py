"""What /openapi.json documents: response shapes, the problem responses of each status, the API key schemes.

    responses={200: {"model": ReportOut, ...}, **problem_responses(400, 413, 503)}   # in routes.add_routes
    keyed_route_options(api_key)      # a keyed route's `security`: ApiKeyHeader or BearerAuth ({} without a key)
    install_openapi(app, api_key)     # app.openapi(): the two security schemes when a key is set, and optional
                                      # file parts that are a file or absent, never null

The models document only: responses are built by the runtime (Report.to_dict), never re-validated here.
tests/test_serve_schemathesis.py holds the server to this description.
"""

from __future__ import annotations

from copy import deepcopy
from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field

from edgecap.serve.problems import PROBLEM_MEDIA_TYPE

SECURITY_SCHEMES = {
    "ApiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    "BearerAuth": {"type": "http", "scheme": "bearer"},
}


class NoticeOut(BaseModel):
    code: str
    message: str


class ReportOut(BaseModel):
    """edgecap-report/1, as runtime.report.Report.to_dict writes it."""

    model_config = ConfigDict(extra="allow", title="Report")
    format: Literal["edgecap-report/1"]
    demonstration: bool = Field(
        description="True when the bundle is a demonstration model (its notice says so): not validated for "
        "clinical use; show that next to the report wherever it is shown."
    )
    notice: str = Field(description="The bundle's notice, e.g. 'demonstration model, not validated for clinical use'.")
    status: Literal["ok", "flagged"] = Field(
        description='"flagged" when the input does not look like a chest X-ray or is too small to read '
        "(shorter side < 256 px): no report text then; the reasons are the warnings with a flag code."
    )
    text: str | None = Field(
        description="The generated report as people read it (never the dataset's anonymisation mark 'xxxx': "
        "dropped, or written '[redacted]' where a sentence needs the word); null when the status is flagged."
    )
    text_withheld: bool = Field(
        description="True when flagged and the model's text left out (the default); false otherwise."
    )
    flagged_text: str | None = Field(
        None,
        description="Only when flagged and show_flagged_text=true: the model's text, for inspection only; it "
        "does not describe the image and must not be stored or shown as its report.",
    )
    flagged: bool = Field(description='True when the status is "flagged" (kept for readers of the first format).')
    warnings: list[NoticeOut]
    findings: dict[str, Literal["positive", "negative", "uncertain"] | None] = Field(
        description="From the rule-based labeler run on the text; {} when flagged."
    )
    tokens: list[str] = Field(description="The text's tokens; [] when the text is withheld.")
    attention: list[list[float]] | None = Field(
        None, description="(tokens, positions); absent when attention=false or the text is withheld"
    )
    attention_layout: dict[str, Any] | None = None
    timings: dict[str, float]
    beam: int
    finished: bool
    inputs: dict[str, str | None]
    image_stats: dict[str, dict[str, float] | None]
    bundle: dict[str, Any]


class HealthOut(BaseModel):
    status: Literal["ok"]
    version: str
    demonstration: bool = Field(description="True when the bundle is a demonstration model (see bundle.notice).")
    bundle: dict[str, str | None]
    queue: dict[str, int]


PROBLEM_SCHEMA = {
    "title": "Problem",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "description": "RFC 9457 problem details; `code` is the stable machine-readable part of `type`.",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object"}},
    },
}
_WHY = {
    400: "Malformed request (not valid HTTP/1.1, an invalid Content-Length, a multipart body that cannot be parsed).",
    401: "Missing or wrong API key (X-API-Key header or Authorization: Bearer).",
    408: "The request head or body did not arrive within its deadline, or the upload was slower than the minimum rate.",
    413: "Request body over the size limit, or an image with more pixels than the limit (read from its header).",
    415: "Not multipart/form-data, or an upload that is not PNG, JPEG or DICOM.",
    422: "Missing or invalid fields (no frontal file, beam outside 1..5), an empty, truncated or unreadable "
    "image, or a lateral view for a one-view bundle.",
    500: "Internal error (logged with a request id; no patient data in logs).",
    503: "Every worker busy and the queue full, or too many requests in progress: retry after Retry-After seconds.",
    504: "No answer within the per-request deadline.",
}


def problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The `responses` entries of these statuses: each an application/problem+json PROBLEM_SCHEMA."""
    return {c: {"description": _WHY[c], "content": {PROBLEM_MEDIA_TYPE: {"schema": PROBLEM_SCHEMA}}} for c in codes}


def keyed_route_options(api_key: str | None) -> dict[str, Any]:
    """add_api_route options of a route that needs the key: its operation-level `security` (either scheme)."""
    return {"openapi_extra": {"security": [{name: []} for name in SECURITY_SCHEMES]}} if api_key else {}


def _files_not_nullable(schema: dict[str, Any]) -> None:
    """An optional file part (`UploadFile | None = None`) is a file or absent: multipart/form-data has no null,
    and a text part "null" is a 422 like any text sent for a file. FastAPI describes it as anyOf [file,
    null]; keep the file."""
    for component in schema.get("components", {}).get("schemas", {}).values():
        for name, prop in component.get("properties", {}).items():
            options = prop.get("anyOf", [])
            files = [o for o in options if "contentMediaType" in o or o.get("format") == "binary"]
            if len(files) == 1 and {"type": "null"} in options and len(options) == 2:
                component["properties"][name] = {**{k: v for k, v in prop.items() if k != "anyOf"}, **files[0]}


def install_openapi(app: FastAPI, api_key: str | None) -> None:
    """app.openapi(): FastAPI's schema of app.routes, built once, with optional file parts that are never null
    and SECURITY_SCHEMES when a key is set."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            _files_not_nullable(schema)
            if api_key:
                schema.setdefault("components", {})["securitySchemes"] = deepcopy(SECURITY_SCHEMES)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
