"""Saving and reading protocol-defined forms (DATA-1, DATA-2)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Protocol

from trialdesk.domain.errors import Conflict, NotFound, Refusal, ValidationFailed
from trialdesk.domain.forms import FormSpec, to_json_values, validate_values
from trialdesk.protocol.loader import LoadedProtocol
from trialdesk.protocol.specs import form_spec
from trialdesk.services.common import Acting, loaded_protocol, require_text
from trialdesk.services.context import ServiceContext
from trialdesk.services.quality import check_on_save
from trialdesk.store.records import FormRecord
from trialdesk.store.uow import UnitOfWork

CONCEALED_PROCEDURE_FORM = "index_procedure"
"""Stored form code of every arm's index procedure: which form it really is, and its values,
would tell the arm, so both are kept encrypted (RAND-6, RAND-8)."""


def typed_values(loaded: LoadedProtocol, form_code: str, raw: dict[str, Any]) -> dict[str, object]:
    try:
        form = loaded.protocol.form(form_code)
    except KeyError:
        raise NotFound(f"form {form_code} is not in protocol {loaded.protocol.version}") from None
    return validate_values(form_spec(form), raw)


def form_specs(loaded: LoadedProtocol, codes: list[str]) -> list[FormSpec]:
    """The definitions of forms to render for entry; 'not found' for a code the protocol does
    not have (a page asked for an unknown form must answer 404, not fail)."""
    specs = []
    for code in codes:
        try:
            specs.append(form_spec(loaded.protocol.form(code)))
        except KeyError:
            raise NotFound(f"form {code} is not in protocol {loaded.protocol.version}") from None
    return specs


def screening_form_specs(loaded: LoadedProtocol, code: str) -> list[FormSpec]:
    """The one screening form ``code``; 'not found' for any other code."""
    if code not in loaded.protocol.screening.forms:
        raise NotFound(
            f"form {code} is not a screening form of this protocol (screening forms: "
            + ", ".join(loaded.protocol.screening.forms)
            + ")"
        )
    return form_specs(loaded, [code])


def concealed_form_codes(loaded: LoadedProtocol) -> set[str]:
    """Form codes whose very name would tell an arm: the stored concealed code and each arm's
    own procedure form. Blinded data paths refuse all of them the same way (RAND-6)."""
    return {CONCEALED_PROCEDURE_FORM} | {
        arm.procedure_form for arm in loaded.protocol.arms if arm.procedure_form
    }


def refuse_concealed(loaded: LoadedProtocol, form_code: str, what: str) -> None:
    """One refusal, whatever the subject's arm or whether its procedure is recorded."""
    if form_code in concealed_form_codes(loaded):
        raise ValidationFailed(
            f"form {form_code} is an index procedure form, concealed because it would tell the "
            f"arm; {what} is not possible through the blinded data path",
            {"form": Refusal.CONCEALED_RECORD.value},
        )


def check_form_dates(
    act: Acting,
    typed: dict[str, object],
    form_code: str,
    *,
    not_before: dt.date | None = None,
    not_before_what: str = "",
) -> None:
    """Every date in a form must be on or after consent (and ``not_before``) and not in the
    site's future."""
    for field, value in typed.items():
        if isinstance(value, dt.datetime):
            value = value.date()
        if isinstance(value, dt.date):
            act.check_date(
                value,
                f"{form_code}.{field}",
                field=field,
                not_before=not_before,
                not_before_what=not_before_what,
            )


def save_form(
    act: Acting,
    loaded: LoadedProtocol,
    version_id: int,
    form_code: str,
    raw: dict[str, Any],
    *,
    visit_code: str = "",
    action: str = "record_form",
) -> FormRecord:
    """Validate every field, then store the form and its audit entry; nothing on failure."""
    typed = typed_values(loaded, form_code, raw)
    check_form_dates(act, typed, form_code)
    form = loaded.protocol.form(form_code)
    uow = act.uow
    existing = uow.forms.max_seq(act.subject.id, form_code, visit_code)
    if existing and not form.repeating:
        where = f" at {visit_code}" if visit_code else ""
        raise ValidationFailed(
            f"form {form_code}{where} is already saved for subject {act.subject.number}; "
            "change it with a correction and a reason",
            {form_code: "already saved"},
        )
    data = to_json_values(typed)
    record = uow.forms.add(
        subject_id=act.subject.id,
        form_code=form_code,
        visit_code=visit_code,
        seq=existing + 1,
        data=json.dumps(data, sort_keys=True),
        protocol_version_id=version_id,
        at=act.now,
        by=act.actor.label,
    )
    act.audit(
        action,
        entity="form",
        entity_id=f"{form_code}#{record.id}",
        new={"form": form_code, "visit": visit_code or None, "values": data},
        protocol_sha256=loaded.sha256,
    )
    check_on_save(act, form_code)  # REC-6: the protocol's data-quality rules, same transaction
    after_data_change(act, record, {k: (None, v) for k, v in data.items()}, new_record=True)
    return record


def save_concealed_procedure(
    act: Acting,
    loaded: LoadedProtocol,
    version_id: int,
    form_code: str,
    raw: dict[str, Any],
) -> FormRecord:
    """Validate the arm's procedure form like any form (its dates not before randomization:
    the procedure follows it, issue 12), then store it encrypted under a neutral code; the
    audit entry says that a concealed record was saved, not what."""
    typed = typed_values(loaded, form_code, raw)
    check_form_dates(
        act,
        typed,
        "index procedure",
        not_before=act.subject.randomized_on,
        not_before_what="randomization",
    )
    payload = json.dumps({"form": form_code, "values": to_json_values(typed)}, sort_keys=True)
    record = act.uow.forms.add(
        subject_id=act.subject.id,
        form_code=CONCEALED_PROCEDURE_FORM,
        visit_code="",
        seq=1,
        data=act.ctx.cipher.encrypt(payload).decode("ascii"),
        protocol_version_id=version_id,
        at=act.now,
        by=act.actor.label,
    )
    act.audit(
        "record_procedure_form",
        entity="form",
        entity_id=f"{CONCEALED_PROCEDURE_FORM}#{record.id}",
        new={"form": CONCEALED_PROCEDURE_FORM, "concealed": True},
        protocol_sha256=loaded.sha256,
    )
    return record


class _Stored(Protocol):
    @property
    def data(self) -> str: ...


def concealed_procedure(ctx: ServiceContext, row: _Stored) -> tuple[str, dict[str, Any]]:
    """The real form code and values of a concealed procedure record (unblinded callers)."""
    data = json.loads(ctx.cipher.decrypt(row.data.encode("ascii")))
    return str(data["form"]), dict(data["values"])


def subject_form_values(
    uow: UnitOfWork, ctx: ServiceContext, subject_id: int, *, visit_code: str = ""
) -> dict[str, dict[str, object]]:
    """Latest typed values of each non-repeating form, re-typed under the version each was
    saved with (PROT-2: data stays valid under the version it was made under)."""
    out: dict[str, dict[str, object]] = {}
    for record in uow.forms.for_subject(subject_id, visit_code=visit_code):
        if record.form_code == CONCEALED_PROCEDURE_FORM:
            continue
        loaded = loaded_protocol(ctx, uow, uow.protocols.get(record.protocol_version_id))
        out[record.form_code] = typed_values(loaded, record.form_code, json.loads(record.data))
    return out


def correct_form(
    act: Acting,
    loaded: LoadedProtocol,
    record: FormRecord,
    changes: dict[str, Any],
    reason: str,
) -> dict[str, tuple[object, object]]:
    """Change saved values with a reason; the audit keeps old and new values (DATA-2)."""
    reason = require_text(reason, "reason", "a reason for the change")
    old = json.loads(record.data)
    merged = {**old, **changes}
    typed = typed_values(loaded, record.form_code, merged)
    check_form_dates(act, typed, record.form_code)
    new = to_json_values(typed)
    diff = {
        k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)
    }
    if not diff:
        raise ValidationFailed("nothing changed", {"values": "same as saved"})
    updated = act.uow.forms.update_data(record, json.dumps(new, sort_keys=True), act.now)
    if updated is None:
        raise Conflict(
            f"form {record.form_code} of {act.subject.number} was corrected by someone else; "
            "reload and try again"
        )
    act.audit(
        "correct_data",
        entity="form",
        entity_id=f"{record.form_code}#{record.id}",
        old={k: v[0] for k, v in diff.items()},
        new={k: v[1] for k, v in diff.items()},
        reason=reason,
        protocol_sha256=loaded.sha256,
    )
    check_on_save(act, record.form_code)  # REC-6
    after_data_change(act, updated, diff, reason=reason)
    return diff


def after_data_change(
    act: Acting,
    record: FormRecord,
    diff: dict[str, tuple[Any, Any]],
    *,
    reason: str | None = None,
    new_record: bool = False,
) -> None:
    """SDV marks cleared, signatures invalidated, "changed after unblinding" flagged (issue
    15: :mod:`trialdesk.services.records.changes`)."""
    from trialdesk.services.records.changes import after_data_change as consequences

    consequences(act, record, diff, reason=reason, new_record=new_record)


def form_record_protocol(
    ctx: ServiceContext, uow: UnitOfWork, record: FormRecord
) -> LoadedProtocol:
    """The protocol version a saved form was made under (PROT-2)."""
    return loaded_protocol(ctx, uow, uow.protocols.get(record.protocol_version_id))
