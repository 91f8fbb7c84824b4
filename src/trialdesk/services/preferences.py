"""A person's own settings: the time zone they read timestamps in (TIME-1)."""

from __future__ import annotations

from trialdesk.domain.errors import PermissionDenied, ValidationFailed
from trialdesk.domain.timefmt import UTC_ZONE, is_time_zone
from trialdesk.services.access import Actor
from trialdesk.services.context import ServiceContext


def set_time_zone(ctx: ServiceContext, actor: Actor, zone: str | None) -> str:
    """Store the zone timestamps are shown in for this person; None goes back to the default.

    Only clinical *display* changes: stored timestamps stay UTC and clinical dates stay the
    site's. Audited on the person's own stream like any change to their account.
    """
    if actor.user_id is None:
        raise PermissionDenied("the local operator has no stored preferences")
    zone = zone.strip() if zone is not None else None
    if zone == "":
        zone = None
    if zone is not None and not is_time_zone(zone):
        raise ValidationFailed(
            f"{zone!r} is not an IANA time zone (e.g. Europe/Paris, America/Toronto, UTC)",
            {"timezone": "unknown zone"},
        )
    with ctx.uow() as uow:
        user = uow.users.get(actor.user_id)
        if user is None or not user.active:
            raise PermissionDenied("this account is not active")
        old = user.timezone
        if old != zone:
            uow.users.set_timezone(user.id, zone)
            uow.audit.stream(
                f"user:{user.id}",
                actor.label,
                "set_time_zone",
                at=ctx.now(),
                entity="user",
                entity_id=user.username,
                old={"timezone": old},
                new={"timezone": zone},
            )
        uow.commit()
    return viewer_zone(ctx, actor, None)


def viewer_zone(ctx: ServiceContext, actor: Actor, study_id: int | None) -> str:
    """The zone this person reads timestamps in: their own choice; otherwise, when every site
    they are limited to in the study shares one zone, that zone (a coordinator in Sydney sees
    Sydney time without setting anything); otherwise UTC."""
    with ctx.uow(readonly=True) as uow:
        if actor.user_id is not None:
            chosen = uow.users.get(actor.user_id)
            if chosen is not None and chosen.timezone:
                return chosen.timezone
        if study_id is None:
            return UTC_ZONE
        sites = actor.site_ids(study_id)
        if not sites:
            return UTC_ZONE
        zones = {s.timezone for s in uow.sites.of_study(study_id) if s.id in sites}
    return zones.pop() if len(zones) == 1 else UTC_ZONE
