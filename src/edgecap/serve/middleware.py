"""ASGI middleware around the whole app: request size, per-request deadline, request id, access log.

    app.add_middleware(RequestLimits, max_request_bytes=20 << 20, timeout_s=30.0)

    body size     Content-Length over the limit: 413 before one byte of the body is read; a chunked body is
                  counted while it streams in and cut off (413) as soon as it passes the limit
    deadline      from the first byte to the start of the answer: 504, or 408 while the upload is still
                  arriving; a deadline that passes while answering closes the connection
    request id    a uuid4 hex in the scope (problems.REQUEST_ID_KEY), the X-Request-Id header and the log
    access log    one line per request on the "edgecap.serve" logger: method, path, status, time, bytes in

Its own answers (400, 408, 413, 504) are problem documents sent on the raw ASGI channel (Problem.send):
they happen outside the FastAPI app. Logs never hold image bytes, report text or query strings.
Device-safe: stdlib only.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from edgecap.serve.problems import REQUEST_ID_KEY, Problem

log = logging.getLogger("edgecap.serve")


class _BodyTooLarge(Exception):
    pass


class RequestLimits:
    """ASGI middleware around the whole app (see the module docstring).

    Args:
        app: the ASGI app.
        max_request_bytes: body limit (413).
        timeout_s: deadline from the first byte to the start of the answer (504; 408 while uploading).
    """

    def __init__(self, app, max_request_bytes: int, timeout_s: float):
        self.app, self.max_bytes, self.timeout_s = app, max_request_bytes, timeout_s

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        rid = uuid.uuid4().hex
        scope[REQUEST_ID_KEY] = rid
        headers = dict(scope.get("headers") or [])
        state: dict[str, Any] = {"in": 0, "out_status": None, "body_done": True, "too_large": False, "started": False}
        length = headers.get(b"content-length")
        if length is not None or b"transfer-encoding" in headers:
            state["body_done"] = length is not None and length.strip() == b"0"

        def finish(status: int, note: str = "") -> None:
            ms = (time.perf_counter() - start) * 1e3
            log.info(
                "%s %s -> %d in %.1f ms (%d bytes in) id=%s%s",
                scope.get("method"),
                scope.get("path"),
                status,
                ms,
                state["in"],
                rid,
                note,
            )

        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                declared = -1
            if declared < 0:
                p = Problem(400, "bad-request", "invalid Content-Length header")
                await p.send(scope, send)
                return finish(400)
            if declared > self.max_bytes:
                await self._too_large(scope, send, declared)
                return finish(413, " (Content-Length)")

        async def limited_receive():
            message = await receive()
            if message["type"] == "http.request":
                state["in"] += len(message.get("body", b""))
                if not message.get("more_body", False):
                    state["body_done"] = True
                if state["in"] > self.max_bytes:
                    state["too_large"] = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message):
            if state["too_large"] and not state["started"]:
                return  # the app's answer to a body it could not finish reading; ours is the 413
            if message["type"] == "http.response.start":
                state["started"], state["out_status"] = True, message["status"]
                message = {**message, "headers": list(message.get("headers", [])) + [(b"x-request-id", rid.encode())]}
            await send(message)

        try:
            await asyncio.wait_for(self.app(scope, limited_receive, guarded_send), self.timeout_s)
        except _BodyTooLarge:
            pass
        except asyncio.TimeoutError:
            if state["started"]:  # too late to answer: uvicorn closes the connection
                return finish(state["out_status"], " (deadline passed while answering)")
            if not state["body_done"]:
                p = Problem(408, "request-timeout", f"the request body did not arrive within {self.timeout_s:g} s")
            else:
                p = Problem(
                    504,
                    "timeout",
                    f"no report within {self.timeout_s:g} s (the server is overloaded or "
                    f"the image is very large); try again later",
                )
            await p.send(scope, send)
            return finish(p.status)
        except Exception:  # answered by the app's 500 handler (ServerErrorMiddleware, outside this one)
            finish(500, " (internal error)")
            raise
        if state["too_large"] and not state["started"]:
            await self._too_large(scope, send, None)
            return finish(413, " (streamed)")
        finish(state["out_status"] or 500)

    async def _too_large(self, scope, send, declared: int | None) -> None:
        limit = f"{self.max_bytes:,} bytes ({self.max_bytes / 2**20:g} MiB)"
        detail = (
            f"the request body is {declared:,} bytes; the limit is {limit}"
            if declared is not None
            else f"the request body passed the limit of {limit} while it streamed in"
        )
        await Problem(413, "request-too-large", detail).send(scope, send)
