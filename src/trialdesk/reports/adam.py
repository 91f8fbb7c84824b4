"""ADaM datasets (issue 16): placeholder replaced below."""

from __future__ import annotations

from trialdesk.protocol.models import Protocol
from trialdesk.reports.exports import Dataset


def build_adam(sdtm: list[Dataset], protocol: Protocol) -> list[Dataset]:
    return []
