"""Reading the fields of a posted form, and the shapes the services' problems take on a page."""

from __future__ import annotations

import datetime as dt
from typing import Any

from starlette.datastructures import FormData

from trialdesk.domain.errors import PermissionDenied, ValidationFailed
from trialdesk.protocol.loader import LoadedProtocol
from trialdesk.services.forms import form_specs


def field_text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def field_date(form: FormData, name: str) -> dt.date:
    raw = field_text(form, name)
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise ValidationFailed(
            f"{name}: {raw!r} is not a date (YYYY-MM-DD)", {name: "not a date (YYYY-MM-DD)"}
        ) from None


def form_values(form: FormData, code: str) -> dict[str, Any]:
    prefix = code + "."
    return {
        k[len(prefix) :]: (v.strip() or None) if isinstance(v, str) else None
        for k, v in form.multi_items()
        if k.startswith(prefix)
    }


def field_errors(problems: dict[str, str], codes: list[str]) -> dict[str, str]:
    """Service problems keyed ``form.field``; a one-form service keys by field alone."""
    out: dict[str, str] = {}
    for key, message in problems.items():
        if "." in key or len(codes) != 1:
            out[key] = message
        else:
            out[f"{codes[0]}.{key}"] = message
    return out


def page_specs(loaded: LoadedProtocol, codes: list[str]) -> list[Any]:
    return form_specs(loaded, codes)  # 'not found' (404) for a form the protocol lacks


def or_refusal(call: Any) -> tuple[Any, str | None]:
    """A service's answer, or its permission refusal as a message for that panel."""
    try:
        return call(), None
    except PermissionDenied as exc:
        return None, exc.message


def flat_form(form: FormData) -> dict[str, Any]:
    return {k: v for k, v in form.multi_items() if isinstance(v, str)}
