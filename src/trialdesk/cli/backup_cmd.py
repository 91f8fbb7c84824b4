"""`trialdesk backup` and `trialdesk restore`: a consistent copy of the whole database, and
putting one back (docs/operations.md). Run by the local operator."""

from __future__ import annotations

from pathlib import Path

import typer

from trialdesk.cli.common import fail, fail_from, print_json
from trialdesk.cli.options import JsonOpt
from trialdesk.cli.runtime import guarded, local_operator, open_runtime
from trialdesk.config import load_settings
from trialdesk.domain.errors import TrialError
from trialdesk.services.crypto import AllocationCipher
from trialdesk.services.maintenance import backup_database, read_backup, restore_database


def backup(
    out: Path = typer.Option(..., "--out", help="the new backup file to write"),
    json_out: bool = JsonOpt,
) -> None:
    """Write a consistent copy of the database (safe while the server runs) with its manifest."""
    with open_runtime() as runtime:
        manifest = guarded(lambda: backup_database(runtime.context, local_operator(), out))
    if json_out:
        print_json({"file": str(out), **manifest.as_dict()})
        return
    typer.echo(
        f"backup written to {out}: studies {', '.join(manifest.study_codes) or '-'}, "
        f"schema {manifest.schema_revision}, {manifest.audit_entries} audit entries, "
        f"audit root {manifest.audit_root}"
    )
    typer.echo("keep the allocation key file with it: the backup holds the arms encrypted")


def restore(
    source: Path = typer.Option(..., "--from", help="the backup file to restore"),
    force: bool = typer.Option(False, "--force", help="replace a database that already holds data"),
    json_out: bool = JsonOpt,
) -> None:
    """Replace the database's contents with a backup; refused if it holds data unless --force."""
    try:
        settings = load_settings()
    except ValueError as exc:
        fail(str(exc))
    key = settings.allocation_key_file
    try:  # a wrong file or key is refused before any database is created or opened
        read_backup(source, AllocationCipher.from_file(key) if key.exists() else None)
    except TrialError as exc:
        fail_from(exc)
    if not key.exists():
        fail(
            f"the allocation key file {key} is missing; copy the key of the backed-up "
            "installation there (or set TRIALDESK_ALLOCATION_KEY_FILE)"
        )
    with open_runtime(settings, migrate=True) as runtime:
        result = guarded(
            lambda: restore_database(runtime.context, local_operator(), source, force=force)
        )
    if json_out:
        print_json(
            {
                "file": str(source),
                "root": result.root,
                "entries": result.entries,
                "replaced_data": result.replaced_data,
                "manifest": result.manifest.as_dict(),
            }
        )
        return
    typer.echo(
        f"restored {source} (made {result.manifest.created_at}): studies "
        f"{', '.join(result.manifest.study_codes) or '-'}; audit chain verified, root "
        f"{result.root}"
    )
