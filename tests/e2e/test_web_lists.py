"""Lists that scale (issue 14): the subject list searches, filters, sorts and pages in the
repository (no silent cut, no page slicing), the home page summarises by state with links
instead of listing every subject. SQLite and PostgreSQL."""

from __future__ import annotations

import re

import pytest

from tests import factory
from tests import journey as j
from tests.conftest import PASSWORD, Trial
from tests.e2e.test_web_pages import signed_in
from trialdesk.domain.errors import ValidationFailed
from trialdesk.domain.roles import Role
from trialdesk.services import admin
from trialdesk.services.access import operator_actor
from trialdesk.services.queries import list_subjects
from trialdesk.services.setup import create_user

ROW = re.compile(r'<tr><td><a href="/subjects/([^"]+)">')


def test_rep_subject_list_pages_searches_filters_and_sorts(trial: Trial) -> None:
    """Issue 14: 60 subjects at two sites: the list shows 25 per page with the true total,
    the next page continues where the first stopped, the search and the site and state
    filters narrow the total, and sorting by site then descending works."""
    ready = factory.ready_at_sites(trial, ["S101", "S102"], 60)
    registered = j.register(trial, "S102")
    manager = signed_in(trial, "manager")
    first = manager.get("/subjects", params={"per_page": "25"}).text
    assert "Showing 1–25 of 61" in first
    numbers = ROW.findall(first)
    assert numbers == sorted([*ready, registered])[:25]
    second = manager.get("/subjects", params={"per_page": "25", "page": "2"}).text
    assert ROW.findall(second) == sorted([*ready, registered])[25:50]
    assert "Showing 1–1 of 1" in manager.get("/subjects", params={"q": registered}).text
    site = manager.get("/subjects", params={"site": "S102", "per_page": "100"}).text
    assert "of 31" in site and all(n.startswith("S102") for n in ROW.findall(site))
    state = manager.get("/subjects", params={"state": "registered"}).text
    assert ROW.findall(state) == [registered]
    down = manager.get("/subjects", params={"order": "site", "dir": "desc"}).text
    assert ROW.findall(down)[0].startswith("S102")
    assert manager.get("/subjects", params={"order": "arm"}).status_code == 422
    assert manager.get("/subjects", params={"page": "0"}).status_code == 422

    home = manager.get("/home").text
    assert 'href="/subjects?state=awaiting_procedure">awaiting procedure: 60' in home
    assert 'href="/subjects?state=registered">registered: 1' in home
    assert len(re.findall(r'href="/subjects/S10', home)) < 10  # no list of every subject


def test_acc1_subject_list_is_site_scoped_and_validated(trial: Trial) -> None:
    """ACC-1: a site coordinator's list and counts hold only the own site's subjects; an
    unknown sort key is one clear refusal."""
    factory.ready_at_sites(trial, ["S101", "S102"], 6)
    coordinator = signed_in(trial, "coordinator")  # S101
    page = coordinator.get("/subjects").text
    assert "of 3" in page and not re.search(r"/subjects/S102", page)
    assert list_subjects(trial.ctx, trial.actor("manager"), trial.study_id).total == 6
    with pytest.raises(ValidationFailed):
        list_subjects(trial.ctx, trial.actor("manager"), trial.study_id, order="arm")


def test_acc_users_page_pages_filters_and_preselects_no_role(trial: Trial) -> None:
    """Issue 14: with 40 more users the users page shows 25 and the true total, filters by
    name, role, site and status in the service, and no role choice is preselected (an
    invitation or grant needs a role chosen on purpose, never `admin` by default)."""
    for i in range(40):
        create_user(
            trial.ctx,
            operator_actor(),
            trial.study_id,
            username=f"monitor-{i:02d}",
            full_name=f"Monitor {i:02d}",
            password=PASSWORD,
            roles=[(Role.MONITOR, None)],
        )
    total = admin.user_page(trial.ctx, trial.actor("admin"), trial.study_id).total
    admin_page = signed_in(trial, "admin")
    page = admin_page.get("/admin/users").text
    assert f"Showing 1–25 of {total}" in page
    assert page.count('<tr id="user-') == 25
    assert re.search(r'name="role" required><option value="" selected>', page)
    assert "<option>admin</option>" in page and "<option selected>admin" not in page
    found = admin_page.get("/admin/users", params={"q": "Monitor 07"}).text
    assert "Showing 1–1 of 1" in found and 'id="user-monitor-07"' in found
    monitors = admin.user_page(trial.ctx, trial.actor("admin"), trial.study_id, role="monitor")
    assert monitors.total == 41  # the demo monitor and the 40
    assert (
        admin.user_page(
            trial.ctx, trial.actor("admin"), trial.study_id, role="coordinator", site="S101"
        ).total
        >= 1
    )
    inactive = admin.user_page(trial.ctx, trial.actor("admin"), trial.study_id, status="inactive")
    assert inactive.total == 0
    assert admin_page.get("/admin/users", params={"role": "owner"}).status_code == 422


def test_rep3_screening_log_pages_filters_and_links(trial: Trial) -> None:
    """REP-3, issue 14: the screening log is its own paged list (newest first), filtered by
    site, state and number in SQL, each subject a link; roles outside the log are refused."""
    factory.ready_at_sites(trial, ["S101", "S102"], 30)
    newest = j.register(trial, "S102")
    monitor = signed_in(trial, "monitor")
    page = monitor.get("/screening-log", params={"per_page": "25"}).text
    assert "Showing 1–25 of 31" in page
    assert ROW.findall(page)[0] == newest  # newest registration first
    assert "of 16" in monitor.get("/screening-log", params={"site": "S102"}).text
    only = monitor.get("/screening-log", params={"state": "registered"}).text
    assert ROW.findall(only) == [newest]
    assert signed_in(trial, "coordinator").get("/screening-log").status_code == 403
