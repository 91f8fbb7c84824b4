"""The protocol page /protocol (PROT-2): versions for every role, the manager's preview and
signature, the statistician's co-signature; no arm shown to a blinded role (RAND-6)."""

from __future__ import annotations

from tests import journey
from tests.conftest import PASSWORD, Trial
from tests.e2e.test_web_pages import ARM_TEXT, csrf_of, signed_in
from tests.protocol_variants import amended, design_changed
from trialdesk.services.amendments import list_protocol_versions


def test_prot2_manager_previews_and_signs_an_amendment_on_the_page(trial: Trial) -> None:
    """PROT-2: preview shows the diff and the effect on enrolled subjects and writes
    nothing; a wrong password is refused on the page; the right one signs it."""
    number, _arm = journey.procedure_done(trial)
    trial.clock.set_day("2027-03-01")
    c = signed_in(trial, "manager")
    assert 'href="/protocol"' in c.get("/home").text
    token = csrf_of(c, "/protocol")
    text = amended().text
    shown = c.post("/protocol/preview", data={"text": text, "csrf_token": token})
    assert shown.status_code == 200
    assert "INC-19" in shown.text and "has M6 not yet done" in shown.text
    assert len(list_protocol_versions(trial.ctx, trial.actor("manager"), trial.study_id)) == 1

    form = {"text": text, "reason": "wider M6", "effective_from": "", "csrf_token": token}
    wrong = c.post("/protocol/amend", data={**form, "password": "nope"})
    assert wrong.status_code == 422 and "wrong username or password" in wrong.text
    signed = c.post("/protocol/amend", data={**form, "password": PASSWORD})
    assert signed.status_code == 303
    page = c.get("/protocol").text
    assert "Morgan Manager" in page and "wider M6" in page
    versions = list_protocol_versions(trial.ctx, trial.actor("manager"), trial.study_id)
    assert [v.version for v in versions] == ["1.0", "1.1"]
    # the subject stays on 1.0; its visits not yet done follow 1.1, and the page says so
    subject = signed_in(trial, "coordinator").get(f"/subjects/{number}").text
    assert '<span class="tag">protocol 1.1</span>' in subject


def test_prot2_statistician_cosigns_a_design_amendment_blinded_manager_sees_no_arm(
    trial: Trial,
) -> None:
    """PROT-2, SIG-1, RAND-6: the pending design change shows no arm to the manager; the
    statistician reads it with arms and signs it."""
    journey.randomized(trial)
    trial.clock.set_day("2027-03-01")
    manager = signed_in(trial, "manager")
    token = csrf_of(manager, "/protocol")
    form = {"text": design_changed().text, "reason": "2:1", "csrf_token": token}
    preview = manager.post("/protocol/preview", data=form)
    # the diff and its consequences (the form echoes back the manager's own file)
    shown = preview.text[preview.text.index('<div id="preview">') :]
    shown = shown[: shown.index("<form")]
    assert "allocation ratio 1:1 -&gt; 2:1" in shown and not ARM_TEXT.search(shown)
    manager.post("/protocol/amend", data={**form, "password": PASSWORD, "effective_from": ""})
    page = manager.get("/protocol")
    assert "awaits the statistician" in page.text and not ARM_TEXT.search(page.text)
    assert "Sign amendment" not in page.text

    stat = signed_in(trial, "statistician")
    page = stat.get("/protocol")
    assert "arm INT ratio 1 -&gt; 2" in page.text and "Sign amendment 1" in page.text
    done = stat.post(
        "/protocol/amendments/1/sign",
        data={"password": PASSWORD, "csrf_token": csrf_of(stat, "/protocol")},
    )
    assert done.status_code == 303
    page = stat.get("/protocol")
    assert "awaits the statistician" not in page.text and "Sam Statistician" in page.text
