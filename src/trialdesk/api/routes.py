"""The /api/v1 router; route modules are included here. Every response model is in
:mod:`trialdesk.api.schemas`, and every refusal is a problem document (api/problems.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from trialdesk.api import (
    routes_accounts,
    routes_audit,
    routes_auth,
    routes_devices,
    routes_followup,
    routes_locks,
    routes_protocol,
    routes_records,
    routes_reports,
    routes_review,
    routes_studies,
    routes_subjects,
    routes_unblinded,
)
from trialdesk.api.schemas import Problem

_PROBLEM: dict[str, Any] = {
    "model": Problem,
    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
}
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {**_PROBLEM, "description": what}
    for status, what in (
        (401, "not signed in, or the token is expired or revoked"),
        (403, "the caller's role does not allow this (code forbidden or blinded)"),
        (404, "not found, or out of the caller's scope"),
        (409, "not allowed in the subject's state, a precondition, or a conflict"),
        (422, "invalid input; 'errors' maps each field to its message"),
    )
}

router = APIRouter(responses=PROBLEM_RESPONSES)
for module in (
    routes_auth,
    routes_accounts,
    routes_studies,
    routes_subjects,
    routes_followup,
    routes_review,
    routes_unblinded,
    routes_reports,
    routes_devices,
    routes_protocol,
    routes_audit,
    routes_records,  # issue 15 (x15b)
    routes_locks,  # issue 15, lane x15a
):
    router.include_router(module.router)
