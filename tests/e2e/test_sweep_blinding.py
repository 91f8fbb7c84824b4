"""Blinding sweep over HTTP (RAND-6, RAND-7, ACC-2): on one study with subjects randomized to
both arms (procedures done, a subject unblinded after M24 at another site, an emergency
unblinding by a colleague, a randomization in error, a withdrawal, a trial-unblinding request),
every blinded role (services.access.BLINDED_ROLES, plus users holding a blinded and an
unblinded role) calls every GET route of the API, every page and every export, and no arm
code, arm label, arm procedure form or list detail appears in any answer or exported file.

Routes are enumerated from the app, so a new route is swept without editing this file. The
implanting team is not blinded (SYSTEM.md §1: it receives the allocation of its own site's
subjects); its site scope is swept in test_sweep_sites.py. SQLite only: the same reads are
swept through the services on both databases in tests/integration/test_blinding_sweep.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi import FastAPI

from tests.conftest import Trial
from tests.e2e import sweep_support as sw
from tests.e2e.test_api_support import Api
from tests.e2e.test_web_pages import signed_in
from tests.integration.test_blinding_sweep import populate
from trialdesk.bootstrap import create_app
from trialdesk.domain.roles import Role
from trialdesk.services import supply
from trialdesk.services.access import BLINDED_ROLES, operator_actor
from trialdesk.services.queries import list_subjects

DUAL = ("coord-stat", "mgr-dsmb")
"""Users holding a blinded and an unblinded role: the blinded view wins for arms (ACC-2)."""


@dataclass
class Swept:
    trial: Trial
    app: FastAPI
    api: Api
    numbers: list[str]
    arms: dict[str, str]
    unblinded: str
    detector: sw.ArmDetector


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swept]:
    trial = sw.sqlite_trial(tmp_path_factory.mktemp("blinding"))
    # devices at S101: implant-arm subjects use them, so device reads are swept too (SUP-2)
    supply.stock_demo_site(trial.ctx, operator_actor(), trial.study_id)
    unblinded, arm = sw.unblinded_at(trial, "S102")
    arms = {unblinded: arm}
    population = populate(trial)
    arms.update(population.arms)
    trial.clock.set_day(sw.READ_DAY)
    views = list_subjects(trial.ctx, trial.actor("manager"), trial.study_id, limit=500).items
    # every randomized subject (those have an arm to leak) and one that is not
    numbers = [v.number for v in views if v.randomized]
    numbers.append(next(v.number for v in views if not v.randomized))
    assert set(arms) <= set(numbers) and set(arms.values()) == {"INT", "CTRL"}
    app = create_app(trial.runtime)
    yield Swept(trial, app, Api(trial), numbers, arms, unblinded, sw.ArmDetector.of())
    trial.runtime.close()


def blinded_users() -> list[str]:
    users = [role.value for role in Role if role in BLINDED_ROLES]
    assert len(users) == 5  # admin, manager, coordinator, CRC, monitor (SYSTEM.md §1)
    return [*users, *DUAL]


def api_get_urls(s: Swept) -> list[tuple[str, str, dict[str, str]]]:
    """(route, url, query) for every API GET route, every subject, every enumerated option."""
    spec = s.api.client.get("/openapi.json").json()
    urls = []
    for endpoint in sw.api_routes(s.app, {"GET"}):
        numbers = s.numbers if "{number}" in endpoint.path else [""]
        for number in numbers:
            url = sw.fill(endpoint.path, {**sw.API_VALUES, "number": number})
            for query in sw.query_variants(spec, endpoint.path):
                urls.append((endpoint.path, url, query))
    return urls


def test_rand6_no_api_get_route_shows_an_arm_to_a_blinded_role(swept: Swept) -> None:
    """RAND-6, ACC-2: every API GET route, for every subject, as every blinded user."""
    urls = api_get_urls(swept)
    routes = {route for route, _u, _q in urls}
    assert len(routes) >= 25 and any("{number}" in r for r in routes)
    leaks: list[str] = []
    answered: set[str] = set()
    for user in blinded_users():
        headers = swept.api.headers(user)
        for route, url, query in urls:
            response = swept.api.client.get(url, params=query, headers=headers)
            assert response.status_code < 500, (user, url, query, response.text)
            if response.status_code == 200:
                answered.add(route)
            found = swept.detector.in_response(
                response.headers.get("content-type", ""),
                response.content,
            )
            if found:
                leaks.append(f"{user} GET {url} {query}: {found}")
    assert not leaks, "\n".join(leaks[:40])
    assert len(answered) >= 20  # the sweep read real answers, not only refusals


def test_rand6_no_page_shows_an_arm_to_a_blinded_role(swept: Swept) -> None:
    """RAND-6, ACC-2: every page (subject pages for every subject, every form and visit page,
    every report download) as every blinded user."""
    urls = list(sw.web_urls(swept.app, swept.numbers))
    assert len({route for route, _u in urls}) >= 12
    leaks: list[str] = []
    for user in blinded_users():
        browser = signed_in(swept.trial, user)
        for _route, url in urls:
            response = browser.get(url)
            assert response.status_code < 500, (user, url, response.text[-300:])
            found = swept.detector.in_response(
                response.headers.get("content-type", ""), response.content
            )
            if found:
                leaks.append(f"{user} {url}: {found}")
    assert not leaks, "\n".join(leaks[:40])


def export_urls(s: Swept) -> list[str]:
    urls = [
        sw.fill(e.path, sw.API_VALUES)
        for e in sw.api_routes(s.app, {"POST"})
        if "/exports/" in e.path
    ]
    assert len(urls) >= 3  # CSV, ODM, SDTM (EXP-1)
    return urls


SUBMISSION_FILES = {
    "define.xml", "define.html", "acrf.html", "dm.xpt", "ds.xpt", "sv.xpt", "ae.xpt", "mh.xpt",
    "qs.xpt", "cv.xpt", "vs.xpt", "pr.xpt", "te.xpt", "tv.xpt", "ti.xpt", "ts.xpt",
}  # fmt: skip
"""The blinded SDTM export's files (issue 16) this sweep must have read; the ADaM route is
swept too and refused to every blinded role."""


SWEPT_EXPORT_FILES = {
    "odm.xml",
    "odm_audit.xml",  # issue 16 (x16b): the transactional ODM audit trail
}
"""Files the export sweep must have read (a new export file is added here)."""


def test_rand6_no_export_file_names_an_arm_for_a_blinded_role(swept: Swept) -> None:
    """RAND-6, EXP-1: every file of every export (SAS XPORT read back into rows) as every
    blinded user; asking for an unblinded export is refused without an arm in the refusal."""
    leaks: list[str] = []
    exported = 0
    swept_files: set[str] = set()
    for user in blinded_users():
        headers = swept.api.headers(user)
        for url in export_urls(swept):
            for unblinded in (False, True):
                response = swept.api.client.post(
                    url, params={"unblinded": unblinded}, headers=headers
                )
                if unblinded:
                    assert response.status_code == 403, (user, url, response.status_code)
                assert response.status_code in (200, 403), (user, url, response.text)
                if response.status_code != 200:
                    found = swept.detector.in_text(response.text)
                    leaks += [f"{user} {url} refusal: {found}"] if found else []
                    continue
                exported += 1
                for name, text in sw.export_files(response.content).items():
                    swept_files.add(name)
                    found = swept.detector.in_text(text)
                    if found:
                        leaks.append(f"{user} {url} {name}: {found}")
    assert not leaks, "\n".join(leaks)
    assert exported >= 6  # manager and monitor export, each kind
    assert swept_files >= SUBMISSION_FILES, SUBMISSION_FILES - swept_files
    assert swept_files >= SWEPT_EXPORT_FILES, SWEPT_EXPORT_FILES - swept_files


def test_rand6_the_detector_finds_the_arms_an_unblinded_reader_is_shown(swept: Swept) -> None:
    """The sweeps can fail: the statistician's answers on the same routes, pages and the
    unblinded export do carry arms (codes, labels, structure and list detail)."""
    headers = swept.api.headers("statistician")
    api_hits: set[str] = set()
    for _route, url, query in api_get_urls(swept):
        response = swept.api.client.get(url, params=query, headers=headers)
        api_hits.update(
            swept.detector.in_response(response.headers.get("content-type", ""), response.content)
        )
    assert {"INT", "CTRL"} <= api_hits
    assert any(hit.startswith("arm=") for hit in api_hits)

    browser = signed_in(swept.trial, "statistician")
    page_hits: set[str] = set()
    for number in swept.arms:
        page_hits.update(swept.detector.in_text(browser.get(f"/subjects/{number}").text))
    assert {"INT", "CTRL"} <= page_hits

    export = swept.api.client.post(
        export_urls(swept)[0], params={"unblinded": True}, headers=headers
    )
    assert export.status_code == 200
    texts = "\n".join(sw.export_files(export.content).values())
    assert {"INT", "CTRL"} <= set(swept.detector.in_text(texts))


def test_rand7_own_site_sees_the_arm_after_unblinding_other_sites_do_not(swept: Swept) -> None:
    """RAND-7: the S102 subject unblinded after M24 shows its arm to S102's coordinator; the
    study-wide blinded roles read the same subject without it (swept above)."""
    number = swept.unblinded
    headers = {"Authorization": f"Bearer {swept.api.token('coordinator-s102')}"}
    seen = swept.api.client.get(f"{sw.API}/studies/FLAGSHIP/subjects/{number}", headers=headers)
    assert seen.json()["arm"]["code"] == swept.arms[number]
    for user in blinded_users():
        assert swept.api.get(user, f"/subjects/{number}").json().get("arm") is None
