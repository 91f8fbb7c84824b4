"""The hard database lock sweep (REC-5, Must show): after the hard lock, every mutating route
of the API and every form POST of the pages, enumerated from the app, called by every role
the authorisation sweep allows on it, is refused and changes nothing (row counts and highest
ids of every table the same before and after, the audit trail included). The few routes that
are not data of the trial are listed in UNLOCKED with the reason; a new route fails until it
is refused by the lock or listed there. The CLI calls the same services (tests/e2e/
test_cli_records.py checks a CLI write is refused by the same lock).

SQLite only: the lock guard itself runs on both databases in
tests/integration/test_records_hold.py.
"""

from __future__ import annotations

import pytest

from tests.e2e import sweep_support as sw
from tests.e2e.test_sweep_authorisation import (  # noqa: F401  (setup is a fixture)
    ALLOWED,
    STUDY,
    Setup,
    _call,
    mutating,
    setup,
)
from tests.factory import hard_lock

UNLOCKED: dict[tuple[str, str], str] = {
    ("POST", f"{STUDY}/trial-unblinding/request"): "trial unblinding follows the hard lock",
    ("POST", f"{STUDY}/trial-unblinding/confirm"): "trial unblinding follows the hard lock",
    ("POST", f"{STUDY}/subjects/{{number}}/emergency-unblind"): "a patient's safety never "
    "waits for a lock (domain/locks.py)",
    ("POST", "/subjects/{number}/emergency-unblind"): "a patient's safety never waits for a "
    "lock (domain/locks.py)",
    ("POST", f"{STUDY}/notifications/{{notification_id}}/read"): "the reader's own mark",
    ("POST", f"{STUDY}/exports/csv"): "an export reads the locked data",
    ("POST", f"{STUDY}/exports/odm"): "an export reads the locked data",
    ("POST", f"{STUDY}/exports/sdtm"): "an export reads the locked data",
    ("POST", "/statistician/design"): "a design assessment writes no trial data",
    ("POST", f"{STUDY}/protocol/amendments/preview"): "a preview writes nothing",
    ("POST", "/protocol/preview"): "a preview writes nothing",
}
"""Routes the hard lock does not refuse, and why."""

NOT_TRIAL_DATA: dict[str, str] = {
    "/exports": "an export reads the locked data (its disclosure entry is not trial data)",
    "/lists": "allocation list custody (RAND-3) is the statistician's, not trial data",
    "/statistician/lists": "allocation list custody (RAND-3)",
    "/devices": "device accountability (SUP-1) goes on after the data lock",
    "/supply": "device accountability (SUP-1) goes on after the data lock",
    "/protocol/amend": "a protocol amendment changes no recorded value",
    "/protocol/amendments": "a protocol amendment changes no recorded value",
    "/admin": "user and site administration is not trial data",
    "/invitations": "user administration",
    "/users": "user administration",
    "/approvals": "access approvals (issue 12)",
    "/account/approvals": "access approvals (issue 12)",
}
"""Route families (by path prefix, with or without the API's study prefix) outside the
trial's data: the hard lock does not refuse them."""


def _unlocked(method: str, path: str) -> str | None:
    if (method, path) in UNLOCKED:
        return UNLOCKED[(method, path)]
    tail = path.removeprefix(STUDY)
    for prefix, why in NOT_TRIAL_DATA.items():
        if tail.startswith(prefix):
            return why
    return None


@pytest.fixture(scope="module")
def locked(setup: Setup) -> Setup:  # noqa: F811
    hard_lock(setup.trial)
    return setup


def test_rec5_after_the_hard_lock_every_write_path_is_refused(locked: Setup) -> None:
    """REC-5 (Must show): every mutating route, every allowed role: nothing written. Calls
    that would write with the fixture's subject (registration, corrections, visits, exits,
    therapies, queries, CRC decisions, SDV, signatures, locks) are refused by the lock itself
    (``record-locked``, 409, naming the hard database lock); the rest are refused before it
    by the subject's state or the input, as they are without the lock."""
    problems: list[str] = []
    by_lock: set[str] = set()
    others: list[str] = []
    swept = 0
    for endpoint in mutating(locked.app):
        if _unlocked(endpoint.method, endpoint.path) is not None:
            continue
        swept += 1
        for role in sorted(ALLOWED.get((endpoint.method, endpoint.path), frozenset())):
            before = sw.digest(locked.trial)
            response = _call(locked, endpoint, role)
            where = f"{role} {endpoint.method} {endpoint.path}: {response.status_code}"
            if sw.digest(locked.trial) != before:
                problems.append(f"{where} changed the database {response.text[:160]}")
            elif response.status_code < 400 and response.status_code not in (302, 303):
                problems.append(f"{where} accepted {response.text[:160]}")
            if "record-locked" in response.text or "hard database lock" in response.text:
                by_lock.add(f"{endpoint.method} {endpoint.path}")
            else:
                others.append(where)
    assert swept > 40
    assert not problems, "\n".join(problems)
    api = "POST /api/v1/studies/{study}"
    must = {
        "POST /subjects",
        "POST /subjects/{number}/visits/{code}/missed",
        f"{api}/subjects",
        f"{api}/subjects/{{number}}/corrections",
        f"{api}/subjects/{{number}}/therapies",
        f"{api}/subjects/{{number}}/visits/{{code}}/missed",
        f"{api}/subjects/{{number}}/withdraw",
        f"{api}/subjects/{{number}}/death",
        f"{api}/subjects/{{number}}/randomized-in-error",
        f"{api}/queries/{{query_id}}/answer",
        f"{api}/crc/cases/{{case_id}}/decision",
        f"{api}/subjects/{{number}}/sdv",
        f"{api}/subjects/{{number}}/signatures",
        f"{api}/subjects/{{number}}/locks",
        f"{api}/quality/run",  # a run opens queries: refused even when it would find nothing
        "POST /quality/run",
    }
    assert must <= by_lock, f"not refused by the lock: {sorted(must - by_lock)}; {others}"
