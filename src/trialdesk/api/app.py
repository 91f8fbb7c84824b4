"""The API application: the API under /api/v1, security headers, error answers.

Built by :func:`build_api` from a :class:`trialdesk.bootstrap.Runtime`; nothing is created at
import time. The whole application (API and web pages) is assembled by the composition root,
:func:`trialdesk.bootstrap.create_app`: the API never imports the web layer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DataError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from trialdesk import __version__
from trialdesk.api.hardening import BodyLimit, install_docs, nested_too_deep, security_headers
from trialdesk.api.problems import problem, trial_error_response
from trialdesk.domain.errors import TrialError, ValidationFailed

if TYPE_CHECKING:
    from trialdesk.bootstrap import Runtime

PageErrors = Callable[[Request, TrialError], Response]
"""How a refusal outside /api/ is answered (the web layer's error page), given by the
composition root."""

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class SecurityHeaders:
    """Adds the security headers to every HTTP answer that does not set them itself. Plain
    ASGI (not ``BaseHTTPMiddleware``, which runs each request in a task of its own and
    re-streams the answer): it only touches the start message (issue 13)."""

    def __init__(self, app: ASGIApp, headers: dict[str, str]) -> None:
        self.app = app
        self.raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in self.raw if k not in present]
                if extra:
                    message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, with_headers)


def build_api(runtime: Runtime, *, page_errors: PageErrors | None = None) -> FastAPI:
    """The app with the API under /api/v1; refusals outside /api/ go to ``page_errors``."""
    app = FastAPI(
        title="trialdesk",
        version=__version__,
        description="Randomized, blinded, multi-centre clinical trials: the IRT and EDC API.",
        openapi_url="/openapi.json",
        docs_url=None,  # served by install_docs with local assets, under the site's CSP
        redoc_url=None,
    )
    app.state.runtime = runtime
    settings = runtime.context.settings
    # the last added runs first: every answer, a 413 included, gets the security headers
    app.add_middleware(BodyLimit, limit=settings.max_request_bytes)
    app.add_middleware(
        SecurityHeaders, headers=security_headers(SECURITY_HEADERS, settings.hsts_seconds)
    )
    install_docs(app)
    app.add_exception_handler(RecursionError, nested_too_deep)

    @app.exception_handler(TrialError)
    async def _trial_error(request: Request, exc: TrialError) -> Response:
        if page_errors is None or request.url.path.startswith("/api/"):
            return trial_error_response(request, exc)
        return page_errors(request, exc)  # the web layer renders its own errors

    @app.exception_handler(DataError)
    async def _data_error(request: Request, exc: DataError) -> Response:
        # The database refused a value the checks let through (a NUL character, a number
        # beyond its column); the unit of work has rolled back, so nothing was written.
        refusal = ValidationFailed(
            "a value cannot be stored (a NUL character or a number out of range)",
            {"request": "invalid value"},
        )
        return await _trial_error(request, refusal)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors: dict[str, Any] = {
            ".".join(str(p) for p in err.get("loc", ())): err.get("msg", "invalid")
            for err in exc.errors()
        }
        return problem(
            422,
            "validation-failed",
            "ValidationFailed",
            "the request is not valid",
            errors=errors,
            instance=str(request.url.path),
        )

    from trialdesk.api.routes import router as api_router

    app.include_router(api_router, prefix="/api/v1")
    return app
