"""docs/api.md stays true: its ```http examples run, in order, against a fresh demo study, and
each documented status, header and response field must match (LIFE-1, ACC-1, RAND-4, RAND-5,
RAND-6, DATA-1, SIG-1).

A request block (``METHOD PATH``, headers, a blank line, an optional JSON body) is followed by
a response block (``HTTP/1.1 STATUS``, headers, an optional JSON body). Responses in the doc
are subsets: each field shown must be in the real answer with that value, and lists must
have the shown length. A string ``<name>`` in a response binds the real value on first sight
and must equal it afterwards; ``<name>`` in a later request is replaced by that value.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from tests.conftest import PASSWORD, Trial
from trialdesk.bootstrap import create_app
from trialdesk.demo.trial import SimulationConfig, simulate_trial

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "api.md"
DOC_PASSWORD = "trialdesk-demo"
"""The README's demo password, as the doc writes it; the test's users have conftest.PASSWORD."""
PLACEHOLDER = re.compile(r"<([a-z_]+)>")


@dataclass(frozen=True)
class Exchange:
    method: str
    path: str
    headers: dict[str, str]
    body: str
    status: int
    response_headers: dict[str, str]
    response_body: Any


def _split(block: str) -> tuple[str, dict[str, str], str]:
    head, _, body = block.strip("\n").partition("\n\n")
    first, *header_lines = head.splitlines()
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip()] = value.strip()
    return first, headers, body.strip()


def exchanges(text: str) -> list[Exchange]:
    """The doc's request/response pairs, in order; a request without its response fails."""
    blocks = re.findall(r"```http\n(.*?)```", text, flags=re.S)
    found: list[Exchange] = []
    pending: tuple[str, str, dict[str, str], str] | None = None
    for block in blocks:
        first, headers, body = _split(block)
        if first.startswith("HTTP/"):
            assert pending is not None, f"a response with no request before it: {first}"
            method, path, request_headers, request_body = pending
            found.append(
                Exchange(
                    method,
                    path,
                    request_headers,
                    request_body,
                    int(first.split()[1]),
                    headers,
                    json.loads(body) if body else None,
                )
            )
            pending = None
        else:
            assert pending is None, f"request with no documented response: {pending}"
            method, path = first.split(maxsplit=1)
            pending = (method, path, headers, body)
    assert pending is None, f"request with no documented response: {pending}"
    return found


def _fill(text: str, bound: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        assert match.group(1) in bound, f"<{match.group(1)}> used before a response bound it"
        return bound[match.group(1)]

    return PLACEHOLDER.sub(value, text.replace(DOC_PASSWORD, PASSWORD))


def match(documented: Any, actual: Any, bound: dict[str, str], where: str = "$") -> None:
    """Every documented field is in ``actual`` with that value; ``<name>`` binds or compares."""
    if isinstance(documented, dict):
        assert isinstance(actual, dict), f"{where}: expected an object, got {actual!r}"
        for key, value in documented.items():
            assert key in actual, f"{where}.{key}: missing from {sorted(actual)}"
            match(value, actual[key], bound, f"{where}.{key}")
    elif isinstance(documented, list):
        assert isinstance(actual, list), f"{where}: expected a list, got {actual!r}"
        assert len(actual) == len(documented), (
            f"{where}: {len(actual)} items, doc shows {documented}"
        )
        for i, (doc_item, real_item) in enumerate(zip(documented, actual, strict=True)):
            match(doc_item, real_item, bound, f"{where}[{i}]")
    elif isinstance(documented, str) and (name := PLACEHOLDER.fullmatch(documented)):
        assert isinstance(actual, str), f"{where}: expected a string, got {actual!r}"
        expected = bound.setdefault(name.group(1), actual)
        assert actual == expected, f"{where}: <{name.group(1)}> was {expected!r}, now {actual!r}"
    else:
        assert actual == documented, f"{where}: doc says {documented!r}, server says {actual!r}"


def test_the_api_doc_parses_into_pairs_covering_the_quick_start() -> None:
    """The doc shows sign-in, listing, RAND-5 retries, problem details and sign-out."""
    found = exchanges(DOC.read_text(encoding="utf-8"))
    calls = [(e.method, e.path.split("?")[0], e.status) for e in found]
    assert ("POST", "/api/v1/auth/token", 200) in calls
    assert ("GET", "/api/v1/studies/FLAGSHIP/subjects", 200) in calls
    assert ("POST", "/api/v1/auth/revoke", 204) in calls
    keyed = [e for e in found if e.path.endswith("/randomize") and e.status == 200]
    assert len(keyed) == 2 and all("Idempotency-Key" in e.headers for e in keyed)
    assert {e.status for e in found} >= {401, 403, 409, 422}


def test_rand5_acc1_every_api_doc_example_runs_as_documented(trial: Trial) -> None:
    """Each request of docs/api.md, sent in order, gets the documented status, headers and
    fields: the RAND-5 retry returns the same randomization, the ACC-1 refusal is a 403, the
    blinded coordinator reads ``arm: null`` (RAND-6), and a revoked token is a 401."""
    run_the_doc(trial)


def test_the_api_doc_runs_against_a_study_full_of_simulated_subjects(trial: Trial) -> None:
    """Issue 14: the same examples run against a demo study as ``make run`` serves it (a
    simulated trial up to today, the clock at today): no example depends on an empty study,
    a fixed date or the first subject number."""
    today = trial.clock().date()
    config = SimulationConfig(
        subjects=16,
        sites=3,
        seed=2,
        start=today - dt.timedelta(days=300),
        as_of=today,
        screened_per_site_month=3.0,
    )
    summary = simulate_trial(trial.ctx, "FLAGSHIP", config)
    assert summary.registered > 0
    trial.clock.now = dt.datetime.combine(today, dt.time(12, 0), tzinfo=dt.UTC)
    run_the_doc(trial)


def run_the_doc(trial: Trial) -> None:
    client = TestClient(create_app(trial.runtime))
    bound: dict[str, str] = {}
    for step, ex in enumerate(exchanges(DOC.read_text(encoding="utf-8")), start=1):
        label = f"example {step}: {ex.method} {ex.path}"
        headers = {name: _fill(value, bound) for name, value in ex.headers.items()}
        body = _fill(ex.body, bound)
        response = client.request(
            ex.method, _fill(ex.path, bound), headers=headers, content=body or None
        )
        assert response.status_code == ex.status, f"{label}: {response.text}"
        for name, value in ex.response_headers.items():
            assert response.headers.get(name, "").startswith(value), f"{label}: {name}"
        if ex.response_body is not None:
            match(ex.response_body, response.json(), bound, label)
    assert bound["arm_code"] in {"INT", "CTRL"}
