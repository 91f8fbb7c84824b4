"""Subjects put straight into a state of the journey, for tests that are not about the journey.

The cap and concurrency tests need hundreds of subjects ready to be randomized; walking each
through registration, consent, screening forms, signatures, the CRC and the anatomy step costs
about 150 ms on PostgreSQL. Here they are written through the store's repositories with the
facts randomization checks (consent, CRC approval, suitable anatomy, RAND-4), numbered by the
site's counter like registered subjects. They have no screening forms and no audit entries of
their journey: tests of the journey itself, of the audit trail or of strata read from forms
use tests/journey.py.
"""

from __future__ import annotations

from tests import journey as j
from tests.conftest import Trial
from trialdesk.domain.lifecycle import SubjectState
from trialdesk.services.common import version_in_force


def ready_to_randomize(
    t: Trial, site: str = j.SITE, *, count: int = 1, test: bool = False
) -> list[str]:
    """``count`` subjects at ``site`` in ``awaiting_procedure`` with consent, CRC approval and
    suitable anatomy, as :func:`tests.journey.anatomy_suitable` leaves them (the clock on the
    procedure day)."""
    numbers: list[str] = []
    t.clock.set_day(j.CONSENT)
    now = t.clock()
    with t.ctx.uow() as uow:
        found = uow.sites.by_code(t.study_id, site)
        assert found is not None, f"no site {site}"
        version = version_in_force(uow, t.study_id, j.CONSENT)
        for _ in range(count):
            seq = uow.sites.take_subject_number(found.id)
            subject = uow.subjects.add(
                study_id=t.study_id,
                site_id=found.id,
                number=f"{found.code}-{seq:04d}",
                state=SubjectState.REGISTERED.value,
                protocol_version_id=version.id,
                registered_on=j.CONSENT,
                test_subject=test,
                at=now,
            )
            ready = uow.subjects.update(
                subject,
                {
                    "state": SubjectState.AWAITING_PROCEDURE.value,
                    "consent_date": j.CONSENT,
                    "consent_version": "v1.0",
                    "crc_approved": True,
                    "anatomy_suitable": True,
                    "updated_at": now,
                },
            )
            assert ready is not None
            numbers.append(ready.number)
        uow.commit()
    t.clock.set_day(j.PROCEDURE)
    return numbers


def ready_at_sites(t: Trial, sites: list[str], count: int) -> list[str]:
    """``count`` subjects ready to randomize, spread over ``sites`` in turn (subject i at
    ``sites[i % len(sites)]``), in that order."""
    per_site = {
        site: iter(ready_to_randomize(t, site, count=len(range(i, count, len(sites)))))
        for i, site in enumerate(sites)
    }
    return [next(per_site[sites[i % len(sites)]]) for i in range(count)]


def hard_lock(t: Trial, *, reason: str = "final lock (test set-up)") -> None:
    """Put the study under the hard database lock directly, as trial-level unblinding needs
    (REC-5), for tests of what follows it; the lock service and its checklist are tested in
    tests/integration/test_records_hold.py."""
    with t.ctx.uow() as uow:
        uow.holds.add_lock(
            study_id=t.study_id,
            level="study",
            kind="hard",
            subject_id=None,
            visit_code=None,
            form_code=None,
            seq=None,
            reason=reason,
            locked_by="manager",
            locked_name="Study Manager",
            locked_at=t.clock(),
            locked_meaning="I lock the study database (hard).",
        )
        uow.commit()
