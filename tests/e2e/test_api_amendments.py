"""Protocol amendments over the API (PROT-2, SIG-1, RAND-6)."""

from __future__ import annotations

import re

from tests import journey as j
from tests.conftest import PASSWORD, Trial
from tests.e2e.test_api_support import Api, problem_code
from tests.protocol_variants import amended, design_changed

ARM_WORDS = re.compile(
    r"\b(INT|CTRL)\b|Intervention|Control \(sham|CARILLON implant|implant_procedure|sham_procedure"
)


def test_prot2_api_design_amendment_is_previewed_blinded_and_needs_two_signatures(
    trial: Trial,
) -> None:
    """PROT-2, SIG-1, RAND-6: the manager previews (nothing written) and signs a ratio change
    without reading an arm; it stays pending until the statistician co-signs; a wrong
    password is 401 and signs nothing; a broken file is 422 with its problems."""
    j.randomized(trial)
    trial.clock.set_day("2027-03-01")
    api = Api(trial)
    text = design_changed().text

    preview = api.post("manager", "/protocol/amendments/preview", {"text": text})
    assert preview.status_code == 200, preview.text
    assert preview.json()["needs_statistician"] is True
    assert "allocation ratio 1:1 -> 2:1" in preview.text and not ARM_WORDS.search(preview.text)
    assert len(api.get("manager", "/protocol/versions").json()["items"]) == 1

    broken = api.post(
        "manager",
        "/protocol/amendments",
        {"text": "name: [", "reason": "r", "password": PASSWORD},
    )
    assert broken.status_code == 422 and problem_code(broken) == "validation-failed"
    wrong = api.post(
        "manager", "/protocol/amendments", {"text": text, "reason": "2:1", "password": "nope"}
    )
    assert wrong.status_code == 401
    assert len(api.get("manager", "/protocol/versions").json()["items"]) == 1

    made = api.post(
        "manager", "/protocol/amendments", {"text": text, "reason": "2:1", "password": PASSWORD}
    )
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["status"] == "pending" and not ARM_WORDS.search(made.text)
    number = body["id"]

    refused = api.post(
        "monitor", f"/protocol/amendments/{number}/signatures", {"password": PASSWORD}
    )
    assert refused.status_code == 403
    shown = api.get("statistician", f"/protocol/amendments/{number}")
    assert "arm INT ratio 1 -> 2" in shown.text
    signed = api.post(
        "statistician", f"/protocol/amendments/{number}/signatures", {"password": PASSWORD}
    )
    assert signed.status_code == 200, signed.text
    assert [s["username"] for s in signed.json()["signatures"]] == ["manager", "statistician"]
    versions = api.get("coordinator", "/protocol/versions").json()["items"]
    assert [(v["version"], v["status"], v["current"]) for v in versions] == [
        ("1.0", "signed", False),
        ("1.1", "signed", True),
    ]
    again = api.post(
        "manager",
        "/protocol/amendments",
        {"text": amended(version="1.1").text, "reason": "r", "password": PASSWORD},
    )
    assert again.status_code == 409 and problem_code(again) == "amendment-refused"
