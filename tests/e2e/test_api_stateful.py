"""Stateful property-based API check: schemathesis chains calls along the links it infers from
/openapi.json (a registered subject's number feeds the subject routes, a raised query's id the
query routes, ...), as the site coordinator and as the monitor, and no step gets a 5xx or an
answer that does not conform to the schema. Derandomized with a bounded number of scenarios,
so CI runs the same calls every time in a few seconds.

Most links are inferred by schemathesis's dependency analysis (4.x); the subject number's
links (registration -> every subject operation) are added to the fetched document here, so
the API itself carries no test-only annotations.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests import journey as j
from tests.conftest import Trial
from tests.e2e.test_api_support import Api
from trialdesk.bootstrap import create_app

SETTINGS = settings(
    max_examples=25,
    stateful_step_count=6,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


SUBJECTS = "/api/v1/studies/{study}/subjects"


def with_subject_links(spec: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI links to every operation on a subject, from registering one (201) and from the
    subject list (200, its first subject): schemathesis's inference links the study code but
    not the subject number."""
    sources = {
        ("post", "201"): "$response.body#/number",
        ("get", "200"): "$response.body#/items/0/number",
    }
    for (method, status), number in sources.items():
        links = {}
        for path, item in spec["paths"].items():
            if not path.startswith(SUBJECTS + "/{number}"):
                continue
            for target in item:
                pointer = path.replace("~", "~0").replace("/", "~1")
                links[re.sub(r"\W+", "_", f"{target}{path}")] = {
                    "operationRef": f"#/paths/{pointer}/{target}",
                    "parameters": {"study": "$request.path.study", "number": number},
                }
        assert len(links) > 20
        spec["paths"][SUBJECTS][method]["responses"][status]["links"] = links
    return spec


@pytest.mark.parametrize("user", ["coordinator", "monitor"])
def test_api_chained_calls_never_fail_and_conform_to_the_schema(trial: Trial, user: str) -> None:
    """'Bad input gets one clear message', over sequences of linked calls."""
    j.procedure_done(trial)  # a subject with data for the reads to find
    app = create_app(trial.runtime)
    spec = with_subject_links(TestClient(app).get("/openapi.json").json())
    loaded = schemathesis.openapi.from_dict(spec)
    loaded.app = app
    loaded.location = "/openapi.json"
    # the subject's operations: registration feeds them all; every operation alone is
    # already fuzzed by test_api_schemathesis.py
    schema = loaded.include(path_regex="/subjects")
    # valid requests only: a negative case that drops a header we then add, or adds a query
    # parameter FastAPI ignores by design, is not a defect; the 5xx check still runs on all
    schema.config.generation.update(modes=[GenerationMode.POSITIVE])
    bearer = Api(trial).headers(user)
    base = schema.as_state_machine()
    assert schema.statistic.transitions.total > 20  # the links

    calls: list[tuple[str, int]] = []

    class Machine(base):  # type: ignore[valid-type, misc]
        def before_call(self, case: Any) -> None:
            # the one study, and registrations at the user's site, so chains reach the
            # services instead of stopping at a 404 for a generated study code or site
            if case.path_parameters and "study" in case.path_parameters:
                case.path_parameters["study"] = "FLAGSHIP"
            if case.operation.path.endswith("/subjects") and isinstance(case.body, dict):
                case.body["site"] = "S101"

        def after_call(self, response: Any, case: Any) -> None:
            calls.append((case.operation.path, response.status_code))

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"headers": bearer}

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            # schema-valid is not protocol-valid (an unknown therapy type is a 422 problem)
            case.validate_response(
                response, headers=bearer, excluded_checks=[positive_data_acceptance]
            )

    Machine.run(settings=SETTINGS)
    # chains happened: a subject route answered for a subject number that only an earlier
    # response could have supplied (a generated string is never a subject number)
    assert len(calls) > 50
    assert any("{number}" in path and status == 200 for path, status in calls), sorted(set(calls))
