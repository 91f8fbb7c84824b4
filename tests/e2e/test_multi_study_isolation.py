"""Two studies in one installation (PROT-1) through every adapter: every API route, every
page, every report and export and every command with ``--study``.

Study A is the flagship, study B a second protocol with overlapping site codes and subject
numbers (tests/multi_study.py). For a user of A only, one per kind of scope (site
coordinator, study manager, unblinded statistician):

- anything addressed to study B answers exactly as for a study that does not exist (404 from
  the API, 'not found' from a page or a command): B's existence is not revealed, and nothing
  is written in B;
- everything of study A (JSON, pages, CSV, SVG, export archives, command output) holds
  nothing of B: no B-only subject number, site, user, study code or name, and A's counts.

The web header shows the study; a user of several studies gets a switcher, whose POST
(/study, with the session's CSRF token) moves only to a study the user holds a role in.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.routing import APIRoute
from sqlalchemy import func, select

from tests import multi_study as ms
from tests.conftest import Database, Trial, build_trial, flagship
from tests.e2e.test_api_access_sweep import _body, _operations
from tests.e2e.test_api_support import API, Api
from tests.e2e.test_web_pages import csrf_of, signed_in
from trialdesk.services import admin
from trialdesk.services.access import operator_actor
from trialdesk.store.tables import AuditEntryRow, Base
from trialdesk.web import (
    admin_pages,
    crc_pages,
    report_pages,
    signin_pages,
    statistician_pages,
    subject_pages,
)
from trialdesk.web.report_pages import REPORT_DOWNLOADS

SCOPED = ("coordinator", "manager", "statistician")
"""One user of study A per kind of scope: site-scoped, study-wide blinded, unblinded."""

PATH_VALUES = {
    "number": "S101-0001",
    "code": "M1",
    "form": "nyha",
    "criterion": "INC-8",
    "case_id": "1",
    "query_id": "1",
    "id": "1",
    "notification_id": "1",
}
QUICK = {"simulations": 200, "seed": 1}
"""Query parameters for the forecast routes (ignored by the others)."""


@pytest.fixture
def two(database: Database, tmp_path: Path) -> Iterator[ms.TwoStudies]:
    a = build_trial(database, tmp_path, flagship())
    yield ms.two_studies(a)
    a.runtime.close()


def _fill(path: str, study: str) -> str:
    path = path.replace("{study}", study)
    for name, value in PATH_VALUES.items():
        path = path.replace("{" + name + "}", value)
    return path


def _state(t: Trial) -> tuple[dict[str, int], int]:
    """Row counts of the data tables and the last audit entry's id."""
    with t.ctx.uow(readonly=True) as uow:
        counts = {
            table.name: int(uow.session.scalar(select(func.count()).select_from(table)) or 0)
            for table in Base.metadata.sorted_tables
            if table.name not in {"audit_entries", "audit_heads", "auth_tokens", "signin_throttle"}
        }
        last = int(uow.session.scalar(select(func.max(AuditEntryRow.id))) or 0)
    return counts, last


def _nothing_written(t: Trial, before: tuple[dict[str, int], int]) -> None:
    """No data row changed; new audit entries (sign-ins, refused CRC attempts) are in the
    users' own streams only, never in a stream of a study or a subject."""
    counts, _last = _state(t)
    assert counts == before[0]
    with t.ctx.uow(readonly=True) as uow:
        streams = set(
            uow.session.scalars(select(AuditEntryRow.stream).where(AuditEntryRow.id > before[1]))
        )
    assert all(s.startswith("user:") for s in streams), streams


def _archive_text(content: bytes) -> str:
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        return "\n".join(
            archive.read(name).decode("utf-8", errors="replace") for name in archive.namelist()
        )


# --------------------------------------------------------------------------- API


def test_prot1_every_api_route_hides_study_b_from_users_of_a(two: ms.TwoStudies) -> None:
    """PROT-1: every route of study B is a 404 identical to an unknown study's for each kind of
    A user, nothing is written; every read of A and A's exports hold nothing of B."""
    a = two.a
    api = Api(a)
    spec = api.client.get("/openapi.json").json()
    ops = [(m, p, op) for m, p, op in _operations(spec) if not p.startswith(f"{API}/auth/")]
    study_ops = [(m, p, op) for m, p, op in ops if "{study}" in p]
    assert len(study_ops) > 50
    before = _state(a)
    for role in SCOPED:
        headers = api.headers(role)
        for method, path, op in study_ops:
            body = _body(op, spec)
            hidden = api.client.request(
                method.upper(), _fill(path, ms.B_CODE), json=body, headers=headers, params=QUICK
            )
            unknown = api.client.request(
                method.upper(), _fill(path, "NOSUCH"), json=body, headers=headers, params=QUICK
            )
            assert hidden.status_code == 404, (role, method, path, hidden.text)
            assert hidden.text.replace(ms.B_CODE, "?") == unknown.text.replace("NOSUCH", "?")
    _nothing_written(a, before)

    answered = 0
    for role in SCOPED:
        headers = api.headers(role)
        listed = api.client.get(f"{API}/studies", headers=headers).json()
        assert [s["code"] for s in listed["items"]] == ["FLAGSHIP"]
        for method, path, op in ops:
            is_export = method == "post" and "/exports/" in path
            if method != "get" and not is_export:
                continue
            response = api.client.request(
                method.upper(),
                _fill(path, "FLAGSHIP"),
                json=_body(op, spec) if is_export else None,
                headers=headers,
                params=QUICK,
            )
            assert response.status_code < 500, (role, path, response.text)
            text = response.text
            if is_export and response.status_code == 200:
                text = _archive_text(response.content)
                assert "S101-0001" in text, path  # A's subject is in A's export
            assert not ms.leaks(text), (role, method, path, ms.leaks(text))
            answered += response.status_code == 200
    assert answered > 40

    mine = api.client.get(
        f"{API}/studies/FLAGSHIP/subjects/S101-0001", headers=api.headers("coordinator")
    )
    assert mine.json()["protocol_version"] == "1.0"  # A's S101-0001, not B's
    enrolment = api.client.get(
        f"{API}/studies/FLAGSHIP/reports/enrolment", headers=api.headers("manager"), params=QUICK
    ).json()
    assert enrolment["registered"] == ms.A_REGISTERED
    assert enrolment["randomized"] == ms.A_RANDOMIZED


# --------------------------------------------------------------------------- pages


def _page_urls() -> list[str]:
    """Every GET page of the web router, its path parameters filled for study A."""
    urls = []
    modules = (signin_pages, subject_pages, crc_pages, report_pages, admin_pages)
    for route in [r for m in (*modules, statistician_pages) for r in m.router.routes]:
        assert isinstance(route, APIRoute)
        if "GET" not in (route.methods or set()) or route.path in {
            "/",
            "/signin",
            "/static/site.css",
        }:
            continue
        if route.path == "/reports/{filename}":
            urls += [f"/reports/{n}.{ext}" for n in REPORT_DOWNLOADS for ext in ("json", "csv")]
            continue
        urls.append(_fill(route.path.replace("/forms/{code}", "/forms/nyha"), "FLAGSHIP"))
    return urls


def test_prot1_pages_show_nothing_of_b_and_the_switcher_moves_only_to_own_studies(
    two: ms.TwoStudies,
) -> None:
    """PROT-1: every page, report download and figure seen by a user of A holds nothing of B;
    the header names study A without a switcher; POST /study to B is 'not found' and leaves
    the session in A. A user of both studies gets the switcher and moves between them; when
    its role in the session's study is revoked, its next page is in its other study."""
    a, b = two.a, two.b
    for role in SCOPED:
        c = signed_in(a, role)
        urls = _page_urls()
        assert len(urls) > 15
        shown = 0
        for url in urls:
            response = c.get(url)
            assert response.status_code < 500, (role, url)
            assert not ms.leaks(response.text), (role, url, ms.leaks(response.text))
            shown += response.status_code == 200
        assert shown >= 5, role
        home = c.get("/home").text
        assert "Study FLAGSHIP" in home
        assert 'action="/study"' not in home  # one study: no switcher
        before = _state(a)
        token = csrf_of(c)
        for code in (ms.B_CODE, "NOSUCH"):
            refused = c.post("/study", data={"study": code, "csrf_token": token})
            assert refused.status_code == 404
            assert ms.B_CODE not in refused.text.replace(f"study {code} not found", "")
        assert c.post("/study", data={"study": "FLAGSHIP"}).status_code == 403  # no CSRF
        # still in its own study: its subjects listed (Home shows counts), its study named
        assert "S101-0001" in c.get("/subjects").text and "Study FLAGSHIP" in c.get("/home").text
        _nothing_written(a, before)

    admin.grant_role(a.ctx, operator_actor(), b.study_id, "manager", "manager")
    c = signed_in(a, "manager")
    home = c.get("/home").text
    assert 'action="/study"' in home
    assert f'<option value="{ms.B_CODE}">' in home and "Study FLAGSHIP" not in home
    token = csrf_of(c)
    moved = c.post("/study", data={"study": ms.B_CODE, "csrf_token": token})
    assert moved.status_code == 303
    now_b = c.get("/home").text
    assert f'<option value="{ms.B_CODE}" selected>' in now_b
    assert "S101-0002" in c.get("/subjects").text  # study B's subjects, once moved there
    assert c.post("/study", data={"study": "FLAGSHIP", "csrf_token": token}).status_code == 303
    assert "S101-0002" not in c.get("/subjects").text

    # a session left in a study whose role is revoked since falls back to an own study
    assert c.post("/study", data={"study": ms.B_CODE, "csrf_token": token}).status_code == 303
    admin.revoke_role(a.ctx, operator_actor(), b.study_id, "manager", "manager")
    home = c.get("/home")
    assert home.status_code == 200
    assert not ms.leaks(home.text)
    assert "Study FLAGSHIP" in home.text
