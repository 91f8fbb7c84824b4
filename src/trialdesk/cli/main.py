"""Entry point: builds the Typer app from the command groups; nothing runs at import."""

from __future__ import annotations

import typer

from trialdesk.cli import design_cmd, protocol_cmd


def build_app() -> typer.Typer:
    app = typer.Typer(
        help="trialdesk: run a randomized, blinded, multi-centre clinical trial.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
    )
    app.add_typer(protocol_cmd.app, name="protocol", help="Validate and show protocol files.")
    app.add_typer(design_cmd.app, name="design", help="Assess a randomization design.")
    return app


def run() -> None:
    build_app()()
