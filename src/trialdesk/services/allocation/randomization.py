"""Randomization (RAND-2..RAND-6, ELIG-4), on the allocation repositories.

Concurrency (RAND-5): a randomization updates the subject with a guarded update (one winner
per subject), then takes the study lock it needs for the caps (shared far from them), then
draws its stratum's next slot under the cursor row's lock (one slot user at a time, slots in
order), then numbers itself under the site row's lock, so the caps hold exactly under any
load. The arm is read from the encrypted slot and stored encrypted; no audit entry carries it.
"""

from __future__ import annotations

import hashlib
import json
import random
import secrets
from dataclasses import dataclass
from typing import Any

from trialdesk.domain.errors import (
    ActionNotAllowed,
    Conflict,
    NotFound,
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
from trialdesk.services.access import Actor, require, require_site_visible
from trialdesk.services.allocation.lists import (
    arms_of,
    check_low_slots,
    decode_slot,
    extend_stratum,
)
from trialdesk.services.blinding import may_see_arm
from trialdesk.services.common import (
    acting_with,
    check_action,
    loaded_protocol,
    version_in_force,
)
from trialdesk.services.context import ServiceContext
from trialdesk.services.forms import subject_form_values
from trialdesk.store.records import (
    AllocationSlot,
    ProtocolVersion,
    Randomization,
    Site,
    Subject,
    SubjectRead,
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
    uow: UnitOfWork, ctx: ServiceContext, subject: Subject, site: Site, loaded: LoadedProtocol
) -> tuple[str, dict[str, str]]:
    """Strata values come from data already recorded, never retyped (RAND-2)."""
    levels = _levels(uow, ctx, subject, site, loaded.protocol.randomization.strata)
    if not levels:
        return "all", levels
    return "|".join(f"{factor}={level}" for factor, level in levels.items()), levels


def _levels(
    uow: UnitOfWork, ctx: ServiceContext, subject: Subject, site: Site, factors: list[str]
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
    uow: UnitOfWork, ctx: ServiceContext, subject: Subject, site: Site, loaded: LoadedProtocol
) -> dict[str, str]:
    spec = loaded.protocol.randomization.minimization
    assert spec is not None  # the protocol checks guarantee it for this method
    return _levels(uow, ctx, subject, site, [f.factor for f in spec.factors])


_SERIAL = "serial"


def _max_in_flight(ctx: ServiceContext, uow: UnitOfWork) -> int | None:
    """An upper bound on randomizations in flight at once (the server's connection limit),
    read once per process; None where writers are serialized (SQLite)."""
    cached = ctx.memo.get("max_in_flight")
    if cached is None:
        bound = uow.randomizations.parallel_writers()
        cached = ctx.memo["max_in_flight"] = _SERIAL if bound is None else bound
    return cached if isinstance(cached, int) else None


class _NeedsStudyLock(Exception):
    """Internal: this randomization is near a cap; redo it holding the study lock."""


def _enter_cap_lock(
    ctx: ServiceContext,
    uow: UnitOfWork,
    study_id: int,
    site: Site,
    loaded: LoadedProtocol,
    *,
    exclusive: bool,
) -> None:
    """Take the study lock this randomization needs, before writing anything that refers to
    the study.

    Where writers are serialized (SQLite) nothing is needed. Otherwise a randomization far
    from the caps takes a shared (key-share) lock on the study row: such randomizations do
    not wait for each other, and at most M of them are in flight (M = the connection limit).
    If, under that lock, committed + M could exceed the total or country cap, it is redone
    with the exclusive lock, which waits for every shared holder, so the caps are then
    counted exactly. The total never exceeds a cap: a shared randomization starts only while
    committed + M ≤ cap, and an exclusive one only when no shared one is in flight (RAND-4,
    RAND-5).
    """
    margin = _max_in_flight(ctx, uow)
    if margin is None:
        return
    if exclusive:
        uow.lock_study(study_id)
        return
    uow.lock_study(study_id, shared=True)
    enrol = loaded.protocol.enrolment
    counts = uow.randomizations.counts(study_id, site_id=site.id, country=site.country)
    near = counts.total + margin > enrol.total_cap
    country_cap = _country_cap(loaded, site.country)
    if not near and country_cap is not None:
        near = counts.country + margin > country_cap
    if near:
        raise _NeedsStudyLock


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
    for arm_enc, factors_json in uow.randomizations.allocated(study_id):
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
    subject: Subject,
    stratum: str,
    loaded: LoadedProtocol,
    mode: str,
) -> AllocationSlot:
    """The next unused slot of the stratum, under the cursor row's lock: each slot at most
    once and in order (RAND-5). Test subjects draw only from test lists, live ones only from
    live lists (RAND-3). An exhausted stratum of a generated list is extended first."""
    now = ctx.now()
    taken = uow.lists.draw(study_id, mode, stratum, subject_id=subject.id, at=now)
    if taken is None:  # no list, no such stratum, or no slot left: find out which
        lst = uow.lists.active(study_id, mode)
        if lst is None:
            raise PreconditionFailed(
                f"no {mode} allocation list has been loaded; the unblinded statistician "
                "generates or imports one",
                reason="no-allocation-list",
            )
        cursor = uow.lists.cursor(lst.id, stratum, lock=True)
        if cursor is None:
            raise PreconditionFailed(
                f"the allocation list has no stratum {stratum}", reason="stratum-unknown"
            )
        if cursor.next_sequence > cursor.size:
            cursor = extend_stratum(uow, ctx, actor, lst, cursor, loaded)
        taken = uow.lists.take_slot(cursor, subject_id=subject.id, at=now)
    check_low_slots(uow, ctx, taken.cursor, loaded)
    return taken.slot


def _check_caps(uow: UnitOfWork, study_id: int, site: Site, loaded: LoadedProtocol) -> None:
    """The caps of RAND-4, counted after this randomization's row is written (so a cap is
    exceeded when count > cap). Exact: the site cap under the site row's lock (taken by the
    numbering), the total and country caps under the study lock or its margin."""
    enrol = loaded.protocol.enrolment
    counts = uow.randomizations.counts(study_id, site_id=site.id, country=site.country)
    if counts.total > enrol.total_cap:
        raise PreconditionFailed(
            f"enrolment target reached: {enrol.total_cap} of {enrol.total_cap} subjects randomized",
            reason="enrolment-closed",
        )
    site_cap = site.cap or enrol.cap_per_site
    if site_cap is not None and counts.site > site_cap:
        raise PreconditionFailed(
            f"site {site.code} has reached its cap of {site_cap} randomized subjects",
            reason="site-cap-reached",
        )
    country_cap = _country_cap(loaded, site.country)
    if country_cap is not None and counts.country > country_cap:
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


def _subject_for(
    uow: UnitOfWork, actor: Actor, study_id: int, number: str
) -> tuple[SubjectRead, ProtocolVersion]:
    """The subject in the actor's scope (else 'not found', ACC-1), with the randomize
    permission checked for its site, and the study's newest signed protocol version."""
    found = uow.randomizations.read(study_id, number)
    if found is None:
        raise NotFound(f"subject {number} not found")
    read, newest = found
    require_site_visible(actor, study_id, read.subject.site_id, f"subject {number}")
    require(actor, study_id, RANDOMIZERS, site_id=read.subject.site_id, action="randomize")
    return read, newest


def _earlier(
    ctx: ServiceContext, uow: UnitOfWork, actor: Actor, read: SubjectRead, key: str
) -> RandomizationResult | None:
    """The caller's own earlier result for ``key`` (read after the same scope and permission
    checks a new request gets: a replay answers only who could have made the request)."""
    rand = uow.randomizations.by_key(scoped_key(read.subject.study_id, actor.label, key))
    if rand is None:
        return None
    if rand.subject_id != read.subject.id:
        raise ValidationFailed(
            "this idempotency key was already used for another subject",
            {"idempotency_key": "reused"},
        )
    return _result(ctx, uow, actor, read, rand)


def _existing_for_key(
    ctx: ServiceContext, actor: Actor, study_id: int, number: str, key: str
) -> RandomizationResult | None:
    with ctx.uow(readonly=True) as uow:
        read, _newest = _subject_for(uow, actor, study_id, number)
        return _earlier(ctx, uow, actor, read, key)


def _result(
    ctx: ServiceContext,
    uow: UnitOfWork,
    actor: Actor,
    read: SubjectRead,
    rand: Randomization,
    loaded: LoadedProtocol | None = None,
) -> RandomizationResult:
    subject = read.subject
    arm = label = None
    if may_see_arm(
        actor,
        subject.study_id,
        subject.site_id,
        subject_unblinded=subject.unblinded_on is not None,
        for_procedure=True,
        trial_unblinded=read.trial_unblinded,
    ):
        arm = ctx.cipher.decrypt(rand.arm_enc)
        if loaded is None:
            loaded = loaded_protocol(ctx, uow, uow.protocols.get(rand.protocol_version_id))
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
    if idempotency_key is not None and (not idempotency_key.strip() or len(idempotency_key) > 150):
        raise ValidationFailed(
            "idempotency key must be 1-150 characters", {"idempotency_key": "invalid"}
        )
    try:
        try:
            return _randomize(ctx, actor, study_id, number, idempotency_key)
        except _NeedsStudyLock:
            return _randomize(ctx, actor, study_id, number, idempotency_key, exclusive=True)
    except (Conflict, ActionNotAllowed):
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
        read, newest = _subject_for(uow, actor, study_id, number)
        if idempotency_key is not None:
            # a replay answers with the earlier result, in this same transaction
            earlier = _earlier(ctx, uow, actor, read, idempotency_key)
            if earlier is not None:
                uow.commit()  # nothing written: ends the transaction with COMMIT
                return earlier
        act = acting_with(ctx, uow, actor, read, now)
        subject, site = act.subject, act.site
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
        today = act.today
        # in force at the site (PROT-2): the newest signed version unless it starts later
        version = newest
        if newest.effective_from is not None and newest.effective_from > today:
            version = version_in_force(uow, study_id, today)
        loaded = loaded_protocol(ctx, uow, version)
        # one winner per subject: the guarded state update comes first
        act.transition(Action.RANDOMIZE, changes={"randomized_on": today})
        subject = act.subject
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
        slot: AllocationSlot | None = None
        detail: dict[str, Any] = {}
        decision: dict[str, object] | None = None
        if design.method is Method.PERMUTED_BLOCKS:
            slot = _take_slot(uow, ctx, actor, study_id, subject, stratum, loaded, mode)
            arm = decode_slot(ctx, slot).arm
            detail = {"list": slot.list_id, "slot": slot.sequence}
        elif design.method is Method.COMPLETE:
            arm = complete_assign(arms_of(loaded), random.Random(secrets.randbits(64)))
        else:
            levels = _minimization_levels(uow, ctx, subject, site, loaded)
            arm, decision = _minimize(uow, ctx, study_id, levels, loaded)
        rand = uow.randomizations.add(
            site_id=site.id,
            site_code=site.code,
            study_id=study_id,
            subject_id=subject.id,
            slot_id=slot.id if slot else None,
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
            protocol_version_id=version.id,
        )
        _check_caps(uow, study_id, site, loaded)
        act.audit(
            "allocate",
            entity="randomization",
            entity_id=rand.number,
            new={"randomization_number": rand.number, "stratum": stratum, **detail},
            protocol_sha256=version.sha256,
        )
        uow.commit()
        return _result(ctx, uow, actor, act.read, rand, loaded)
