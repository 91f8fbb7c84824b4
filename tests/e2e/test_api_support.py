"""Shared helpers of the API tests (no tests here): a TestClient over the trial's runtime and
bearer-token headers for the demo users."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.conftest import PASSWORD, Trial
from trialdesk.bootstrap import create_app

API = "/api/v1"
STUDY = f"{API}/studies/FLAGSHIP"


class Api:
    """A client for the trial; a token per user is reused while the test clock stands still
    (tests move the clock by days, beyond a token's 8 hours)."""

    def __init__(self, trial: Trial) -> None:
        self.trial = trial
        self.client = TestClient(create_app(trial.runtime))
        self.tokens: dict[tuple[str, object], str] = {}

    def token(self, username: str) -> str:
        key = (username, self.trial.clock.now)
        if key not in self.tokens:
            response = self.client.post(
                f"{API}/auth/token", json={"username": username, "password": PASSWORD}
            )
            assert response.status_code == 200, response.text
            self.tokens[key] = response.json()["access_token"]
        return self.tokens[key]

    def headers(self, username: str, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(username)}", **extra}

    def get(self, username: str, path: str, **params: Any) -> Any:
        return self.client.get(STUDY + path, headers=self.headers(username), params=params)

    def post(self, username: str, path: str, body: Any = None, **headers: str) -> Any:
        return self.client.post(STUDY + path, headers=self.headers(username, **headers), json=body)


def problem_code(response: Any) -> str:
    """The stable refusal code of a problem response (checked against its ``type``)."""
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    body = response.json()
    assert body["type"].endswith("/" + body["code"])
    return str(body["code"])
