"""Subject actions through the REST API, each route's success and the refusal types:
LIFE-1 (not-allowed-in-state), RAND-4 preconditions, DATA-1 validation with per-field errors,
ACC-1 (another site's subject is 404), role refusals (403), RAND-5 idempotency over HTTP."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select

from tests import flagship_data as fd
from tests import journey as j
from tests.conftest import PASSWORD, Trial
from tests.e2e.test_api_support import Api, problem_code
from tests.factory import hard_lock
from trialdesk.store.tables import RandomizationRow


def test_life1_screening_to_randomization_through_http(trial: Trial) -> None:
    api = Api(trial)
    trial.clock.set_day(j.CONSENT)
    made = api.post("coordinator", "/subjects", {"site": "S101"})
    assert made.status_code == 201, made.text
    number = made.json()["number"]
    assert made.json()["state"] == "registered"
    assert (
        "record_consent"
        in api.get("coordinator", f"/subjects/{number}/actions").json()["allowed_actions"]
    )
    consent = {"consent_date": fd.CONSENT_DATE, "consent_version": "v1.0"}
    assert api.post("coordinator", f"/subjects/{number}/consent", consent).json()["state"] == (
        "screening"
    )
    trial.clock.set_day(j.SCREENING)
    for code, values in fd.screening_forms().items():
        saved = api.post("coordinator", f"/subjects/{number}/forms/{code}", {"values": values})
        assert saved.status_code == 200, saved.text
    pending = api.get("coordinator", f"/subjects/{number}/eligibility").json()
    assert set(pending["pending"]) == set(fd.INVESTIGATOR_CRITERIA)
    for criterion in fd.INVESTIGATOR_CRITERIA:
        body = {"confirmed": True, "password": PASSWORD}
        signed = api.post("coordinator", f"/subjects/{number}/confirmations/{criterion}", body)
        assert signed.status_code == 200, signed.text
    assert api.get("monitor", f"/subjects/{number}/eligibility").json()["eligible"] is True
    done = api.post("coordinator", f"/subjects/{number}/complete-screening")
    assert done.json()["state"] == "echo_qualified"
    cases = api.get("crc", "/crc/cases").json()
    assert [c["subject"] for c in cases["items"]] == [number]
    decision = {"decision": "approve", "reason": "suitable", "password": PASSWORD}
    approved = api.post("crc", f"/subjects/{number}/crc-decision", decision)
    assert approved.json()["state"] == "awaiting_procedure", approved.text
    early = api.post("implanter", f"/subjects/{number}/randomize")
    assert early.status_code == 409
    assert problem_code(early) == "anatomy-not-confirmed"
    trial.clock.set_day(j.PROCEDURE)
    anatomy = api.post("implanter", f"/subjects/{number}/anatomy", {"forms": fd.anatomy_forms()})
    assert anatomy.json()["anatomy_suitable"] is True
    first = api.post("implanter", f"/subjects/{number}/randomize", **{"Idempotency-Key": "k-1"})
    again = api.post("implanter", f"/subjects/{number}/randomize", **{"Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 200, first.text
    assert first.json() == again.json()
    assert first.json()["arm"]["code"] in {"INT", "CTRL"}  # the implanter, at the procedure
    with trial.ctx.uow(readonly=True) as uow:
        assert uow.session.scalar(select(func.count()).select_from(RandomizationRow)) == 1
    coordinator_view = api.get("coordinator", f"/subjects/{number}").json()
    assert coordinator_view["randomized"] is True and coordinator_view["arm"] is None


def test_rand5_idempotency_key_reused_for_another_subject_is_refused(trial: Trial) -> None:
    api = Api(trial)
    first, second = j.anatomy_suitable(trial), j.anatomy_suitable(trial)
    key = {"Idempotency-Key": "same"}
    assert api.post("coordinator", f"/subjects/{first}/randomize", **key).status_code == 200
    reused = api.post("coordinator", f"/subjects/{second}/randomize", **key)
    assert reused.status_code == 422
    assert problem_code(reused) == "validation-failed"
    assert "idempotency_key" in reused.json()["errors"]


def test_life4_follow_up_actions_through_http(trial: Trial) -> None:
    api = Api(trial)
    number, arm = j.randomized(trial)
    forms = fd.implant_procedure_forms() if arm == "INT" else fd.sham_procedure_forms()
    (values,) = forms.values()
    done = api.post("implanter", f"/subjects/{number}/procedure", {"values": values})
    assert done.json()["procedure_done"] is True, done.text
    trial.clock.set_day(fd.DISCHARGE_DATE)
    out = api.post(
        "coordinator", f"/subjects/{number}/discharge", {"discharged_on": fd.DISCHARGE_DATE}
    )
    assert out.json()["discharged_on"] == fd.DISCHARGE_DATE
    trial.clock.set_day(fd.M1_DATE)
    visit = {"visit_date": fd.M1_DATE, "forms": fd.follow_up_forms()}
    recorded = api.post("coordinator", f"/subjects/{number}/visits/M1", visit)
    assert recorded.status_code == 200, recorded.text
    m1 = next(v for v in recorded.json()["visits"] if v["code"] == "M1")
    assert m1["status"] == "done"
    twice = api.post("coordinator", f"/subjects/{number}/visits/M1", visit)
    assert twice.status_code == 409 and problem_code(twice) == "already-recorded"
    trial.clock.set_day(j.visit_dates()["M6"] + dt.timedelta(days=40))
    missed = api.post("coordinator", f"/subjects/{number}/visits/M6/missed", {"reason": "away"})
    assert next(v for v in missed.json()["visits"] if v["code"] == "M6")["status"] == "missed"
    worklist = api.get("manager", "/visits", state=["missed"]).json()
    assert [(i["subject"], i["visit"]) for i in worklist["items"]] == [(number, "M6")]
    on = trial.clock.now.date().isoformat()
    therapy = {"therapy_date": on, "therapy_type": "crt"}
    assert api.post("coordinator", f"/subjects/{number}/therapies", therapy).status_code == 200
    case = next(c for c in api.get("crc", "/crc/cases").json()["items"] if c["kind"] == "therapy")
    decided = api.post(
        "crc",
        f"/crc/cases/{case['id']}/decision",
        {"classification": "continue_follow_up", "reason": "no endpoint", "password": PASSWORD},
    )
    assert decided.json()["status"] == "decided", decided.text
    (ae,) = fd.adverse_event_forms(on).values()
    assert (
        api.post("coordinator", f"/subjects/{number}/adverse-events", {"values": ae}).status_code
        == 200
    )
    fix = {"form": "follow_up", "visit": "M1", "changes": {"nyha_class": "II"}, "reason": "typo"}
    corrected = api.post("coordinator", f"/subjects/{number}/corrections", fix)
    assert corrected.status_code in (200, 404, 422), corrected.text
    too_early = api.post("coordinator", f"/subjects/{number}/unblind", {"password": PASSWORD})
    assert problem_code(too_early) == "unblinding-not-due"
    emergency = api.post(
        "coordinator",
        f"/subjects/{number}/emergency-unblind",
        {"reason": "bleeding", "password": PASSWORD},
    )
    assert emergency.json()["arm"]["code"] == arm
    note = api.get("manager", "/notifications").json()["items"][0]
    assert api.post("manager", f"/notifications/{note['id']}/read").json()["read_at"]
    in_error = api.post(
        "statistician", f"/subjects/{number}/randomized-in-error", {"reason": "wrong subject"}
    )
    assert in_error.json()["in_error"] is True
    bye = {"withdrawn_on": on, "reason": "moved away", "follow_up_contact_allowed": False}
    assert (
        api.post("coordinator", f"/subjects/{number}/withdraw", bye).json()["state"] == "withdrawn"
    )
    late = api.post("coordinator", f"/subjects/{number}/death", {"death_date": on, "cause": "x"})
    assert late.status_code == 409 and problem_code(late) == "not-allowed-in-state"
    assert "allowed" in late.json()["detail"]


def test_sched3_completion_and_exits_through_http(trial: Trial) -> None:
    api = Api(trial)
    number, _arm = j.all_contacts_done(trial)
    assert api.post("coordinator", f"/subjects/{number}/complete").json()["state"] == "completed"
    other = j.consented(trial)
    on = trial.clock.now.date().isoformat()
    died = api.post(
        "coordinator", f"/subjects/{other}/death", {"death_date": on, "cause": "stroke"}
    )
    assert died.json()["state"] == "died", died.text
    third = j.consented(trial)
    lost = api.post(
        "coordinator", f"/subjects/{third}/lost-to-follow-up", {"on": on, "reason": "no contact"}
    )
    assert lost.status_code == 200, lost.text
    fourth = j.register(trial)
    declined = api.post("coordinator", f"/subjects/{fourth}/decline", {"reason": "no"})
    assert declined.json()["state"] == "screen_failed"
    fifth = j.consented(trial)
    failed = api.post("coordinator", f"/subjects/{fifth}/screen-failure", {"reason": "other"})
    assert failed.json()["screen_failure_reason"] == "other"


def test_data1_validation_failed_names_each_field(trial: Trial) -> None:
    api = Api(trial)
    number = j.consented(trial)
    bad_date = api.post("coordinator", f"/subjects/{number}/consent", {"consent_date": "soon"})
    assert bad_date.status_code == 422 and problem_code(bad_date) == "validation-failed"
    assert set(bad_date.json()["errors"]) >= {"body.consent_date", "body.consent_version"}
    values = fd.screening_forms()["demographics"] | {"age_years": "old"}
    bad_form = api.post("coordinator", f"/subjects/{number}/forms/demographics", {"values": values})
    assert bad_form.status_code == 422 and problem_code(bad_form) == "validation-failed"
    assert "age_years" in bad_form.json()["errors"]
    page = api.get("coordinator", "/subjects", limit=501)
    assert page.status_code == 422 and "query.limit" in page.json()["errors"]


def test_acc1_other_site_subject_is_404_and_wrong_role_is_403(trial: Trial) -> None:
    api = Api(trial)
    number = j.register(trial, "S102")
    hidden = api.get("coordinator", f"/subjects/{number}")
    assert hidden.status_code == 404 and problem_code(hidden) == "not-found"
    assert api.get("coordinator", "/subjects").json()["total"] == 0
    assert api.get("manager", f"/subjects/{number}").status_code == 200
    forbidden = api.post("monitor", "/subjects", {"site": "S101"})
    assert forbidden.status_code == 403 and problem_code(forbidden) == "forbidden"
    blinded = api.get("manager", "/endpoints/efficacy")
    assert blinded.status_code == 403 and problem_code(blinded) == "blinded"


def test_life1_randomize_before_screening_is_not_allowed_in_state(trial: Trial) -> None:
    """LIFE-1: a registered subject cannot be randomized; 409 naming the state's refusal."""
    api = Api(trial)
    number = j.register(trial)
    response = api.post("coordinator", f"/subjects/{number}/randomize")
    assert response.status_code == 409
    assert problem_code(response) == "not-allowed-in-state"


def test_list_routes_paginate_with_offset_and_limit(trial: Trial) -> None:
    api = Api(trial)
    numbers = [j.register(trial) for _ in range(3)]
    page = api.get("coordinator", "/subjects", offset=1, limit=1).json()
    assert page["total"] == 3 and page["offset"] == 1 and page["limit"] == 1
    assert [s["number"] for s in page["items"]] == numbers[1:2]
    filtered = api.get("coordinator", "/subjects", state="screening").json()
    assert filtered["total"] == 0


def test_rand3_statistician_routes(trial: Trial) -> None:
    api = Api(trial)
    lists = api.get("statistician", "/lists").json()
    assert lists["total"] == 1 and lists["items"][0]["fingerprint"]
    strata = api.get("statistician", "/lists/strata", mode="live").json()["items"]
    extended = api.post(
        "statistician", "/lists/extensions", {"stratum": strata[0]["stratum"], "blocks": 1}
    )
    assert extended.json()["size"] > strata[0]["size"], extended.text
    test_list = api.post("statistician", "/lists", {"mode": "test", "seed": 7})
    assert test_list.status_code == 201 and test_list.json()["mode"] == "test"
    exists = api.post("statistician", "/lists", {"mode": "test", "seed": 7})
    assert exists.status_code == 409 and problem_code(exists) == "list-exists"
    bad = api.post("statistician", "/lists/import", {"csv": "a,b\n1,2\n", "mode": "test"})
    assert bad.status_code in (409, 422)
    assert api.get("statistician", "/endpoints/safety").status_code == 200
    assert api.get("dsmb", "/endpoints/efficacy").status_code == 200
    assert api.get("manager", "/endpoints/interim").json()["randomized"] == 0


def test_rand7_trial_unblinding_needs_two_signatures(trial: Trial) -> None:
    hard_lock(trial)  # REC-5: trial unblinding needs the hard database lock
    api = Api(trial)
    assert api.get("monitor", "/trial-unblinding").json()["status"] == "blinded"
    body = {"reason": "study end", "password": PASSWORD}
    assert api.post("manager", "/trial-unblinding/request", body).json()["status"] == "requested"
    confirmed = api.post("statistician", "/trial-unblinding/confirm", {"password": PASSWORD})
    assert confirmed.json()["status"] == "unblinded", confirmed.text


def test_data2_data_query_round_trip(trial: Trial) -> None:
    api = Api(trial)
    number = j.consented(trial)
    j.enter_screening(trial, number)
    raised = api.post(
        "monitor",
        "/queries",
        {"subject": number, "form": "demographics", "field": "age_years", "text": "check age"},
    )
    assert raised.status_code == 201, raised.text
    qid = raised.json()["id"]
    assert api.get("coordinator", "/queries").json()["total"] == 1
    answered = api.post("coordinator", f"/queries/{qid}/answer", {"text": "checked"})
    assert answered.json()["status"] == "answered"
    reopened = api.post("monitor", f"/queries/{qid}/reopen", {"text": "really?"})
    assert reopened.json()["status"] == "open"
    api.post("coordinator", f"/queries/{qid}/answer", {"text": "yes"})
    assert api.post("monitor", f"/queries/{qid}/close", {}).json()["status"] == "closed"
    again = api.post("monitor", f"/queries/{qid}/close", {})
    assert again.status_code == 409 and problem_code(again) == "query-closed"
