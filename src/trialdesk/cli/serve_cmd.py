"""`trialdesk serve`: the web app and API on the configured database."""

from __future__ import annotations

import typer

from trialdesk.cli.runtime import open_runtime


def serve(
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port"),
) -> None:
    """Serve the web pages and the API (uvicorn) until interrupted."""
    import uvicorn

    from trialdesk.api.app import create_app

    with open_runtime() as runtime:
        typer.echo(f"trialdesk serving at http://{host}:{port} (API under /api/v1)")
        uvicorn.run(create_app(runtime), host=host, port=port, log_level="info")
