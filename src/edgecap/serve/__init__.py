"""`edgecap serve`: the device-safe runtime as a local HTTP API (FastAPI + uvicorn, never TensorFlow).

    settings        Settings: bind address, API key, workers, queue, limits (one frozen record)
    app             create_app(settings) -> FastAPI: composes the pieces below
    connections     below the app: request-head deadline, idle connections closed, malformed requests as
                    problems; the uvicorn configuration `edgecap serve` runs
    routes          POST /v1/reports, GET /v1/bundle, GET /v1/health, and the report job a worker runs
    guards          before the body is read: API key, upload content type, room in the pool
    pool            InferencePool: worker threads, one Captioner each, a bounded FIFO queue (503 when full)
    image_check     an upload's format (magic bytes) and pixel count (header) before decoding: 415 / 413
    middleware      RequestLimits: requests in progress (503), body size (413) and pace (408), deadline
                    (504 / 408), request id, access log
    problems        Problem: every error as application/problem+json (RFC 9457)
    error_handlers  exceptions -> problem responses (validation 422, 404, 405, 500)
    openapi         response shapes and security schemes of /openapi.json
    swagger         /docs from local Swagger UI files (never a CDN)

The `edgecap serve` command is edgecap/cli/serve.py. Install with `pip install 'edgecap[serve]'`; docs/serve.md
has the API, the status codes and the limits.
"""
