"""What every page needs to show a UTC moment in the reader's zone, named (TIME-1)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from trialdesk.domain.timefmt import format_moment
from trialdesk.services.access import Actor
from trialdesk.services.context import ServiceContext
from trialdesk.services.preferences import viewer_zone


def page_time_values(
    ctx: ServiceContext, actor: Actor, study_id: int
) -> dict[str, str | Callable[[dt.datetime | str | None], str]]:
    """``zone`` for the header and ``when(moment)`` for templates; ISO strings are accepted
    because some read models carry timestamps as text."""
    zone = viewer_zone(ctx, actor, study_id)

    def when(moment: dt.datetime | str | None) -> str:
        if moment is None or moment == "":
            return ""
        if isinstance(moment, str):
            moment = dt.datetime.fromisoformat(moment)
        return format_moment(moment, zone)

    return {"zone": zone, "when": when}
