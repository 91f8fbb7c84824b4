"""Allocation lists and randomization (RAND-2..RAND-6, ELIG-4).

Concurrency (RAND-5): a randomization updates the subject with a guarded update (one winner
per subject), then locks its stratum's cursor row (one slot user at a time, slots in order),
and last the study row for the enrolment cap, so the cap holds exactly under any load. The
arm is read from the encrypted slot and stored encrypted; no audit entry carries it.
"""

from __future__ import annotations

import hashlib
import json
import random
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.exc import IntegrityError

from trialdesk.domain.errors import (
    ActionNotAllowed,
    Conflict,
    PreconditionFailed,
    ValidationFailed,
)
from trialdesk.domain.lifecycle import Action
from trialdesk.domain.randomization import (
    complete_assign,
    minimization_assign,
)
from trialdesk.domain.roles import Role
from trialdesk.protocol.loader import LoadedProtocol
from trialdesk.protocol.models import Method
from trialdesk.services.access import Actor, require
from trialdesk.services.blinding import may_see_arm
from trialdesk.services.common import (
    audit,
    check_action,
    current_protocol_row,
    load_subject,
    protocol_of,
    site_today,
    transition,
)
from trialdesk.services.context import ServiceContext
from trialdesk.services.forms import subject_form_values
from trialdesk.services.lists import (
    active_list,
    arms_of,
    check_low_slots,
    decode_slot,
    extend_stratum,
)
from trialdesk.services.unblinding import trial_unblinded
from trialdesk.store.tables import (
    AllocationSlotRow,
    RandomizationRow,
    SiteRow,
    StratumCursorRow,
    StudyRow,
    SubjectRow,
)
from trialdesk.store.uow import UnitOfWork

RANDOMIZERS = (Role.COORDINATOR, Role.IMPLANTER)


@dataclass(frozen=True)
class RandomizationResult:
    """What the caller sees: the arm only when the blinding rule allows it."""

    subject: str
    randomization_number: str
    randomized_on: str
    stratum: str
    arm: str | None = None
    arm_label: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "subject": self.subject,
            "randomized": True,
            "randomization_number": self.randomization_number,
            "randomized_on": self.randomized_on,
        }
        if self.arm is not None:
            out["arm"] = {"code": self.arm, "label": self.arm_label}
        return out


def _stratum(
    uow: UnitOfWork, ctx: ServiceContext, subject: SubjectRow, site: SiteRow, loaded: LoadedProtocol
) -> tuple[str, dict[str, str]]:
    """Strata values come from data already recorded, never retyped (RAND-2)."""
    levels = _levels(uow, ctx, subject, site, loaded.protocol.randomization.strata)
    if not levels:
        return "all", levels
    return "|".join(f"{factor}={level}" for factor, level in levels.items()), levels


def _levels(
    uow: UnitOfWork, ctx: ServiceContext, subject: SubjectRow, site: SiteRow, factors: list[str]
) -> dict[str, str]:
    values: dict[str, dict[str, object]] | None = None
    levels: dict[str, str] = {}
    for factor in factors:
        if factor == "site":
            levels[factor] = site.code
            continue
        if values is None:
            values = subject_form_values(uow, ctx, subject.id)
        form, fld = factor.split(".", 1)
        value = values.get(form, {}).get(fld)
        if value is None:
            raise PreconditionFailed(
                f"stratification factor {factor} has no recorded value for {subject.number}",
                reason="stratum-unknown",
            )
        levels[factor] = str(value).lower() if isinstance(value, bool) else str(value)
    return levels


def _minimization_levels(
    uow: UnitOfWork, ctx: ServiceContext, subject: SubjectRow, site: SiteRow, loaded: LoadedProtocol
) -> dict[str, str]:
    spec = loaded.protocol.randomization.minimization
    assert spec is not None  # the protocol checks guarantee it for this method
    return _levels(uow, ctx, subject, site, [f.factor for f in spec.factors])


def _max_in_flight(ctx: ServiceContext, uow: UnitOfWork) -> int:
    """An upper bound on randomizations in flight at once: the server's connection limit."""
    cached = ctx.memo.get("max_connections")
    if not isinstance(cached, int):
        cached = int(uow.session.execute(text("SHOW max_connections")).scalar_one())
        ctx.memo["max_connections"] = cached
    return cached


class _NeedsStudyLock(Exception):
    """Internal: this randomization is near a cap; redo it holding the study lock."""


def _enter_cap_lock(
    ctx: ServiceContext,
    uow: UnitOfWork,
    study_id: int,
    site: SiteRow,
    loaded: LoadedProtocol,
    *,
    exclusive: bool,
) -> None:
    """Take the study lock this randomization needs, before writing anything that refers to
    the study.

    SQLite serializes writers anyway. On PostgreSQL a randomization far from the caps takes
    a shared (key-share) lock on the study row: such randomizations do not wait for each
    other, and at most M of them are in flight (M = the connection limit). If, under that
    lock, committed + M could exceed the total or country cap, it is redone with the exclusive
    lock, which waits for every shared holder, so the caps are then counted exactly. The
    total never exceeds a cap: a shared randomization starts only while committed + M ≤ cap,
    and an exclusive one only when no shared one is in flight (RAND-4, RAND-5).
    """
    if uow.session.get_bind().dialect.name != "postgresql":
        return
    stmt = select(StudyRow.id).where(StudyRow.id == study_id)
    if exclusive:
        uow.session.execute(stmt.with_for_update())
        return
    uow.session.execute(stmt.with_for_update(read=True, key_share=True))
    margin = _max_in_flight(ctx, uow)
    enrol = loaded.protocol.enrolment
    near = _count(uow, study_id) + margin > enrol.total_cap
    country_cap = _country_cap(loaded, site.country)
    if not near and country_cap is not None:
        near = _count(uow, study_id, country=site.country) + margin > country_cap
    if near:
        raise _NeedsStudyLock


def _count(
    uow: UnitOfWork, study_id: int, *, country: str | None = None, site_id: int | None = None
) -> int:
    stmt = (
        select(func.count())
        .select_from(RandomizationRow)
        .join(SubjectRow, SubjectRow.id == RandomizationRow.subject_id)
        .where(RandomizationRow.study_id == study_id)
    )
    if country is not None:
        stmt = stmt.join(SiteRow, SiteRow.id == SubjectRow.site_id).where(
            SiteRow.country == country
        )
    if site_id is not None:
        stmt = stmt.where(SubjectRow.site_id == site_id)
    return int(uow.session.scalar(stmt) or 0)


def _country_cap(loaded: LoadedProtocol, country: str) -> int | None:
    try:
        return loaded.protocol.country(country).cap
    except KeyError:
        return None


def _minimize(
    uow: UnitOfWork,
    ctx: ServiceContext,
    study_id: int,
    levels: dict[str, str],
    loaded: LoadedProtocol,
) -> tuple[str, dict[str, object]]:
    """Pocock-Simon on the counts read under the study lock, in the writing transaction, so
    two subjects never see the same counts (RAND-5); records randomized in error drop out."""
    spec = loaded.protocol.randomization.minimization
    assert spec is not None  # the study lock is held (see _enter_cap_lock)
    counts: dict[str, dict[str, dict[str, int]]] = {f: {} for f in levels}
    rows = uow.session.execute(
        select(RandomizationRow.arm_enc, RandomizationRow.factors).where(
            RandomizationRow.study_id == study_id, RandomizationRow.in_error.is_(False)
        )
    )
    for arm_enc, factors_json in rows:
        arm = ctx.cipher.decrypt(arm_enc)
        for factor, level in json.loads(factors_json).items():
            if factor in counts:
                per_arm = counts[factor].setdefault(level, {})
                per_arm[arm] = per_arm.get(arm, 0) + 1
    decision = minimization_assign(
        arms_of(loaded),
        counts,
        levels,
        {f.factor: f.weight for f in spec.factors},
        spec.imbalance,
        spec.preferred_probability,
        random.Random(secrets.randbits(64)),
    )
    return decision.arm, decision.to_audit()


def _take_slot(
    uow: UnitOfWork,
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    subject: SubjectRow,
    stratum: str,
    loaded: LoadedProtocol,
    mode: str,
) -> AllocationSlotRow:
    """The next unused slot of the stratum, under the cursor row's lock: each slot at most
    once and in order (RAND-5). Test subjects draw only from test lists, live ones only from
    live lists (RAND-3)."""
    lst = active_list(uow, study_id, mode)
    if lst is None:
        raise PreconditionFailed(
            f"no {mode} allocation list has been loaded; the unblinded statistician "
            "generates or imports one",
            reason="no-allocation-list",
        )
    cstmt = select(StratumCursorRow).where(
        StratumCursorRow.list_id == lst.id, StratumCursorRow.stratum == stratum
    )
    if uow.session.get_bind().dialect.name == "postgresql":
        cstmt = cstmt.with_for_update(key_share=True)
    cursor = uow.session.scalars(cstmt).one_or_none()
    if cursor is None:
        raise PreconditionFailed(
            f"the allocation list has no stratum {stratum}", reason="stratum-unknown"
        )
    if cursor.next_sequence > cursor.size:
        extend_stratum(uow, ctx, actor, lst, cursor, loaded)
    slot_row = uow.session.scalars(
        select(AllocationSlotRow).where(
            AllocationSlotRow.list_id == lst.id,
            AllocationSlotRow.stratum == stratum,
            AllocationSlotRow.sequence == cursor.next_sequence,
        )
    ).one()
    cursor.next_sequence += 1
    slot_row.used_by_subject_id = subject.id
    slot_row.used_at = ctx.now()
    check_low_slots(uow, ctx, lst, cursor)
    return slot_row


def _next_randomization_seq(uow: UnitOfWork, site: SiteRow) -> int:
    """Per-site randomization numbers from an atomic increment (no duplicates, no gaps)."""
    new = uow.session.execute(
        update(SiteRow)
        .where(SiteRow.id == site.id)
        .values(next_randomization_seq=SiteRow.next_randomization_seq + 1)
        .returning(SiteRow.next_randomization_seq)
        .execution_options(synchronize_session=False)
    ).scalar_one()
    return int(new) - 1


def _check_caps(uow: UnitOfWork, study_id: int, site: SiteRow, loaded: LoadedProtocol) -> None:
    """The caps of RAND-4, counted after this randomization's row is written (so a cap is
    exceeded when count > cap). Exact: the site cap under the site row's lock (taken by the
    numbering), the total and country caps under the study lock or its margin."""
    enrol = loaded.protocol.enrolment
    if _count(uow, study_id) > enrol.total_cap:
        raise PreconditionFailed(
            f"enrolment target reached: {enrol.total_cap} of {enrol.total_cap} subjects randomized",
            reason="enrolment-closed",
        )
    site_cap = site.cap or enrol.cap_per_site
    if site_cap is not None and _count(uow, study_id, site_id=site.id) > site_cap:
        raise PreconditionFailed(
            f"site {site.code} has reached its cap of {site_cap} randomized subjects",
            reason="site-cap-reached",
        )
    country_cap = _country_cap(loaded, site.country)
    if country_cap is not None and _count(uow, study_id, country=site.country) > country_cap:
        raise PreconditionFailed(
            f"country {site.country} has reached its cap of {country_cap} randomized subjects",
            reason="country-cap-reached",
        )


def scoped_key(study_id: int, username: str, key: str) -> str:
    """The stored form of an idempotency key (RAND-5): a SHA-256 over the study, the user who
    sent it and the key. A key is its maker's own: someone else sending the same key makes a
    request of their own (checked like any other), never a replay of the maker's; and the
    stored value tells a database or export reader nothing of the key."""
    text = f"trialdesk-idempotency/1\x1f{study_id}\x1f{username}\x1f{key}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _existing_for_key(
    ctx: ServiceContext, actor: Actor, study_id: int, number: str, key: str
) -> RandomizationResult | None:
    """The caller's own earlier result for ``key``, after the same role and site checks a new
    request gets: a replay answers only who could have made the request."""
    with ctx.uow(readonly=True) as uow:
        subject = load_subject(uow, actor, study_id, number)
        require(
            actor,
            study_id,
            RANDOMIZERS,
            site_id=subject.site_id,
            action="randomize",
        )
        rand = uow.session.scalars(
            select(RandomizationRow).where(
                RandomizationRow.idempotency_key == scoped_key(study_id, actor.label, key)
            )
        ).one_or_none()
        if rand is None:
            return None
        if rand.subject_id != subject.id:
            raise ValidationFailed(
                "this idempotency key was already used for another subject",
                {"idempotency_key": "reused"},
            )
        return _result(ctx, uow, actor, subject, rand)


def _result(
    ctx: ServiceContext, uow: UnitOfWork, actor: Actor, subject: SubjectRow, rand: RandomizationRow
) -> RandomizationResult:
    arm = label = None
    if may_see_arm(
        actor,
        subject.study_id,
        subject.site_id,
        subject_unblinded=subject.unblinded_on is not None,
        for_procedure=True,
        trial_unblinded=trial_unblinded(uow, subject.study_id),
    ):
        arm = ctx.cipher.decrypt(rand.arm_enc)
        loaded = protocol_of(ctx, current_protocol_row(uow, subject.study_id))
        label = loaded.protocol.arm(arm).label
    return RandomizationResult(
        subject=subject.number,
        randomization_number=rand.number,
        randomized_on=rand.randomized_on.isoformat(),
        stratum=rand.stratum,
        arm=arm,
        arm_label=label,
    )


def randomize(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    number: str,
    *,
    idempotency_key: str | None = None,
) -> RandomizationResult:
    """Randomize one subject on the procedure day, or refuse naming the unmet condition."""
    if idempotency_key is not None:
        if not idempotency_key.strip() or len(idempotency_key) > 150:
            raise ValidationFailed(
                "idempotency key must be 1-150 characters", {"idempotency_key": "invalid"}
            )
        earlier = _existing_for_key(ctx, actor, study_id, number, idempotency_key)
        if earlier is not None:
            return earlier
    try:
        try:
            return _randomize(ctx, actor, study_id, number, idempotency_key)
        except _NeedsStudyLock:
            return _randomize(ctx, actor, study_id, number, idempotency_key, exclusive=True)
    except (Conflict, IntegrityError, ActionNotAllowed):
        # a concurrent request with the same key may have won the race: same answer
        if idempotency_key is not None:
            earlier = _existing_for_key(ctx, actor, study_id, number, idempotency_key)
            if earlier is not None:
                return earlier
        raise


def _randomize(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    number: str,
    idempotency_key: str | None,
    *,
    exclusive: bool = False,
) -> RandomizationResult:
    now = ctx.now()
    with ctx.uow() as uow:
        subject = load_subject(uow, actor, study_id, number)
        require(actor, study_id, RANDOMIZERS, site_id=subject.site_id, action="randomize")
        check_action(subject, Action.RANDOMIZE)
        if subject.consent_date is None:
            raise PreconditionFailed(
                f"subject {number} has no recorded consent", reason="consent-missing"
            )
        if not subject.crc_approved:
            raise PreconditionFailed(
                f"subject {number} has no CRC approval", reason="crc-approval-missing"
            )
        if subject.anatomy_suitable is not True:
            raise PreconditionFailed(
                f"subject {number}: procedure-day anatomy (angiogram and venogram) has not been "
                "recorded as suitable",
                reason="anatomy-not-confirmed",
            )
        site = uow.session.get(SiteRow, subject.site_id)
        assert site is not None
        today = site_today(site, now)
        prow = current_protocol_row(uow, study_id, today)  # in force at the site (PROT-2)
        loaded = protocol_of(ctx, prow)
        # one winner per subject: the guarded state update comes first
        transition(uow, ctx, actor, subject, Action.RANDOMIZE, changes={"randomized_on": today})
        design = loaded.protocol.randomization
        _enter_cap_lock(
            ctx,
            uow,
            study_id,
            site,
            loaded,
            exclusive=exclusive or design.method is Method.MINIMIZATION,
        )
        stratum, levels = _stratum(uow, ctx, subject, site, loaded)
        mode = "test" if subject.test_subject else "live"
        slot_row: AllocationSlotRow | None = None
        detail: dict[str, Any] = {}
        decision: dict[str, object] | None = None
        if design.method is Method.PERMUTED_BLOCKS:
            slot_row = _take_slot(uow, ctx, actor, study_id, subject, stratum, loaded, mode)
            arm = decode_slot(ctx, slot_row).arm
            detail = {"list": slot_row.list_id, "slot": slot_row.sequence}
        elif design.method is Method.COMPLETE:
            arm = complete_assign(arms_of(loaded), random.Random(secrets.randbits(64)))
        else:
            levels = _minimization_levels(uow, ctx, subject, site, loaded)
            arm, decision = _minimize(uow, ctx, study_id, levels, loaded)
        number = f"{site.code}-R{_next_randomization_seq(uow, site):03d}"
        rand = RandomizationRow(
            study_id=study_id,
            subject_id=subject.id,
            slot_id=slot_row.id if slot_row else None,
            number=number,
            stratum=stratum,
            factors=json.dumps(levels, sort_keys=True),
            arm_enc=ctx.cipher.encrypt(arm),
            detail_enc=ctx.cipher.encrypt(json.dumps(decision)) if decision else None,
            randomized_on=today,
            randomized_at=now,
            randomized_by=actor.label,
            idempotency_key=scoped_key(study_id, actor.label, idempotency_key)
            if idempotency_key
            else None,
            in_error=False,
            protocol_version_id=prow.id,
        )
        uow.session.add(rand)
        uow.session.flush()
        _check_caps(uow, study_id, site, loaded)
        audit(
            uow,
            ctx,
            actor,
            subject,
            "allocate",
            entity="randomization",
            entity_id=rand.number,
            new={"randomization_number": rand.number, "stratum": stratum, **detail},
            protocol_sha256=prow.sha256,
        )
        uow.commit()
        return _result(ctx, uow, actor, subject, rand)
