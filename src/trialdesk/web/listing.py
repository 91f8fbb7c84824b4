"""Paging, filtering and sorting parameters of the list pages (issue 14): read from the query
string with defaults, and the links to other pages keeping the filters. Every list filters,
sorts and pages in its service (and the repository under it); a page only passes the
choices on and never slices a longer list."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode

from fastapi import Request

from trialdesk.domain.errors import ValidationFailed

PAGE_SIZES = (25, 50, 100)


@dataclass(frozen=True)
class Paging:
    page: int
    per_page: int

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.per_page


def paging(request: Request, default: int = 50) -> Paging:
    """``page`` (from 1) and ``per_page`` (one of PAGE_SIZES); anything else is refused
    with one message."""
    raw_page = request.query_params.get("page", "1") or "1"
    raw_size = request.query_params.get("per_page", str(default)) or str(default)
    if not raw_page.isdigit() or int(raw_page) < 1 or int(raw_page) > 100_000:
        raise ValidationFailed(f"page {raw_page!r} is not a page number", {"page": "not a page"})
    if not raw_size.isdigit() or int(raw_size) not in PAGE_SIZES:
        raise ValidationFailed(
            f"per_page must be one of {', '.join(map(str, PAGE_SIZES))}",
            {"per_page": "not offered"},
        )
    return Paging(int(raw_page), int(raw_size))


def choice(request: Request, name: str, allowed: tuple[str, ...], default: str) -> str:
    value = request.query_params.get(name, default) or default
    if value not in allowed:
        raise ValidationFailed(f"{name} must be one of {', '.join(allowed)}", {name: "not offered"})
    return value


def text(request: Request, name: str, max_length: int = 80) -> str:
    return (request.query_params.get(name) or "").strip()[:max_length]


@dataclass(frozen=True)
class Pager:
    """What the template needs for 'showing a-b of n' and the page links."""

    total: int
    page: int
    per_page: int
    first: int
    last: int
    pages: int
    previous_url: str | None
    next_url: str | None
    sizes: tuple[int, ...] = PAGE_SIZES


def pager(path: str, filters: Mapping[str, str], at: Paging, total: int) -> Pager:
    pages = max(1, -(-total // at.per_page))
    kept = {k: v for k, v in filters.items() if v}

    def url(page: int) -> str:
        return f"{path}?{urlencode({**kept, 'page': page, 'per_page': at.per_page})}"

    return Pager(
        total=total,
        page=at.page,
        per_page=at.per_page,
        first=min(total, at.offset + 1),
        last=min(total, at.offset + at.per_page),
        pages=pages,
        previous_url=url(at.page - 1) if at.page > 1 else None,
        next_url=url(at.page + 1) if at.page < pages else None,
    )
