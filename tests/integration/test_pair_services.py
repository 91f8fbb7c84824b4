"""The pair sweep through the services, on SQLite and PostgreSQL (RAND-6, SUP-2, AUD-1): the
two worlds of tests/e2e/pair_support.py (A implanted with SN000123 in X, sham in Y; B the
other arm), every read service of the blinding sweep, the audit trail and subject histories,
every blinded export file, and the supply and subject actions a blinded role may attempt on
the pair's subjects and devices: every blinded role's result or refusal is the same in both
worlds. The HTTP layer (every route and page) is swept in tests/e2e/test_pair_sweep.py.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import POSTGRES_URL, Database, require_postgres
from tests.e2e import pair_support as ps
from tests.integration.test_blinding_sweep import READ_CALLS, dump
from trialdesk.domain.errors import TrialError
from trialdesk.services import (
    audit_trail,
    data_queries,
    devices,
    exports,
    followup,
    history,
)
from trialdesk.services.allocation import randomization
from trialdesk.store.database import make_engine

Call = Callable[[ps.World, Any], object]


def _database(backend: str, folder: Path) -> Iterator[Database]:
    if backend == "sqlite":
        url = f"sqlite:///{folder / 'trial.db'}"
        engine = make_engine(url)
        yield Database("sqlite", url, engine)
        engine.dispose()
        return
    require_postgres()
    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = make_engine(POSTGRES_URL, connect_args={"options": f"-csearch_path={schema}"})
    try:
        yield Database("postgres", POSTGRES_URL, engine)
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def pair(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ps.Pair]:
    worlds: list[ps.World] = []
    makers = []
    for name, swapped in (("x", False), ("y", True)):
        folder = tmp_path / name
        folder.mkdir()
        maker = _database(request.param, folder)
        makers.append(maker)
        database = next(maker)
        worlds.append(
            ps.populate_world(database, folder, name, folder / "trial.db", swapped=swapped)
        )
    x, y = worlds
    assert (x.arms[x.a], y.arms[y.a]) == ("INT", "CTRL")
    yield ps.Pair(x, y)
    for world in worlds:
        world.trial.runtime.close()
    for maker in makers:
        next(maker, None)


def outcome(call: Call, world: ps.World, actor: Any) -> str:
    try:
        return dump(call(world, actor))
    except TrialError as exc:
        return f"refused {type(exc).__name__} {exc.code}: {exc.message}"


def compare(pair: ps.Pair, calls: dict[str, Call]) -> list[str]:
    differences = []
    for username in ps.BLINDED_USERS:
        for name, call in calls.items():
            got = [outcome(call, w, w.trial.actor(username)) for w in pair.worlds]
            if got[0] != got[1]:
                differences.append(f"{username} {name}: {ps.first_difference(*got)}")
    return differences


NOT_TRIAL_DATA = {"design.assess_design"}
"""Simulates a design from parameters (its result carries its own run time): no trial data."""


def _read(read: Any, which: str) -> Call:
    return lambda w, a: read(w.trial, a, getattr(w, which))


def _history(which: str) -> Call:
    return lambda w, a: history.subject_history(w.trial.ctx, a, w.trial.study_id, getattr(w, which))


def read_calls() -> dict[str, Call]:
    calls: dict[str, Call] = {}
    for name, read in READ_CALLS.items():
        if name in NOT_TRIAL_DATA:
            continue
        for which in ("a", "b"):
            calls[f"{name}({which})"] = _read(read, which)
    calls["audit_trail"] = lambda w, a: audit_trail.audit_entries(
        w.trial.ctx, a, w.trial.study_id, limit=1000
    )
    for which in ("a", "b"):
        calls[f"history({which})"] = _history(which)
    return calls


def _files(folder: Path) -> dict[str, str]:
    from tests.e2e.sweep_support import _xpt_text

    out = {}
    for path in sorted(folder.iterdir()):
        data = path.read_bytes()
        out[path.name] = _xpt_text(data) if path.suffix == ".xpt" else data.decode("utf-8")
    return out


def export_calls(tmp: Path) -> dict[str, Call]:
    calls: dict[str, Call] = {}
    for kind, export in (
        ("csv", exports.export_csv),
        ("odm", exports.export_odm),
        ("sdtm", exports.export_sdtm),
    ):

        def run(w: ps.World, a: Any, export: Any = export, kind: str = kind) -> object:
            out = tmp / f"{w.name}-{a.username}-{kind}-{uuid.uuid4().hex[:6]}"
            export(w.trial.ctx, a, w.trial.study_id, out)
            return _files(out)

        calls[f"export {kind}"] = run
    return calls


def _ship(serial: str) -> Call:
    return lambda w, a: devices.ship_devices(w.trial.ctx, a, w.trial.study_id, "S102", [serial])


def _return(serial: str) -> Call:
    return lambda w, a: devices.return_device(w.trial.ctx, a, w.trial.study_id, serial, "pair")


def _destroy(serial: str) -> Call:
    return lambda w, a: devices.destroy_device(w.trial.ctx, a, w.trial.study_id, serial, "pair")


def _randomize(which: str) -> Call:
    return lambda w, a: randomization.randomize(
        w.trial.ctx, a, w.trial.study_id, getattr(w, which), idempotency_key="k"
    )


def _procedure(which: str) -> Call:
    return lambda w, a: followup.record_procedure(
        w.trial.ctx, a, w.trial.study_id, getattr(w, which), values={}
    )


def _correct(which: str, form: str, field: str) -> Call:
    return lambda w, a: followup.correct_form_data(
        w.trial.ctx,
        a,
        w.trial.study_id,
        getattr(w, which),
        form_code=form,
        changes={field: "10:00"},
        reason="pair",
    )


def _query(which: str, form: str, field: str) -> Call:
    return lambda w, a: data_queries.raise_query(
        w.trial.ctx,
        a,
        w.trial.study_id,
        getattr(w, which),
        form_code=form,
        field=field,
        text="pair sweep",
    )


def _discharge(which: str) -> Call:
    return lambda w, a: followup.record_discharge(
        w.trial.ctx, a, w.trial.study_id, getattr(w, which), discharged_on=dt.date(2027, 3, 20)
    )


def action_calls() -> dict[str, Call]:
    """Actions a blinded role may attempt on the pair; each is refused for blinded roles, or
    succeeds alike in both worlds (and then leaves both worlds alike)."""
    calls: dict[str, Call] = {}
    for serial in (ps.USED, ps.SPARE):
        calls[f"ship {serial}"] = _ship(serial)
        calls[f"return {serial}"] = _return(serial)
        calls[f"destroy {serial}"] = _destroy(serial)
    calls["recall without signature"] = lambda w, a: devices.recall_subjects(
        w.trial.ctx, a, w.trial.study_id, devices.DEMO_LOT
    )
    for which in ("a", "b"):
        calls[f"randomize({which}) with a retry key"] = _randomize(which)
        calls[f"procedure({which})"] = _procedure(which)
        for form, field in (
            ("index_procedure", "end_time"),
            ("implant_procedure", "device_udi"),
            ("sham_procedure", "end_time"),
        ):
            calls[f"correct {form}.{field}({which})"] = _correct(which, form, field)
            calls[f"query {form}.{field}({which})"] = _query(which, form, field)
        calls[f"discharge({which})"] = _discharge(which)
    return calls


@pytest.mark.req("RAND-6", "SUP-2", "AUD-1")
def test_rand6_pair_services_answer_blinded_roles_alike_whatever_the_arm(
    pair: ps.Pair, tmp_path: Path
) -> None:
    """RAND-6, SUP-2, AUD-1: reads, exports and attempted actions, before and after the
    quarantine of SN000123's lot, are the same for every blinded role in both worlds."""
    actions = action_calls()
    differences = compare(pair, actions)
    assert not differences, "\n".join(differences[:20])
    pair.quarantine_first_lot()
    differences = compare(pair, {**read_calls(), **export_calls(tmp_path), **actions})
    assert not differences, "\n".join(differences[:20])
