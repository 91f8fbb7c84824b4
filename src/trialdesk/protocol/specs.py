"""Protocol models -> the plain specs the pure domain rules take."""

from __future__ import annotations

from trialdesk.domain.consent import ApprovalSpec, ConsentDocumentSpec, ConsentVersionSpec
from trialdesk.domain.data_quality import DqRuleSpec
from trialdesk.domain.eligibility import CriterionSpec
from trialdesk.domain.exits import ExitFormSpec, WithdrawalKindSpec
from trialdesk.domain.forms import FieldSpec, FormSpec
from trialdesk.domain.locks import FreezeSpec, frozen_visits
from trialdesk.domain.queries import ResponseSpec
from trialdesk.domain.schedule import VisitSpec
from trialdesk.domain.sdv import FormSdvSpec, SdvLevel, SdvPolicySpec
from trialdesk.protocol.models import Criterion, Form, Protocol, Visit


def form_spec(form: Form) -> FormSpec:
    return FormSpec(
        code=form.code,
        name=form.name,
        repeating=form.repeating,
        fields=tuple(
            FieldSpec(
                code=f.code,
                label=f.label,
                type=f.type.value,
                unit=f.unit,
                min=f.min,
                max=f.max,
                choices=tuple(c.code for c in f.choices) if f.choices else None,
                required=f.required,
                max_length=f.max_length,
            )
            for f in form.fields
        ),
    )


def criterion_spec(criterion: Criterion) -> CriterionSpec:
    rule = (
        criterion.rule.model_dump(by_alias=True, mode="json", exclude_none=True)
        if criterion.rule is not None
        else None
    )
    return CriterionSpec(
        id=criterion.id,
        kind=criterion.kind,
        text=criterion.text,
        gate=criterion.gate.value,
        rule=rule,
    )


def criterion_specs(protocol: Protocol) -> list[CriterionSpec]:
    return [criterion_spec(c) for c in protocol.criteria]


def visit_spec(visit: Visit) -> VisitSpec:
    return VisitSpec(
        code=visit.code,
        name=visit.name,
        kind=visit.kind.value,
        target_day=visit.target_day,
        window_before=visit.window_before,
        window_after=visit.window_after,
    )


def visit_specs(protocol: Protocol) -> list[VisitSpec]:
    return [visit_spec(v) for v in protocol.visits]


# --- records that hold (issue 15) ------------------------------------------------------------


def sdv_policy_spec(protocol: Protocol) -> SdvPolicySpec | None:
    """The protocol's SDV policy (REC-1), or None when it has none."""
    policy = protocol.sdv
    if policy is None:
        return None
    return SdvPolicySpec(
        default_level=SdvLevel(policy.default_level.value),
        sample_rate=policy.sample_rate,
        seed=policy.seed,
        first_subjects_full=policy.first_subjects_full,
        forms=tuple(
            FormSdvSpec(
                form=entry.form,
                level=SdvLevel(entry.level.value),
                fields=tuple(entry.fields) if entry.fields is not None else None,
                rate=entry.rate,
            )
            for entry in policy.forms
        ),
    )


def freeze_spec(protocol: Protocol) -> FreezeSpec | None:
    """The blinded-phase freeze (REC-4), or None when the protocol freezes nothing."""
    freeze = protocol.freeze
    if freeze is None:
        return None
    return FreezeSpec(
        unblinding=frozenset(kind.value for kind in freeze.unblinding),
        visits=frozen_visits([v.code for v in protocol.visits], freeze.visits_through),
        forms=frozenset(freeze.forms),
        late_records=freeze.late_records.value,
    )


def dq_rule_specs(protocol: Protocol) -> list[DqRuleSpec]:
    """The protocol's data-quality rules (REC-6), criteria resolved from the protocol."""
    if protocol.data_quality is None:
        return []
    criteria = {c.id: c for c in protocol.criteria}
    out: list[DqRuleSpec] = []
    for rule in protocol.data_quality.rules:
        when = (
            rule.when.model_dump(by_alias=True, mode="json", exclude_none=True)
            if rule.when is not None
            else None
        )
        out.append(
            DqRuleSpec(
                id=rule.id,
                text=rule.text.strip(),
                kind=rule.kind.value,
                severity=rule.severity.value,
                run=rule.run.value,
                when=when,
                left=rule.left,
                op=rule.op.value if rule.op is not None else None,
                right=rule.right,
                offset=rule.offset,
                series=tuple(rule.series or ()),
                against=rule.against.value if rule.against is not None else "previous",
                max_change=rule.max_change,
                max_change_pct=rule.max_change_pct,
                field=rule.field,
                min=rule.min,
                max=rule.max,
                criteria=tuple(criterion_spec(criteria[c]) for c in rule.criteria or ()),
                form=rule.form,
            )
        )
    return out


def response_specs(protocol: Protocol) -> list[ResponseSpec]:
    """The coded query responses (REC-7); empty when answers are free text."""
    if protocol.queries is None:
        return []
    return [
        ResponseSpec(
            code=r.code,
            label=r.label,
            change=r.change.value,
            text_required=r.text_required,
            marks_missing=r.marks_missing,
        )
        for r in protocol.queries.responses
    ]


def consent_specs(protocol: Protocol) -> list[ConsentDocumentSpec]:
    """The consent documents and versions (REC-8); empty when the protocol names none."""
    if protocol.consent is None:
        return []
    return [
        ConsentDocumentSpec(
            code=d.code,
            name=d.name,
            required=d.required,
            versions=tuple(
                ConsentVersionSpec(
                    version=v.version,
                    effective_from=v.effective_from,
                    approvals=tuple(
                        ApprovalSpec(a.site, a.country, a.effective_from) for a in v.approvals
                    ),
                    reconsent=v.reconsent,
                )
                for v in d.versions
            ),
        )
        for d in protocol.consent.documents
    ]


def withdrawal_kind_specs(protocol: Protocol) -> list[WithdrawalKindSpec]:
    """The kinds of withdrawal (REC-9); empty when the protocol names none."""
    if protocol.exits is None or protocol.exits.withdrawal is None:
        return []
    return [
        WithdrawalKindSpec(k.code, k.label, k.contact_allowed, frozenset(k.contact_forms))
        for k in protocol.exits.withdrawal.kinds
    ]


def exit_form_specs(protocol: Protocol) -> dict[str, ExitFormSpec]:
    """``death`` and ``withdrawal`` -> the form each is recorded on (REC-9), as present."""
    out: dict[str, ExitFormSpec] = {}
    exits = protocol.exits
    if exits is None:
        return out
    if exits.death is not None:
        form = protocol.form(exits.death.form)
        assert form.date_field is not None  # checked by the protocol checks
        out["death"] = ExitFormSpec(form.code, form.date_field, exits.death.cause_field)
    if exits.withdrawal is not None:
        w = exits.withdrawal
        form = protocol.form(w.form)
        assert form.date_field is not None  # checked by the protocol checks
        out["withdrawal"] = ExitFormSpec(form.code, form.date_field, w.reason_field, w.kind_field)
    return out
