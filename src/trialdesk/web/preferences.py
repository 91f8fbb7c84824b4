"""The reader's own settings page: which zone timestamps are shown in (TIME-1)."""

from __future__ import annotations

from zoneinfo import available_timezones

from fastapi import APIRouter, Request
from fastapi.responses import Response

from trialdesk.domain.errors import ValidationFailed
from trialdesk.services.preferences import set_time_zone
from trialdesk.web.pages import _post, _redirect, _render, _session, _text

router = APIRouter()


def _zones() -> list[str]:
    return sorted(z for z in available_timezones() if "/" in z and not z.startswith("Etc/"))


@router.get("/me/time-zone", include_in_schema=False)
def time_zone_page(request: Request) -> Response:
    web = _session(request)
    return _render(request, "preferences.html", web, zones=_zones())


@router.post("/me/time-zone", include_in_schema=False)
async def time_zone_save(request: Request) -> Response:
    web, form = await _post(request)
    try:
        set_time_zone(web.ctx, web.actor, _text(form, "timezone") or None)
    except ValidationFailed as exc:
        return _render(
            request, "preferences.html", web, status=422, zones=_zones(), message=exc.message
        )
    return _redirect("/me/time-zone")
