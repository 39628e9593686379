"""Every error the server answers, as an RFC 9457 problem document (application/problem+json).

    raise Problem(503, "queue-full", "the server is busy ...", headers={"Retry-After": "2"})

The body is {"type": "urn:edgecap:problem:<code>", "title", "status", "detail", "code", "instance"
(urn:uuid:<request id>, when the request has one), extension members (e.g. `errors`)}; docs/serve.md lists
the codes. Route code raises Problem (error_handlers turns it into a response); the middleware, which runs
outside the app, answers with Problem.send on the raw ASGI channel. Device-safe: stdlib only.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_PREFIX = "urn:edgecap:problem:"  # + code; docs/serve.md lists the codes
REQUEST_ID_KEY = "edgecap.request_id"  # ASGI scope key, set by middleware.RequestLimits


class Problem(Exception):
    """An error answered as application/problem+json (RFC 9457).

    Attributes:
        status: HTTP status.
        code: stable machine-readable code; the `type` member is PROBLEM_TYPE_PREFIX + code.
        detail: a sentence for people about this occurrence (never patient data).
        headers: extra response headers (Retry-After, WWW-Authenticate, Allow).
        extra: extension members (e.g. validation `errors`).
    """

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        headers: dict[str, str] | None = None,
        title: str | None = None,
        **extra: Any,
    ):
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail
        self.title = title or HTTPStatus(status).phrase
        self.headers = dict(headers or {})
        self.extra = extra

    def body(self, request_id: str | None = None) -> dict[str, Any]:
        d = {
            "type": PROBLEM_TYPE_PREFIX + self.code,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
        }
        if request_id:
            d["instance"] = f"urn:uuid:{request_id}"
        d.update(self.extra)
        return d

    async def send(self, scope, send) -> None:
        """Answer on a raw ASGI `send` (middleware, before or instead of the app)."""
        rid = scope.get(REQUEST_ID_KEY)
        content = json.dumps(self.body(rid)).encode()
        headers = [(b"content-type", PROBLEM_MEDIA_TYPE.encode()), (b"content-length", str(len(content)).encode())]
        if rid:
            headers.append((b"x-request-id", rid.encode()))
        headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()]
        if self.status in (400, 408, 413, 503):  # the rest of the body will not be read: no reuse of the connection
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": content})
