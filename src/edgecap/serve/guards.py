"""Checks a request passes before its body is read: the API key, the upload's content type, admission.

    KeyedRoute     the API key (when the server has one): X-API-Key or Authorization: Bearer, else 401
    UploadRoute    KeyedRoute + an empty body (422) or one that is not multipart/form-data (415) + room in the
                   InferencePool now (503 when full; the place itself is taken once the upload has arrived)

They run as FastAPI route classes because a dependency would run after FastAPI has read and parsed the whole
multipart body: a wrong key or a full queue must cost the server nothing.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

from fastapi import Request
from fastapi.responses import Response
from fastapi.routing import APIRoute

from edgecap.serve.problems import Problem

_UPLOAD_HINT = (
    "send multipart/form-data with the image as a file field named 'frontal' (e.g. curl -F frontal=@chest.png ...)"
)


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
        detail = (
            "the API key is not valid"
            if presented
            else "a valid API key is required: send it as the X-API-Key header or as Authorization: Bearer KEY"
        )
        raise Problem(401, "unauthorized", detail, headers={"WWW-Authenticate": 'Bearer realm="edgecap"'})


def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    if length is not None:
        return length.strip() != "0"
    return "transfer-encoding" in request.headers


def check_upload_request(request: Request) -> None:
    """An empty request is a 422 (nothing sent); a body of another type is a 415."""
    if not _has_body(request):
        raise Problem(422, "missing-image", f"the request is empty: {_UPLOAD_HINT}")
    media = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if media != "multipart/form-data":
        raise Problem(
            415,
            "unsupported-media-type",
            f"the request body is {media or 'untyped'}; {_UPLOAD_HINT}",
            headers={"Accept-Post": "multipart/form-data"},
        )


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
    """KeyedRoute + content type check + room in the InferencePool, all before the upload is read. The place
    is taken by the endpoint once the upload has arrived: a slow upload must not hold one."""

    async def before_body(self, request: Request, handler: Callable) -> Response:
        check_upload_request(request)
        request.app.state.pool.check_room()
        return await handler(request)
