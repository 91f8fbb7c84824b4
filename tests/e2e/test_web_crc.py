"""The CRC case dossier on the pages (issue 14): the committee sees the data its decision
rests on, decides with nothing preselected, sees its signature confirmed; a request for more
information reaches the site, whose reply comes back to the dossier; a therapy case has its
form. SQLite and PostgreSQL."""

from __future__ import annotations

import re

from tests import flagship_data as fd
from tests import journey
from tests.conftest import PASSWORD, Trial
from tests.e2e.test_web_pages import csrf_of, signed_in
from trialdesk.services import crc, followup
from trialdesk.services.queries import get_subject


def _case_id(t: Trial, number: str, kind: str = "eligibility") -> int:
    cases = crc.crc_queue(t.ctx, t.actor("crc"), t.study_id)
    return next(c.id for c in cases if c.subject == number and c.kind == kind)


def test_elig3_dossier_shows_the_data_and_nothing_is_preselected(trial: Trial) -> None:
    """ELIG-3: the dossier shows the echo, NYHA, KCCQ, walk test and heart-team values, each
    criterion's outcome with the value that decided it, the investigator's signed
    confirmations, the subject as a link; no decision is chosen before the member chooses."""
    number = journey.echo_qualified(trial)
    case_id = _case_id(trial, number)
    c = signed_in(trial, "crc")
    assert f'href="/crc/cases/{case_id}"' in c.get("/crc").text
    page = c.get(f"/crc/cases/{case_id}").text
    assert f'<a href="/subjects/{number}">{number}</a>' in page
    for form in ("tte", "nyha", "kccq", "six_minute_walk", "heart_team"):
        assert f'id="form-{form}"' in page
    lvef = fd.screening_forms()["tte"]["lvef_pct"]
    assert re.search(rf"tte\.lvef_pct = {lvef}", page)  # the value that decided INC-6
    assert "signed by" in page  # investigator confirmations, with signer and meaning
    assert 'type="radio" name="decision"' in page
    assert " checked" not in page and "selected" not in page


def test_elig3_signed_decision_is_confirmed_with_signer_time_and_meaning(trial: Trial) -> None:
    """ELIG-3, SIG-1: after signing, the dossier shows the decision, its meaning, who signed
    and when; the case has left the queue."""
    number = journey.echo_qualified(trial)
    case_id = _case_id(trial, number)
    c = signed_in(trial, "crc")
    response = c.post(
        f"/crc/{number}",
        data={
            "case": str(case_id),
            "decision": "approve",
            "reason": "Core-lab echo confirms FMR grade 3",
            "password": PASSWORD,
            "csrf_token": csrf_of(c, "/crc"),
        },
    )
    assert response.status_code == 303
    assert response.headers["location"] == f"/crc/cases/{case_id}?signed=1"
    page = c.get(response.headers["location"]).text
    assert "Your signed decision is recorded." in page
    assert "CRC approval for the implant procedure" in page  # the meaning signed
    assert "Core-lab echo confirms FMR grade 3" in page
    assert 'id="signature"' in page and "(crc)" in page
    assert "Sign decision" not in page  # decided: nothing more to sign
    assert f"/crc/cases/{case_id}" not in c.get("/crc").text
    assert get_subject(trial.ctx, trial.actor("crc"), trial.study_id, number).state == (
        "awaiting_procedure"
    )


def test_sig1_wrong_password_keeps_the_reason_and_changes_nothing(trial: Trial) -> None:
    """SIG-1: a failed re-authentication re-renders the dossier with the member's choice and
    reason kept; the subject and case are unchanged."""
    number = journey.echo_qualified(trial)
    case_id = _case_id(trial, number)
    c = signed_in(trial, "crc")
    response = c.post(
        f"/crc/{number}",
        data={
            "case": str(case_id),
            "decision": "reject",
            "reason": "LVEF below range on core-lab read",
            "password": "wrong-password",
            "csrf_token": csrf_of(c, "/crc"),
        },
    )
    assert response.status_code == 422
    assert "LVEF below range on core-lab read</textarea>" in response.text
    assert 'value="reject" required checked' in response.text
    assert get_subject(trial.ctx, trial.actor("crc"), trial.study_id, number).state == (
        "echo_qualified"
    )
    assert _case_id(trial, number) == case_id


def test_elig3_info_request_reaches_the_site_and_its_reply_the_dossier(trial: Trial) -> None:
    """ELIG-3: "more information" is a round of the case: the site sees what was asked, its
    reply returns the case to the committee, and the dossier shows request and reply in order.
    An empty reply, or a reply to a case not waiting, is refused and changes nothing."""
    number = journey.echo_qualified(trial)
    case_id = _case_id(trial, number)
    member = signed_in(trial, "crc")
    member.post(
        f"/crc/{number}",
        data={
            "case": str(case_id),
            "decision": "request_info",
            "reason": "Send the core-lab TTE report",
            "password": PASSWORD,
            "csrf_token": csrf_of(member, "/crc"),
        },
    )
    site = signed_in(trial, "coordinator")
    waiting = site.get("/crc-requests").text
    assert "Send the core-lab TTE report" in waiting and number in waiting
    token = csrf_of(site, "/crc-requests")
    empty = site.post(f"/crc-requests/{case_id}", data={"text": " ", "csrf_token": token})
    assert empty.status_code == 422
    assert crc.crc_queue(trial.ctx, trial.actor("crc"), trial.study_id)[0].status == (
        "info_requested"
    )
    sent = site.post(
        f"/crc-requests/{case_id}",
        data={"text": "Report uploaded to the core-lab portal", "csrf_token": token},
    )
    assert sent.status_code == 303
    assert "is sent to the committee" in site.get(sent.headers["location"]).text
    again = site.post(f"/crc-requests/{case_id}", data={"text": "again", "csrf_token": token})
    assert again.status_code == 422 and "does not wait for a reply" in again.text
    page = member.get(f"/crc/cases/{case_id}").text
    asked = page.index("Send the core-lab TTE report")
    replied = page.index("Report uploaded to the core-lab portal")
    assert asked < replied
    assert "open for decision" in page and "Sign decision" in page


def test_elig3_reply_page_is_the_sites_and_the_dossier_the_committees(trial: Trial) -> None:
    """ACC-1: the coordinator cannot read the committee's dossier; the CRC member does not
    reply for the site."""
    number = journey.echo_qualified(trial)
    case_id = _case_id(trial, number)
    assert signed_in(trial, "coordinator").get(f"/crc/cases/{case_id}").status_code == 403
    member = signed_in(trial, "crc")
    assert member.get("/crc-requests").status_code == 403


def test_ther2_therapy_case_has_its_form_and_shows_the_follow_up(trial: Trial) -> None:
    """THER-2: a therapy case shows the therapy and the follow-up so far, and the committee
    signs its classification from the dossier (no longer a dead end); the subject stays."""
    number, _arm = journey.procedure_done(trial)
    on = journey.visit_dates()["M1"]
    trial.clock.set_day(on)
    coordinator = trial.actor("coordinator")
    followup.record_visit(
        trial.ctx,
        coordinator,
        trial.study_id,
        number,
        visit_code="M1",
        visit_date=on,
        forms=fd.follow_up_forms(on.isoformat()),
    )
    followup.record_therapy(
        trial.ctx, coordinator, trial.study_id, number, therapy_date=on, therapy_type="crt"
    )
    case_id = _case_id(trial, number, "therapy")
    c = signed_in(trial, "crc")
    page = c.get(f"/crc/cases/{case_id}").text
    assert "Additional therapy" in page and "crt" in page
    assert "M1 (1 month)" in page and "Follow-up so far" in page
    state = get_subject(trial.ctx, trial.actor("crc"), trial.study_id, number).state
    response = c.post(
        f"/crc/cases/{case_id}/therapy",
        data={
            "decision": "not_endpoint_event",
            "reason": "Planned CRT upgrade",
            "password": PASSWORD,
            "csrf_token": csrf_of(c, "/crc"),
        },
    )
    assert response.status_code == 303
    page = c.get(response.headers["location"]).text
    assert "CRC: the therapy is not an endpoint event" in page
    assert get_subject(trial.ctx, trial.actor("crc"), trial.study_id, number).state == state
