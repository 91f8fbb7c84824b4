"""The pair sweep's worlds (no tests here): two SQLite trials built by the same steps at the
same (fake) times, differing only in which of two subjects drew which arm.

In world X subject A is randomized to the implant arm and B to the sham arm; in world Y the
other way round (the two first slots of the S101 stratum are swapped in Y's list, which is
otherwise the same). A's index procedure is then done: in X an implant using device SN000123,
in Y a sham, so SN000123 is used in X and unused in Y. B waits for its procedure in both.
Everything else (subjects, numbers, randomization numbers, counts per arm, the other devices)
is the same, so a blinded role's answer to any request, and every blinded export file, must
be byte for byte the same in X and Y: any difference is something that depends on the arm.
Comparing whole worlds instead of two subjects of one world also compares what a single
subject's view cannot show: ids, counts, orderings and gaps across the whole study.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient
from httpx import Response

from tests import flagship_data as fd
from tests import journey as j
from tests.conftest import PASSWORD, Database, Trial, build_trial, flagship
from tests.e2e import sweep_support as sw
from tests.e2e.test_api_support import Api
from tests.e2e.test_web_pages import CSRF, sign_in
from trialdesk.bootstrap import create_app
from trialdesk.domain.roles import Role
from trialdesk.services import followup, supply
from trialdesk.services.access import operator_actor
from trialdesk.services.allocation import lists, randomization
from trialdesk.services.setup import create_user
from trialdesk.store.database import make_engine

USED = supply.DEMO_SERIALS[0]
"""SN000123: implanted by A in world X, on the shelf (or quarantined) in world Y."""
SPARE = "SNB001"
"""A device of a second lot at S101, unused in both worlds."""
SPARE_LOT = ("SNB001", "SNB002", "SNB003")
BLOCK = ("INT", "CTRL", "CTRL", "INT")
DUAL = ("coord-stat", "mgr-dsmb")
BLINDED_USERS = (
    *(role.value for role in (Role.ADMIN, Role.MANAGER, Role.COORDINATOR, Role.CRC, Role.MONITOR)),
    *DUAL,
)


def list_csv(sites: list[str], *, swapped: bool) -> str:
    """Three blocks of four per site; in the swapped list the S101 stratum starts CTRL, INT
    (still a balanced block) instead of INT, CTRL."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(lists.CSV_COLUMNS)
    for site in sites:
        arms = list(BLOCK * 3)
        if swapped and site == "S101":
            arms[0], arms[1] = arms[1], arms[0]
        for i, arm in enumerate(arms, start=1):
            writer.writerow([f"site={site}", i, (i - 1) // 4 + 1, 4, arm])
    return out.getvalue()


@dataclass
class World:
    name: str
    trial: Trial
    db: Path
    a: str = ""
    b: str = ""
    arms: dict[str, str] = field(default_factory=dict)
    app: FastAPI | None = None
    api: Api | None = None
    web: dict[str, TestClient] = field(default_factory=dict)
    snapshot: Path | None = None
    watch: sqlite3.Connection | None = None

    # --- database snapshots (a mutating request is undone before the next one) -------------

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.db, timeout=60)

    def take_snapshot(self) -> None:
        if not self.db.exists():
            return  # PostgreSQL: the service-level sweep needs no undo
        self.snapshot = self.db.with_suffix(".snapshot")
        self.snapshot.unlink(missing_ok=True)
        with self._connect() as live, sqlite3.connect(self.snapshot) as copy:
            live.backup(copy)

    def version(self) -> int:
        """SQLite's data version as this world's watching connection sees it: it changes
        whenever another connection commits (a request that wrote anything)."""
        if self.watch is None:
            self.watch = sqlite3.connect(self.db, timeout=60, isolation_level=None)
        return int(self.watch.execute("PRAGMA data_version").fetchone()[0])

    def restore(self) -> None:
        assert self.snapshot is not None
        with sqlite3.connect(self.snapshot) as copy, self._connect() as live:
            copy.backup(live)


def _world(tmp: Path, name: str, *, swapped: bool) -> World:
    folder = tmp / name
    folder.mkdir()
    db = folder / "trial.db"
    url = f"sqlite:///{db}"
    return populate_world(
        Database("sqlite", url, make_engine(url)), folder, name, db, swapped=swapped
    )


def populate_world(
    database: Database, folder: Path, name: str, db: Path, *, swapped: bool
) -> World:
    """The pair's steps on ``database`` (any backend; ``db`` is the SQLite file, if any)."""
    t = build_trial(database, folder, flagship(), with_list=False)
    world = World(name, t, db)
    sites = [s.code for s in flagship().protocol.sites]
    lists.import_list(
        t.ctx,
        t.actor("statistician"),
        t.study_id,
        list_csv(sites, swapped=swapped),
        mode="live",
        source_name="pair.csv",
    )
    dual: list[tuple[str, list[tuple[Role, str | None]]]] = [
        ("coord-stat", [(Role.COORDINATOR, j.SITE), (Role.STATISTICIAN, None)]),
        ("mgr-dsmb", [(Role.MANAGER, None), (Role.DSMB, None)]),
    ]
    for username, roles in dual:
        create_user(
            t.ctx,
            operator_actor(),
            t.study_id,
            username=username,
            full_name=username.title(),
            password=PASSWORD,
            roles=roles,
        )
    manager = t.actor("manager")
    supply.register_lot(
        t.ctx,
        manager,
        t.study_id,
        lot_number="LOTB",
        model="Coronary-sinus implant XE",
        gtin=supply.DEMO_GTIN,
        manufacturer="Example Devices Inc.",
        expiry=dt.date(2031, 12, 31),
        serials=SPARE_LOT,
    )
    shipped = supply.ship_devices(t.ctx, manager, t.study_id, j.SITE, SPARE_LOT)
    supply.receive_shipment(t.ctx, t.actor("coordinator"), t.study_id, shipped.number)
    world.a = j.anatomy_suitable(t)
    world.b = j.anatomy_suitable(t)
    for number in (world.a, world.b):
        result = randomization.randomize(t.ctx, t.actor("implanter"), t.study_id, number)
        assert result.arm is not None
        world.arms[number] = result.arm
    j_values = j.procedure_values(t, world.arms[world.a])
    followup.record_procedure(t.ctx, t.actor("implanter"), t.study_id, world.a, values=j_values)
    t.clock.set_day(fd.DISCHARGE_DATE)
    followup.record_discharge(
        t.ctx,
        t.actor("coordinator"),
        t.study_id,
        world.a,
        discharged_on=dt.date.fromisoformat(fd.DISCHARGE_DATE),
    )
    m1 = j.visit_dates()["M1"]
    j.record_visit(t, world.a, "M1", m1)
    t.clock.set_day(m1 + dt.timedelta(days=1), hour=15)
    return world


@dataclass
class Pair:
    x: World
    y: World
    quarantined: bool = False

    @property
    def worlds(self) -> tuple[World, World]:
        return self.x, self.y

    def open_clients(self) -> None:
        """Apps, API tokens and signed-in browsers for every blinded user, then snapshots."""
        for w in self.worlds:
            w.app = create_app(w.trial.runtime)
            w.api = Api(w.trial)
            w.api.client = TestClient(w.app, raise_server_exceptions=False)
            w.web = {user: _browser(w.app, user) for user in BLINDED_USERS}
            for user in BLINDED_USERS:
                w.api.token(user)
            w.take_snapshot()

    def quarantine_first_lot(self) -> None:
        """Once: quarantine LOT2701 in both worlds (SN000123: implanted in X, held in Y)."""
        if self.quarantined:
            return
        self.quarantined = True
        for w in self.worlds:
            supply.quarantine_lot(
                w.trial.ctx,
                w.trial.actor("manager"),
                w.trial.study_id,
                supply.DEMO_LOT,
                "field safety notice",
            )
            w.take_snapshot()

    def close(self) -> None:
        for w in self.worlds:
            if w.watch is not None:
                w.watch.close()
            w.trial.runtime.close()


def _browser(app: FastAPI, user: str) -> TestClient:
    """A signed-in browser whose server errors come back as 500 answers (so the sweep can
    report them), on https like a real deployment (the session cookie is Secure)."""
    browser = TestClient(
        app, base_url="https://testserver", follow_redirects=False, raise_server_exceptions=False
    )
    assert sign_in(browser, user).status_code == 303
    return browser


def build_pair(tmp: Path) -> Pair:
    x = _world(tmp, "x", swapped=False)
    y = _world(tmp, "y", swapped=True)
    assert (x.a, x.b) == (y.a, y.b)
    assert (x.arms[x.a], x.arms[x.b]) == ("INT", "CTRL")
    assert (y.arms[y.a], y.arms[y.b]) == ("CTRL", "INT")
    return Pair(x, y)


# --------------------------------------------------------------------------- answers

_CSRF_VALUE = re.compile(r'(name="csrf_token" value=")[^"]*(")')
_SVG_NOISE = re.compile(r"(<dc:date>)[^<]*(</dc:date>)")
_TOTP_SECRET = re.compile(r"(secret=|\"secret\":\"|<code>)[A-Z2-7]{32}")
"""A second factor's enrolment secret: random by design in either world, never about an arm."""


def answer(response: Response) -> str:
    """A response as compared: status, media type, redirect target and the body (an export
    zip as its files read back; a PNG as its digest; per-session tokens blanked)."""
    media = response.headers.get("content-type", "").split(";")[0]
    head = f"{response.status_code} {media} {response.headers.get('location', '')}"
    if media == "application/zip":
        body = json.dumps(sw.export_files(response.content), sort_keys=True, indent=0)
    elif media.startswith("image/png"):
        body = hashlib.sha256(response.content).hexdigest()
    else:
        body = _CSRF_VALUE.sub(r"\1~\2", response.text)
        body = _SVG_NOISE.sub(r"\1~\2", body)
        body = _TOTP_SECRET.sub(r"\1~", body)
        if media.endswith("json") and '"access_token"' in body:
            data = json.loads(body)
            data["access_token"] = "~"
            body = json.dumps(data, sort_keys=True)
    return head + "\n" + body


def first_difference(left: str, right: str) -> str:
    """Where two answers part, with a little context, for a readable failure."""
    for i, (a, b) in enumerate(zip(left, right, strict=False)):
        if a != b:
            start, end = max(0, i - 60), i + 60
            return f"at {i}: X …{left[start:end]!r} / Y …{right[start:end]!r}"
    return f"lengths {len(left)} / {len(right)}"


def csrf(client: TestClient) -> str:
    found = CSRF.search(client.get("/home").text)
    assert found is not None
    return found.group(1)
