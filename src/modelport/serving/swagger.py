"""/docs: Swagger UI, served locally (it works without reaching a CDN), when its files are here."""

from __future__ import annotations

import os

# Swagger UI's two files that /docs loads. A model image holds just these (copied from the build host's
# swagger-ui-bundle, SWAGGER_UI_ENV names where), not the 8 MB package and its Jinja2.
SWAGGER_UI_FILES = ("swagger-ui-bundle.js", "swagger-ui.css")
SWAGGER_UI_ENV = "MODELPORT_SWAGGER_UI"


def docs_html() -> str:
    return """<!doctype html>
<html><head><meta charset="utf-8"><title>modelport API</title>
<link rel="stylesheet" href="/docs/static/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/static/swagger-ui-bundle.js"></script>
<script>window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui"});</script>
</body></html>"""


def swagger_ui_dir() -> str | None:
    """Where Swagger UI's files are (served locally, so /docs works without reaching a CDN), or None."""
    if path := os.environ.get(SWAGGER_UI_ENV):
        return path
    try:
        import swagger_ui_bundle
    except ImportError:
        return None
    return swagger_ui_bundle.swagger_ui_path


def docs_missing_html() -> str:
    return """<!doctype html>
<html><head><meta charset="utf-8"><title>modelport API</title></head>
<body><p>Swagger UI is not installed in this Python (pip install swagger-ui-bundle).
The API's description: <a href="/openapi.json">/openapi.json</a>.</p></body></html>"""
