"""`edgecap serve`: the runtime as a local HTTP API (docs/serve.md). Device-safe: never TensorFlow.

    edgecap serve                                        # the default bundle on http://127.0.0.1:8000
    edgecap serve --bundle bundles/int8 --workers 2
    edgecap serve --host 0.0.0.0 --api-key-file key.txt  # a non-loopback bind needs a key (else exit 2)
    edgecap serve --host 0.0.0.0 --api-key-file key.txt --ssl-certfile cert.pem --ssl-keyfile key.pem
    python -m edgecap.serve.cli --help                   # the same command without the edgecap entry point

Exit status: 0 stopped (Ctrl-C); 2 bad usage, a non-loopback bind without an API key, an unreadable key
file or an unusable bundle (nothing served); 1 the server failed while running (e.g. the port is taken).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer


def serve(
    bundle: Optional[Path] = typer.Option(None, "--bundle", help="Bundle folder (default: the bundle shipped "
                                          "with edgecap)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Bind address. Anything but loopback needs "
                             "--api-key-file."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="TCP port."),
    api_key_file: Optional[Path] = typer.Option(None, "--api-key-file", help="File holding the API key (one "
                                                "line, >= 16 characters): clients send it as X-API-Key or "
                                                "Authorization: Bearer."),
    workers: int = typer.Option(1, "--workers", min=1, help="Inference threads, each with its own interpreter "
                                "(memory grows with each)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Interpreter threads per worker."),
    queue_size: int = typer.Option(16, "--queue-size", min=0, help="Requests that may wait for a worker; "
                                   "beyond it: 503 + Retry-After."),
    timeout: float = typer.Option(30.0, "--timeout", min=0.1, help="Seconds per request before a 504."),
    max_request_mb: float = typer.Option(20.0, "--max-request-mb", min=0.01, help="Request body limit (MiB)."),
    max_megapixels: float = typer.Option(30.0, "--max-megapixels", min=0.01, help="Pixel limit per image, "
                                         "read from its header before decoding."),
    ssl_certfile: Optional[Path] = typer.Option(None, "--ssl-certfile", help="Serve HTTPS with this certificate "
                                                "(PEM; with --ssl-keyfile)."),
    ssl_keyfile: Optional[Path] = typer.Option(None, "--ssl-keyfile", help="Private key of --ssl-certfile (PEM)."),
    log_level: str = typer.Option("info", "--log-level", help="critical, error, warning, info or debug."),
) -> None:
    """Serve reports over HTTP: POST /v1/reports, GET /v1/bundle, GET /v1/health, docs at /docs."""
    from edgecap.serve.settings import Settings, SettingsError, check_bind, is_loopback, read_api_key

    def fail(message: str, code: int = 2) -> None:
        typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code)

    level = log_level.lower()
    if level not in ("critical", "error", "warning", "info", "debug"):
        fail(f"unknown --log-level {log_level!r}")
    if (ssl_certfile is None) != (ssl_keyfile is None):
        fail("--ssl-certfile and --ssl-keyfile go together")
    for f in (ssl_certfile, ssl_keyfile):
        if f is not None and not f.is_file():
            fail(f"{f}: no such file")
    key = None
    try:
        if api_key_file is not None:
            key, warnings = read_api_key(api_key_file)
            for w in warnings:
                typer.secho(f"warning: {w}", fg=typer.colors.YELLOW, err=True)
        settings = Settings(bundle=bundle, host=host, port=port, api_key=key, workers=workers, threads=threads,
                            queue_size=queue_size, timeout_s=timeout, max_request_bytes=int(max_request_mb * 2**20),
                            max_pixels=int(max_megapixels * 1e6), log_level=level)
        check_bind(settings)
    except SettingsError as e:
        fail(str(e))
    if not is_loopback(host) and ssl_certfile is None:
        typer.secho(f"warning: {host} is reachable from the network over plain HTTP: images, reports and the API "
                    f"key travel unencrypted. Use --ssl-certfile/--ssl-keyfile or a TLS reverse proxy.",
                    fg=typer.colors.YELLOW, err=True)

    import uvicorn

    from edgecap.runtime.bundle import BundleError
    from edgecap.runtime.interpreter import InterpreterUnavailable
    from edgecap.serve.app import create_app

    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        app = create_app(settings)
    except (BundleError, InterpreterUnavailable) as e:
        fail(str(e))
    auth = "API key required" if key else "no API key (loopback only)"
    scheme = "https" if ssl_certfile else "http"
    typer.echo(f"edgecap serve: {scheme}://{_url_host(host)}:{port} ({settings.workers} worker(s), queue "
               f"{settings.queue_size}, {auth}); docs at /docs. Ctrl-C stops.", err=True)
    # limit_concurrency: a backstop against connection floods from any client, unauthenticated ones included
    # (the pool admits authorised uploads); beyond it uvicorn itself answers a plain-text 503.
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=level, access_log=False,
                                           server_header=False, log_config=None,
                                           limit_concurrency=settings.capacity + 64, timeout_keep_alive=5,
                                           ssl_certfile=ssl_certfile and str(ssl_certfile),
                                           ssl_keyfile=ssl_keyfile and str(ssl_keyfile)))
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled after a graceful shutdown
        pass
    if not server.started:  # e.g. the port is taken; uvicorn has logged why
        raise typer.Exit(1)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def main() -> None:
    typer.run(serve)


if __name__ == "__main__":
    main()
