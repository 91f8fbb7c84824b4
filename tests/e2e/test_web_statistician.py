"""The statistician area /statistician through the ASGI app (TestClient), on SQLite and
PostgreSQL: list status and design assessment for the unblinded statistician (RAND-2, RAND-3),
by-arm endpoints for unblinded roles (END-1, END-2), and refusal for everyone else (RAND-6)."""

from __future__ import annotations

import re

import pytest
from markupsafe import escape

from tests import journey
from tests.conftest import Trial
from tests.e2e.test_web_pages import ARM_TEXT, BLINDED, csrf_of, signed_in
from trialdesk.services.allocation.lists import list_info
from trialdesk.services.design import MAX_SIMULATIONS

DESIGN = {
    "method": "blocks",
    "block_sizes": "4,6",
    "ratio": "1,1",
    "strata": "4",
    "subjects": "40",
    "simulations": "200",
    "seed": "7",
}


def test_rand3_statistician_sees_list_status_and_by_arm_endpoints(trial: Trial) -> None:
    """The list's fingerprint and per-stratum use (one slot used after a randomization), and
    the by-arm endpoint tables naming the arms; the navigation links the page."""
    journey.randomized(trial)
    page = signed_in(trial, "statistician").get("/statistician")
    assert page.status_code == 200
    (live,) = list_info(trial.ctx, trial.actor("statistician"), trial.study_id)
    assert live.fingerprint[:16] in page.text
    assert re.search(r"<td>live</td><td>site=S101</td><td>\d+</td><td>1</td>", page.text)
    assert "arm INT" in page.text and "arm CTRL" in page.text
    assert 'href="/statistician"' in page.text
    assert 'name="method"' in page.text and 'value="352"' in page.text  # protocol defaults


def test_rand2_design_assessment_shows_figures_and_interpretation(trial: Trial) -> None:
    """The form runs the simulation and shows its JSON as a table with the interpretation;
    the same seed gives the same figures."""
    c = signed_in(trial, "statistician")
    token = csrf_of(c, "/statistician")
    first = c.post("/statistician/design", data={**DESIGN, "csrf_token": token})
    assert first.status_code == 200
    assert 'id="design-result"' in first.text
    assert "selection bias / convergence correct guess rate" in first.text
    assert "Permuted blocks of sizes 4, 6" in first.text  # the interpretation paragraph
    again = c.post("/statistician/design", data={**DESIGN, "csrf_token": token})
    rate = re.compile(r"convergence correct guess rate</th><td>([0-9.]+)<")
    found_first, found_again = rate.search(first.text), rate.search(again.text)
    assert found_first and found_again and found_first.group(1) == found_again.group(1)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"simulations": str(MAX_SIMULATIONS + 1)}, "at most 2,000 simulations"),
        ({"subjects": "many"}, "subjects: 'many' is not a whole number"),
        ({"block_sizes": "4;6"}, "not whole numbers separated by commas"),
        ({"method": "coin"}, "unknown method 'coin'"),
        ({"block_sizes": "3"}, "block"),
    ],
)
def test_rand2_design_assessment_bad_input_is_one_clear_message(
    trial: Trial, change: dict[str, str], message: str
) -> None:
    c = signed_in(trial, "statistician")
    response = c.post(
        "/statistician/design",
        data={**DESIGN, **change, "csrf_token": csrf_of(c, "/statistician")},
    )
    assert response.status_code == 422
    assert str(escape(message)) in response.text
    assert 'id="design-result"' not in response.text
    name, typed = next(iter(change.items()))
    if name != "method":  # what was typed stays in its field
        assert re.search(
            f'name="{name}"[^>]*value="{re.escape(str(escape(typed)))}"', response.text
        )


def test_rand6_dsmb_sees_endpoints_but_not_lists_or_design(trial: Trial) -> None:
    """A DSMB member reads the by-arm endpoints; list status and the design form are the
    statistician's, so those panels are left out (no red refusal, issue 14), and a design
    POST is 403."""
    journey.randomized(trial)
    c = signed_in(trial, "dsmb")
    page = c.get("/statistician")
    assert page.status_code == 200
    assert "arm INT" in page.text
    assert 'id="lists"' not in page.text and 'id="design"' not in page.text
    assert 'class="refusal"' not in page.text and 'id="design-result"' not in page.text
    response = c.post(
        "/statistician/design", data={**DESIGN, "csrf_token": csrf_of(c, "/statistician")}
    )
    assert response.status_code == 403


@pytest.mark.parametrize("username", BLINDED)
def test_rand6_blinded_roles_get_403_with_no_arm(trial: Trial, username: str) -> None:
    """Coordinator, manager, admin, CRC, monitor: /statistician is the service's refusal (403)
    with no arm code or label, no link in the navigation, and a design POST is refused."""
    journey.randomized(trial)
    c = signed_in(trial, username)
    page = c.get("/statistician")
    assert page.status_code == 403
    assert "reported by arm" in page.text
    assert not ARM_TEXT.search(page.text)
    assert 'href="/statistician"' not in c.get("/home").text
    response = c.post("/statistician/design", data={**DESIGN, "csrf_token": csrf_of(c)})
    assert response.status_code == 403 and not ARM_TEXT.search(response.text)


def test_acc_design_post_without_csrf_is_refused(trial: Trial) -> None:
    c = signed_in(trial, "statistician")
    response = c.post("/statistician/design", data={**DESIGN, "csrf_token": "forged"})
    assert response.status_code == 403 and "security token" in response.text
