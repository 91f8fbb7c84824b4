"""What a data change does to the records that hold (REC-1, REC-2, REC-4): it clears the SDV
marks of the fields it changed, invalidates the signatures covering the record, and, after
the subject's unblinding, is flagged "changed after unblinding" (or "entered after
unblinding"). Each consequence is a row and an audit entry, so it shows on the record, in the
audit trail and in the outputs. The form services call :func:`after_data_change` once per
saved or corrected record, after the write the lock guard let through.
"""

from __future__ import annotations

import json
from typing import Any

from trialdesk.domain.locks import UnblindingFlag, check_late_record, unblinding_flag
from trialdesk.domain.records import RecordRef, ValueChange, canonical
from trialdesk.domain.signoff import SignLevel
from trialdesk.protocol.specs import freeze_spec
from trialdesk.services.common import Acting
from trialdesk.services.records.locks import unblinded_on
from trialdesk.store.records import FormRecord

SYSTEM = "system"


def ref_of(number: str, record: FormRecord) -> RecordRef:
    return RecordRef(number, record.form_code, record.visit_code, record.seq)


def after_data_change(
    act: Acting,
    record: FormRecord,
    diff: dict[str, tuple[Any, Any]],
    *,
    reason: str | None,
    new_record: bool = False,
) -> None:
    """Clear, invalidate and flag what ``diff`` (field -> (old, new)) changes in ``record``."""
    uow, subject = act.uow, act.subject
    ref = ref_of(subject.number, record)
    changes = [
        ValueChange(ref, name, old, new, act.now, act.actor.username, reason or "first entry")
        for name, (old, new) in sorted(diff.items())
        if canonical(old) != canonical(new)
    ]
    if not new_record:
        for mark in uow.holds.sdv_marks(subject_id=subject.id):
            if mark.form_record_id != record.id or mark.cleared_at is not None:
                continue
            hit = [c for c in changes if c.field in json.loads(mark.fields)]
            if not hit:
                continue
            why = "; ".join(c.describe() for c in hit)
            uow.holds.clear_sdv_mark(mark.id, at=act.now, reason=why)
            act.audit(
                "sdv_cleared",
                entity="sdv",
                entity_id=str(mark.id),
                old={"verified": json.loads(mark.fields), "by": mark.marked_by},
                new={"form": record.form_code, "visit": record.visit_code or None},
                reason=why,
            )
    for sig in uow.holds.signatures(subject_id=subject.id):
        if sig.invalidated_at is not None or not _covers(sig.level, sig, record):
            continue
        what = "was added after signing" if new_record else "changed after signing"
        detail = "; ".join(c.describe() for c in changes) if not new_record else ""
        why = f"{ref.label()} {what}" + (f": {detail}" if detail else "")
        uow.holds.invalidate_signature(sig.id, at=act.now, reason=why)
        act.audit(
            "signature_invalidated",
            entity="signature",
            entity_id=str(sig.id),
            old={"level": sig.level, "signed_by": sig.signed_by, "signed_name": sig.signed_name},
            new={"valid": False},
            reason=why,
        )
    _flag_after_unblinding(act, record, ref, changes, reason=reason, new_record=new_record)


def _covers(level: str, sig: Any, record: FormRecord) -> bool:
    if level == SignLevel.CASEBOOK.value:
        return True
    if level == SignLevel.VISIT.value:
        return bool(sig.visit_code == record.visit_code)
    return bool(sig.form_record_id == record.id)


def _flag_after_unblinding(
    act: Acting,
    record: FormRecord,
    ref: RecordRef,
    changes: list[ValueChange],
    *,
    reason: str | None,
    new_record: bool,
) -> None:
    uow, subject = act.uow, act.subject
    frozen_at = unblinded_on(uow, subject.study_id, subject.id)
    if frozen_at is None:
        return
    spec = freeze_spec(act.protocol().protocol)
    flag = unblinding_flag(spec, frozen_at.date(), ref, None, new_record=new_record)
    check_late_record(spec, flag, ref)
    if flag is None:
        return
    for change in changes:
        uow.holds.add_unblinding_change(
            study_id=subject.study_id,
            subject_id=subject.id,
            form_record_id=record.id,
            form_code=record.form_code,
            visit_code=record.visit_code,
            field=change.field,
            flag=flag.value,
            old=json.dumps(canonical(change.old)),
            new=json.dumps(canonical(change.new)),
            changed_at=act.now,
            changed_by=act.actor.username,
            reason=reason,
        )
    label = (
        "changed after unblinding"
        if flag is UnblindingFlag.CHANGED_AFTER_UNBLINDING
        else flag.value.replace("_", " ")
    )
    act.audit(
        "changed_after_unblinding",
        entity="form",
        entity_id=f"{record.form_code}#{record.id}",
        old={c.field: canonical(c.old) for c in changes},
        new={
            "flag": flag.value,
            "label": label,
            "values": {c.field: canonical(c.new) for c in changes},
        },
        reason=reason,
    )
