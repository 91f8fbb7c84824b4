"""Shared helpers of the HTTP sweeps (no tests here): one SQLite trial per module, the routes
of the app enumerated from the app itself (so a new route is swept without editing a list),
path parameters filled from the trial, and the arm detector built from the protocol's arms.

The sweeps run over HTTP on SQLite only; the same reads are swept through the services on
SQLite and PostgreSQL by tests/integration/test_blinding_sweep.py and test_exports.py.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyreadstat
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from sqlalchemy import MetaData, func, select

from tests import flagship_data as fd
from tests import journey as j
from tests.arm_text import without_ct_wording
from tests.conftest import PASSWORD, Database, Trial, build_trial, flagship
from trialdesk.services import followup
from trialdesk.store.audit import verify_chain
from trialdesk.store.database import make_engine
from trialdesk.web.report_pages import REPORT_DOWNLOADS

API = "/api/v1"
NOT_SWEPT = {"/openapi.json", "/api/docs", "/api/docs/assets/{name}", "/docs/oauth2-redirect"}
"""The framework's own documentation routes: no study data."""


def sqlite_trial(tmp: Path) -> Trial:
    """A flagship demo study on a SQLite file in ``tmp`` (module-scoped sweeps build one)."""
    url = f"sqlite:///{tmp / 'trial.db'}"
    return build_trial(Database("sqlite", url, make_engine(url)), tmp, flagship())


# --------------------------------------------------------------------------- routes


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str


def app_routes(app: FastAPI) -> list[Endpoint]:
    """Every (method, path) the app answers, from ``app.routes``."""
    found: list[Endpoint] = []
    for route in iter_route_contexts(app.routes):
        if route.path is None or route.path in NOT_SWEPT:
            continue
        for method in sorted(route.methods or ()):
            if method not in {"HEAD", "OPTIONS"}:
                found.append(Endpoint(method, route.path))
    return found


def api_routes(app: FastAPI, methods: set[str]) -> list[Endpoint]:
    return [e for e in app_routes(app) if e.path.startswith(API) and e.method in methods]


def web_routes(app: FastAPI, methods: set[str]) -> list[Endpoint]:
    return [e for e in app_routes(app) if not e.path.startswith("/api/") and e.method in methods]


API_VALUES = {
    "study": "FLAGSHIP",
    "lot": "LOT-1",
    "serial": "SN-1",
    "shipment": "1",
    "amendment_id": "1",
    "code": "M1",
    "form": "tte",
    "criterion": "INC-8",
    "id": "1",
    "case_id": "1",
    "query_id": "1",
    "notification_id": "1",
    "invitation_id": "1",
    "approval_id": "1",
    "decision": "approve",
    "link": "a-link-nobody-was-sent",
    "token": "a-link-nobody-was-sent",
    "list_id": "1",
    "exclusion_id": "1",  # issue 15 (x15b): a data-quality rule exclusion
    "lock_id": "1",  # issue 15: the first record lock (a freeze at unblinding)
}
"""Path parameters of the API other than ``{number}``: the study, a visit, a form, a
criterion, the first record of a kind."""

PATH_PARAM = re.compile(r"\{([^}]+)\}")


def params_of(path: str) -> list[str]:
    return PATH_PARAM.findall(path)


def fill(path: str, values: dict[str, str]) -> str:
    """``path`` with its parameters replaced; a parameter with no value fails the sweep by name
    (a new route needs a filler here, it is never skipped)."""
    missing = [p for p in params_of(path) if p not in values]
    assert not missing, f"{path}: no value for {missing}; add a filler in tests/e2e/sweep_support"
    for name in params_of(path):
        path = path.replace("{" + name + "}", values[name])
    return path


def query_variants(spec: dict[str, Any], path: str, method: str = "get") -> list[dict[str, str]]:
    """No query, then each value of each enumerated query parameter (e.g. ?format=svg)."""
    variants: list[dict[str, str]] = [{}]
    for param in spec["paths"][path][method].get("parameters", []):
        if param.get("in") != "query":
            continue
        schema = _resolve(param.get("schema", {}), spec)
        for option in schema.get("anyOf", [schema]):
            for value in _resolve(option, spec).get("enum", []):
                variants.append({param["name"]: str(value)})
    return variants


def _resolve(schema: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def web_fillers() -> dict[str, list[dict[str, str]]]:
    """Values of the pages' non-subject path parameters, per page route."""
    protocol = flagship().protocol
    screening_forms = sorted(fd.screening_forms())
    return {
        "/subjects/{number}/forms/{code}": [{"code": c} for c in screening_forms],
        "/subjects/{number}/visits/{code}": [{"code": v.code} for v in protocol.visits],
        "/subjects/{number}/visits/{code}/missed": [{"code": "M6"}],
        "/subjects/{number}/forms/{code}/correct": [{"code": "follow_up"}],  # x14a
        "/crc/{number}": [{}],
        "/crc/cases/{case_id}": [{"case_id": str(i)} for i in (1, 2, 3)],
        # the concealed procedure record too: one refusal whatever the arm (RAND-6); the arms'
        # own form names are refused alike, but the refusal repeats the name asked for
        "/subjects/{number}/queries/{form}": [
            {"form": c} for c in [*screening_forms, "index_procedure"]
        ],
        "/reports/{filename}": [
            {"filename": f"{name}.{ext}"} for name in REPORT_DOWNLOADS for ext in ("json", "csv")
        ],
    }


def web_urls(app: FastAPI, numbers: list[str]) -> Iterator[tuple[str, str]]:
    """(route, url) for every page GET route: each subject page for every number and each
    form or visit page for every code, paired round-robin (every subject and every code is
    visited, without the product of both)."""
    fillers = web_fillers()
    for endpoint in web_routes(app, {"GET"}):
        if endpoint.path in {"/signin", "/static/site.css"}:
            continue  # no study data: the sign-in form and the style sheet
        extras = fillers.get(endpoint.path, [{}])
        subjects = numbers if "{number}" in endpoint.path else [""]
        for i in range(max(len(extras), len(subjects))):
            values = {
                **API_VALUES,
                **extras[i % len(extras)],
                "number": subjects[i % len(subjects)],
            }
            yield endpoint.path, fill(endpoint.path, values)


# --------------------------------------------------------------------------- exports


def export_files(content: bytes) -> dict[str, str]:
    """Every file of an export zip as text; SAS XPORT datasets are read back into rows."""
    files: dict[str, str] = {}
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        for name in archive.namelist():
            data = archive.read(name)
            if name.lower().endswith(".xpt"):
                files[name] = _xpt_text(data)
            else:
                files[name] = data.decode("utf-8")
    return files


def _xpt_text(data: bytes) -> str:
    """A SAS XPORT dataset as text: variable names, labels and every row."""
    with tempfile.NamedTemporaryFile(suffix=".xpt") as handle:
        handle.write(data)
        handle.flush()
        frame, meta = pyreadstat.read_xport(handle.name)
    labels = " ".join(str(v) for v in (meta.column_labels or []) if v)
    return f"{' '.join(frame.columns)}\n{labels}\n{frame.to_csv(index=False)}"


# --------------------------------------------------------------------------- the arm detector


ARM_KEYS = {
    "arm",
    "arms",
    "arm_code",
    "arm_label",
    "by_arm",
    "intervention_arm",
    "control_arm",
    "block",
    "block_size",
    "payload",
}
"""JSON keys that carry an allocation or a slot's content (arm, block, block size); a blinded
caller gets them null or empty."""


@dataclass
class ArmDetector:
    """The strings that name an arm, taken from the protocol's arms.

    Codes match as whole tokens (``INT`` never matches inside ``INTEGER`` or ``S101-INT7``'s
    neighbours); labels and the parts of a label (``Intervention``, ``CARILLON implant``,
    ``sham procedure``) match as they are; each arm's procedure form tells the arm as surely
    as its code. A slot's content is ``{"arm", "block", "block_size"}``, so a slot shown in
    clear is caught by its arm code and, in JSON, by its keys (ARM_KEYS). None of these
    strings occurs in other text of the flagship trial; the control run (the same sweep as the
    statistician) checks the detector from the other side.

    A list's fingerprint is not list content: it is shown to auditors to verify a list and
    cannot be inverted (with the default 62-bit random seed).
    """

    codes: list[str]
    texts: list[str]

    @classmethod
    def of(cls) -> ArmDetector:
        arms = flagship().protocol.arms
        texts: set[str] = set()
        for arm in arms:
            texts.add(arm.label)
            head, _, rest = arm.label.partition(" (")
            if rest:
                texts.update({rest.rstrip(")"), head})
            if arm.procedure_form:
                texts.add(arm.procedure_form)
        texts.discard("Control")  # an ordinary word (access control); the full label counts
        return cls(codes=[a.code for a in arms], texts=sorted(texts))

    def in_text(self, text: str) -> list[str]:
        text = without_ct_wording(text)  # CDISC parameter names, the same in every trial
        found = [c for c in self.codes if re.search(rf"(?<![A-Za-z0-9_]){c}(?![A-Za-z0-9_])", text)]
        return found + [t for t in self.texts if t in text]

    def in_response(self, content_type: str, body: bytes) -> list[str]:
        """Text leaks, plus any allocation key with a value in a JSON body (structure)."""
        if content_type.startswith(("image/png", "application/zip")):
            return []  # pixels and archives: the SVG, the JSON and each file are swept instead
        text = body.decode("utf-8", errors="replace")
        found = self.in_text(text)
        if "json" in content_type:
            found += [f"{key}={value!r}" for key, value in arm_values(json.loads(text))]
        return found


def arm_values(data: Any) -> Iterator[tuple[str, Any]]:
    """Every allocation key (ARM_KEYS) in a JSON document whose value is not null or empty."""
    if isinstance(data, dict):
        for key, value in data.items():
            if key in ARM_KEYS and value not in (None, [], {}, ""):
                yield key, value
            yield from arm_values(value)
    elif isinstance(data, list):
        for item in data:
            yield from arm_values(item)


# --------------------------------------------------------------------------- population


def unblinded_at(trial: Trial, site: str) -> tuple[str, str]:
    """A subject of ``site`` whose 24-month evaluation is done and who was unblinded (RAND-7):
    its own site's staff may now see the arm, nobody else."""
    number, arm = j.procedure_done(trial, site)
    coordinator = j.staff(trial, "coordinator", site)
    for code in ("M1", "M6", "M12", "M18", "M24"):
        on = j.visit_dates()[code]
        trial.clock.set_day(on)
        followup.record_visit(
            trial.ctx,
            coordinator,
            trial.study_id,
            number,
            visit_code=code,
            visit_date=on,
            forms=fd.follow_up_forms(on.isoformat()),
        )
    followup.unblind_subject(trial.ctx, coordinator, trial.study_id, number, password=PASSWORD)
    return number, arm


_TABLES: dict[int, MetaData] = {}


def digest(trial: Trial) -> dict[str, tuple[int, int | None]]:
    """Every table (reflected, so new tables count): row count and highest id. The audit
    trail counts every entry except the security log of refused attempts (``*_refused``: a
    refused signature or CRC decision is recorded on purpose). A refused request leaves the
    digest unchanged; :func:`chain_ok` checks the audit chain itself."""
    engine = trial.runtime.engine
    if id(engine) not in _TABLES:
        _TABLES[id(engine)] = MetaData()
        _TABLES[id(engine)].reflect(bind=engine)
    out: dict[str, tuple[int, int | None]] = {}
    with engine.connect() as conn:
        for table in _TABLES[id(engine)].sorted_tables:
            if table.name == "audit_heads":
                continue  # moves with every audit entry, refusal log included
            top = func.max(table.c["id"]) if "id" in table.c else func.count()
            query = select(func.count(), top).select_from(table)
            if table.name == "audit_entries":
                query = query.where(~table.c["action"].like("%\\_refused", escape="\\"))
            count, highest = conn.execute(query).one()
            out[table.name] = (int(count), highest)
    return out


def chain_ok(trial: Trial) -> bool:
    with trial.ctx.uow(readonly=True) as uow:
        return verify_chain(uow.session).ok


READ_DAY = dt.date(2029, 3, 1)
"""The day the sweeps read on: after every event of the populations."""
