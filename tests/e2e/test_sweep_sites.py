"""Site-isolation sweep over HTTP (ACC-1): a site-scoped user of S101 (coordinator, implanting
team) reads every API GET route, every page and every export, and nothing they get depends on
the other sites.

Twin studies prove it: one with S101's subjects only, one with the very same S101 subjects
(same actions, same order, same clock) plus subjects at S102 and S103. Every answer a S101
user gets must be identical in both, so no other site's subject number, no other site's row
in a report, and no total or count that includes another site can appear; the same comparison
as the study manager (who sees every site) differs, which shows the comparison can fail.
Any route with a subject in its path, asked about another site's subject, answers 404 exactly
as for a subject that does not exist (never 403: existence does not leak).

SQLite only: site scope is decided in the services, swept on both databases by
tests/integration/test_blinding_sweep.py and test_operational_reports.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI

from tests import flagship_data as fd
from tests import journey as j
from tests.conftest import PASSWORD, Trial
from tests.e2e import sweep_support as sw
from tests.e2e.test_api_access_sweep import _body
from tests.e2e.test_api_support import Api
from tests.e2e.test_web_pages import csrf_of, signed_in
from trialdesk.bootstrap import create_app
from trialdesk.services import data_queries, followup, screening, supply
from trialdesk.services.access import operator_actor

SITE_USERS = ("coordinator", "implanter")
"""The demo users of the site-scoped roles (domain.roles.SITE_SCOPED), both at S101."""
OTHER_SITES = ("S102", "S103")
OTHER_NUMBER = re.compile(r"\bS10[23]-")


def site_activity(t: Trial, site: str) -> list[str]:
    """Subjects of ``site`` in several states, with an adverse event, a therapy and a query."""
    numbers = [j.register(t, site), j.awaiting_procedure(t, site)]
    failed = j.echo_qualified(t, site)
    screening.crc_eligibility_decision(
        t.ctx,
        t.actor("crc"),
        t.study_id,
        failed,
        decision="reject",
        reason="Severe MAC",
        password=PASSWORD,
    )
    numbers.append(failed)
    numbers.append(j.randomized(t, site)[0])
    done, _arm = j.procedure_done(t, site)
    coordinator = j.staff(t, "coordinator", site)
    (ae,) = fd.adverse_event_forms(fd.DISCHARGE_DATE).values()
    followup.record_adverse_event(t.ctx, coordinator, t.study_id, done, values=ae)
    on = j.visit_dates()["M1"]
    t.clock.set_day(on)
    followup.record_visit(
        t.ctx,
        coordinator,
        t.study_id,
        done,
        visit_code="M1",
        visit_date=on,
        forms=fd.follow_up_forms(on.isoformat()),
    )
    followup.record_therapy(
        t.ctx, coordinator, t.study_id, done, therapy_date=on, therapy_type="crt"
    )
    data_queries.raise_query(
        t.ctx,
        t.actor("monitor"),
        t.study_id,
        done,
        form_code="follow_up",
        field="nyha_class",
        text="Please confirm NYHA class",
        visit_code="M1",
    )
    numbers.append(done)
    return numbers


@dataclass
class Twins:
    own: Trial
    full: Trial
    apps: dict[str, FastAPI]
    apis: dict[str, Api]
    own_numbers: list[str]
    other_numbers: list[str]


@pytest.fixture(scope="module")
def twins(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Twins]:
    own = sw.sqlite_trial(tmp_path_factory.mktemp("own"))
    full = sw.sqlite_trial(tmp_path_factory.mktemp("full"))
    for t in (own, full):  # devices at S101 in both: device reads are compared too
        supply.stock_demo_site(t.ctx, operator_actor(), t.study_id)
    own_numbers = site_activity(own, "S101")
    assert site_activity(full, "S101") == own_numbers
    other_numbers = [n for site in OTHER_SITES for n in site_activity(full, site)]
    for t in (own, full):
        t.clock.set_day(sw.READ_DAY)
    apps = {"own": create_app(own.runtime), "full": create_app(full.runtime)}
    apis = {"own": Api(own), "full": Api(full)}
    yield Twins(own, full, apps, apis, own_numbers, other_numbers)
    own.runtime.close()
    full.runtime.close()


VOLATILE = [
    re.compile(r'name="csrf_token" value="[^"]*"'),
    re.compile(r"trialdesk-export-[A-Za-z0-9_]+"),
]


def normal(response: Any) -> tuple[int, str]:
    """Status and body with per-session values (CSRF token) blanked; zips as their files."""
    content_type = response.headers.get("content-type", "")
    if content_type.startswith("application/zip"):
        return response.status_code, repr(sorted(sw.export_files(response.content).items()))
    text = response.content.decode("utf-8", errors="replace")
    for pattern in VOLATILE:
        text = pattern.sub("~", text)
    return response.status_code, text


def api_calls(t: Twins) -> list[tuple[str, str, dict[str, str]]]:
    """(method, url, query): every API GET route for every S101 subject, every enumerated
    query option, and every export."""
    app = t.apps["full"]
    spec = t.apis["full"].client.get("/openapi.json").json()
    calls = []
    for endpoint in sw.api_routes(app, {"GET"}):
        for number in t.own_numbers if "{number}" in endpoint.path else [""]:
            url = sw.fill(endpoint.path, {**sw.API_VALUES, "number": number})
            calls += [("GET", url, q) for q in sw.query_variants(spec, endpoint.path)]
    for endpoint in sw.api_routes(app, {"POST"}):
        if "/exports/" in endpoint.path:
            calls.append(("POST", sw.fill(endpoint.path, sw.API_VALUES), {}))
    return calls


def differences(t: Twins, user: str) -> list[str]:
    found = []
    for method, url, query in api_calls(t):
        answers = {
            twin: normal(
                t.apis[twin].client.request(
                    method, url, params=query, headers=t.apis[twin].headers(user)
                )
            )
            for twin in ("own", "full")
        }
        assert answers["full"][0] < 500, (user, url, answers["full"])
        if answers["own"] != answers["full"]:
            found.append(f"{user} {method} {url} {query}")
        if OTHER_NUMBER.search(answers["full"][1]):
            found.append(f"{user} {method} {url} {query}: names another site's subject")
    return found


def test_acc1_site_users_api_answers_do_not_depend_on_other_sites(twins: Twins) -> None:
    """ACC-1: every API GET route and export, as the S101 coordinator and implanting team,
    answers the same whether or not S102 and S103 have subjects."""
    found = [d for user in SITE_USERS for d in differences(twins, user)]
    assert not found, "\n".join(found)


def test_acc1_the_twin_comparison_can_fail(twins: Twins) -> None:
    """The study manager sees every site: the same comparison finds the other sites in the
    subject list, the enrolment report and the dashboard's counts."""
    found = differences(twins, "manager")
    assert any(url.endswith("/subjects {}") for url in found), found
    assert any("/reports/enrolment" in url for url in found), found


def test_acc1_site_users_pages_do_not_depend_on_other_sites(twins: Twins) -> None:
    """ACC-1: every page (subject pages, forms, visits, reports and their downloads), as the
    S101 site users, is the same with or without other sites' subjects."""
    urls = list(sw.web_urls(twins.apps["full"], twins.own_numbers))
    found = []
    for user in SITE_USERS:
        browsers = {
            "own": signed_in(twins.own, user),
            "full": signed_in(twins.full, user),
        }
        for _route, url in urls:
            answers = {twin: normal(b.get(url)) for twin, b in browsers.items()}
            assert answers["full"][0] < 500, (user, url)
            if answers["own"] != answers["full"]:
                found.append(f"{user} {url}")
            if OTHER_NUMBER.search(answers["full"][1]):
                found.append(f"{user} {url}: names another site's subject")
    assert not found, "\n".join(found)
    manager = {"own": signed_in(twins.own, "manager"), "full": signed_in(twins.full, "manager")}
    assert normal(manager["own"].get("/dashboard")) != normal(manager["full"].get("/dashboard"))


def _same_as_missing(a: Any, b: Any, number: str, ghost: str) -> bool:
    return bool(
        a.status_code == b.status_code and a.text.replace(number, "?") == b.text.replace(ghost, "?")
    )


def refused_for_any_subject(endpoint: sw.Endpoint, response: Any) -> bool:
    """An action the role may never take (a CRC decision for a coordinator) is refused by role
    before any subject is looked up: 403 for every subject alike, so it tells nothing."""
    return bool(endpoint.method == "POST" and response.status_code == 403)


def test_acc1_another_sites_subject_is_404_on_every_subject_route(twins: Twins) -> None:
    """ACC-1: every API and page route with a subject in its path (reads and actions), asked
    by a S101 site user about a S102 subject, answers exactly as for a subject that does not
    exist: 404 for every read and every action the role may take; nothing is written."""
    full = twins.full
    app = twins.apps["full"]
    api = twins.apis["full"]
    spec = api.client.get("/openapi.json").json()
    other = next(n for n in twins.other_numbers if n.startswith("S102"))
    ghost = "S102-9999"
    values = sw.API_VALUES
    browsers = {user: signed_in(full, user) for user in SITE_USERS}  # sign-ins write
    tokens = {user: api.headers(user) for user in SITE_USERS}
    before = sw.digest(full)
    checked = 0
    for user in SITE_USERS:
        headers = tokens[user]
        for e in sw.app_routes(app):
            if "{number}" not in e.path or not e.path.startswith(sw.API):
                continue
            op = spec["paths"][e.path][e.method.lower()]
            body = _body(op, spec)
            answers = [
                api.client.request(
                    e.method, sw.fill(e.path, {**values, "number": n}), json=body, headers=headers
                )
                for n in (other, ghost)
            ]
            assert _same_as_missing(answers[0], answers[1], other, ghost), (user, e)
            assert answers[0].status_code == 404 or refused_for_any_subject(e, answers[0])
            checked += 1
        browser = browsers[user]
        token = csrf_of(browser)
        fillers = sw.web_fillers()
        for e in sw.web_routes(app, {"GET", "POST"}):
            if "{number}" not in e.path:
                continue
            extra = fillers.get(e.path, [{}])[0]
            data = {"csrf_token": token, "password": PASSWORD} if e.method == "POST" else None
            answers = [
                browser.request(e.method, sw.fill(e.path, {**extra, "number": n}), data=data)
                for n in (other, ghost)
            ]
            assert _same_as_missing(answers[0], answers[1], other, ghost), (user, e)
            assert answers[0].status_code == 404 or refused_for_any_subject(e, answers[0])
            checked += 1
    assert checked > 2 * 40
    assert sw.digest(full) == before and sw.chain_ok(full)


def test_acc1_site_user_lists_only_own_site(twins: Twins) -> None:
    """ACC-1: the subject list of a S101 user holds exactly S101's subjects, with the total."""
    for user in SITE_USERS:
        listed = twins.apis["full"].get(user, "/subjects", limit=500).json()
        assert {s["number"] for s in listed["items"]} == set(twins.own_numbers)
        assert listed["total"] == len(twins.own_numbers)
