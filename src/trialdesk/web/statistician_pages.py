"""The unblinded statistician's area: design assessment and allocation lists.

Pages decide nothing: every role, site, state and blinding decision is the service's; a page
renders what a service returns and shows its refusal."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import FormData

from trialdesk.domain.errors import (
    ValidationFailed,
)
from trialdesk.services import (
    design,
    endpoints,
)
from trialdesk.services.allocation import lists
from trialdesk.web.forms import (
    field_text,
    flat_form,
    or_refusal,
)
from trialdesk.web.render import render
from trialdesk.web.session import (
    Web,
    post_form,
    redirect,
    web_session,
)

router = APIRouter()


# --------------------------------------------------------------------------- statistician


def _design_table(result: dict[str, Any]) -> list[tuple[str, str]]:
    """The assessment's JSON flattened to (figure, value) rows, nested keys joined by ' / '."""
    rows: list[tuple[str, str]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix} / {key}" if prefix else str(key), item)
        elif isinstance(value, list):
            rows.append((prefix, ", ".join(map(str, value)) or "–"))
        else:
            rows.append((prefix, "–" if value is None else str(value)))

    walk("", {k: v for k, v in result.items() if k != "interpretation"})
    return rows


def _int_field(form: FormData, name: str) -> int:
    raw = field_text(form, name)
    try:
        return int(raw)
    except ValueError:
        raise ValidationFailed(
            f"{name}: {raw!r} is not a whole number", {name: "not a whole number"}
        ) from None


def _int_list(form: FormData, name: str) -> tuple[int, ...]:
    raw = field_text(form, name)
    if not raw:
        return ()
    try:
        return tuple(int(part) for part in raw.split(","))
    except ValueError:
        raise ValidationFailed(
            f"{name}: {raw!r} is not whole numbers separated by commas (e.g. 4,6)",
            {name: "whole numbers separated by commas"},
        ) from None


def _statistician_page(
    request: Request,
    web: Web,
    *,
    values: dict[str, str] | None = None,
    result: dict[str, Any] | None = None,
    message: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    # by-arm figures first: a blinded caller is refused here, with a 403 page (RAND-6)
    safety = endpoints.safety_summary(web.ctx, web.actor, web.study_id)
    efficacy = endpoints.efficacy_summary(web.ctx, web.actor, web.study_id)
    strata, strata_refused = or_refusal(
        lambda: lists.stratum_status(web.ctx, web.actor, web.study_id)
    )
    list_rows, _ = or_refusal(lambda: lists.list_info(web.ctx, web.actor, web.study_id))
    defaults, design_refused = or_refusal(
        lambda: design.design_defaults(web.ctx, web.actor, web.study_id)
    )
    if values is None and defaults is not None:
        values = {
            "method": defaults.method,
            "block_sizes": ",".join(map(str, defaults.block_sizes)),
            "strata": str(defaults.strata),
            "subjects": str(defaults.subjects),
            "ratio": ",".join(map(str, defaults.arms_ratio)),
            "simulations": str(defaults.simulations),
            "seed": str(defaults.seed),
        }
    return render(
        request,
        "statistician.html",
        web,
        status=status,
        safety=safety,
        efficacy=efficacy,
        strata=strata,
        strata_refused=strata_refused,
        lists=list_rows or [],
        design_refused=design_refused,
        values=values or {},
        methods=("complete", "blocks", "minimization"),
        max_simulations=design.MAX_SIMULATIONS,
        result=result,
        result_rows=_design_table(result) if result else [],
        message=message,
    )


@router.get("/statistician", include_in_schema=False)
def statistician(request: Request) -> Response:
    web = web_session(request)
    return _statistician_page(request, web)


@router.post("/statistician/design", include_in_schema=False)
async def statistician_design(request: Request) -> Response:
    web, form = await post_form(request)
    values = {k: v.strip() for k, v in flat_form(form).items() if k != "csrf_token"}
    try:
        result = design.assess_design(
            web.ctx,
            web.actor,
            web.study_id,
            method=field_text(form, "method"),
            block_sizes=_int_list(form, "block_sizes"),
            strata=_int_field(form, "strata"),
            subjects=_int_field(form, "subjects"),
            simulations=_int_field(form, "simulations"),
            seed=_int_field(form, "seed"),
            arms_ratio=_int_list(form, "ratio"),
        )
    except ValidationFailed as exc:
        return _statistician_page(request, web, values=values, message=exc.message, status=422)
    return _statistician_page(request, web, values=values, result=result)


@router.get("/statistician/lists/{list_id}/download", include_in_schema=False)
def statistician_list_download(request: Request, list_id: int) -> Response:
    """The whole list as a CSV file in the import format (RAND-3); audited by the service."""
    web = web_session(request)
    got = lists.download_list(web.ctx, web.actor, web.study_id, list_id)
    return Response(
        got.csv,
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{got.filename}"'},
    )


@router.post("/statistician/lists/{list_id}/discard", include_in_schema=False)
async def statistician_list_discard(request: Request, list_id: int) -> Response:
    """Take a test list (or an unused live list) out of use (RAND-3)."""
    web, form = await post_form(request)
    # a refusal is the error page: the statistics page would read (and audit) by-arm results
    lists.discard_list(web.ctx, web.actor, web.study_id, list_id, field_text(form, "reason"))
    return redirect("/statistician#lists", flash=f"Allocation list {list_id} discarded.")
