"""Every API route, swept for access (ACC-1, LIFE-1): without a token it is 401; every
subject route asked about another site's subject is 404 (existence never leaks); every subject
action by a role that may not take it is refused (403) and writes nothing.

Request bodies are the smallest ones the OpenAPI schema accepts, so a refusal comes from the
services' access rules and not from body validation.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from tests import journey as j
from tests.conftest import Trial
from tests.e2e.test_api_support import API, Api
from trialdesk.store.audit import verify_chain
from trialdesk.store.tables import Base


def _resolve(schema: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = spec["components"]["schemas"][name]
    return schema


def minimal(schema: dict[str, Any], spec: dict[str, Any]) -> Any:
    """The smallest value a JSON schema (as FastAPI writes it) accepts."""
    schema = _resolve(schema, spec)
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            options = [_resolve(s, spec) for s in schema[key]]
            non_null = [s for s in options if s.get("type") != "null"]
            return minimal((non_null or options)[0], spec)
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        return {name: minimal(props[name], spec) for name in schema.get("required", [])}
    if kind == "array":
        return []
    if kind == "string":
        fmt = schema.get("format")
        if fmt == "date":
            return "2027-02-15"
        if fmt == "date-time":
            return "2027-02-15T12:00:00Z"
        return "x" * max(1, int(schema.get("minLength", 1)))
    if kind == "integer":
        return int(schema.get("minimum", 1))
    if kind == "number":
        return float(schema.get("minimum", 1))
    if kind == "boolean":
        return True
    return {}


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    ops = []
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method in {"get", "post", "put", "patch", "delete"}:
                ops.append((method, path, op))
    return ops


def _body(op: dict[str, Any], spec: dict[str, Any]) -> Any:
    content = op.get("requestBody", {}).get("content", {})
    schema = content.get("application/json", {}).get("schema")
    return minimal(schema, spec) if schema is not None else None


def _fill(path: str, number: str) -> str:
    values = {
        "study": "FLAGSHIP",
        "number": number,
        "code": "M1",
        "form": "nyha",
        "criterion": "INC-8",
        "case_id": "1",
        "query_id": "1",
        "id": "1",
        "notification_id": "1",
    }
    for name, value in values.items():
        path = path.replace("{" + name + "}", value)
    return path


def _state(t: Trial) -> dict[str, int]:
    """Row counts of the trial's data; refused attempts may add audit entries (CRC)."""
    with t.ctx.uow(readonly=True) as uow:
        assert verify_chain(uow.session).ok
        return {
            table.name: int(uow.session.scalar(select(func.count()).select_from(table)) or 0)
            for table in Base.metadata.sorted_tables
            if table.name
            not in {"audit_entries", "audit_heads", "users", "auth_tokens", "signin_throttle"}
        }


def test_acc1_every_route_refuses_without_token_and_hides_other_sites(trial: Trial) -> None:
    api = Api(trial)
    spec = api.client.get("/openapi.json").json()
    mine = j.procedure_done(trial)[0]
    other = j.procedure_done(trial, "S102")[0]
    ops = _operations(spec)
    assert len(ops) > 40
    before = _state(trial)
    subject_ops = not_found = 0
    for method, path, op in ops:
        if path.startswith((f"{API}/auth/", f"{API}/account/")):
            continue  # sign-in, and the links whose token is the proof (issue 12)
        url = _fill(path, mine)
        body = _body(op, spec)
        anonymous = api.client.request(method.upper(), url, json=body)
        assert anonymous.status_code == 401, (method, path, anonymous.status_code)
        if "{number}" in path:
            subject_ops += 1
            response = api.client.request(
                method.upper(),
                _fill(path, other),
                json=body,
                headers=api.headers("coordinator"),
            )
            assert response.status_code in (403, 404), (method, path, response.text)
            not_found += response.status_code == 404
            ghost = api.client.request(
                method.upper(),
                _fill(path, "S102-9999"),
                json=body,
                headers=api.headers("coordinator"),
            )
            # the same answer as for a subject that does not exist at all
            assert response.text.replace(other, "?") == ghost.text.replace("S102-9999", "?")
    assert subject_ops > 25
    assert not_found >= subject_ops - 2  # a role refusal (CRC-only) is the same for any subject
    assert _state(trial) == before


def test_acc1_every_subject_action_refused_for_a_role_that_may_not_take_it(
    trial: Trial,
) -> None:
    """The DSMB reads but never acts on a subject: every subject POST is 403, nothing written."""
    api = Api(trial)
    spec = api.client.get("/openapi.json").json()
    number = j.procedure_done(trial)[0]
    before = _state(trial)
    refused = 0
    for method, path, op in _operations(spec):
        if method != "post" or "{number}" not in path:
            continue
        response = api.client.post(
            _fill(path, number), json=_body(op, spec), headers=api.headers("dsmb")
        )
        assert response.status_code == 403, (path, response.status_code, response.text)
        refused += 1
    assert refused > 20
    assert _state(trial) == before
