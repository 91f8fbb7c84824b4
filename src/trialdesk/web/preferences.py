"""The reader's own settings page: which zone timestamps are shown in (TIME-1)."""

from __future__ import annotations

from zoneinfo import available_timezones

from fastapi import APIRouter, Request
from fastapi.responses import Response

from trialdesk.domain.errors import ValidationFailed
from trialdesk.services.preferences import set_time_zone
from trialdesk.web.forms import field_text
from trialdesk.web.render import render
from trialdesk.web.session import post_form, redirect, web_session

router = APIRouter()


def _zones() -> list[str]:
    return sorted(z for z in available_timezones() if "/" in z and not z.startswith("Etc/"))


@router.get("/me/time-zone", include_in_schema=False)
def time_zone_page(request: Request) -> Response:
    web = web_session(request)
    return render(request, "preferences.html", web, zones=_zones())


@router.post("/me/time-zone", include_in_schema=False)
async def time_zone_save(request: Request) -> Response:
    web, form = await post_form(request)
    try:
        set_time_zone(web.ctx, web.actor, field_text(form, "timezone") or None)
    except ValidationFailed as exc:
        return render(
            request, "preferences.html", web, status=422, zones=_zones(), message=exc.message
        )
    return redirect("/me/time-zone", flash="Time zone saved: times are shown in it.")
