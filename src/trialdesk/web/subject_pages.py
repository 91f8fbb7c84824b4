"""The site's pages: home (subjects, visits due, open queries), registration and the subject's
journey up to randomization: consent (or its refusal), screening forms, the eligibility
checklist and the investigator's signed confirmations, completing screening, procedure-day
anatomy and randomization (with a confirmation step and a reload-safe result page).

Pages decide nothing: what a page offers is what :func:`trialdesk.services.queries.
subject_actions` says this user may do to this subject now (role, site, state and facts);
a refusal re-renders the page with the values the user typed and one message. After each
action the next page shows a success message (``redirect(..., flash=...)``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from trialdesk.domain.errors import (
    AuthenticationFailed,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    TrialError,
    ValidationFailed,
)
from trialdesk.domain.lifecycle import SubjectState
from trialdesk.http_status import status_of
from trialdesk.services import exits, followup, screening
from trialdesk.services.allocation import randomization
from trialdesk.services.dashboard import current_protocol, my_sites
from trialdesk.services.data_queries import open_queries
from trialdesk.services.history import subject_history
from trialdesk.services.queries import get_subject, subject_actions, subject_counts
from trialdesk.services.subject_record import (
    eligibility_checklist,
    form_statuses,
    saved_form,
    stored_randomization,
    subject_today,
)
from trialdesk.services.views import SubjectView
from trialdesk.services.visits import visit_worklist
from trialdesk.web.forms import (
    field_date,
    field_errors,
    field_text,
    flat_form,
    form_values,
    or_refusal,
    page_specs,
)
from trialdesk.web.render import render
from trialdesk.web.session import Web, post_form, redirect, web_session

router = APIRouter()

JOURNEY = [
    "registered",
    "screening",
    "echo_qualified",
    "awaiting_procedure",
    "randomized",
    "unblinded",
    "completed",
]
CHECKLIST_STATES = {SubjectState.SCREENING.value, SubjectState.ECHO_QUALIFIED.value}
"""States in which the eligibility checklist is shown on the subject page."""

ANSWERS: dict[str, dict[str, bool]] = {
    "inclusion": {"met": True, "not_met": False},
    "exclusion": {"does_not_apply": True, "applies": False},
}
"""The investigator's answer per criterion kind, phrased so a click cannot mean its opposite
(issue 14): an exclusion *applies* (the subject is excluded) or *does not apply*. The value
is "the criterion is satisfied", what the service stores."""


def page_status(exc: TrialError) -> int:
    """A wrong signature password on a page is an input error (422), not a signed-out
    session (401, which would send the user to the sign-in page)."""
    return 422 if isinstance(exc, AuthenticationFailed) else status_of(exc)


def subject_url(number: str, anchor: str = "") -> str:
    return f"/subjects/{quote(number)}" + (f"#{anchor}" if anchor else "")


# --------------------------------------------------------------------------- home


@router.get("/home", include_in_schema=False)
def home(request: Request) -> Response:
    web = web_session(request)
    # issue 14: counts by state linking to the paged subject list (no list cut at 500)
    counts = subject_counts(web.ctx, web.actor, web.study_id)
    visits, visits_refused = or_refusal(
        lambda: visit_worklist(web.ctx, web.actor, web.study_id, states=("due", "overdue"))
    )
    data_queries, queries_refused = or_refusal(
        lambda: open_queries(web.ctx, web.actor, web.study_id)
    )
    return render(
        request,
        "home.html",
        web,
        counts=counts,
        total=sum(counts.values()),
        visits=visits,
        visits_refused=visits_refused,
        queries=data_queries,
        queries_refused=queries_refused,
        sites=my_sites(web.ctx, web.actor, web.study_id),
    )


@router.post("/subjects", include_in_schema=False)
async def register(request: Request) -> Response:
    web, form = await post_form(request)
    view = screening.register_subject(
        web.ctx, web.actor, web.study_id, site_code=field_text(form, "site")
    )
    return redirect(
        subject_url(view.number), flash=f"Subject {view.number} registered: record consent next."
    )


# --------------------------------------------------------------------------- subject


def subject_page(
    request: Request,
    web: Web,
    number: str,
    *,
    message: str | None = None,
    status: int = 200,
    values: dict[str, Any] | None = None,
) -> HTMLResponse:
    """The subject page: facts, journey, checklist, form status, visits, and exactly the
    actions the service allows this user now. ``values``: what the user typed into a form
    that was refused, shown again so nothing typed is lost."""
    view = get_subject(web.ctx, web.actor, web.study_id, number)
    loaded = current_protocol(web.ctx, web.actor, web.study_id)
    offered = set(subject_actions(web.ctx, web.actor, web.study_id, number))
    checklist, checklist_refused = (None, None)
    if view.state in CHECKLIST_STATES:
        checklist, checklist_refused = or_refusal(
            lambda: eligibility_checklist(web.ctx, web.actor, web.study_id, number)
        )
    protocol = loaded.protocol
    return render(
        request,
        "subject.html",
        web,
        status=status,
        s=view,
        journey=JOURNEY,
        offered=offered,
        checklist=checklist,
        checklist_refused=checklist_refused,
        statuses=form_statuses(web.ctx, web.actor, web.study_id, number),
        criteria=[c for c in protocol.criteria if c.rule is None],
        therapy_types=protocol.therapies.types,
        screening_codes=set(protocol.screening.forms),
        today=subject_today(web.ctx, web.actor, web.study_id, number).isoformat(),
        history=subject_history(web.ctx, web.actor, web.study_id, number),
        contacts=exits.contacts_offered(web.ctx, web.actor, web.study_id, number),
        message=message,
        values=values or {},
    )


@router.get("/subjects/{number}", include_in_schema=False)
def subject(request: Request, number: str) -> Response:
    web = web_session(request)
    return subject_page(request, web, number)


async def _act(
    request: Request,
    number: str,
    call: Any,
    *,
    done: str | Callable[[Any], str],
    anchor: str = "",
    refusals: tuple[type[TrialError], ...] = (
        ValidationFailed,
        PreconditionFailed,
        AuthenticationFailed,
    ),
) -> Response:
    """Run one subject action from a form on the subject page: on success see the subject
    with ``done`` as the success message; when refused for input, state or signature, the
    subject page again with the message and what was typed (never the password)."""
    web, form = await post_form(request)
    try:
        result = call(web, form)
    except refusals as exc:
        typed = {k: v for k, v in flat_form(form).items() if k not in ("password", "csrf_token")}
        return subject_page(
            request, web, number, message=exc.message, status=page_status(exc), values=typed
        )
    text = done(result) if callable(done) else done
    return redirect(subject_url(number, anchor), flash=text)


@router.post("/subjects/{number}/consent", include_in_schema=False)
async def consent(request: Request, number: str) -> Response:
    return await _act(
        request,
        number,
        lambda web, form: screening.record_consent(
            web.ctx,
            web.actor,
            web.study_id,
            number,
            consent_date=field_date(form, "consent_date"),
            consent_version=field_text(form, "consent_version"),
        ),
        done="Consent recorded: screening is open.",
    )


@router.post("/subjects/{number}/decline", include_in_schema=False)
async def decline(request: Request, number: str) -> Response:
    return await _act(
        request,
        number,
        lambda web, form: screening.decline_consent(
            web.ctx, web.actor, web.study_id, number, reason=field_text(form, "reason")
        ),
        done="Consent declined: the subject is recorded as a screen failure.",
    )


@router.post("/subjects/{number}/screen-failure", include_in_schema=False)
async def screen_failure(request: Request, number: str) -> Response:
    return await _act(
        request,
        number,
        lambda web, form: screening.screen_fail_other(
            web.ctx, web.actor, web.study_id, number, reason=field_text(form, "reason")
        ),
        done="Screening ended: the subject is recorded as a screen failure.",
    )


def _confirm(web: Web, form: Any, number: str) -> SubjectView:
    criterion_id = field_text(form, "criterion")
    protocol = current_protocol(web.ctx, web.actor, web.study_id).protocol
    criterion = next((c for c in protocol.criteria if c.id == criterion_id), None)
    if criterion is None:
        raise NotFound(f"criterion {criterion_id} not found")
    kind = criterion.kind
    choices = ANSWERS[kind]
    answer = field_text(form, "answer")
    if answer not in choices:
        wanted = "applies or does not apply" if kind == "exclusion" else "is met or not met"
        raise ValidationFailed(
            f"choose whether {criterion_id} {wanted} before signing", {"answer": "choose one"}
        )
    return screening.confirm_criterion(
        web.ctx,
        web.actor,
        web.study_id,
        number,
        criterion_id=criterion_id,
        confirmed=choices[answer],
        password=str(form.get("password") or ""),
    )


@router.post("/subjects/{number}/confirm", include_in_schema=False)
async def confirm(request: Request, number: str) -> Response:
    return await _act(
        request,
        number,
        lambda web, form: _confirm(web, form, number),
        done="Signed. The checklist below shows the criterion's outcome.",
        anchor="checklist",
    )


def _screening_outcome(view: SubjectView) -> str:
    if view.state == SubjectState.SCREEN_FAILED.value:
        detail = (view.screen_failure_detail or "").replace(",", ", ")
        return f"Screening complete: not eligible ({detail}). The subject is a screen failure."
    return "Screening complete: all criteria met. The case is on the CRC's queue."


@router.post("/subjects/{number}/complete-screening", include_in_schema=False)
async def complete(request: Request, number: str) -> Response:
    return await _act(
        request,
        number,
        lambda web, _form: screening.complete_screening(web.ctx, web.actor, web.study_id, number),
        done=_screening_outcome,
    )


# --------------------------------------------------------------------------- forms


def _entry_page(
    request: Request,
    web: Web,
    number: str,
    *,
    title: str,
    action: str,
    codes: list[str],
    values: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    message: str | None = None,
    status: int = 200,
    **extra: Any,
) -> HTMLResponse:
    view = get_subject(web.ctx, web.actor, web.study_id, number)
    loaded = current_protocol(web.ctx, web.actor, web.study_id)
    return render(
        request,
        "entry.html",
        web,
        status=status,
        s=view,
        title=title,
        action=action,
        forms=page_specs(loaded, codes),
        values=values or {},
        errors=errors or {},
        message=message,
        **{"visit_date": "", "stock": [], "hidden_fields": set(), **extra},
    )


def shown_values(code: str, values: dict[str, object]) -> dict[str, str]:
    """Saved values keyed as the entry form names its fields, in the words it shows."""
    out: dict[str, str] = {}
    for name, value in values.items():
        if value is None:
            continue
        shown = ("yes" if value else "no") if isinstance(value, bool) else str(value)
        out[f"{code}.{name}"] = shown
    return out


@router.get("/subjects/{number}/forms/{code}", include_in_schema=False)
def form_page(request: Request, number: str, code: str) -> Response:
    """A form of the subject: what was saved (with who and when) and, for whom the service
    allows it, a correction with a reason (DATA-2); a screening form not yet saved is
    offered for entry. ``?visit=M1&seq=2`` picks a visit's form or a repeat."""
    web = web_session(request)
    visit = request.query_params.get("visit", "")
    seq_text = request.query_params.get("seq", "")
    seq = int(seq_text) if seq_text.isdigit() else None
    loaded = current_protocol(web.ctx, web.actor, web.study_id)
    page_specs(loaded, [code])  # 404 for a form the protocol lacks
    saved = saved_form(
        web.ctx, web.actor, web.study_id, number, form_code=code, visit_code=visit, seq=seq
    )
    offered = set(subject_actions(web.ctx, web.actor, web.study_id, number))
    if saved is None:
        if visit or code not in loaded.protocol.screening.forms:
            raise NotFound(f"form {code} of {number} has not been saved")
        return _entry_page(
            request,
            web,
            number,
            title=f"Screening form: {loaded.protocol.form(code).name}",
            action=f"/subjects/{quote(number)}/forms/{quote(code)}",
            codes=[code],
            read_only="record_screening_form" not in offered,
        )
    return _saved_page(request, web, number, saved, offered)


def _saved_page(
    request: Request,
    web: Web,
    number: str,
    saved: Any,
    offered: set[str],
    *,
    values: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    message: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    where = f" at visit {saved.visit_code}" if saved.visit_code else ""
    return _entry_page(
        request,
        web,
        number,
        title=f"{saved.name}{where}",
        action=f"/subjects/{quote(number)}/forms/{quote(saved.form_code)}/correct",
        codes=[saved.form_code],
        values=values if values is not None else shown_values(saved.form_code, saved.values),
        errors=errors,
        message=message,
        status=status,
        saved=saved,
        correcting="correct_data" in offered,
        read_only="correct_data" not in offered,
    )


@router.post("/subjects/{number}/forms/{code}", include_in_schema=False)
async def save_screening_form(request: Request, number: str, code: str) -> Response:
    web, form = await post_form(request)
    try:
        screening.record_screening_form(
            web.ctx,
            web.actor,
            web.study_id,
            number,
            form_code=code,
            values=form_values(form, code),
        )
    except ValidationFailed as exc:
        return _entry_page(
            request,
            web,
            number,
            title=f"Screening form: {code}",
            action=f"/subjects/{quote(number)}/forms/{quote(code)}",
            codes=[code],
            values=flat_form(form),
            errors=field_errors(exc.problems, [code]),
            message=exc.message,
            status=422,
        )
    name = current_protocol(web.ctx, web.actor, web.study_id).protocol.form(code).name
    return redirect(subject_url(number, "forms"), flash=f"{name} saved.")


@router.post("/subjects/{number}/forms/{code}/correct", include_in_schema=False)
async def correct(request: Request, number: str, code: str) -> Response:
    """A correction of saved values with a reason; the audit keeps old and new (DATA-2)."""
    web, form = await post_form(request)
    visit = field_text(form, "visit")
    seq_text = field_text(form, "seq")
    seq = int(seq_text) if seq_text.isdigit() else None
    try:
        followup.correct_form_data(
            web.ctx,
            web.actor,
            web.study_id,
            number,
            form_code=code,
            changes=form_values(form, code),
            reason=field_text(form, "reason"),
            visit_code=visit,
            seq=seq,
        )
    except ValidationFailed as exc:
        saved = saved_form(
            web.ctx, web.actor, web.study_id, number, form_code=code, visit_code=visit, seq=seq
        )
        if saved is None:
            raise
        offered = set(subject_actions(web.ctx, web.actor, web.study_id, number))
        return _saved_page(
            request,
            web,
            number,
            saved,
            offered,
            values=flat_form(form),
            errors=field_errors(exc.problems, [code]),
            message=exc.message,
            status=422,
        )
    name = current_protocol(web.ctx, web.actor, web.study_id).protocol.form(code).name
    return redirect(
        subject_url(number, "forms"), flash=f"Correction to {name} saved with its reason."
    )


@router.get("/subjects/{number}/anatomy", include_in_schema=False)
def anatomy_form(request: Request, number: str) -> Response:
    web = web_session(request)
    loaded = current_protocol(web.ctx, web.actor, web.study_id)
    return _entry_page(
        request,
        web,
        number,
        title="Procedure day: anatomy",
        action=f"/subjects/{quote(number)}/anatomy",
        codes=list(loaded.protocol.screening.anatomy_forms),
    )


@router.post("/subjects/{number}/anatomy", include_in_schema=False)
async def save_anatomy(request: Request, number: str) -> Response:
    web, form = await post_form(request)
    codes = list(
        current_protocol(web.ctx, web.actor, web.study_id).protocol.screening.anatomy_forms
    )
    try:
        view = screening.record_anatomy(
            web.ctx,
            web.actor,
            web.study_id,
            number,
            forms={c: form_values(form, c) for c in codes},
        )
    except (ValidationFailed, PreconditionFailed) as exc:
        return _entry_page(
            request,
            web,
            number,
            title="Procedure day: anatomy",
            action=f"/subjects/{quote(number)}/anatomy",
            codes=codes,
            values=flat_form(form),
            errors=field_errors(getattr(exc, "problems", {}), codes),
            message=exc.message,
            status=status_of(exc),
        )
    if view.state == SubjectState.SCREEN_FAILED.value:
        text = "Anatomy recorded: unsuitable. The subject is a screen failure (not randomized)."
    else:
        text = "Anatomy recorded: suitable. The subject may be randomized."
    return redirect(subject_url(number, "procedure"), flash=text)


# --------------------------------------------------------------------------- randomization


@router.get("/subjects/{number}/randomize", include_in_schema=False)
def randomize_confirm(request: Request, number: str) -> Response:
    """The confirmation step before the irreversible randomization (RAND-4)."""
    web = web_session(request)
    view = get_subject(web.ctx, web.actor, web.study_id, number)
    if view.randomized:
        return redirect(f"/subjects/{quote(number)}/randomization")
    if "randomize" not in subject_actions(web.ctx, web.actor, web.study_id, number):
        raise PermissionDenied(
            f"subject {number} cannot be randomized by {web.actor.username} now "
            f"(state {view.state.replace('_', ' ')})"
        )
    return render(request, "randomize.html", web, s=view)


@router.post("/subjects/{number}/randomize", include_in_schema=False)
async def randomize(request: Request, number: str) -> Response:
    web, form = await post_form(request)
    key = field_text(form, "idempotency_key") or None
    randomization.randomize(web.ctx, web.actor, web.study_id, number, idempotency_key=key)
    return redirect(
        f"/subjects/{quote(number)}/randomization", flash=f"Subject {number} randomized."
    )


@router.get("/subjects/{number}/randomization", include_in_schema=False)
def randomization_result(request: Request, number: str) -> Response:
    """The stored randomization, re-read on every load (reload-safe, printable); the arm
    only for whom the service shows it."""
    web = web_session(request)
    result = stored_randomization(web.ctx, web.actor, web.study_id, number)
    return render(request, "randomized.html", web, r=result)
