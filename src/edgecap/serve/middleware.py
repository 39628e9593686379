"""ASGI middleware around the whole app: requests in progress, body size and pace, deadline, request id, log.

    app.add_middleware(RequestLimits, settings=settings, always_open=("/v1/health",))

    in progress   at most settings.max_open_requests requests between their head and their answer: beyond,
                  503 + Retry-After (paths in always_open, cheap and bodiless, are never refused)
    body size     Content-Length over the limit: 413 before one byte of the body is read; a chunked body is
                  counted while it streams in and cut off (413) as soon as it passes the limit
    body pace     while the body streams in, at least min_upload_bytes_s * upload_window_s bytes in every
                  upload_window_s: else the upload is cut off with a 408 (a client sending 1 byte a second
                  holds nothing for long)
    deadline      from the head to the start of the answer: 504, or 408 while the upload is still
                  arriving; a deadline that passes while answering closes the connection
    request id    a uuid4 hex in the scope (problems.REQUEST_ID_KEY), the X-Request-Id header and the log
    access log    one line per request on the "edgecap.serve" logger: method, path, status, time, bytes in

The time before a request's head is complete belongs to the connection (serve.connections). Its own answers
(400, 408, 413, 503, 504) are problem documents sent on the raw ASGI channel (Problem.send): they happen
outside the FastAPI app. Logs never hold image bytes, report text or query strings. Device-safe: stdlib only.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from edgecap.serve.problems import REQUEST_ID_KEY, Problem
from edgecap.serve.settings import Settings

log = logging.getLogger("edgecap.serve")


class _Cut(Exception):
    """The body was refused while it streamed in (too large, too slow); the middleware answers `problem`."""

    def __init__(self, problem: Problem):
        super().__init__(problem.detail)
        self.problem = problem


class UploadPace:
    """The minimum upload rate: at least min_bytes_s * window_s body bytes in every window of window_s seconds.

    A window starts when the body starts (the head has arrived) and again each time its quota is reached, so
    a client that sends a burst and then pauses is judged by its average, never by one slow packet.

    Args:
        min_bytes_s: bytes per second; 0 disables the check.
        window_s: window length (s).
        now: time.monotonic() at the start of the body.
    """

    def __init__(self, min_bytes_s: float, window_s: float, now: float):
        self.quota, self.window_s = min_bytes_s * window_s, window_s
        self.start, self.got = now, 0

    def time_left(self, now: float) -> float | None:
        """Seconds before the current window fails (None: no check)."""
        return None if self.quota <= 0 else self.start + self.window_s - now

    def add(self, n: int, now: float) -> None:
        self.got += n
        if self.got >= self.quota:
            self.start, self.got = now, 0


class RequestLimits:
    """ASGI middleware around the whole app (see the module docstring).

    Args:
        app: the ASGI app.
        settings: serve.settings.Settings (max_request_bytes, timeout_s, min_upload_bytes_s,
            upload_window_s, max_open_requests, retry_after_s).
        always_open: paths never refused for the number of requests in progress (/v1/health).
    """

    def __init__(self, app, settings: Settings, always_open: tuple[str, ...] = ()):
        self.app, self.settings, self.always_open = app, settings, frozenset(always_open)
        self.open_requests = 0

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        scope[REQUEST_ID_KEY] = uuid.uuid4().hex
        if scope.get("path") in self.always_open:
            return await _Exchange(self, scope, receive, send).run()
        if self.open_requests >= self.settings.max_open_requests:
            return await _Exchange(self, scope, receive, send).refuse_busy()
        self.open_requests += 1
        try:
            await _Exchange(self, scope, receive, send).run()
        finally:
            self.open_requests -= 1


class _Exchange:
    """One request through RequestLimits: its state, its receive / send wrappers, its log line."""

    def __init__(self, limits: RequestLimits, scope, receive, send):
        self.app, self.settings = limits.app, limits.settings
        self.scope, self._receive, self._send = scope, receive, send
        self.open_requests = limits.open_requests
        self.start = time.perf_counter()
        self.bytes_in, self.out_status, self.started = 0, None, False
        self.cut: Problem | None = None
        headers = dict(scope.get("headers") or [])
        self.length = headers.get(b"content-length")
        self.body_done = True
        if self.length is not None or b"transfer-encoding" in headers:
            self.body_done = self.length is not None and self.length.strip() == b"0"
        self.pace = UploadPace(self.settings.min_upload_bytes_s, self.settings.upload_window_s, time.monotonic())

    def finish(self, status: int, note: str = "") -> None:
        ms = (time.perf_counter() - self.start) * 1e3
        log.info(
            "%s %s -> %d in %.1f ms (%d bytes in) id=%s%s",
            self.scope.get("method"),
            self.scope.get("path"),
            status,
            ms,
            self.bytes_in,
            self.scope[REQUEST_ID_KEY],
            note,
        )

    async def answer(self, problem: Problem, note: str = "") -> None:
        await problem.send(self.scope, self._send)
        self.finish(problem.status, note)

    async def refuse_busy(self) -> None:
        s = self.settings
        detail = (
            f"the server is busy: {self.open_requests} requests are in progress (the limit is "
            f"{s.max_open_requests}); retry in {s.retry_after_s} s"
        )
        await self.answer(Problem(503, "server-busy", detail, headers={"Retry-After": str(s.retry_after_s)}))

    async def run(self) -> None:
        s = self.settings
        if self.length is not None:
            try:
                declared = int(self.length)
            except ValueError:
                declared = -1
            if declared < 0:
                return await self.answer(Problem(400, "bad-request", "invalid Content-Length header"))
            if declared > s.max_request_bytes:
                return await self.answer(_too_large(s.max_request_bytes, declared), " (Content-Length)")
        try:
            await asyncio.wait_for(self.app(self.scope, self.receive, self.send), s.timeout_s)
        except _Cut:
            pass
        except asyncio.TimeoutError:
            if self.started:  # too late to answer: uvicorn closes the connection
                return self.finish(self.out_status or 500, " (deadline passed while answering)")
            if not self.body_done:
                detail = f"the request body did not arrive within {s.timeout_s:g} s"
                return await self.answer(Problem(408, "request-timeout", detail))
            detail = (
                f"no report within {s.timeout_s:g} s (the server is overloaded or the image is very large); "
                f"try again later"
            )
            return await self.answer(Problem(504, "timeout", detail))
        except Exception:  # answered by the app's 500 handler (ServerErrorMiddleware, outside this one)
            self.finish(500, " (internal error)")
            raise
        if self.cut is not None and not self.started:
            return await self.answer(self.cut, " (cut off while uploading)")
        self.finish(self.out_status or 500)

    async def receive(self) -> dict[str, Any]:
        """The app's receive: counts the body, holds it to the size limit and the pace."""
        if self.body_done:
            return await self._receive()
        left = self.pace.time_left(time.monotonic())
        try:
            message = await asyncio.wait_for(self._receive(), left) if left is not None else await self._receive()
        except asyncio.TimeoutError:
            s = self.settings
            self.cut = Problem(
                408,
                "request-timeout",
                f"the upload arrived slower than {s.min_upload_bytes_s / 1024:g} KiB/s over {s.upload_window_s:g} s",
            )
            raise _Cut(self.cut) from None
        if message["type"] == "http.request":
            n = len(message.get("body", b""))
            self.bytes_in += n
            self.pace.add(n, time.monotonic())
            if not message.get("more_body", False):
                self.body_done = True
            if self.bytes_in > self.settings.max_request_bytes:
                self.cut = _too_large(self.settings.max_request_bytes, None)
                raise _Cut(self.cut)
        return message

    async def send(self, message: dict[str, Any]) -> None:
        if self.cut is not None and not self.started:
            return  # the app's answer to a body it could not finish reading; ours is the cut's
        if message["type"] == "http.response.start":
            self.started, self.out_status = True, message["status"]
            rid = self.scope[REQUEST_ID_KEY].encode()
            message = {**message, "headers": list(message.get("headers", [])) + [(b"x-request-id", rid)]}
        await self._send(message)


def _too_large(limit: int, declared: int | None) -> Problem:
    limit_text = f"{limit:,} bytes ({limit / 2**20:g} MiB)"
    detail = (
        f"the request body is {declared:,} bytes; the limit is {limit_text}"
        if declared is not None
        else f"the request body passed the limit of {limit_text} while it streamed in"
    )
    return Problem(413, "request-too-large", detail)
