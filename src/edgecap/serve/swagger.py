"""GET /docs: Swagger UI served from local files, never from a CDN (an offline product on a closed network).

The files come from the fastapi-offline package (the `serve` extra), mounted at DOCS_ASSETS. Without it /docs
is a short page that names the package to install and links /openapi.json.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse

DOCS_ASSETS = "/docs-assets"


def _swagger_assets() -> Path | None:
    """Swagger UI files shipped by the fastapi-offline package (the `serve` extra), if installed."""
    try:
        import fastapi_offline
    except ImportError:
        return None
    folder = Path(fastapi_offline.__file__).parent / "static"
    return folder if (folder / "swagger-ui-bundle.js").is_file() else None


def add_swagger_ui(app: FastAPI) -> None:
    """Mount the Swagger UI files (when installed) and add GET /docs (left out of the OpenAPI schema)."""
    from fastapi.openapi.docs import get_swagger_ui_html

    assets = _swagger_assets()
    if assets is not None:
        from fastapi.staticfiles import StaticFiles

        app.mount(DOCS_ASSETS, StaticFiles(directory=assets), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        if assets is None:  # an offline product never points a browser at a CDN
            return HTMLResponse(
                "<!doctype html><title>edgecap API</title><h1>edgecap API</h1><p>The interactive docs need "
                "the Swagger UI files: <code>pip install 'edgecap[serve]'</code> (fastapi-offline). The OpenAPI "
                f'description is at <a href="{root}/openapi.json">/openapi.json</a>.</p>'
            )
        return get_swagger_ui_html(
            openapi_url=f"{root}/openapi.json",
            title="edgecap API",
            swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
        )
