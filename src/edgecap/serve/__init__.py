"""`edgecap serve`: the device-safe runtime as a local HTTP API (FastAPI + uvicorn, never TensorFlow).

    settings  Settings: bind address, API key, workers, queue, limits (one frozen record)
    limits    request size / deadline middleware, image header checks, the worker pool, problem responses
    app       create_app(settings) -> FastAPI: POST /v1/reports, GET /v1/bundle, GET /v1/health, /docs
    cli       the `edgecap serve` command

Install with `pip install 'edgecap[serve]'`; docs/serve.md has the API, the status codes and the limits.
"""
