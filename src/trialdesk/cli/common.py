"""Shared CLI plumbing: one-line errors, JSON output."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import typer

from trialdesk.domain.errors import TrialError


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one clear line on stderr and exit non-zero; never a traceback."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def fail_from(exc: TrialError) -> NoReturn:
    fail(f"{exc.message} [{exc.code}]")
