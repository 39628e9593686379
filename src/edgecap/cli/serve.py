"""`edgecap serve`: the runtime as a local HTTP API (docs/serve.md). Device-safe: never TensorFlow.

    edgecap serve                                        # the default bundle on http://127.0.0.1:8000
    edgecap serve --bundle bundles/int8 --workers 2
    edgecap serve --host 0.0.0.0 --api-key-file key.txt  # a non-loopback bind needs a key (else exit 2)
    edgecap serve --host 0.0.0.0 --api-key-file key.txt --ssl-certfile cert.pem --ssl-keyfile key.pem
    python -m edgecap.cli serve --help                   # the same command without the edgecap entry point

The flags' defaults are those of serve.settings.Settings (--max-request-mb in MiB of its max_request_bytes,
--max-megapixels in millions of its max_pixels, --min-upload-kib-s in KiB/s of its min_upload_bytes_s).
Exit status: 0 stopped (Ctrl-C); 2 bad usage, a non-loopback bind without an API key, an unreadable key file
or an unusable bundle (nothing served); 1 the server failed to start or while running (e.g. the port is
taken).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import typer

from edgecap.cli.common import EXIT_FAILED, bundle_option, error, fail, threads_option, warn
from edgecap.serve.settings import Settings, SettingsError, check_bind, is_loopback, read_api_key

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
MIB = 2**20
KIB = 2**10
MEGAPIXEL = 1e6
_DEFAULT = Settings()


def serve(
    bundle: Optional[Path] = bundle_option(),
    host: str = typer.Option(_DEFAULT.host, "--host", help="Bind address. Anything but loopback needs --api-key-file."),
    port: int = typer.Option(_DEFAULT.port, "--port", min=0, max=65535, help="TCP port."),
    api_key_file: Optional[Path] = typer.Option(None, "--api-key-file", help="File holding the API key (one line, >= "
                                                                             "16 characters): clients send it as "
                                                                             "X-API-Key or Authorization: Bearer."),
    workers: int = typer.Option(_DEFAULT.workers, "--workers", min=1, help="Inference threads, each with its own "
                                                                           "interpreter (memory grows with each)."),
    threads: Optional[int] = threads_option("Interpreter threads per worker."),
    queue_size: int = typer.Option(_DEFAULT.queue_size, "--queue-size", min=0, help="Requests that may wait for a "
                                                                                    "worker; beyond it: 503 + "
                                                                                    "Retry-After."),
    timeout: float = typer.Option(_DEFAULT.timeout_s, "--timeout", min=0.1, help="Seconds per request before a 504."),
    max_request_mb: float = typer.Option(_DEFAULT.max_request_bytes / MIB, "--max-request-mb", min=0.01, help="Request "
                                                                                                              "body "
                                                                                                              "limit "
                                                                                                              "(MiB)."),
    max_megapixels: float = typer.Option(_DEFAULT.max_pixels / MEGAPIXEL, "--max-megapixels", min=0.01, help="Pixel "
                                                                                                             "limit "
                                                                                                             "per "
                                                                                                             "image, "
                                                                                                             "read "
                                                                                                             "from "
                                                                                                             "its "
                                                                                                             "header "
                                                                                                             "before "
                                                                                                             "decoding."),
    header_timeout: float = typer.Option(_DEFAULT.header_timeout_s, "--header-timeout", min=0.1, help="Seconds a "
                                         "connection has to send a complete request head (of opening, or of its "
                                         "previous answer); else it is closed."),
    keep_alive: float = typer.Option(_DEFAULT.keep_alive_s, "--keep-alive", min=0.1, help="Seconds an idle "
                                     "kept-alive connection stays open."),
    min_upload_kib_s: float = typer.Option(_DEFAULT.min_upload_bytes_s / KIB, "--min-upload-kib-s", min=0,
                                           help="An upload slower than this (KiB/s) over --upload-window is cut "
                                                "off with a 408 (0: no minimum)."),
    upload_window: float = typer.Option(_DEFAULT.upload_window_s, "--upload-window", min=0.1, help="Seconds over "
                                        "which the upload rate is judged."),
    ssl_certfile: Optional[Path] = typer.Option(None, "--ssl-certfile", help="Serve HTTPS with this certificate "
                                                                             "(PEM; with --ssl-keyfile)."),
    ssl_keyfile: Optional[Path] = typer.Option(None, "--ssl-keyfile", help="Private key of --ssl-certfile (PEM)."),
    log_level: str = typer.Option(_DEFAULT.log_level, "--log-level", help="critical, error, warning, info or debug."),
) -> None:
    """Serve reports over HTTP: POST /v1/reports, GET /v1/bundle, GET /v1/health, docs at /docs."""
    level = log_level.lower()
    if level not in LOG_LEVELS:
        fail(f"unknown --log-level {log_level!r}")
    _check_tls(ssl_certfile, ssl_keyfile)
    settings = _settings(api_key_file, bundle=bundle, host=host, port=port, workers=workers, threads=threads,
                         queue_size=queue_size, timeout_s=timeout, max_request_bytes=int(max_request_mb * MIB),
                         max_pixels=int(max_megapixels * MEGAPIXEL), header_timeout_s=header_timeout,
                         keep_alive_s=keep_alive, min_upload_bytes_s=min_upload_kib_s * KIB,
                         upload_window_s=upload_window, log_level=level)
    if not is_loopback(host) and ssl_certfile is None:
        warn(
            f"{host} is reachable from the network over plain HTTP: images, reports and the API key travel "
            f"unencrypted. Use --ssl-certfile/--ssl-keyfile or a TLS reverse proxy."
        )
    _run(settings, ssl_certfile, ssl_keyfile)


def _check_tls(certfile: Optional[Path], keyfile: Optional[Path]) -> None:
    if (certfile is None) != (keyfile is None):
        fail("--ssl-certfile and --ssl-keyfile go together")
    for f in (certfile, keyfile):
        if f is not None and not f.is_file():
            fail(f"{f}: no such file")


def _settings(api_key_file: Optional[Path], **fields: Any) -> Settings:
    """Settings from the flags and the key file (its warnings printed); refused ones are a usage error."""
    try:
        key = None
        if api_key_file is not None:
            key, warnings = read_api_key(api_key_file)
            for w in warnings:
                warn(w)
        settings = Settings(api_key=key, **fields)
        check_bind(settings)
    except SettingsError as e:
        fail(str(e))
    return settings


def _run(settings: Settings, ssl_certfile: Optional[Path], ssl_keyfile: Optional[Path]) -> None:
    """Build the app (a bundle error is a usage error) and serve it with uvicorn until Ctrl-C."""
    import uvicorn

    from edgecap.runtime.bundle import BundleError
    from edgecap.runtime.interpreter import InterpreterUnavailable
    from edgecap.serve.app import create_app
    from edgecap.serve.connections import uvicorn_config

    level, host, port = settings.log_level, settings.host, settings.port
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        app = create_app(settings)
    except (BundleError, InterpreterUnavailable) as e:
        fail(str(e))
    auth = "API key required" if settings.api_key else "no API key (loopback only)"
    scheme = "https" if ssl_certfile else "http"
    typer.echo(
        f"edgecap serve: {scheme}://{_url_host(host)}:{port} ({settings.workers} worker(s), queue "
        f"{settings.queue_size}, {auth}); docs at /docs. Ctrl-C stops.",
        err=True,
    )
    # serve.connections: deadlines for request heads, idle connections closed, malformed requests as problems
    server = uvicorn.Server(uvicorn_config(app, settings, ssl_certfile, ssl_keyfile))
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled after a graceful shutdown
        pass
    except SystemExit:  # uvicorn's own exit (status 3) when it cannot start, e.g. the port is taken
        pass
    if not server.started:  # uvicorn has logged why (e.g. "[Errno 98] ... address already in use")
        error(f"the server did not start on {_url_host(host)}:{port} (is the port taken? see the line above)")
        raise typer.Exit(EXIT_FAILED)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
