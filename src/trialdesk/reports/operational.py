"""Operational reports (REP-3) as data, and the DSMB by-arm report as one HTML document.

Built by :mod:`trialdesk.services.report_views`, which decides who may read what; the
operational reports carry no arm at all, the DSMB report is only ever built for by-arm readers.
"""

from __future__ import annotations

import html
from dataclasses import asdict, dataclass, field
from typing import Any

TIMINGS: tuple[str, ...] = ("on_time", "early", "late", "missed")


@dataclass(frozen=True)
class ComplianceRow:
    """Recorded visits of one visit at one site (``site`` "ALL" for the visit's total)."""

    visit: str
    site: str
    on_time: int = 0
    early: int = 0
    late: int = 0
    missed: int = 0

    @property
    def recorded(self) -> int:
        return self.on_time + self.early + self.late + self.missed


@dataclass(frozen=True)
class VisitCompliance:
    rows: list[ComplianceRow]
    totals: list[ComplianceRow]

    def row(self, visit: str, site: str = "ALL") -> ComplianceRow:
        """The row of ``visit`` at ``site`` (all sites by default); zeros when none."""
        pool = self.totals if site == "ALL" else self.rows
        for row in pool:
            if row.visit == visit and row.site == site:
                return row
        return ComplianceRow(visit=visit, site=site)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Deviation:
    """A protocol deviation found in the data: a visit outside its window or missed (SCHED-2),
    or a randomization flagged in error."""

    subject: str
    site: str
    kind: str  # visit_early | visit_late | visit_missed | randomized_in_error
    visit: str | None
    date: str | None
    detail: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CrcKindWorkload:
    """CRC cases of one kind; turnaround is opening to signed decision, in hours."""

    kind: str
    opened: int
    pending: int
    info_requested: int
    decided: int
    median_turnaround_hours: float | None
    max_turnaround_hours: float | None


@dataclass(frozen=True)
class CrcWorkload:
    by_kind: list[CrcKindWorkload]
    decisions: dict[str, int] = field(default_factory=dict)
    by_reviewer: dict[str, int] = field(default_factory=dict)

    def kind(self, kind: str) -> CrcKindWorkload | None:
        return next((k for k in self.by_kind if k.kind == kind), None)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class UnblindingEvent:
    """One unblinding (RAND-7): ``kind`` is emergency, scheduled, trial_requested or
    trial_confirmed; never the arm that was revealed."""

    kind: str
    at: str
    by: str
    subject: str | None = None
    site: str | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DsmbArm:
    """One arm's column of the DSMB report."""

    code: str
    label: str
    randomized: int
    in_error: int
    by_site: dict[str, int]
    received: int
    follow_up_years: float
    adverse_events: int
    subjects_with_adverse_event: int
    major_adverse_events: dict[str, int]
    deaths: int
    withdrawn: int
    lost_to_follow_up: int


@dataclass(frozen=True)
class DsmbReport:
    study: str
    generated_at: str
    as_of: str | None
    arms: list[DsmbArm]
    safety: dict[str, Any]
    efficacy: dict[str, Any]


def _table(head: list[str], rows: list[list[object]]) -> str:
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>"


def _scalars(summary: dict[str, Any]) -> list[list[object]]:
    """The summary's single values (lists of subjects and outcomes are left out)."""
    rows: list[list[object]] = []
    for key, value in summary.items():
        if isinstance(value, dict):
            rows += [[f"{key}.{k}", v] for k, v in value.items() if not isinstance(v, list | dict)]
        elif not isinstance(value, list):
            rows.append([key, "" if value is None else value])
    return rows


def render_dsmb_html(report: DsmbReport) -> str:
    """The DSMB report as one self-contained HTML document (no scripts, no external files)."""
    arms = report.arms
    head = ["", *[f"{a.label} ({a.code})" for a in arms]]
    sites = sorted({s for a in arms for s in a.by_site})
    enrolment: list[list[object]] = [
        ["Randomized", *[a.randomized for a in arms]],
        ["Randomized in error", *[a.in_error for a in arms]],
        *[[f"Site {s}", *[a.by_site.get(s, 0) for a in arms]] for s in sites],
    ]
    exposure: list[list[object]] = [
        ["Received allocated intervention", *[a.received for a in arms]],
        ["Follow-up (subject-years)", *[f"{a.follow_up_years:.2f}" for a in arms]],
    ]
    categories = sorted({c for a in arms for c in a.major_adverse_events})
    safety: list[list[object]] = [
        ["Adverse events", *[a.adverse_events for a in arms]],
        ["Subjects with an adverse event", *[a.subjects_with_adverse_event for a in arms]],
        *[[f"MAE: {c}", *[a.major_adverse_events.get(c, 0) for a in arms]] for c in categories],
        ["Deaths", *[a.deaths for a in arms]],
        ["Withdrawn", *[a.withdrawn for a in arms]],
        ["Lost to follow-up", *[a.lost_to_follow_up for a in arms]],
    ]
    title = f"DSMB report - {report.study}"
    cut = report.as_of or "latest data"
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{html.escape(title)}</title>",
            "<style>body{font-family:sans-serif}table{border-collapse:collapse;margin:1em 0}"
            "td,th{border:1px solid #999;padding:2px 8px;text-align:right}</style>",
            "</head><body>",
            f"<h1>{html.escape(title)}</h1>",
            "<p><strong>CONFIDENTIAL - unblinded, for the DSMB closed session only.</strong></p>",
            f"<p>Data as of {html.escape(cut)}; generated {html.escape(report.generated_at)}.</p>",
            "<h2>Enrolment by arm</h2>",
            _table(head, enrolment),
            "<h2>Exposure</h2>",
            _table(head, exposure),
            "<h2>Adverse events and deaths</h2>",
            _table(head, safety),
            "<h2>Safety endpoint (END-1)</h2>",
            _table(["", "value"], _scalars(report.safety)),
            "<h2>Efficacy endpoint (END-2)</h2>",
            _table(["", "value"], _scalars(report.efficacy)),
            "<h2>Data changed after unblinding (REC-4)</h2>",
            _table(
                ["subject", "form", "visit", "field", "old", "new", "when", "who", "reason"],
                [
                    [
                        c["subject"],
                        c["form"],
                        c["visit"],
                        c["field"],
                        c["old"],
                        c["new"],
                        c["changed_at"],
                        c["changed_by"],
                        c["reason"] or "",
                    ]
                    for c in report.efficacy.get("changed_after_unblinding", [])
                ],
            ),
            "</body></html>",
        ]
    )
