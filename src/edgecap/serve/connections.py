"""The connection level, below the ASGI app: how long a client may take to say what it wants, and what a
malformed request gets. uvicorn runs the app with this module's protocol and configuration.

    server = uvicorn.Server(uvicorn_config(app, settings))       # what `edgecap serve` runs
    server.run()

GuardedH11Protocol is uvicorn's h11 protocol with three changes:

    head deadline   a connection must deliver a complete request head within settings.header_timeout_s of
                    opening (or of its previous answer): else it is closed, with a 408 problem when it had
                    sent part of a head, silently when it had sent nothing. uvicorn itself never times out
                    a connection that has not finished its first head (only kept-alive ones, and those only
                    until their first byte), so 1-byte-a-second clients could hold it forever.
    malformed       a request h11 cannot parse (an invalid Content-Length, a bad header line) is answered
                    with a 400 application/problem+json, not uvicorn's plain text; if that happens while
                    the app still works on an earlier request of the connection, the app's later answer is
                    dropped instead of raising inside h11 (a false 500 and a traceback in the log).
    extra bytes     bytes after the body of a request that ends the connection (Connection: close,
                    HTTP/1.0) cannot be a request: they are discarded, and the request gets its own answer.

uvicorn_config leaves out uvicorn's limit_concurrency, which counted idle connections (85 idle sockets
denied service to everyone): middleware.RequestLimits caps requests in progress instead, and idle or slow
connections are closed here. A kept-alive connection is closed after settings.keep_alive_s without a new
request. TLS handshakes are bounded by asyncio (60 s) before a connection reaches this protocol.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from pathlib import Path
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from edgecap.serve.problems import Problem

log = logging.getLogger("edgecap.serve")


def problem_bytes(problem: Problem) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """A Problem as (response headers, body) for a connection-level answer: no request id exists yet, so the
    `instance` is a fresh one, logged with the answer. The connection is closed after it."""
    rid = uuid.uuid4().hex
    body = json.dumps(problem.body(rid)).encode()
    headers = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", rid.encode()),
        (b"connection", b"close"),
    ]
    return headers, body


class GuardedH11Protocol(H11Protocol):
    """uvicorn's H11Protocol with a head deadline, problem+json 400s and no parsing after a closing request
    (see the module docstring). Built by guarded_protocol(), which sets header_timeout_s."""

    header_timeout_s: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None

    # ---- head deadline ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:  # a complete head made a new request cycle
            self._cancel_head_timer()

    def on_response_complete(self) -> None:
        if not self.transport.is_closing():  # the next head has the same deadline (a pipelined one cancels it)
            self._arm_head_timer()
        super().on_response_complete()

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timeout)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timeout(self) -> None:
        """No complete request head in time: 408 to a client that started one, else just close."""
        self._head_timer = None
        if self.transport.is_closing() or (self.cycle is not None and not self.cycle.response_complete):
            return
        partial = self.conn.their_state is h11.IDLE and bool(self.conn.trailing_data[0])
        if partial:
            detail = f"the request head (request line and headers) did not arrive within {self.header_timeout_s:g} s"
            self._answer_and_close(Problem(408, "request-timeout", detail))
            log.info("connection closed: 408 request-timeout (incomplete request head)")
        else:
            log.debug("connection closed: idle for %g s", self.header_timeout_s)
            self.transport.close()

    # ---- malformed requests ------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.MUST_CLOSE:  # its last request is complete: these bytes are no request
            return
        super().data_received(data)

    def send_400_response(self, msg: str) -> None:
        """h11 could not parse the request (uvicorn has logged "Invalid HTTP request received.")."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:  # an earlier request of this connection runs
            cycle.disconnected = True  # its answer, when it comes, is dropped (h11 could not send it)
            cycle.message_event.set()
            if cycle.response_started:  # too late for another answer
                self.transport.close()
                return
        detail = (
            "the request is not valid HTTP/1.1 (e.g. an invalid Content-Length, a malformed request line "
            "or header, or bytes after a request's body that do not start a new request)"
        )
        self._answer_and_close(Problem(400, "bad-request", detail))

    def _answer_and_close(self, problem: Problem) -> None:
        headers, body = problem_bytes(problem)
        try:
            for event in (
                h11.Response(status_code=problem.status, headers=headers, reason=problem.title.encode()),
                h11.Data(data=body),
                h11.EndOfMessage(),
            ):
                self.transport.write(self.conn.send(event) or b"")
        except h11.LocalProtocolError:  # a state in which no answer can be sent: closing says enough
            pass
        self.transport.close()


def guarded_protocol(header_timeout_s: float) -> type[GuardedH11Protocol]:
    """GuardedH11Protocol with this head deadline (uvicorn builds one protocol per connection from a class)."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"header_timeout_s": header_timeout_s})


def uvicorn_config(
    app: Any, settings: Any, ssl_certfile: Path | None = None, ssl_keyfile: Path | None = None, **overrides: Any
) -> uvicorn.Config:
    """The uvicorn configuration `edgecap serve` runs `app` with (tests use it too, with `overrides`).

    Args:
        app: the ASGI app (serve.app.create_app).
        settings: serve.settings.Settings (host, port, log level, keep-alive and head deadlines).
        ssl_certfile, ssl_keyfile: PEM files to serve HTTPS (both or neither).
        overrides: further uvicorn.Config arguments (tests: timeout_graceful_shutdown).
    """
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "http": guarded_protocol(settings.header_timeout_s),
        "ws": "none",  # no WebSocket routes: an Upgrade header is an ordinary request
        "log_level": settings.log_level,
        "log_config": None,
        "access_log": False,  # middleware.RequestLimits logs one line per request, without the query string
        "server_header": False,
        "timeout_keep_alive": settings.keep_alive_s,
        "ssl_certfile": ssl_certfile and str(ssl_certfile),
        "ssl_keyfile": ssl_keyfile and str(ssl_keyfile),
    }
    return uvicorn.Config(app, **{**options, **overrides})
