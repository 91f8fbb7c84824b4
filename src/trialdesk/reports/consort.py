"""The CONSORT 2025 flow (REP-2) as data and as a figure.

The counts are built by :func:`trialdesk.services.report_views.consort`, which decides whether
the caller gets per-arm boxes; this module only shapes and draws what it is given, so a
blinded flow (``arms`` is None) cannot draw an arm because it holds none.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

EXCLUSION_LABELS: dict[str, str] = {
    "criteria_not_met": "Eligibility criteria not met",
    "crc_rejected": "Rejected by the CRC",
    "anatomy_unsuitable": "Anatomy unsuitable",
    "declined": "Declined to participate",
    "other": "Other reasons",
}
"""Every exclusion reason (LIFE-3), in CONSORT order; all are shown, zero or not."""

PHASES: tuple[str, ...] = ("Enrolment", "Allocation", "Follow-up", "Analysis")
"""CONSORT 2025's phase labels, top to bottom; blinded flows show the first only."""
EFFICACY_ANALYSIS = "primary efficacy (win ratio at 24 months, intention to treat)"
SAFETY_ANALYSIS = "primary safety (freedom from major adverse events at 12 months)"
SAFETY_WAITING = "12 months of follow-up not yet reached"

FigureFormat = Literal["svg", "png"]
FORMATS: tuple[str, ...] = ("svg", "png")


@dataclass(frozen=True)
class ArmFlow:
    """One arm's column of boxes; only ever built for callers who may see arms."""

    code: str
    label: str
    allocated: int
    received: int
    not_received: int
    not_received_reasons: dict[str, int] = field(default_factory=dict)
    lost_to_follow_up: int = 0
    discontinued: int = 0
    discontinued_reasons: dict[str, int] = field(default_factory=dict)
    analysed: int = 0
    excluded_from_analysis: dict[str, int] = field(default_factory=dict)
    lost_reasons: dict[str, int] = field(default_factory=dict)
    analysed_safety: int | None = None
    """Subjects the primary safety endpoint analyses; None for an arm it does not cover."""
    safety_not_evaluable: int = 0

    def to_json(self) -> dict[str, Any]:
        """Counts per phase box; ``analysed`` is the primary efficacy analysis set (the SAP:
        every randomized subject in its arm, randomizations in error excluded)."""
        out: dict[str, Any] = {
            "allocated": self.allocated,
            "received": self.received,
            "not_received": self.not_received,
            "lost_to_follow_up": self.lost_to_follow_up,
            "discontinued": self.discontinued,
            "analysed": self.analysed,
            "reasons": {
                "not_received": dict(self.not_received_reasons),
                "lost_to_follow_up": dict(self.lost_reasons),
                "discontinued": dict(self.discontinued_reasons),
                "excluded_from_analysis": dict(self.excluded_from_analysis),
            },
        }
        if self.analysed_safety is not None:
            out["analysed_safety"] = self.analysed_safety
            out["reasons"]["not_analysed_safety"] = (
                {SAFETY_WAITING: self.safety_not_evaluable} if self.safety_not_evaluable else {}
            )
        return out


@dataclass(frozen=True)
class ConsortFlow:
    """Live (non-test) subjects through enrolment, allocation, follow-up and analysis.

    ``in_screening`` are assessed subjects neither excluded nor randomized yet. ``arms`` is
    None for blinded callers: they get the pooled enrolment boxes only (RAND-6)."""

    as_of: str | None
    assessed: int
    excluded: dict[str, int]
    randomized: int
    in_screening: int
    arms: list[ArmFlow] | None = None

    @property
    def phases(self) -> tuple[str, ...]:
        """The phases this flow shows: enrolment for everyone, the rest by arm."""
        return PHASES if self.arms is not None else PHASES[:1]

    def to_json(self) -> dict[str, Any]:
        """The ``trialdesk report consort --json`` document."""
        out: dict[str, Any] = {
            "phases": list(self.phases),
            "assessed": self.assessed,
            "excluded": dict(self.excluded),
            "randomized": self.randomized,
        }
        if self.arms is not None:
            out["arms"] = {arm.code: arm.to_json() for arm in self.arms}
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"phases": list(self.phases), **asdict(self)}


def _reasons(reasons: dict[str, int]) -> list[str]:
    return [f"  {reason} (n={n})" for reason, n in sorted(reasons.items()) if n]


def _enrolment_texts(flow: ConsortFlow) -> tuple[str, str, str]:
    assessed = f"Assessed for eligibility (n={flow.assessed})"
    excluded_n = sum(flow.excluded.values())
    lines = [f"Excluded (n={excluded_n})"]
    lines += [f"  {EXCLUSION_LABELS.get(k, k)} (n={n})" for k, n in flow.excluded.items()]
    if flow.in_screening:
        lines.append(f"Still in screening (n={flow.in_screening})")
    randomized = f"Randomized (n={flow.randomized})"
    return assessed, "\n".join(lines), randomized


def _arm_texts(arm: ArmFlow) -> tuple[str, str, str]:
    allocation = [
        f"Allocated to {arm.label} (n={arm.allocated})",
        f"  Received allocated intervention (n={arm.received})",
        f"  Did not receive allocated intervention (n={arm.not_received})",
        *["  " + line for line in _reasons(arm.not_received_reasons)],
    ]
    follow_up = [
        f"Lost to follow-up (n={arm.lost_to_follow_up})",
        *_reasons(arm.lost_reasons),
        f"Discontinued (n={arm.discontinued})",
        *_reasons(arm.discontinued_reasons),
    ]
    analysis = [f"Analysed (n={arm.analysed})", f"  for the {EFFICACY_ANALYSIS}"]
    excluded = sum(arm.excluded_from_analysis.values())
    analysis.append(f"  Excluded from analysis (n={excluded})")
    analysis += ["  " + line for line in _reasons(arm.excluded_from_analysis)]
    if arm.analysed_safety is not None:
        analysis.append(f"Analysed (n={arm.analysed_safety})")
        analysis.append(f"  for the {SAFETY_ANALYSIS}")
        analysis.append(f"  Not yet evaluable (n={arm.safety_not_evaluable})")
        if arm.safety_not_evaluable:
            analysis.append(f"    {SAFETY_WAITING} (n={arm.safety_not_evaluable})")
    return "\n".join(allocation), "\n".join(follow_up), "\n".join(analysis)


def render_consort(flow: ConsortFlow, fmt: str = "svg") -> bytes:
    """The flow diagram as SVG (text kept as text, no timestamp) or PNG.

    Uses the Agg canvas on a private Figure, never pyplot, so nothing global is touched."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown figure format {fmt!r}; one of {', '.join(FORMATS)}")
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    arms = flow.arms or []
    height = 5.0 + (6.0 if arms else 0.0)
    width = max(8.0, 5.5 * len(arms) + 1.0)
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "trialdesk-consort"}):
        fig = Figure(figsize=(width, height))
        FigureCanvasAgg(fig)
        ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
        ax.set_xlim(0, width)
        ax.set_ylim(0, height)
        ax.axis("off")
        box = {"boxstyle": "square,pad=0.5", "facecolor": "white", "edgecolor": "black"}
        top = height - 0.6
        phase_box = {"boxstyle": "round,pad=0.4", "facecolor": "#dde8f5", "edgecolor": "black"}
        rows = (top - 1.5, top - 5.2, top - 6.9, top - 8.6)
        for label, y in zip(flow.phases, rows, strict=False):
            ax.text(
                0.25, y, label, ha="center", va="center", rotation=90, bbox=phase_box, fontsize=9
            )
        assessed, excluded, randomized = _enrolment_texts(flow)
        centre = width / 2
        ax.text(centre, top, assessed, ha="center", va="top", bbox=box, fontsize=9)
        ax.text(centre + 0.4, top - 1.0, excluded, ha="left", va="top", bbox=box, fontsize=8)
        ax.annotate("", (centre, top - 3.4), (centre, top - 0.5), arrowprops={"arrowstyle": "->"})
        ax.text(centre, top - 3.5, randomized, ha="center", va="top", bbox=box, fontsize=9)
        if not arms:
            ax.text(
                centre,
                0.4,
                "Per-arm boxes are shown to unblinded readers only",
                ha="center",
                fontsize=7,
                style="italic",
            )
        column = (width - 1.0) / max(len(arms), 1)
        for i, arm in enumerate(arms):
            x = 1.0 + column * (i + 0.5)
            allocation, follow_up, analysis = _arm_texts(arm)
            ax.annotate("", (x, top - 4.6), (centre, top - 4.0), arrowprops={"arrowstyle": "->"})
            for y, text in ((top - 4.7, allocation), (top - 6.3, follow_up), (top - 8.0, analysis)):
                ax.text(
                    x, y, text, ha="center", va="top", multialignment="left", bbox=box, fontsize=8
                )
            for start, end in ((top - 5.6, top - 6.2), (top - 7.4, top - 7.9)):
                ax.annotate("", (x, end), (x, start), arrowprops={"arrowstyle": "->"})
        buffer = io.BytesIO()
        metadata: dict[str, Any] = {"Date": None} if fmt == "svg" else {}
        fig.savefig(buffer, format=fmt, metadata=metadata)
    return buffer.getvalue()
