"""Saving and reading protocol-defined forms (DATA-1, DATA-2)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import func, select

from trialdesk.domain.errors import NotFound, ValidationFailed
from trialdesk.domain.forms import to_json_values, validate_values
from trialdesk.protocol.loader import LoadedProtocol
from trialdesk.protocol.specs import form_spec
from trialdesk.services.access import Actor
from trialdesk.services.common import audit, check_clinical_date, require_text
from trialdesk.services.context import ServiceContext
from trialdesk.store.tables import FormRecordRow, ProtocolVersionRow, SubjectRow
from trialdesk.store.uow import UnitOfWork


def typed_values(loaded: LoadedProtocol, form_code: str, raw: dict[str, Any]) -> dict[str, object]:
    try:
        form = loaded.protocol.form(form_code)
    except KeyError:
        raise NotFound(f"form {form_code} is not in protocol {loaded.protocol.version}") from None
    return validate_values(form_spec(form), raw)


def check_form_dates(
    uow: UnitOfWork, subject: SubjectRow, typed: dict[str, object], now: dt.datetime, form_code: str
) -> None:
    """Every date in a form must be on or after consent and not in the site's future."""
    for field, value in typed.items():
        if isinstance(value, dt.datetime):
            value = value.date()
        if isinstance(value, dt.date):
            check_clinical_date(uow, subject, value, now, f"{form_code}.{field}", field=field)


def save_form(
    uow: UnitOfWork,
    ctx: ServiceContext,
    actor: Actor,
    subject: SubjectRow,
    loaded: LoadedProtocol,
    protocol_row_id: int,
    form_code: str,
    raw: dict[str, Any],
    *,
    visit_code: str = "",
    action: str = "record_form",
) -> FormRecordRow:
    """Validate every field, then store the form and its audit entry; nothing on failure."""
    typed = typed_values(loaded, form_code, raw)
    check_form_dates(uow, subject, typed, ctx.now(), form_code)
    form = loaded.protocol.form(form_code)
    existing = uow.session.scalar(
        select(func.max(FormRecordRow.seq)).where(
            FormRecordRow.subject_id == subject.id,
            FormRecordRow.form_code == form_code,
            FormRecordRow.visit_code == visit_code,
        )
    )
    if existing and not form.repeating:
        where = f" at {visit_code}" if visit_code else ""
        raise ValidationFailed(
            f"form {form_code}{where} is already saved for subject {subject.number}; "
            "change it with a correction and a reason",
            {form_code: "already saved"},
        )
    now = ctx.now()
    data = to_json_values(typed)
    row = FormRecordRow(
        subject_id=subject.id,
        form_code=form_code,
        visit_code=visit_code,
        seq=(existing or 0) + 1,
        data=json.dumps(data, sort_keys=True),
        protocol_version_id=protocol_row_id,
        created_at=now,
        created_by=actor.label,
        updated_at=now,
        version=1,
    )
    uow.session.add(row)
    uow.session.flush()
    audit(
        uow,
        ctx,
        actor,
        subject,
        action,
        entity="form",
        entity_id=f"{form_code}#{row.id}",
        new={"form": form_code, "visit": visit_code or None, "values": data},
        protocol_sha256=loaded.sha256,
    )
    return row


CONCEALED_PROCEDURE_FORM = "index_procedure"
"""Stored form code of every arm's index procedure: which form it really is, and its values,
would tell the arm, so both are kept encrypted (RAND-6, RAND-8)."""


def save_concealed_procedure(
    uow: UnitOfWork,
    ctx: ServiceContext,
    actor: Actor,
    subject: SubjectRow,
    loaded: LoadedProtocol,
    protocol_row_id: int,
    form_code: str,
    raw: dict[str, Any],
) -> FormRecordRow:
    """Validate the arm's procedure form like any form, then store it encrypted under a
    neutral code; the audit entry says that a concealed record was saved, not what."""
    typed = typed_values(loaded, form_code, raw)
    check_form_dates(uow, subject, typed, ctx.now(), "index procedure")
    now = ctx.now()
    payload = json.dumps({"form": form_code, "values": to_json_values(typed)}, sort_keys=True)
    row = FormRecordRow(
        subject_id=subject.id,
        form_code=CONCEALED_PROCEDURE_FORM,
        visit_code="",
        seq=1,
        data=ctx.cipher.encrypt(payload).decode("ascii"),
        protocol_version_id=protocol_row_id,
        created_at=now,
        created_by=actor.label,
        updated_at=now,
        version=1,
    )
    uow.session.add(row)
    uow.session.flush()
    audit(
        uow,
        ctx,
        actor,
        subject,
        "record_procedure_form",
        entity="form",
        entity_id=f"{CONCEALED_PROCEDURE_FORM}#{row.id}",
        new={"form": CONCEALED_PROCEDURE_FORM, "concealed": True},
        protocol_sha256=loaded.sha256,
    )
    return row


def concealed_procedure(ctx: ServiceContext, row: FormRecordRow) -> tuple[str, dict[str, Any]]:
    """The real form code and values of a concealed procedure record (unblinded callers)."""
    data = json.loads(ctx.cipher.decrypt(row.data.encode("ascii")))
    return str(data["form"]), dict(data["values"])


def subject_form_values(
    uow: UnitOfWork, ctx: ServiceContext, subject_id: int, *, visit_code: str = ""
) -> dict[str, dict[str, object]]:
    """Latest typed values of each non-repeating form, re-typed under the version each was
    saved with (PROT-2: data stays valid under the version it was made under)."""
    out: dict[str, dict[str, object]] = {}
    rows = uow.session.scalars(
        select(FormRecordRow)
        .where(FormRecordRow.subject_id == subject_id, FormRecordRow.visit_code == visit_code)
        .order_by(FormRecordRow.seq)
    ).all()
    for row in rows:
        if row.form_code == CONCEALED_PROCEDURE_FORM:
            continue
        version = uow.session.get(ProtocolVersionRow, row.protocol_version_id)
        assert version is not None
        loaded = ctx.protocol(version.sha256, version.text)
        out[row.form_code] = typed_values(loaded, row.form_code, json.loads(row.data))
    return out


def correct_form(
    ctx: ServiceContext,
    uow: UnitOfWork,
    actor: Actor,
    subject: SubjectRow,
    loaded: LoadedProtocol,
    record: FormRecordRow,
    changes: dict[str, Any],
    reason: str,
) -> dict[str, tuple[object, object]]:
    """Change saved values with a reason; the audit keeps old and new values (DATA-2)."""
    reason = require_text(reason, "reason", "a reason for the change")
    old = json.loads(record.data)
    merged = {**old, **changes}
    typed = typed_values(loaded, record.form_code, merged)
    check_form_dates(uow, subject, typed, ctx.now(), record.form_code)
    new = to_json_values(typed)
    diff = {
        k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)
    }
    if not diff:
        raise ValidationFailed("nothing changed", {"values": "same as saved"})
    record.data = json.dumps(new, sort_keys=True)
    record.version += 1
    record.updated_at = ctx.now()
    audit(
        uow,
        ctx,
        actor,
        subject,
        "correct_data",
        entity="form",
        entity_id=f"{record.form_code}#{record.id}",
        old={k: v[0] for k, v in diff.items()},
        new={k: v[1] for k, v in diff.items()},
        reason=reason,
        protocol_sha256=loaded.sha256,
    )
    return diff
