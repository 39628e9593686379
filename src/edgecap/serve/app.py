"""The HTTP API: the same runtime as `edgecap caption`, behind FastAPI. Device-safe (never TensorFlow).

    app = create_app(Settings(bundle=Path("bundles/int8")))      # loads one Captioner per worker
    uvicorn.run(app, host="127.0.0.1", port=8000)                  # or: edgecap serve --bundle bundles/int8

Routes (routes.py): POST /v1/reports, GET /v1/bundle, GET /v1/health; GET /openapi.json (openapi.py) and
/docs (swagger.py: Swagger UI from local files when fastapi-offline is installed; never a CDN).

A connection first passes connections.GuardedH11Protocol (the request head within a deadline; malformed
requests -> 400). A request to /v1/reports then passes, in order: middleware.RequestLimits (requests in
progress, body size and pace, deadline) -> API key -> request content type -> room in the pool.InferencePool
(503 when full; guards.py) -> multipart parsing and validation -> image_check.check_image on each upload
(format, pixel count from the header) -> a place in the pool (only now: a slow upload holds none) -> a
worker: Captioner.caption -> JSON. Every error is application/problem+json (problems.Problem,
error_handlers.py); docs/serve.md has the status table.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI

from edgecap import __version__
from edgecap.serve.error_handlers import add_error_handlers
from edgecap.serve.middleware import RequestLimits
from edgecap.serve.openapi import install_openapi
from edgecap.serve.pool import InferencePool
from edgecap.serve.routes import HEALTH_PATH, add_routes
from edgecap.serve.settings import Settings
from edgecap.serve.swagger import add_swagger_ui

DESCRIPTION = (
    "Chest X-ray reports from a converted edgecap bundle, offline. Demonstration models are not "
    "validated for clinical use: read `flagged` and `warnings`."
)


def load_captioners(settings: Settings) -> list:
    """One Captioner per worker, with the server's pixel limit. Raises BundleError / InterpreterUnavailable (the
    CLI exits 2)."""
    from edgecap.runtime.captioner import Captioner

    return [
        Captioner.from_bundle(settings.bundle, num_threads=settings.threads, max_pixels=settings.max_pixels)
        for _ in range(settings.workers)
    ]


def _quiet_multipart_logs() -> None:
    """python-multipart warns with bytes of a malformed body ("Expected boundary character 98, got 122"):
    upload content never reaches the log."""
    for name in ("python_multipart", "multipart"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _closing(pool: InferencePool):
    """A FastAPI lifespan that stops the pool's worker threads at shutdown."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        pool.close()

    return lifespan


def create_app(settings: Settings, captioners: list | None = None) -> FastAPI:
    """The FastAPI app for `settings`.

    Args:
        settings: serve.settings.Settings.
        captioners: one per worker (default: load_captioners(settings)); anything with Captioner's
            `caption`, `bundle.manifest.to_json()` and `bundle_info` works (tests use slow fakes).
    """
    if captioners is None:
        captioners = load_captioners(settings)
    _quiet_multipart_logs()
    pool = InferencePool(captioners, settings.queue_size, settings.retry_after_s)
    app = FastAPI(
        title="edgecap",
        version=__version__,
        lifespan=_closing(pool),
        docs_url=None,
        redoc_url=None,
        description=DESCRIPTION,
    )
    app.state.settings, app.state.pool = settings, pool  # read by the guards.KeyedRoute / UploadRoute checks
    add_routes(app, settings, pool, captioners[0])
    add_swagger_ui(app)
    add_error_handlers(app)
    install_openapi(app, settings.api_key)
    app.add_middleware(RequestLimits, settings=settings, always_open=(HEALTH_PATH,))
    return app
