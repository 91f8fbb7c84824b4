"""The HTTP layer against hostile input (issue 12, Deliver 9): a configurable request-size
limit, no 500 from deeply nested JSON, HSTS by setting, no server banner from `trialdesk
serve`, the API docs from local assets with no inline script, and every CSV the system writes
neutralising spreadsheet formulas.

Found: 30 MB bodies were parsed; deeply nested JSON to /api/v1/auth/token gave 500;
/api/docs loaded Swagger UI from a CDN, blocked by the site's own CSP; no HSTS option;
``server: uvicorn``; the CSV export wrote ``=HYPERLINK(...)`` and ``@SUM(...)`` unchanged."""

from __future__ import annotations

import csv
import dataclasses
import io
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tests import journey as j
from tests.conftest import Trial
from tests.e2e.sweep_support import digest
from tests.e2e.test_api_support import Api
from tests.server import Server
from trialdesk.bootstrap import create_app
from trialdesk.cli.main import build_app
from trialdesk.reports.csv_cells import FORMULA_START
from trialdesk.services import data_queries, followup

INJECTIONS = ('=HYPERLINK("http://evil.example/x","open")', "@SUM(1+1)*cmd|' /C calc'!A0")


def _client(trial: Trial, **settings: object) -> TestClient:
    ctx = trial.runtime.context
    ctx.settings = dataclasses.replace(ctx.settings, **settings)  # type: ignore[arg-type]
    return TestClient(create_app(trial.runtime), raise_server_exceptions=False)


def test_request_bodies_over_the_configured_limit_are_refused_unread(trial: Trial) -> None:
    """A body larger than ``max_request_bytes`` is 413 (a problem document with the security
    headers), whether its length is declared or it arrives in chunks; nothing is written."""
    client = _client(trial, max_request_bytes=4096)
    before = digest(trial)
    body = b'{"username": "' + b"x" * 5000 + b'", "password": "y"}'
    declared = client.post("/api/v1/auth/token", content=body)
    assert declared.status_code == 413, declared.text
    assert declared.json()["code"] == "request-too-large"
    assert declared.headers["x-frame-options"] == "DENY"

    def chunks() -> Iterator[bytes]:
        for _ in range(5):
            yield b" " * 1024

    streamed = client.post(
        "/api/v1/auth/token", content=chunks(), headers={"content-type": "application/json"}
    )
    assert streamed.status_code == 413
    page = client.post("/signin", content=b"username=" + b"a" * 5000)
    assert page.status_code == 413
    assert digest(trial) == before
    small = client.post("/api/v1/auth/token", json={"username": "coordinator", "password": "x"})
    assert small.status_code == 401


@pytest.mark.parametrize(
    "body",
    [
        "[" * 100_000 + "]" * 100_000,
        '{"a":' * 5_000 + "1" + "}" * 5_000,
        '{"username": ' + "[" * 3_000 + "]" * 3_000 + ', "password": "x"}',
    ],
)
def test_deeply_nested_json_is_a_clear_refusal_never_a_500(trial: Trial, body: str) -> None:
    client = _client(trial)
    api = Api(trial)
    headers = {"content-type": "application/json", **api.headers("coordinator")}
    for path in (
        "/api/v1/auth/token",
        "/api/v1/studies/FLAGSHIP/subjects",
        "/api/v1/studies/FLAGSHIP/queries",
    ):
        response = client.post(path, content=body, headers=headers)
        assert 400 <= response.status_code < 500, (path, response.status_code, response.text)


def test_hsts_is_sent_only_when_configured(trial: Trial) -> None:
    assert "strict-transport-security" not in _client(trial).get("/signin").headers
    sent = _client(trial, hsts_seconds=31_536_000).get("/signin")
    assert sent.headers["strict-transport-security"] == "max-age=31536000; includeSubDomains"


def test_api_docs_page_uses_only_same_origin_files_and_no_inline_script(trial: Trial) -> None:
    client = _client(trial)
    page = client.get("/api/docs")
    assert page.status_code == 200
    assert "script-src 'self'" in page.headers["content-security-policy"]
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page.text, re.S)
    assert scripts and all(not body.strip() for _attrs, body in scripts)
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources and all(s.startswith("/api/docs/assets/") for s in sources), sources
    for source in sources:
        asset = client.get(source)
        assert asset.status_code == 200 and len(asset.content) > 100, source
    assert client.get("/api/docs/assets/../../openapi.json").status_code == 404


def test_serve_sends_no_server_banner(tmp_path: Path) -> None:
    env = {
        "TRIALDESK_DATABASE_URL": f"sqlite:///{tmp_path / 't.db'}",
        "TRIALDESK_ALLOCATION_KEY_FILE": str(tmp_path / "k.key"),
    }
    made = CliRunner().invoke(
        build_app(), ["init", "--demo", "--demo-password", "pw-12345678"], env=env
    )
    assert made.exit_code == 0, made.output
    server = Server(env, tmp_path / "serve.log")
    server.start()
    try:
        response = httpx.get(server.base + "/signin")
    finally:
        server.stop()
    assert response.status_code == 200
    assert "server" not in {name.lower() for name in response.headers}


def _cells(text: str) -> list[str]:
    return [cell for row in csv.reader(io.StringIO(text)) for cell in row]


def test_every_csv_written_neutralises_formulas(trial: Trial) -> None:
    """Text a user typed that a spreadsheet would run as a formula is written with a leading
    apostrophe in the CSV export (every table), the report downloads and the list download."""
    number, _arm = j.procedure_done(trial)
    followup.withdraw(
        trial.ctx,
        trial.actor("coordinator"),
        trial.study_id,
        number,
        withdrawn_on=trial.clock.now.date(),
        reason=INJECTIONS[0],
        follow_up_contact_allowed=False,
    )
    data_queries.raise_query(
        trial.ctx,
        trial.actor("monitor"),
        trial.study_id,
        number,
        form_code="demographics",
        field="age_years",
        text=INJECTIONS[1],
    )
    api = Api(trial)
    files: dict[str, str] = {}
    for user, unblinded in (("monitor", False), ("statistician", True)):
        export = api.client.post(
            "/api/v1/studies/FLAGSHIP/exports/csv",
            params={"unblinded": unblinded},
            headers=api.headers(user),
        )
        assert export.status_code == 200, export.text
        with zipfile.ZipFile(io.BytesIO(export.content)) as archive:
            for name in archive.namelist():
                files[f"{user}/{name}"] = archive.read(name).decode("utf-8")
    lists = api.client.get("/api/v1/studies/FLAGSHIP/lists", headers=api.headers("statistician"))
    list_id = lists.json()["items"][0]["id"]
    download = api.client.get(
        f"/api/v1/studies/FLAGSHIP/lists/{list_id}/download",
        headers=api.headers("statistician"),
    )
    assert download.status_code == 200
    files["list"] = download.text
    cells = [c for text in files.values() for c in _cells(text)]
    for injected in INJECTIONS:
        assert f"'{injected}" in cells, injected
    dangerous = [c for c in cells if c.startswith(FORMULA_START)]
    assert not dangerous, dangerous[:5]
