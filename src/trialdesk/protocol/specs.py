"""Protocol models -> the plain specs the pure domain rules take."""

from __future__ import annotations

from trialdesk.domain.eligibility import CriterionSpec
from trialdesk.domain.forms import FieldSpec, FormSpec
from trialdesk.domain.schedule import VisitSpec
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
