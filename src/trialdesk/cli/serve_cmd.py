"""`trialdesk serve`: the web app and API on the configured database."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from trialdesk.cli.runtime import open_runtime

if TYPE_CHECKING:
    from fastapi import FastAPI


def serve(
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port"),
    workers: int = typer.Option(
        1, "--workers", min=1, help="worker processes (about one per CPU core)"
    ),
) -> None:
    """Serve the web pages and the API (uvicorn) until interrupted."""
    import uvicorn

    from trialdesk.bootstrap import create_app

    with open_runtime() as runtime:
        typer.echo(f"trialdesk serving at http://{host}:{port} (API under /api/v1)")
        if workers == 1:
            uvicorn.run(
                create_app(runtime),
                host=host,
                port=port,
                log_level="info",
                server_header=False,  # no "server: uvicorn" banner
            )
            return
    # The database was checked above; each worker process builds its own runtime.
    uvicorn.run(
        "trialdesk.cli.serve_cmd:worker_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        server_header=False,
    )


def worker_app() -> FastAPI:
    """The app of one uvicorn worker process, from the same TRIALDESK_* settings."""
    from trialdesk.bootstrap import bootstrap, create_app
    from trialdesk.config import load_settings

    return create_app(bootstrap(load_settings(), run_migrations=False))
