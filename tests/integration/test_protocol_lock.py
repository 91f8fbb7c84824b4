"""A protocol the study runs cannot be replaced in place (PROT-3)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from tests.conftest import Trial, flagship
from trialdesk.domain.errors import PreconditionFailed
from trialdesk.protocol.loader import parse_protocol
from trialdesk.services.access import operator_actor
from trialdesk.services.setup import initialize_study
from trialdesk.store.tables import AuditEntryRow, ProtocolVersionRow


def _counts(t: Trial) -> tuple[int, int]:
    with t.ctx.uow(readonly=True) as uow:
        versions = uow.session.scalar(select(func.count()).select_from(ProtocolVersionRow))
        entries = uow.session.scalar(select(func.count()).select_from(AuditEntryRow))
        return int(versions or 0), int(entries or 0)


def test_prot3_edited_protocol_is_refused_for_a_running_study(trial: Trial) -> None:
    """PROT-3: re-initialising the study with an edited file is refused; nothing changes."""
    edited = parse_protocol(flagship().text.replace("window_after: 30", "window_after: 45", 1))
    before = _counts(trial)
    with pytest.raises(PreconditionFailed, match="cannot be edited or replaced") as info:
        initialize_study(trial.ctx, operator_actor(), edited, code="FLAGSHIP", mode="demo")
    assert info.value.code == "protocol-locked"
    assert _counts(trial) == before


def test_prot3_same_protocol_again_is_a_no_op(trial: Trial) -> None:
    before = _counts(trial)
    info = initialize_study(trial.ctx, operator_actor(), flagship(), code="FLAGSHIP", mode="demo")
    assert not info.created
    assert _counts(trial) == before
