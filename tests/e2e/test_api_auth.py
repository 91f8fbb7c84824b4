"""Bearer tokens for the API: sign-in (form or JSON), 401 problems without, with a revoked or
with an expired token, and study scoping (PROT-1, SIG-1 lockout path is the service's)."""

from __future__ import annotations

from tests.conftest import PASSWORD, Trial
from tests.e2e.test_api_support import API, STUDY, Api, problem_code


def test_acc_token_from_json_and_form_gives_access(trial: Trial) -> None:
    api = Api(trial)
    by_form = api.client.post(
        f"{API}/auth/token", data={"username": "coordinator", "password": PASSWORD}
    )
    assert by_form.status_code == 200
    body = by_form.json()
    assert body["token_type"] == "bearer" and body["access_token"] and body["expires_at"]
    studies = api.client.get(
        f"{API}/studies", headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert studies.status_code == 200
    assert [s["code"] for s in studies.json()["items"]] == ["FLAGSHIP"]
    assert studies.json()["total"] == 1
    assert api.get("coordinator", "").json()["protocol"]["sha256"]
    assert api.get("coordinator", "/protocol").json()["version"]
    assert [s["code"] for s in api.get("coordinator", "/sites").json()["items"]] == ["S101"]


def test_acc_wrong_password_is_401_problem(trial: Trial) -> None:
    api = Api(trial)
    response = api.client.post(
        f"{API}/auth/token", json={"username": "coordinator", "password": "wrong-password"}
    )
    assert response.status_code == 401
    assert problem_code(response) == "authentication-failed"
    assert response.headers["www-authenticate"] == "Bearer"


def test_acc_token_request_without_fields_is_validation_failed(trial: Trial) -> None:
    response = Api(trial).client.post(f"{API}/auth/token", json={"username": "x"})
    assert response.status_code == 422
    assert problem_code(response) == "validation-failed"
    assert "password" in response.json()["errors"]


def test_acc_no_token_or_garbage_token_is_401(trial: Trial) -> None:
    api = Api(trial)
    assert problem_code(api.client.get(f"{API}/studies")) == "authentication-failed"
    response = api.client.get(f"{STUDY}/subjects", headers={"Authorization": "Bearer nonsense"})
    assert response.status_code == 401
    assert problem_code(response) == "authentication-failed"


def test_acc_revoked_token_is_401(trial: Trial) -> None:
    api = Api(trial)
    headers = api.headers("monitor")
    assert api.client.post(f"{API}/auth/revoke", headers=headers).status_code == 204
    response = api.client.get(f"{STUDY}/subjects", headers=headers)
    assert response.status_code == 401
    assert problem_code(response) == "authentication-failed"
    assert api.client.post(f"{API}/auth/revoke", headers=headers).status_code == 401


def test_acc_expired_token_is_401(trial: Trial) -> None:
    api = Api(trial)
    headers = api.headers("monitor")
    assert api.client.get(f"{STUDY}/subjects", headers=headers).status_code == 200
    trial.clock.advance(hours=9)  # API tokens live 8 hours
    response = api.client.get(f"{STUDY}/subjects", headers=headers)
    assert response.status_code == 401
    assert problem_code(response) == "authentication-failed"


def test_prot1_unknown_study_is_404(trial: Trial) -> None:
    api = Api(trial)
    response = api.client.get(f"{API}/studies/OTHER/subjects", headers=api.headers("manager"))
    assert response.status_code == 404
    assert problem_code(response) == "not-found"


def test_api_sets_security_headers_on_problems(trial: Trial) -> None:
    response = Api(trial).client.get(f"{API}/studies")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"
