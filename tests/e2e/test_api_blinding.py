"""Blinding sweep over HTTP (RAND-6, ACC-2): every GET route in /openapi.json, called by each
blinded demo user with path parameters filled from the list routes, shows no arm code, arm
label or allocation-list content."""

from __future__ import annotations

import re

from tests import journey as j
from tests.arm_text import without_ct_wording
from tests.conftest import Trial, flagship
from tests.e2e.test_api_support import API, Api

ARM_TOKEN = re.compile(r"\b(INT|CTRL)\b")
ARM_TEXT = ("Intervention", "Control (sham", "CARILLON implant")
BLINDED = ("admin", "manager", "coordinator", "crc", "monitor")


def leaks(text: str) -> list[str]:
    """Arm codes, labels, and each arm's own procedure form (as telling as the code)."""
    proxies = [a.procedure_form for a in flagship().protocol.arms if a.procedure_form]
    text = without_ct_wording(text)  # CDISC parameter names, the same in every trial
    return ARM_TOKEN.findall(text) + [t for t in (*ARM_TEXT, *proxies) if t in text]


def test_rand6_no_get_route_shows_an_arm_to_a_blinded_user(trial: Trial) -> None:
    done = [j.procedure_done(trial)[0] for _ in range(2)]
    randomized = j.randomized(trial)[0]
    waiting = j.awaiting_procedure(trial)
    api = Api(trial)
    numbers = [s["number"] for s in api.get("manager", "/subjects", limit=500).json()["items"]]
    assert {*done, randomized, waiting} <= set(numbers)
    paths = [
        path
        for path, item in api.client.get("/openapi.json").json()["paths"].items()
        if "get" in item and path.startswith(API)
    ]
    assert any("{number}" in p for p in paths) and len(paths) >= 15
    calls = 0
    for user in BLINDED:
        headers = api.headers(user)
        for path in paths:
            filled = path.replace("{study}", "FLAGSHIP")
            for number in numbers if "{number}" in filled else [None]:
                url = filled.replace("{number}", number) if number else filled
                response = api.client.get(url, headers=headers)
                assert response.status_code < 500
                assert not leaks(response.text), (user, url, leaks(response.text))
                calls += 1
    assert calls > len(BLINDED) * len(paths)


def test_rand6_implanter_sees_the_arm_so_the_sweep_can_see_leaks(trial: Trial) -> None:
    """The sweep's detector works: the same routes do show the arm to whom it is due."""
    number, arm = j.randomized(trial)
    body = Api(trial).get("statistician", f"/subjects/{number}").text
    assert arm in leaks(body)
