"""Whole-trial simulator: a synthetic trial driven through the real service layer.

Each step is the service call the API or CLI makes for that user action, made by an actor
holding the role for it (coordinator and implanter at the subject's site, the CRC for reviews,
the monitor for data queries, an administrator for site activation). The services run on a
simulated clock that jumps from event to event, so every clinical date is a site-local date
that is "today" at the site when it is recorded. Nothing here touches a table.

Randomness comes only from ``random.Random(config.seed)``; the same seed on the same protocol
gives the same subjects, states and dates (the allocation list itself is the study's own).

It refuses to run on a study that was not created as demo or sandbox, before writing anything:
synthetic subjects must never enter a live trial.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import heapq
import json
import math
import random
import secrets
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

from trialdesk.domain.errors import PreconditionFailed, TrialError, ValidationFailed
from trialdesk.domain.lifecycle import EVER_RANDOMIZED, ScreenFailureReason, SubjectState
from trialdesk.domain.roles import Role
from trialdesk.domain.schedule import window_for
from trialdesk.protocol.flagship_amendment import AMENDMENT_REASON, flagship_v2_path
from trialdesk.protocol.loader import LoadedProtocol, load_protocol
from trialdesk.protocol.models import Gate, Protocol
from trialdesk.protocol.specs import visit_spec
from trialdesk.services import (
    admin,
    amendments,
    crc,
    crc_dossier,
    data_queries,
    exports,
    followup,
    maintenance,
    queries,
    report_views,
    screening,
)
from trialdesk.services.access import Actor, operator_actor
from trialdesk.services.allocation import randomization
from trialdesk.services.auth import authenticate
from trialdesk.services.context import ServiceContext
from trialdesk.services.setup import StudyContents, create_user, study_contents
from trialdesk.services.study_info import SiteInfo, list_sites

SIM_MODES = ("demo", "sandbox")
RESUPPLY_MARGIN_DAYS = 30
"""A device expiring within this many days is not used; the site is resupplied instead."""
QUERY_TEXTS: dict[str, tuple[str, ...]] = {
    "kccq_overall_score": (
        "KCCQ overall score differs from the questionnaire total; please recheck the scoring",
        "KCCQ score entered before the questionnaire date; please confirm",
    ),
    "nyha_class": (
        "NYHA class differs from the clinic letter; please confirm against the source",
        "NYHA class improved by two classes since the last visit; please confirm",
    ),
    "hf_hospitalizations": (
        "Hospitalization count does not match the discharge letters on file",
        "Please confirm whether the admission in the notes was for heart failure",
    ),
}
"""The monitor's questions, by field: real queries say what looks wrong."""
ANSWER_TEXTS = (
    "value confirmed in source",
    "checked with the investigator: the entered value is right",
    "source document re-read; value stands",
)
DAY = dt.timedelta(days=1)
ProgressFn = Callable[[int, int], None]
"""Called as ``progress(randomized_so_far, target)`` after each randomization."""


class SimulationRefused(PreconditionFailed):
    """The simulator will not run on this study (live, not empty, or an unsupported protocol)."""


@dataclass(frozen=True)
class SimulationConfig:
    """What to simulate. Probabilities are per subject at each gate unless stated otherwise."""

    subjects: int
    """Subjects to randomize (more are screened)."""
    sites: int
    seed: int = 1
    as_of: dt.date | None = None
    """Stop after this date; None: stop once the last subject has had (or missed) visit 1."""
    start: dt.date | None = None
    """First day of the trial; None: the earliest planned activation of the sites used."""
    screened_per_site_month: float = 1.0
    decline_consent: float = 0.06
    criteria_failed: float = 0.15
    investigator_not_met: float = 0.03
    crc_rejected: float = 0.08
    crc_request_info: float = 0.08
    anatomy_unsuitable: float = 0.08
    implant_not_released: float = 0.06
    visit_late: float = 0.07
    visit_missed: float = 0.05
    visit_forgotten: float = 0.01
    """Chance a visit is neither recorded nor marked missed (it shows overdue, issue 14)."""
    drop_out: float = 0.03
    """Chance a randomized subject stops coming (missed contacts, then lost to follow-up)."""
    deaths_per_year: float = 0.08
    withdrawals_per_year: float = 0.03
    adverse_events_per_year: float = 0.8
    therapy_probability: float = 0.12
    """Chance of one additional therapy within 24 months of randomization."""
    query_probability: float = 0.12
    """Chance the monitor queries a field of a recorded visit."""
    hf_hospitalizations_per_year: float = 0.15
    """Heart-failure hospitalizations (END-2), each with its admission and discharge dates: on
    the adverse-event form where the form in force has them (flagship 2.0), else counted at the
    next visit (1.0 forms have counts, not dates)."""
    amendment_on: dt.date | None = None
    """Apply flagship amendment 1 (protocol 2.0, dated hospitalizations) with this effective
    date; None: the study keeps its protocol."""

    def check(self, protocol: Protocol) -> None:
        problems: dict[str, str] = {}
        if self.subjects < 1:
            problems["subjects"] = "at least 1"
        elif self.subjects > protocol.enrolment.total_cap:
            problems["subjects"] = f"at most the enrolment cap ({protocol.enrolment.total_cap})"
        if not 1 <= self.sites <= len(protocol.sites):
            problems["sites"] = f"1 to {len(protocol.sites)} (the protocol's sites)"
        if self.screened_per_site_month <= 0:
            problems["screened_per_site_month"] = "must be positive"
        if self.as_of is not None and self.start is not None and self.as_of < self.start:
            problems["as_of"] = "before the start"
        if self.amendment_on is not None and protocol.version != "1.0":
            problems["amendment_on"] = "amendment 1 amends the flagship protocol 1.0 only"
        if problems:
            text = "; ".join(f"{k}: {v}" for k, v in problems.items())
            raise ValidationFailed(f"simulation settings: {text}", problems)


@dataclass
class SimulationSummary:
    study: str
    seed: int
    start: str
    end: str
    sites: int
    registered: int = 0
    randomized: int = 0
    excluded: dict[str, int] = field(default_factory=dict)
    states: dict[str, int] = field(default_factory=dict)
    visits_done: int = 0
    visits_late: int = 0
    visits_missed: int = 0
    implants_not_released: int = 0
    adverse_events: int = 0
    therapies: int = 0
    crc_therapy_decisions: int = 0
    queries_raised: int = 0
    queries_answered: int = 0
    queries_closed: int = 0
    deaths: int = 0
    withdrawals: int = 0
    lost_to_follow_up: int = 0
    hf_hospitalizations: int = 0
    """Dated ones (on the 2.0 adverse-event form); 1.0 visits count theirs."""
    amended_on: str | None = None
    unblinded: int = 0
    completed: int = 0
    service_calls: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- form values


class _Forms:
    """Plausible values for the flagship's forms; a protocol with other forms is refused."""

    KNOWN = frozenset(
        {
            "demographics",
            "medical_history",
            "heart_team",
            "nyha",
            "kccq",
            "six_minute_walk",
            "tte",
            "angiogram",
            "venogram",
            "implant_procedure",
            "sham_procedure",
            "follow_up",
            "annual_contact",
            "adverse_event",
        }
    )
    SCREENING_FAILURES: ClassVar[dict[str, tuple[str, str, Any]]] = {
        "INC-1": ("demographics", "age_years", 17),
        "INC-2": ("medical_history", "cardiomyopathy_etiology", "other"),
        "INC-3": ("tte", "mr_grade", "0"),
        "INC-4": ("nyha", "nyha_class", "IVb"),
        "INC-5": ("six_minute_walk", "distance_m", 120),
        "INC-6": ("tte", "lvef_pct", 56.0),
        "INC-7": ("tte", "lvedd_mm", 54.0),
        "EXC-1": ("medical_history", "mi_within_3_months", True),
        "EXC-2": ("medical_history", "pci_within_30_days", True),
        "EXC-3": ("heart_team", "cardiac_surgery_expected_within_1y", True),
        "EXC-4": ("tte", "mitral_annular_calcification", "severe"),
        "EXC-5": ("tte", "organic_mitral_disease", True),
    }
    ANATOMY_FAILURES: ClassVar[dict[str, tuple[str, str, Any]]] = {
        "ANAT-1": ("angiogram", "coronary_anatomy_suitable", False),
        "ANAT-2": ("venogram", "cs_gcv_suitable", False),
        "ANAT-3": ("angiogram", "stent_under_target_zone", True),
    }

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    @staticmethod
    def supported(protocol: Protocol) -> list[str]:
        """Forms the simulator would have to fill but cannot (empty when it can run)."""
        needed = set(protocol.screening.forms) | set(protocol.screening.anatomy_forms)
        needed |= {a.procedure_form for a in protocol.arms if a.procedure_form}
        needed |= {f for v in protocol.visits for f in v.forms}
        return sorted(needed - _Forms.KNOWN)

    def screening(self, on: dt.date, failing: str | None) -> dict[str, dict[str, Any]]:
        r, d = self.rng, on.isoformat()
        mr = r.choice(["2", "3", "3", "4"])
        forms: dict[str, dict[str, Any]] = {
            "demographics": {
                "assessment_date": d,
                "age_years": r.randint(45, 88),
                "sex": r.choice(["female", "male", "male"]),
                "height_cm": round(r.uniform(152, 192), 1),
                "weight_kg": round(r.uniform(52, 118), 1),
            },
            "medical_history": {
                "assessment_date": d,
                "cardiomyopathy_etiology": r.choice(["ischemic", "ischemic", "non_ischemic"]),
                "mi_within_3_months": False,
                "cabg_within_3_months": False,
                "unstable_angina_within_3_months": False,
                "pci_within_30_days": False,
                "hf_hospitalizations_12_months": r.choice([0, 1, 1, 2, 3]),
                "atrial_fibrillation": r.random() < 0.4,
                "diabetes": r.random() < 0.35,
                "crt_device": r.random() < 0.15,
            },
            "heart_team": {
                "review_date": d,
                "surgeon_present": True,
                "mitral_surgery_needed_within_1y": False,
                "cardiac_surgery_expected_within_1y": False,
                "notes": None,
            },
            "nyha": {"assessment_date": d, "nyha_class": r.choice(["II", "III", "III", "IVa"])},
            "kccq": {"assessment_date": d, "overall_score": round(r.uniform(25, 70), 1)},
            "six_minute_walk": {"test_date": d, "distance_m": r.randint(160, 440)},
            "tte": {
                "exam_date": d,
                "mr_grade": mr,
                "regurgitant_volume_ml": round(r.uniform(25, 70), 1),
                "eroa_cm2": round(r.uniform(0.15, 0.45), 2),
                "lvef_pct": round(r.uniform(20, 48), 1),
                "lvedd_mm": round(r.uniform(60, 78), 1),
                "lvesd_mm": round(r.uniform(45, 65), 1),
                "mitral_annular_calcification": r.choice(["none", "mild", "moderate"]),
                "organic_mitral_disease": False,
            },
        }
        if failing is not None:
            form, fld, value = self.SCREENING_FAILURES[failing]
            forms[form][fld] = value
        return forms

    def anatomy(self, on: dt.date, failing: str | None) -> dict[str, dict[str, Any]]:
        d = on.isoformat()
        forms: dict[str, dict[str, Any]] = {
            "angiogram": {
                "procedure_date": d,
                "coronary_anatomy_suitable": True,
                "stent_under_target_zone": False,
                "notes": None,
            },
            "venogram": {"procedure_date": d, "cs_gcv_suitable": True, "notes": None},
        }
        if failing is not None:
            form, fld, value = self.ANATOMY_FAILURES[failing]
            forms[form][fld] = value
        return forms

    def procedure(self, form: str, on: dt.date, released: bool, udi: str | None) -> dict[str, Any]:
        start = self.rng.randint(8 * 60, 13 * 60)
        end = start + self.rng.randint(45, 150)
        times = {"start_time": _hhmm(start), "end_time": _hhmm(end)}
        if form == "sham_procedure":
            return {"procedure_date": on.isoformat(), **times}
        return {
            "procedure_date": on.isoformat(),
            **times,
            "distal_anchor_deployed": True,
            "tension_applied": True,
            "proximal_anchor_locked": released,
            "safety_efficacy_reconfirmed": released,
            "implant_released": released,
            "device_udi": udi,
            "not_released_reason": None if released else "recaptured: coronary compromise",
        }

    def visit(self, form: str, on: dt.date, hf_count: int = 0) -> dict[str, Any]:
        r, d = self.rng, on.isoformat()
        if form == "annual_contact":
            return {
                "contact_date": d,
                "vital_status": "alive",
                "hf_hospitalizations": hf_count,
                "additional_therapies": False,
            }
        return {
            "visit_date": d,
            "nyha_class": r.choice(["I", "II", "II", "III"]),
            "kccq_overall_score": round(r.uniform(35, 85), 1),
            "six_minute_walk_m": r.randint(200, 480),
            "mr_grade": r.choice(["1", "2", "2", "3"]),
            "regurgitant_volume_ml": round(r.uniform(15, 55), 1),
            "eroa_cm2": round(r.uniform(0.1, 0.4), 2),
            "lvef_pct": round(r.uniform(22, 50), 1),
            "lvedd_mm": round(r.uniform(56, 76), 1),
            "lvesd_mm": round(r.uniform(42, 64), 1),
            "hf_hospitalizations": hf_count,
        }

    def adverse_event(self, on: dt.date, mae: str) -> dict[str, Any]:
        terms = ["Groin haematoma", "Heart failure worsening", "Atrial fibrillation", "Syncope"]
        serious = mae != "none" or self.rng.random() < 0.2
        return {
            "onset_date": on.isoformat(),
            "term": self.rng.choice(terms) if mae == "none" else mae.replace("_", " ").title(),
            "serious": serious,
            "severity": "severe" if mae != "none" else self.rng.choice(["mild", "moderate"]),
            "procedure_related": self.rng.choice(["not_related", "possibly", "related"]),
            "mae_category": mae,
            "resolved_date": None,
            "outcome": self.rng.choice(["recovered", "recovering"]),
            "hospitalized": False,
        }

    def hospitalization(self, admitted: dt.date, discharged: dt.date) -> dict[str, Any]:
        """A heart-failure hospitalization on the 2.0 adverse-event form, with its dates."""
        return {
            "onset_date": admitted.isoformat(),
            "term": "Heart failure hospitalization",
            "serious": True,
            "severity": self.rng.choice(["moderate", "severe"]),
            "procedure_related": "not_related",
            "mae_category": "none",
            "resolved_date": discharged.isoformat(),
            "outcome": "recovered",
            "hospitalized": True,
            "hospitalization_reason": "heart_failure",
            "admission_date": admitted.isoformat(),
            "hospital_discharge_date": discharged.isoformat(),
        }


def _hhmm(minutes: int) -> str:
    minutes = min(minutes, 23 * 60 + 59)
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


# --------------------------------------------------------------------------- the engine


class SimClock:
    """The services' clock: whatever moment the simulation has reached."""

    def __init__(self, start: dt.datetime) -> None:
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now


@dataclass
class _Subject:
    number: str
    site: str
    consent: dt.date | None = None
    randomized_on: dt.date | None = None
    exit_day: dt.date | None = None
    exit_kind: str | None = None
    exited: bool = False
    stopped_coming: dt.date | None = None
    missed: int = 0
    hf_uncounted: int = 0
    """Hospitalizations not yet reported on a 1.0 visit form (which counts them)."""
    closed: bool = False
    """Screening ended (failed) or the subject left; no more screening events."""


@dataclass
class _Staff:
    coordinator: dict[str, Actor]
    implanter: dict[str, Actor]
    admin: Actor
    crc: Actor
    monitor: Actor
    manager: Actor
    statistician: Actor
    password: str


class _Engine:
    def __init__(
        self,
        ctx: ServiceContext,
        study_id: int,
        study_code: str,
        loaded: LoadedProtocol,
        config: SimulationConfig,
        progress: ProgressFn | None,
    ) -> None:
        self.study_id = study_id
        self.protocol = loaded.protocol
        self.config = config
        self.progress = progress
        self.rng = random.Random(config.seed)
        self.forms = _Forms(self.rng)
        chosen = sorted(
            self.protocol.sites,
            key=lambda s: (s.planned_activation or dt.date.max, s.code),
        )[: config.sites]
        first_planned = min(
            (s.planned_activation for s in chosen if s.planned_activation), default=None
        )
        self.start = config.start or first_planned or dt.date(2027, 1, 4)
        self.activation: dict[str, dt.date] = {}
        for i, site in enumerate(chosen):
            offset = (
                (site.planned_activation - first_planned).days
                if site.planned_activation and first_planned
                else 21 * i
            )
            self.activation[site.code] = self.start + dt.timedelta(days=offset)
        self.zones = {s.code: ZoneInfo(s.timezone) for s in chosen}
        self.all_sites = [s.code for s in self.protocol.sites]
        self.clock = SimClock(self._moment(chosen[0].code, self.start, 0))
        # cheap password hashes for the simulator's own users: their passwords are random,
        # never shown and discarded after the run, so hashing cost adds nothing
        settings = replace(ctx.settings, argon2_time_cost=1, argon2_memory_kib=1024)
        self.ctx = replace(ctx, clock=self.clock, settings=settings)
        self.queue: list[tuple[dt.datetime, int, Callable[[], None]]] = []
        self.seq = 0
        self.randomized = 0
        self.in_pipeline = 0
        self.enrolment_closed = False
        self.stop_at: dt.datetime | None = None
        self.last_day = self.start
        self.subjects: list[_Subject] = []
        self.summary = SimulationSummary(
            study=study_code,
            seed=config.seed,
            start=self.start.isoformat(),
            end="",
            sites=len(chosen),
        )
        self.visits = list(self.protocol.visits)
        self.confirm_ids = [
            c.id for c in self.protocol.criteria if c.rule is None and c.gate is Gate.ECHO
        ]
        rule_ids = {c.id for c in self.protocol.criteria if c.rule is not None}
        self.screen_fail_ids = sorted(set(_Forms.SCREENING_FAILURES) & rule_ids)
        self.anatomy_fail_ids = sorted(set(_Forms.ANATOMY_FAILURES) & rule_ids)
        self.mae = list(self.protocol.endpoints.major_adverse_events)
        self.therapy_types = [t.code for t in self.protocol.therapies.types] or ["other"]
        self.staff: _Staff | None = None
        self.admin_actor: Actor | None = None
        self.supply = getattr(self.protocol, "supply", None)
        self.fields_before = _fields(self.protocol)
        self.fields_after: dict[str, set[str]] | None = None
        self.amended_from: dt.date | None = None
        """Form fields before and after amendment 1, in force at each site from its date."""
        self.visit_fields: dict[tuple[str, str], set[str]] = {}
        self.stock: dict[str, list[tuple[str, dt.date]]] = {}
        """Devices on hand per site: (UDI, expiry); expired ones are never implanted."""
        self.lots = 0

    # ----------------------------------------------------------------- plumbing

    def _moment(self, site: str, day: dt.date, minute: int) -> dt.datetime:
        local = dt.datetime.combine(day, dt.time(8, 0), tzinfo=self.zones[site])
        return (local + dt.timedelta(minutes=minute)).astimezone(dt.UTC)

    def at(self, site: str, day: dt.date, fn: Callable[[], None], minute: int = 0) -> None:
        """Run ``fn`` on ``day`` at the site (site-local morning, ordered by ``minute``)."""
        if self.config.as_of is not None and day > self.config.as_of:
            return
        self.seq += 1
        heapq.heappush(self.queue, (self._moment(site, day, minute), self.seq, fn))

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        self.summary.service_calls += 1
        return fn(self.ctx, *args, **kwargs)

    def days(self, low: int, high: int) -> dt.timedelta:
        return dt.timedelta(days=self.rng.randint(low, high))

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def today(self, site: str) -> dt.date:
        return self.clock.now.astimezone(self.zones[site]).date()

    # ----------------------------------------------------------------- set-up

    def setup(self) -> None:
        """The simulator's users (random passwords) and the sites' staggered activation."""
        operator = operator_actor("trialdesk-simulator")
        password = secrets.token_urlsafe(24)
        prefix = self._free_prefix(operator, password)

        def user(name: str, role: Role, site: str | None = None) -> Actor:
            username = f"{prefix}-{name}"
            self.call(
                create_user,
                operator,
                self.study_id,
                username=username,
                full_name=f"Simulated {name.replace('-', ' ')}",
                password=password,
                roles=[(role, site)],
            )
            return authenticate(self.ctx, username, password)

        self.staff = _Staff(
            coordinator={
                s: user(f"coordinator-{s.lower()}", Role.COORDINATOR, s) for s in self.zones
            },
            implanter={s: user(f"implanter-{s.lower()}", Role.IMPLANTER, s) for s in self.zones},
            admin=self._admin(),
            crc=user("crc", Role.CRC),
            monitor=user("monitor", Role.MONITOR),
            manager=user("manager", Role.MANAGER),
            statistician=user("statistician", Role.STATISTICIAN),
            password=password,
        )
        active = {s.code: s.active for s in self.call(_sites, self.staff.admin, self.study_id)}
        for code in self.all_sites:
            opens = self.activation.get(code)
            if active.get(code) and (opens is None or opens > self.start):
                self.call(admin.deactivate_site, self.staff.admin, self.study_id, code)
        for code, opens in self.activation.items():
            self.at(code, opens, partial(self.activate, code), minute=-60)

    def _free_prefix(self, operator: Actor, password: str) -> str:
        """``sim``, or ``sim2``… when an earlier, aborted run left its users behind."""
        for n in range(1, 1000):
            prefix = "sim" if n == 1 else f"sim{n}"
            try:
                self.call(
                    create_user,
                    operator,
                    self.study_id,
                    username=f"{prefix}-admin",
                    full_name="Simulated administrator",
                    password=password,
                    roles=[(Role.ADMIN, None)],
                )
            except ValidationFailed as exc:
                if exc.problems.get("username") == "taken":
                    continue
                raise
            self.admin_actor = authenticate(self.ctx, f"{prefix}-admin", password)
            return prefix
        raise SimulationRefused("no free user name prefix for the simulator's users")

    def _admin(self) -> Actor:
        assert self.admin_actor is not None
        return self.admin_actor

    def activate(self, site: str) -> None:
        assert self.staff is not None
        active = {s.code: s.active for s in self.call(_sites, self.staff.admin, self.study_id)}
        if not active.get(site):
            self.call(admin.activate_site, self.staff.admin, self.study_id, site)
        if self.supply is not None:
            self.restock(site)
        self.next_arrival(site, self.today(site))

    def restock(self, site: str) -> None:
        """The study manager registers a lot, ships it to the site, the site receives it
        (SUP-1): six devices, usable for three years."""
        from trialdesk.services import devices

        assert self.staff is not None
        self.lots += 1
        lot = f"SIM{self.lots:05d}"
        serials = [f"{lot}-{n}" for n in range(1, 7)]
        view = self.call(
            devices.register_lot,
            self.staff.manager,
            self.study_id,
            lot_number=lot,
            model="Simulated implant",
            gtin=devices.DEMO_GTIN,
            manufacturer="Simulated Devices Inc.",
            expiry=self.today(site) + dt.timedelta(days=3 * 365),
            serials=serials,
        )
        shipment = self.call(devices.ship_devices, self.staff.manager, self.study_id, site, serials)
        self.call(
            devices.receive_shipment,
            self.staff.coordinator[site],
            self.study_id,
            shipment.number,
        )
        expiry = self.today(site) + dt.timedelta(days=3 * 365)
        self.stock.setdefault(site, []).extend(
            (d.udi, expiry) for d in view.devices if d.serial in serials
        )

    def device_for(self, site: str, arm: str) -> str | None:
        """A device in stock at the site for an arm whose procedure names one (SUP-1)."""
        if self.supply is None or arm not in self.supply.device_arms:
            return None
        # a slow site keeps devices past their expiry: those stay on the shelf (never
        # implanted) and the manager resupplies the site before it runs out of usable ones
        usable_after = self.today(site) + dt.timedelta(days=RESUPPLY_MARGIN_DAYS)
        on_hand = [d for d in self.stock.get(site, []) if d[1] > usable_after]
        self.stock[site] = on_hand
        if not on_hand:
            self.restock(site)
        return self.stock[site].pop(0)[0]

    # ----------------------------------------------------------------- screening

    def next_arrival(self, site: str, after: dt.date) -> None:
        if self.enrolment_closed:
            return
        rate = self.config.screened_per_site_month / 30.4375
        gap = max(1, math.ceil(self.rng.expovariate(rate)))
        self.at(site, after + dt.timedelta(days=gap), lambda: self.arrive(site))

    def _close(self, subj: _Subject) -> None:
        """Screening ended without randomization."""
        subj.closed = True
        self.in_pipeline -= 1

    def arrive(self, site: str) -> None:
        if self.enrolment_closed:
            return
        assert self.staff is not None
        day = self.today(site)
        if self.randomized + self.in_pipeline >= self.config.subjects:
            # screening pauses while those in screening would fill the target (they may fail)
            self.next_arrival(site, day)
            return
        self.in_pipeline += 1
        coord = self.staff.coordinator[site]
        view = self.call(
            screening.register_subject, coord, self.study_id, site_code=site, registered_on=day
        )
        subj = _Subject(view.number, site)
        self.subjects.append(subj)
        self.summary.registered += 1
        self.next_arrival(site, day)
        if self.chance(self.config.decline_consent):
            self.at(site, day + self.days(0, 7), lambda: self.decline(subj), minute=30)
            return
        self.at(site, day + self.days(0, 7), lambda: self.consent(subj), minute=30)

    def decline(self, subj: _Subject) -> None:
        assert self.staff is not None
        reason = self.rng.choice(
            ["does not wish to take part", "prefers medical therapy only", "travel burden"]
        )
        self.call(
            screening.decline_consent,
            self.staff.coordinator[subj.site],
            self.study_id,
            subj.number,
            reason=reason,
        )
        self._close(subj)

    def _closed_out(self, subj: _Subject) -> bool:
        """Enrolment closed while the subject was still in screening: screening ends here."""
        if not self.enrolment_closed:
            return False
        assert self.staff is not None
        self.call(
            screening.screen_fail_other,
            self.staff.coordinator[subj.site],
            self.study_id,
            subj.number,
            reason="enrolment closed before randomization",
        )
        self._close(subj)
        return True

    def consent(self, subj: _Subject) -> None:
        assert self.staff is not None
        day = self.today(subj.site)
        if self._closed_before_consent(subj):
            return
        self.call(
            screening.record_consent,
            self.staff.coordinator[subj.site],
            self.study_id,
            subj.number,
            consent_date=day,
            consent_version="ICF v1.0",
        )
        subj.consent = day
        self.at(subj.site, day + self.days(3, 14), lambda: self.screen(subj), minute=60)

    def _closed_before_consent(self, subj: _Subject) -> bool:
        if not self.enrolment_closed:
            return False
        assert self.staff is not None
        self.call(
            screening.decline_consent,
            self.staff.coordinator[subj.site],
            self.study_id,
            subj.number,
            reason="not consented: enrolment closed",
        )
        self._close(subj)
        return True

    def screen(self, subj: _Subject) -> None:
        assert self.staff is not None
        if self._closed_out(subj):
            return
        day = self.today(subj.site)
        coord = self.staff.coordinator[subj.site]
        failing = None
        if self.screen_fail_ids and self.chance(self.config.criteria_failed):
            failing = self.rng.choice(self.screen_fail_ids)
        for code, values in self.forms.screening(day, failing).items():
            if code in self.protocol.screening.forms:
                self.call(
                    screening.record_screening_form,
                    coord,
                    self.study_id,
                    subj.number,
                    form_code=code,
                    values=values,
                )
        not_met = self.chance(self.config.investigator_not_met) and failing is None
        refused = self.rng.choice(self.confirm_ids) if not_met and self.confirm_ids else None
        for criterion in self.confirm_ids:
            self.call(
                screening.confirm_criterion,
                coord,
                self.study_id,
                subj.number,
                criterion_id=criterion,
                confirmed=criterion != refused,
                password=self.staff.password,
            )
        view = self.call(screening.complete_screening, coord, self.study_id, subj.number)
        if view.state == SubjectState.SCREEN_FAILED.value:
            self._close(subj)
            return
        if Gate.COMMITTEE_REVIEW in self.protocol.screening.gates:
            self.at(subj.site, day + self.days(2, 10), lambda: self.review(subj), minute=120)
        else:
            self.at(subj.site, day + self.days(7, 28), lambda: self.procedure_day(subj))

    def review(self, subj: _Subject, *, asked: bool = False) -> None:
        assert self.staff is not None
        if self._closed_out(subj):
            return
        day = self.today(subj.site)
        roll = self.rng.random()
        if not asked and roll < self.config.crc_request_info:
            decision, reason = "request_info", "please send the venogram of the screening echo"
        elif roll < self.config.crc_request_info + self.config.crc_rejected:
            decision = "reject"
            reason = self.rng.choice(
                ["MR predominantly organic on core-lab review", "LV too dilated for benefit"]
            )
        else:
            decision, reason = "approve", "suitable on echo; device appropriate"
        self.call(
            crc.crc_eligibility_decision,
            self.staff.crc,
            self.study_id,
            subj.number,
            decision=decision,
            reason=reason,
            password=self.staff.password,
        )
        if decision == "reject":
            self._close(subj)
        elif decision == "request_info":
            self.at(subj.site, day + self.days(1, 5), lambda: self.reply_to_crc(subj), minute=90)
        else:
            self.at(subj.site, day + self.days(7, 30), lambda: self.procedure_day(subj))

    def reply_to_crc(self, subj: _Subject) -> None:
        """The site answers the committee's request (issue 14); the committee reviews again."""
        assert self.staff is not None
        if self._closed_out(subj):
            return
        cases = self.call(crc.crc_queue, self.staff.crc, self.study_id)
        waiting = [c for c in cases if c.subject == subj.number and c.status == "info_requested"]
        if waiting:
            self.call(
                crc_dossier.reply_to_crc,
                self.staff.coordinator[subj.site],
                self.study_id,
                waiting[0].id,
                text=self.rng.choice(
                    [
                        "Venogram uploaded to the core-lab portal",
                        "Core-lab TTE report attached; LVEF re-measured at 35%",
                        "Heart-team minutes added to the screening file",
                    ]
                ),
            )
        day = self.today(subj.site)
        self.at(subj.site, day + self.days(2, 8), lambda: self.review(subj, asked=True), minute=120)

    def procedure_day(self, subj: _Subject) -> None:
        assert self.staff is not None
        if self._closed_out(subj):
            return
        day = self.today(subj.site)
        implanter = self.staff.implanter[subj.site]
        failing = None
        if self.anatomy_fail_ids and self.chance(self.config.anatomy_unsuitable):
            failing = self.rng.choice(self.anatomy_fail_ids)
        if self.protocol.screening.anatomy_forms:
            view = self.call(
                screening.record_anatomy,
                implanter,
                self.study_id,
                subj.number,
                forms={
                    k: v
                    for k, v in self.forms.anatomy(day, failing).items()
                    if k in self.protocol.screening.anatomy_forms
                },
            )
            if view.state == SubjectState.SCREEN_FAILED.value:
                self._close(subj)
                return
        try:
            result = self.call(randomization.randomize, implanter, self.study_id, subj.number)
        except PreconditionFailed as exc:
            if exc.code not in {"site-cap-reached", "country-cap-reached", "enrolment-closed"}:
                raise
            self.call(
                screening.screen_fail_other,
                self.staff.coordinator[subj.site],
                self.study_id,
                subj.number,
                reason=exc.message,
            )
            self._close(subj)
            return
        subj.randomized_on = dt.date.fromisoformat(result.randomized_on)
        self.randomized += 1
        self.in_pipeline -= 1
        self.summary.randomized += 1
        if self.progress is not None:
            self.progress(self.randomized, self.config.subjects)
        if self.randomized >= self.config.subjects:
            self.enrolment_closed = True
        assert result.arm is not None  # the implanting team sees the arm (RAND-8)
        form = self.protocol.arm(result.arm).procedure_form
        if form is not None:
            # drawn for every arm, so the arm never shifts the random stream (same seed, same
            # trial whatever the allocation list)
            recaptured = self.chance(self.config.implant_not_released)
            released = form != "implant_procedure" or not recaptured
            self.summary.implants_not_released += not released
            self.call(
                followup.record_procedure,
                implanter,
                self.study_id,
                subj.number,
                values=self.forms.procedure(
                    form, day, released, self.device_for(subj.site, result.arm)
                ),
            )
            self.at(subj.site, day + self.days(1, 3), lambda: self.discharge(subj), minute=90)
        self.plan_follow_up(subj, last=self.randomized == self.config.subjects)

    def discharge(self, subj: _Subject) -> None:
        assert self.staff is not None
        if not self._before_exit(subj, self.today(subj.site)):
            return
        self.call(
            followup.record_discharge,
            self.staff.coordinator[subj.site],
            self.study_id,
            subj.number,
            discharged_on=self.today(subj.site),
        )

    # ----------------------------------------------------------------- follow-up

    def plan_follow_up(self, subj: _Subject, *, last: bool) -> None:
        assert subj.randomized_on is not None
        day0 = subj.randomized_on
        cfg = self.config
        exits = []
        if cfg.deaths_per_year > 0:
            exits.append((self.rng.expovariate(cfg.deaths_per_year / 365.25), "death"))
        if cfg.withdrawals_per_year > 0:
            exits.append((self.rng.expovariate(cfg.withdrawals_per_year / 365.25), "withdraw"))
        if exits:
            days, kind = min(exits)
            exit_day = day0 + dt.timedelta(days=max(2, int(days)))
            subj.exit_day, subj.exit_kind = exit_day, kind
            self.at(subj.site, exit_day + self.days(0, 5), lambda: self.exit(subj), minute=200)
        if self.chance(cfg.drop_out):
            subj.stopped_coming = day0 + self.days(20, 700)
        for i, visit in enumerate(self.visits):
            window = window_for(day0, visit_spec(visit))
            first = last and i == 0
            roll = self.rng.random()
            if not first and roll > 1 - cfg.visit_forgotten:
                continue  # nobody records it: the grid and worklist show it overdue
            if roll < cfg.visit_missed or (
                subj.stopped_coming is not None and window.target >= subj.stopped_coming
            ):
                when = window.end + self.days(1, 10)
                self.at(subj.site, when, partial(self.miss, subj, visit.code, first), 300)
            else:
                if roll < cfg.visit_missed + cfg.visit_late:
                    on = window.end + self.days(1, 21)
                else:
                    on = window.start + dt.timedelta(
                        days=self.rng.randint(0, (window.end - window.start).days)
                    )
                self.at(subj.site, on, partial(self.visit, subj, visit.code, first), 240)
        years = 5.0
        for _ in range(_poisson(self.rng, cfg.adverse_events_per_year * years)):
            onset = day0 + self.days(1, int(365 * years))
            mae = "none"
            if self.mae and self.chance(0.05):
                mae = self.rng.choice(self.mae)
            self.at(
                subj.site,
                onset + self.days(0, 7),
                partial(self.adverse_event, subj, onset, mae),
                minute=320,
            )
        for _ in range(_poisson(self.rng, cfg.hf_hospitalizations_per_year * years)):
            admitted = day0 + self.days(5, int(365 * years))
            discharged = admitted + self.days(2, 10)
            if subj.exit_day is not None and discharged >= subj.exit_day:
                continue
            self.at(
                subj.site,
                discharged + self.days(1, 7),
                partial(self.hf_hospitalization, subj, admitted, discharged),
                minute=330,
            )
        if self.chance(cfg.therapy_probability):
            on = day0 + self.days(10, 730)
            self.at(subj.site, on + self.days(0, 10), lambda: self.therapy(subj, on), minute=340)

    def _before_exit(self, subj: _Subject, day: dt.date) -> bool:
        return not subj.exited and (subj.exit_day is None or day < subj.exit_day)

    def _stop_if_last(self, first_of_last: bool) -> None:
        if first_of_last and self.config.as_of is None:
            self.stop_at = self.clock.now

    def visit(self, subj: _Subject, code: str, first_of_last: bool) -> None:
        assert self.staff is not None
        day = self.today(subj.site)
        self._stop_if_last(first_of_last)
        if not self._before_exit(subj, day):
            return
        visit = self.protocol.visit(code)
        forms = {
            f: self._in_force(subj.site, f, self.forms.visit(f, day, subj.hf_uncounted))
            for f in visit.forms
        }
        self.visit_fields[(subj.number, code)] = set(forms.get("follow_up", {}))
        if any("hf_hospitalizations" in values for values in forms.values()):
            subj.hf_uncounted = 0
        self.call(
            followup.record_visit,
            self.staff.coordinator[subj.site],
            self.study_id,
            subj.number,
            visit_code=code,
            visit_date=day,
            forms=forms,
        )
        self.summary.visits_done += 1
        assert subj.randomized_on is not None
        if day > window_for(subj.randomized_on, visit_spec(visit)).end:
            self.summary.visits_late += 1
        if "follow_up" in forms and self.chance(self.config.query_probability):
            self.at(
                subj.site, day + self.days(2, 30), lambda: self.raise_query(subj, code), minute=400
            )
        if code == self.protocol.blinding.unblind_after_visit:
            self.at(subj.site, day + self.days(1, 14), lambda: self.unblind(subj), minute=420)
        if code == (self.protocol.follow_up.completion_visit or self.visits[-1].code):
            self.at(subj.site, day + self.days(1, 14), lambda: self.complete(subj), minute=440)

    def miss(self, subj: _Subject, code: str, first_of_last: bool) -> None:
        assert self.staff is not None
        day = self.today(subj.site)
        self._stop_if_last(first_of_last)
        if not self._before_exit(subj, day):
            return
        coord = self.staff.coordinator[subj.site]
        self.call(
            followup.miss_visit,
            coord,
            self.study_id,
            subj.number,
            visit_code=code,
            reason="no contact with subject",
        )
        self.summary.visits_missed += 1
        subj.missed += 1
        needed = self.protocol.follow_up.lost_after_missed_contacts
        if subj.stopped_coming is not None and subj.missed >= needed:
            self.call(
                followup.mark_lost_to_follow_up,
                coord,
                self.study_id,
                subj.number,
                on=day,
                reason="no contact after repeated attempts",
            )
            subj.exited = True
            self.summary.lost_to_follow_up += 1

    def exit(self, subj: _Subject) -> None:
        assert self.staff is not None and subj.exit_day is not None
        if subj.exited:
            return
        coord = self.staff.coordinator[subj.site]
        if subj.exit_kind == "death":
            cause = self.rng.choice(["cardiovascular", "heart failure", "cancer", "sepsis"])
            self.call(
                followup.record_death,
                coord,
                self.study_id,
                subj.number,
                death_date=subj.exit_day,
                cause=cause,
            )
            self.summary.deaths += 1
        else:
            self.call(
                followup.withdraw,
                coord,
                self.study_id,
                subj.number,
                withdrawn_on=subj.exit_day,
                reason="subject withdrew consent",
                follow_up_contact_allowed=self.chance(0.5),
            )
            self.summary.withdrawals += 1
        subj.exited = True

    def adverse_event(self, subj: _Subject, onset: dt.date, mae: str) -> None:
        assert self.staff is not None
        if not self._before_exit(subj, onset) or subj.exited:
            return
        self.call(
            followup.record_adverse_event,
            self.staff.coordinator[subj.site],
            self.study_id,
            subj.number,
            values=self._in_force(subj.site, "adverse_event", self.forms.adverse_event(onset, mae)),
        )
        self.summary.adverse_events += 1

    def _fields_at(self, site: str) -> dict[str, set[str]]:
        after, since = self.fields_after, self.amended_from
        if after is not None and since is not None and self.today(site) >= since:
            return after
        return self.fields_before

    def _in_force(self, site: str, form: str, values: dict[str, Any]) -> dict[str, Any]:
        """The values the form of the version in force at the site has fields for."""
        fields = self._fields_at(site).get(form)
        return values if fields is None else {k: v for k, v in values.items() if k in fields}

    def hf_hospitalization(self, subj: _Subject, admitted: dt.date, discharged: dt.date) -> None:
        """Dated on the adverse-event form where it has the dates (2.0), else counted at the
        subject's next visit (1.0)."""
        assert self.staff is not None
        if not self._before_exit(subj, discharged) or subj.exited:
            return
        if "admission_date" not in self._fields_at(subj.site).get("adverse_event", set()):
            subj.hf_uncounted += 1
            return
        self.call(
            followup.record_adverse_event,
            self.staff.coordinator[subj.site],
            self.study_id,
            subj.number,
            values=self.forms.hospitalization(admitted, discharged),
        )
        self.summary.adverse_events += 1
        self.summary.hf_hospitalizations += 1

    def amend(self) -> None:
        """Flagship amendment 1, signed by the study manager, effective at every site from
        the latest site-local today (PROT-2: never retroactive)."""
        assert self.staff is not None
        loaded = load_protocol(flagship_v2_path())
        effective = max(self.today(site) for site in self.zones)
        self.call(
            amendments.propose_amendment,
            self.staff.manager,
            self.study_id,
            loaded,
            reason=AMENDMENT_REASON,
            password=self.staff.password,
            effective_from=effective,
        )
        self.fields_after, self.amended_from = _fields(loaded.protocol), effective
        self.summary.amended_on = effective.isoformat()

    def therapy(self, subj: _Subject, on: dt.date) -> None:
        assert self.staff is not None
        if not self._before_exit(subj, on):
            return
        self.call(
            followup.record_therapy,
            self.staff.coordinator[subj.site],
            self.study_id,
            subj.number,
            therapy_date=on,
            therapy_type=self.rng.choice(self.therapy_types),
        )
        self.summary.therapies += 1
        day = self.today(subj.site)
        self.at(subj.site, day + self.days(5, 30), lambda: self.adjudicate(subj, on), minute=460)

    def adjudicate(self, subj: _Subject, on: dt.date) -> None:
        """The CRC's review of the therapy (THER-2, THER-3); early ones are explicit decisions."""
        assert self.staff is not None
        case = next(
            (
                c
                for c in self.call(crc.crc_queue, self.staff.crc, self.study_id)
                if c.subject == subj.number and c.therapy and c.therapy.date == on.isoformat()
            ),
            None,
        )
        if case is None or case.therapy is None:
            return
        if case.therapy.early:
            decision, reason = "continue_follow_up", "early therapy; follow-up continues"
        elif self.chance(0.6):
            decision, reason = "endpoint_event", "therapy for worsening mitral regurgitation"
        else:
            decision, reason = "not_endpoint_event", "therapy unrelated to the mitral valve"
        self.call(
            crc.decide_therapy_case,
            self.staff.crc,
            self.study_id,
            case.id,
            classification=decision,
            reason=reason,
            password=self.staff.password,
        )
        self.summary.crc_therapy_decisions += 1

    def raise_query(self, subj: _Subject, code: str) -> None:
        assert self.staff is not None
        saved = self.visit_fields.get((subj.number, code), set())
        fld = self.rng.choice([c for c in sorted(QUERY_TEXTS) if c in saved])
        view = self.call(
            data_queries.raise_query,
            self.staff.monitor,
            self.study_id,
            subj.number,
            form_code="follow_up",
            field=fld,
            text=self.rng.choice(QUERY_TEXTS[fld]),
            visit_code=code,
        )
        self.summary.queries_raised += 1
        day = self.today(subj.site)
        # a busy site answers late: some queries are still open when the run stops
        late = self.chance(0.2)
        self.at(
            subj.site,
            day + (self.days(30, 120) if late else self.days(1, 15)),
            lambda: self.answer_query(subj, view.id, fld),
            480,
        )

    def answer_query(self, subj: _Subject, query_id: int, fld: str) -> None:
        assert self.staff is not None
        correct = fld == "kccq_overall_score" and self.chance(0.3)
        self.call(
            data_queries.answer_query,
            self.staff.coordinator[subj.site],
            self.study_id,
            query_id,
            text="corrected from the source document" if correct else self.rng.choice(ANSWER_TEXTS),
            new_value=round(self.rng.uniform(35, 85), 1) if correct else None,
            reason="transcription error" if correct else None,
        )
        self.summary.queries_answered += 1
        day = self.today(subj.site)
        # the monitor reviews answers at the next monitoring visit: some wait (answered)
        wait = self.days(20, 90) if self.chance(0.2) else self.days(1, 10)
        self.at(subj.site, day + wait, lambda: self.close_query(query_id), 500)

    def close_query(self, query_id: int) -> None:
        assert self.staff is not None
        self.call(data_queries.close_query, self.staff.monitor, self.study_id, query_id)
        self.summary.queries_closed += 1

    def unblind(self, subj: _Subject) -> None:
        assert self.staff is not None
        if subj.exited:
            return
        self.call(
            followup.unblind_subject,
            self.staff.coordinator[subj.site],
            self.study_id,
            subj.number,
            password=self.staff.password,
        )
        self.summary.unblinded += 1

    def complete(self, subj: _Subject) -> None:
        assert self.staff is not None
        if subj.exited:
            return
        coord = self.staff.coordinator[subj.site]
        view = self.call(queries.get_subject, coord, self.study_id, subj.number)
        if view.state != SubjectState.UNBLINDED.value:
            return  # not unblinded (the unblinding visit was missed): stays in follow-up
        self.call(followup.complete_subject, coord, self.study_id, subj.number)
        subj.exited = True
        self.summary.completed += 1

    # ----------------------------------------------------------------- the run

    def run(self) -> SimulationSummary:
        self.setup()
        if self.config.amendment_on is not None:
            first = min(self.zones)
            self.at(first, self.config.amendment_on, self.amend, minute=-60)
        while self.queue:
            moment, _seq, fn = heapq.heappop(self.queue)
            if self.stop_at is not None and moment > self.stop_at:
                break
            self.clock.now = moment
            self.last_day = max(self.last_day, moment.date())
            fn()
        end = self.config.as_of or self.last_day
        self.summary.end = end.isoformat()
        states = Counter(v.state for v in _all_subjects(self.ctx, self._reader(), self.study_id))
        self.summary.states = dict(sorted(states.items()))
        flow = report_views.consort(self.ctx, self._reader(), self.study_id)
        self.summary.excluded = {k: v for k, v in flow.excluded.items()}
        return self.summary

    def _reader(self) -> Actor:
        assert self.staff is not None
        return self.staff.manager


def _fields(protocol: Protocol) -> dict[str, set[str]]:
    return {form.code: {f.code for f in form.fields} for form in protocol.forms}


def _poisson(rng: random.Random, mean: float) -> int:
    """Knuth's method; fine for the small means used here."""
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def _sites(ctx: ServiceContext, actor: Actor, study_id: int) -> list[SiteInfo]:
    return list_sites(ctx, actor, study_id)


def _all_subjects(ctx: ServiceContext, actor: Actor, study_id: int) -> list[Any]:
    out: list[Any] = []
    offset = 0
    while True:
        page = queries.list_subjects(ctx, actor, study_id, offset=offset, limit=500)
        out.extend(page.items)
        offset += len(page.items)
        if offset >= page.total or not page.items:
            return out


# --------------------------------------------------------------------------- entry points


def check_simulable(ctx: ServiceContext, study_code: str | None) -> StudyContents:
    """The study when the simulator may write to it; refuses otherwise, before anything is
    written: only demo and sandbox studies, and only while they have no subjects."""
    contents = study_contents(ctx, operator_actor(), study_code)
    study = contents.study
    if study.mode not in SIM_MODES:
        raise SimulationRefused(
            f"study {study.code} is a {study.mode} study; the simulator writes synthetic subjects "
            "and runs only on a study created as demo or sandbox ('trialdesk init --demo')",
            reason="not-a-demo-study",
        )
    if contents.subjects:
        raise SimulationRefused(
            f"study {study.code} already has {contents.subjects} subjects; the simulator runs "
            "only on a study with none, so it is not simulating again",
            reason="study-has-subjects",
        )
    return contents


def simulate_trial(
    ctx: ServiceContext,
    study_code: str | None,
    config: SimulationConfig,
    progress: ProgressFn | None = None,
) -> SimulationSummary:
    """Simulate ``config`` on the (demo or sandbox, empty) study through the services."""
    contents = check_simulable(ctx, study_code)
    study_id, code, loaded = contents.study.id, contents.study.code, contents.protocol
    config.check(loaded.protocol)
    missing = _Forms.supported(loaded.protocol)
    if missing:
        raise SimulationRefused(
            "the simulator fills the flagship protocol's forms only; this protocol also needs "
            + ", ".join(missing),
            reason="protocol-not-simulable",
        )
    try:
        return _Engine(ctx, study_id, code, loaded, config, progress).run()
    except TrialError as exc:
        raise PreconditionFailed(
            f"the simulation stopped: a service refused a step ({exc.message}); the study "
            "keeps what was simulated up to that step",
            reason="simulation-step-refused",
        ) from exc


# --------------------------------------------------------------------------- checks


def _csv(folder: Path, table: str) -> list[dict[str, str]]:
    with (folder / f"{table}.csv").open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def trial_digest(ctx: ServiceContext, actor: Actor, study_id: int) -> str:
    """SHA-256 over every subject's number, state and dates and its visits: equal digests mean
    the same trial (arms left out: the list's seed is the study's, not the simulator's)."""
    lines = []
    for v in sorted(_all_subjects(ctx, actor, study_id), key=lambda s: s.number):
        visits = ";".join(f"{x.code}:{x.status}:{x.visit_date}" for x in v.visits)
        lines.append(
            "|".join(
                str(x)
                for x in (
                    v.number,
                    v.state,
                    v.registered_on,
                    v.consent_date,
                    v.screen_failure_reason,
                    v.randomized_on,
                    v.exit_date,
                    v.unblinded_on,
                    visits,
                )
            )
        )
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def check_consistency(
    ctx: ServiceContext, reader: Actor, study_id: int, *, verify_audit: bool = True
) -> list[str]:
    """Problems found in a trial's data, read through the services (empty when consistent).

    ``reader`` needs a role that may export blinded data and read the CONSORT flow (monitor or
    study manager). Checks: CONSORT counts equal the counts by state and failure reason; every
    randomized subject has exactly one allocation and nobody else has one; no visit, therapy or
    dated form before randomization (after consent for screening forms) or after the exit
    date; and, unless ``verify_audit`` is False, that the audit chain verifies.
    """
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="trialdesk-check-") as tmp:
        out = Path(tmp) / "csv"
        exports.export_csv(ctx, reader, study_id, out)
        subjects = {r["id"]: r for r in _csv(out, "subjects")}
        rands = Counter(r["subject_id"] for r in _csv(out, "randomizations"))
        visits = _csv(out, "visits")
        therapies = _csv(out, "therapies")
        forms = _csv(out, "form_records")
    flow = report_views.consort(ctx, reader, study_id)
    live = [s for s in subjects.values() if s["test_subject"] not in ("True", "1", "true")]
    excluded = Counter(
        s["screen_failure_reason"] or ScreenFailureReason.OTHER.value
        for s in live
        if s["state"] == SubjectState.SCREEN_FAILED.value
    )
    randomized = [s for s in live if s["randomized_on"]]
    if flow.assessed != len(live):
        problems.append(f"CONSORT assessed {flow.assessed} != {len(live)} live subjects")
    for reason, n in flow.excluded.items():
        if n != excluded.get(reason, 0):
            problems.append(f"CONSORT excluded[{reason}] {n} != {excluded.get(reason, 0)}")
    if flow.randomized != len(randomized):
        problems.append(f"CONSORT randomized {flow.randomized} != {len(randomized)}")
    in_screening = sum(
        1 for s in live if not s["randomized_on"] and s["state"] != SubjectState.SCREEN_FAILED
    )
    if flow.in_screening != in_screening:
        problems.append(f"CONSORT in screening {flow.in_screening} != {in_screening}")
    ever = {x.value for x in EVER_RANDOMIZED}
    for sid, s in subjects.items():
        n = rands.get(sid, 0)
        if s["randomized_on"] and n != 1:
            problems.append(f"{s['number']}: randomized with {n} allocations")
        if not s["randomized_on"] and n:
            problems.append(f"{s['number']}: {n} allocations but not randomized")
        if s["randomized_on"] and s["state"] not in ever:
            problems.append(f"{s['number']}: randomized but in state {s['state']}")
        if s["state"] in {"randomized", "unblinded", "completed"} and not s["randomized_on"]:
            problems.append(f"{s['number']}: state {s['state']} without randomization")
    for v in visits:
        s = subjects[v["subject_id"]]
        if v["status"] != "done":
            continue
        if not s["randomized_on"] or v["visit_date"] < s["randomized_on"]:
            problems.append(f"{s['number']}: visit {v['visit_code']} before randomization")
        if s["exit_date"] and v["visit_date"] > s["exit_date"]:
            problems.append(f"{s['number']}: visit {v['visit_code']} after exit ({s['state']})")
    for t in therapies:
        s = subjects[t["subject_id"]]
        if not s["randomized_on"] or t["therapy_date"] < s["randomized_on"]:
            problems.append(f"{s['number']}: therapy before randomization")
        if s["exit_date"] and t["therapy_date"] > s["exit_date"]:
            problems.append(f"{s['number']}: therapy after exit ({s['state']})")
    for f in forms:
        s = subjects[f["subject_id"]]
        if not f["data"]:
            continue  # the concealed procedure record: withheld from a blinded export
        dates = [x for x in json.loads(f["data"]).values() if _is_date(x)]
        for d in dates:
            if s["consent_date"] and d < s["consent_date"]:
                problems.append(f"{s['number']}: {f['form_code']} dated before consent")
            if s["exit_date"] and d > s["exit_date"] and f["form_code"] != "adverse_event":
                problems.append(f"{s['number']}: {f['form_code']} dated after exit")
            if f["form_code"] == "adverse_event" and s["exit_date"] and d > s["exit_date"]:
                problems.append(f"{s['number']}: adverse event after exit")
    if verify_audit:
        result = maintenance.verify_audit(ctx, operator_actor("trialdesk-simulator"))
        if not result.ok:
            problems.append(f"audit chain: {result.problem}")
    return problems


def _is_date(value: object) -> bool:
    if not isinstance(value, str) or len(value) != 10:
        return False
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        return False
    return True
