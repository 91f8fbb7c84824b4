"""What the HTTP layer does before any route runs (issue 12, Deliver 9): a limit on request
bodies, security headers (HSTS by setting), the API documentation with local assets under the
site's own Content-Security-Policy, and a clear refusal for JSON nested too deeply.

The documentation page is Swagger UI from the ``fastapi-offline`` package's static files (no
CDN, nothing copied into this repository) started by a small script of ours, so the page runs
no inline script and passes ``script-src 'self'``.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from trialdesk.api.problems import problem

DOCS_URL = "/api/docs"
DOCS_ASSETS = "/api/docs/assets"
HERE = Path(__file__).parent
INIT_SCRIPT = HERE.parent / "web" / "static" / "swagger-init.js"


class RequestTooLarge(Exception):
    """Raised by the wrapped ``receive`` once a body passes the limit."""


def _too_large(limit: int) -> JSONResponse:
    return problem(
        413,
        "request-too-large",
        "RequestTooLarge",
        f"the request body is larger than {limit} bytes; nothing was done",
    )


class BodyLimit:
    """Refuse (413, nothing done) a request whose body is larger than ``limit`` bytes: at once
    when its Content-Length says so, otherwise as soon as the bytes read pass the limit (a
    chunked body has no length), before a route parses it."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.limit or declared < 0:
                    await _too_large(self.limit)(scope, receive, send)
                    return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise RequestTooLarge
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except RequestTooLarge:
            if started:
                raise
            await _too_large(self.limit)(scope, receive, send)


def install_docs(app: FastAPI) -> None:
    """``/api/docs``: Swagger UI from the package's files, same origin, no inline script."""
    import fastapi_offline

    assets = Path(fastapi_offline.__file__).parent / "static"
    files = {
        "swagger-ui-bundle.js": ("application/javascript", assets / "swagger-ui-bundle.js"),
        "swagger-ui.css": ("text/css", assets / "swagger-ui.css"),
        "favicon.png": ("image/png", assets / "favicon.png"),
        "swagger-init.js": ("application/javascript", INIT_SCRIPT),
    }

    @app.get(DOCS_URL, include_in_schema=False)
    def docs_page() -> HTMLResponse:
        return HTMLResponse(
            "<!doctype html>\n"
            '<html lang="en"><head><meta charset="utf-8">'
            f"<title>{app.title} API</title>"
            f'<link rel="icon" href="{DOCS_ASSETS}/favicon.png">'
            f'<link rel="stylesheet" href="{DOCS_ASSETS}/swagger-ui.css">'
            "</head><body>"
            f'<div id="swagger-ui" data-openapi="{app.openapi_url}"></div>'
            f'<script src="{DOCS_ASSETS}/swagger-ui-bundle.js"></script>'
            f'<script src="{DOCS_ASSETS}/swagger-init.js"></script>'
            "</body></html>"
        )

    @app.get(DOCS_ASSETS + "/{name}", include_in_schema=False)
    def docs_asset(name: str) -> Response:
        found = files.get(name)
        if found is None:
            return problem(404, "not-found", "NotFound", f"no documentation asset {name}")
        media_type, path = found
        return FileResponse(path, media_type=media_type)


def nested_too_deep(request: Request, _exc: Exception) -> JSONResponse:
    """A body nested past Python's recursion limit: one clear 422, nothing done."""
    return problem(
        422,
        "validation-failed",
        "ValidationFailed",
        "the request body is nested too deeply",
        errors={"body": "nested too deeply"},
        instance=str(request.url.path),
    )


def security_headers(base: dict[str, str], hsts_seconds: int | None) -> dict[str, str]:
    headers = dict(base)
    if hsts_seconds:
        headers["Strict-Transport-Security"] = f"max-age={hsts_seconds}; includeSubDomains"
    return headers
