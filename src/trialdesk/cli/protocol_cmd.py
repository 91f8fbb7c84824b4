"""`trialdesk protocol ...` commands."""

from __future__ import annotations

import typer

app = typer.Typer(help="protocol commands", no_args_is_help=True)
