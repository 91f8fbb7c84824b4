"""Maintenance run by the local operator (audited as such): audit verification, backup and
restore (docs/operations.md)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from trialdesk.domain.errors import Conflict, PermissionDenied, PreconditionFailed, ValidationFailed
from trialdesk.services.access import Actor
from trialdesk.services.context import ServiceContext
from trialdesk.services.crypto import AllocationCipher
from trialdesk.store.audit import PendingEntry, VerifyResult
from trialdesk.store.backup import (
    FORMAT_VERSION,
    BackupInvalid,
    Manifest,
    describe,
    first_allocation,
    head_revision,
    read_manifest,
    verify_backup,
)


def verify_audit(ctx: ServiceContext, actor: Actor) -> VerifyResult:
    """Check every audit chain (AUD-1); the check itself is recorded when the chain is sound."""
    if not actor.operator:
        raise PermissionDenied("audit verification is run by the local operator")
    with ctx.uow(readonly=True) as uow:
        result = uow.database.verify_audit()
    if result.ok:
        with ctx.uow() as uow:
            uow.record(
                PendingEntry(
                    stream="maintenance",
                    at=ctx.now(),
                    actor=actor.label,
                    action="verify_audit",
                    entity="audit",
                    entity_id="all",
                    new={"entries": result.entries, "streams": result.streams, "root": result.root},
                )
            )
            uow.commit()
    return result


@dataclass(frozen=True)
class RestoreResult:
    manifest: Manifest
    root: str
    entries: int
    replaced_data: bool


def backup_database(ctx: ServiceContext, actor: Actor, out: Path) -> Manifest:
    """A consistent copy of the whole database, with its manifest, in a new file (OPS backup).

    Written beside ``out`` first and renamed at the end, so ``out`` is either complete or
    absent; the copy is recorded in the maintenance audit stream afterwards."""
    if not actor.operator:
        raise PermissionDenied("backups are made by the local operator")
    if out.exists():
        raise PreconditionFailed(f"{out} already exists; name a new file", reason="file-exists")
    if not out.parent.is_dir():
        raise PreconditionFailed(f"the folder {out.parent} does not exist", reason="no-folder")
    with ctx.uow(readonly=True) as uow:
        revision = uow.database.schema_revision()
    if revision != head_revision():
        raise PreconditionFailed(
            f"the database is at schema revision {revision}, this trialdesk at "
            f"{head_revision()}; run 'trialdesk init' to upgrade it first",
            reason="schema-revision",
        )
    partial = out.with_name(f".{out.name}.{os.getpid()}.partial")
    try:
        with ctx.uow(readonly=True) as uow:
            method = uow.database.snapshot(partial)
            backend = uow.database.backend
        manifest = describe(partial, created_at=ctx.now(), source_backend=backend, method=method)
        partial.replace(out)
    except BackupInvalid as exc:
        raise PreconditionFailed(f"no backup made: {exc}", reason="audit-chain-broken") from exc
    finally:
        for leftover in ("", "-wal", "-shm", "-journal"):
            Path(f"{partial}{leftover}").unlink(missing_ok=True)
    with ctx.uow() as uow:
        uow.record(
            PendingEntry(
                stream="maintenance",
                at=ctx.now(),
                actor=actor.label,
                action="backup",
                entity="database",
                entity_id="all",
                new={"file": str(out), "sha256": _sha256(out), **manifest.as_dict()},
            )
        )
        uow.commit()
    return manifest


def read_backup(path: Path, cipher: AllocationCipher | None = None) -> Manifest:
    """The manifest of a sound backup file this trialdesk can restore, or one clear refusal:
    not a trialdesk backup, another schema revision, damaged (its audit chain does not give
    its manifest's root digest), or, with ``cipher``, arms that key does not open."""
    try:
        manifest = read_manifest(path)
    except BackupInvalid as exc:
        raise ValidationFailed(str(exc), {"from": "not a trialdesk backup"}) from exc
    if manifest.format_version != FORMAT_VERSION or manifest.schema_revision != head_revision():
        raise ValidationFailed(
            f"{path} is a backup of schema revision {manifest.schema_revision} (format "
            f"{manifest.format_version}); this trialdesk restores revision {head_revision()} "
            f"(format {FORMAT_VERSION}) only",
            {"from": "wrong schema revision"},
        )
    checked = verify_backup(path)
    if not checked.ok or checked.root != manifest.audit_root:
        raise ValidationFailed(
            f"{path} is damaged: its audit chain does not give the manifest's root digest",
            {"from": "damaged"},
        )
    if cipher is not None:
        sample = first_allocation(path)
        if sample is not None:
            cipher.decrypt(sample)  # refuses with allocation-key-wrong / -missing
    return manifest


def restore_database(
    ctx: ServiceContext, actor: Actor, source: Path, *, force: bool = False
) -> RestoreResult:
    """Replace the database's contents with a backup, all or nothing.

    Refused, changing nothing, when the file is not a sound trialdesk backup of this schema
    revision, when the allocation key does not open its allocations, or when the database
    holds data and ``force`` is not given. The restored audit chain must give the manifest's
    root digest before the transaction commits; the restore is then audited."""
    if not actor.operator:
        raise PermissionDenied("restores are made by the local operator")
    manifest = read_backup(source, ctx.cipher)
    with ctx.uow() as uow:
        had_data = uow.database.holds_data()
        if had_data and not force:
            raise PreconditionFailed(
                "the database already holds data; restore into an empty database, or give "
                "--force to replace everything in it",
                reason="database-not-empty",
            )
        uow.database.replace_contents(source)
        restored = uow.database.verify_audit()
        if not restored.ok or restored.root != manifest.audit_root:
            raise Conflict("the restored audit chain does not match the backup; nothing changed")
        uow.record(
            PendingEntry(
                stream="maintenance",
                at=ctx.now(),
                actor=actor.label,
                action="restore",
                entity="database",
                entity_id="all",
                new={
                    "file": str(source),
                    "sha256": _sha256(source),
                    "replaced_data": had_data,
                    **manifest.as_dict(),
                },
            )
        )
        uow.commit()
    return RestoreResult(
        manifest=manifest, root=restored.root, entries=restored.entries, replaced_data=had_data
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
