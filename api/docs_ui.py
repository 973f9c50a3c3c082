"""The API's documentation page, served with everything it needs by the service itself.

``/schema`` (and ``/schema/swagger``) is Swagger UI reading ``/schema/openapi.json``.
Its script, stylesheet and icon come from the pinned ``swagger-ui-bundle-v2`` package
(Swagger UI's own distribution files, Apache-2.0, licence in the package), served under
``/schema/assets/swagger-ui-<version>/``: the page works offline and behind a firewall,
and a reader's browser asks no CDN for anything. Litestar's own pages load their
scripts from CDNs, so they are not offered: ``/schema/redoc``, ``/schema/elements`` and
``/schema/rapidoc`` send their readers to ``/schema``. Any other path under ``/schema`` is
the API's own 404, ``{"message": "Not found."}``.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any, cast

from litestar import MediaType, Request, Response, Router, get
from litestar.enums import OpenAPIMediaType
from litestar.exceptions import NotFoundException
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.params import FromPath
from litestar.response import File, Redirect
from swagger_ui_bundle import swagger_ui_path

SWAGGER_UI = Path(str(swagger_ui_path))
"""Swagger UI's distribution files, as the package installs them (``swagger-ui-<version>``)."""

ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",  # Litestar adds "; charset=utf-8" to text
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
}
"""The files the page loads; nothing else in the package is served."""

FORMER_PAGES = ["/redoc", "/elements", "/rapidoc"]
"""Litestar's other viewers, which need CDNs: their readers are sent to the page."""

_BY_ACCEPT = {"Vary": "Accept"}
_IMMUTABLE = {"Cache-Control": "public, max-age=31536000, immutable"}  # the path names the version


class SwaggerPage(SwaggerRenderPlugin):
    """Swagger UI from this service's own files, linking the document it shows."""

    def __init__(self) -> None:
        super().__init__(path=["/", "/swagger"])
        self.assets = "/schema/assets/" + SWAGGER_UI.name

    def receive_router(self, router: Router) -> None:
        """Serve the assets and the redirects from the OpenAPI router (``/schema``), and
        leave a path no page has to the app's JSON 404: Litestar's router answers
        ``/schema/<anything else>`` with an HTML page of its own."""
        base = router.path.rstrip("/")
        litestar_404 = f"{base}/{{path:str}}"
        router.routes[:] = [route for route in router.routes if route.path != litestar_404]
        self.assets = f"{base}/assets/{SWAGGER_UI.name}"
        router.register(get(f"/assets/{SWAGGER_UI.name}/{{name:str}}", sync_to_thread=False)(asset))
        router.register(get(FORMER_PAGES, sync_to_thread=False)(_to_the_page))

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        """The page: a link to the document, and Swagger UI showing it; at ``/schema`` to a
        client that does not ask for HTML (a script, curl), the document itself."""
        if "text/html" not in request.headers.get("accept", "") and not request.url.path.endswith(
            "/swagger"
        ):
            document_only: Any = Response(
                self.render_json(request, openapi_schema),
                media_type=OpenAPIMediaType.OPENAPI_JSON,
                headers=_BY_ACCEPT,
            )
            return cast(bytes, document_only)  # Litestar sends a Response as it is
        document = self.get_openapi_json_route(request)
        title = html.escape(openapi_schema["info"]["title"])
        options = {
            "url": document,
            "dom_id": "#swagger-ui",
            "deepLinking": True,
            "displayOperationId": True,
            "displayRequestDuration": True,
            "persistAuthorization": False,
            # Swagger UI otherwise asks validator.swagger.io about the document.
            "validatorUrl": None,
        }
        page = f"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{title}: API documentation</title>
  <link rel="icon" type="image/png" href="{self.assets}/favicon-32x32.png">
  <link rel="stylesheet" href="{self.assets}/swagger-ui.css">
  <style>
    body {{ margin: 0; }}
    #document-links {{ font: 14px/1.5 sans-serif; padding: 8px 20px; background: #1b1b1b;
                       color: #fff; }}
    #document-links a {{ color: #89bf04; }}
  </style>
</head>
<body>
  <nav id="document-links">{title}: the OpenAPI document is
    <a id="openapi-json" href="{document}">{document}</a>.</nav>
  <div id="swagger-ui"></div>
  <script src="{self.assets}/swagger-ui-bundle.js"></script>
  <script>window.ui = SwaggerUIBundle({json.dumps(options)});</script>
</body>
</html>
"""
        return cast(bytes, Response(page.encode(), media_type=MediaType.HTML, headers=_BY_ACCEPT))


def asset(name: FromPath[str]) -> File:
    """One of Swagger UI's files (404 for any other name)."""
    media_type = ASSETS.get(name)
    if media_type is None:
        raise NotFoundException
    return File(
        SWAGGER_UI / name,
        media_type=media_type,
        content_disposition_type="inline",
        headers=_IMMUTABLE,
    )


def _to_the_page(request: Request[Any, Any, Any]) -> Redirect:
    return Redirect(path=request.url.path.rsplit("/", 1)[0] or "/", status_code=302)
