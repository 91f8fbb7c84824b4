"""Two studies in one database (PROT-1), for the isolation tests (no tests here).

Study A is the flagship (code FLAGSHIP) with its demo users. Study B (code BETA) runs a
second protocol derived from the flagship text (its own name, title, version and one site of
its own, S990) with its own users (``zb-<role>``). Site codes and subject numbers overlap on
purpose: both studies have site S101 and subject S101-0001; B also has S101-0002, S101-0003
and S990-0001, which A never has.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from tests import journey as j
from tests.conftest import PASSWORD, Trial, flagship
from trialdesk.domain.roles import SITE_SCOPED, Role
from trialdesk.protocol.loader import LoadedProtocol, parse_protocol
from trialdesk.services import data_queries, screening
from trialdesk.services.access import operator_actor
from trialdesk.services.allocation.lists import generate_list
from trialdesk.services.auth import authenticate
from trialdesk.services.setup import create_user, initialize_study

B_CODE = "BETA"
B_TITLE = "Zephyr valve registry (second study)"
B_NAME = "Zephyr second protocol"
B_VERSION = "7.3"
B_ONLY_SUBJECTS = ("S101-0002", "S101-0003", "S990-0001")
B_PREFIX = "zb-"
B_MARKERS = (B_CODE, "Zephyr", "S990", B_PREFIX, *B_ONLY_SUBJECTS)
"""Text that only study B has: none of it may appear in anything study A's users get."""

AFTER = "2027-03-01"
"""The day the tests read on: after every date of the population."""

A_REGISTERED = 2
A_RANDOMIZED = 1
"""Study A's own totals: S101-0001 (randomized, procedure done) and S102-0001 (registered)."""


@lru_cache(maxsize=1)
def second_protocol() -> LoadedProtocol:
    """The flagship text with another name, title, version and site S110 replaced by S990."""
    text = flagship().text
    replacements = {
        "name: CARILLON-style FMR sham-controlled trial (flagship)": f"name: {B_NAME}",
        'version: "1.0"': f'version: "{B_VERSION}"',
        "title: >-\n  Randomized, sham-controlled, double-blind trial of a coronary-sinus mitral "
        "annuloplasty\n  implant (CARILLON-style) in heart failure with functional mitral "
        "regurgitation": f"title: {B_TITLE}",
        '{code: S110, name: "Site 110 – Seattle", country: US, timezone: America/Los_Angeles, '
        "planned_activation: 2027-07-26}": '{code: S990, name: "Site 990 – Zephyr", '
        "country: US, timezone: America/New_York, planned_activation: 2027-01-04}",
    }
    for old, new in replacements.items():
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return parse_protocol(text, "<second study>")


@dataclass
class TwoStudies:
    a: Trial
    b: Trial
    """Study B's view: same runtime and clock; ``b.actor(role)`` is B's user of that role."""


def add_second_study(a: Trial) -> Trial:
    """Create study B beside ``a`` with one user per role (``zb-<role>``, site roles at S101)."""
    operator = operator_actor()
    info = initialize_study(a.ctx, operator, second_protocol(), code=B_CODE, mode="demo")
    generate_list(a.ctx, operator, info.id, mode="live", seed=7)
    b = Trial(runtime=a.runtime, clock=a.clock, study_id=info.id, backend=a.backend)
    for role in Role:
        username = B_PREFIX + role.value
        create_user(
            a.ctx,
            operator,
            info.id,
            username=username,
            full_name=f"Zephyr {role.value}",
            password=PASSWORD,
            roles=[(role, j.SITE if role in SITE_SCOPED else None)],
        )
        b.actors[role.value] = authenticate(a.ctx, username, PASSWORD)
    return b


def populate(a: Trial, b: Trial) -> None:
    """Data in both studies, B with more of it than A, so a leak shows in A's counts."""
    j.procedure_done(a)  # A: S101-0001
    j.register(a, "S102")  # A: S102-0001
    number_b, _arm = j.procedure_done(b)  # B: S101-0001
    j.echo_qualified(b)  # B: S101-0002, its CRC case waiting
    j.register(b)  # B: S101-0003
    create_user(
        b.ctx,
        operator_actor(),
        b.study_id,
        username=B_PREFIX + "coordinator-s990",
        full_name="Zephyr coordinator S990",
        password=PASSWORD,
        roles=[(Role.COORDINATOR, "S990")],
    )
    s990 = authenticate(b.ctx, B_PREFIX + "coordinator-s990", PASSWORD)
    screening.register_subject(b.ctx, s990, b.study_id, site_code="S990")  # B: S990-0001
    data_queries.raise_query(
        b.ctx,
        b.actor("monitor"),
        b.study_id,
        number_b,
        form_code="nyha",
        field="nyha_class",
        text="Zephyr query",
    )
    a.clock.set_day(AFTER)


def two_studies(a: Trial) -> TwoStudies:
    b = add_second_study(a)
    populate(a, b)
    return TwoStudies(a=a, b=b)


def leaks(text: str) -> list[str]:
    """The study-B markers found in ``text``."""
    return [m for m in B_MARKERS if m in text]
