"""Endpoint statistics (SYSTEM.md §8): END-1 safety bound, END-2 win ratio, END-3 interim trigger.

Pure functions of plain numbers and records: reading follow-up data, restricting results to
unblinded roles and latching "interim due" are the caller's job. Every formula, with its
reference, is written out in docs/endpoints.md; the comments here only point at it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction
from statistics import NormalDist

from trialdesk.domain.errors import ValidationFailed

_NORMAL = NormalDist()


class EndpointInputError(ValidationFailed, ValueError):
    """Input an endpoint cannot be computed from; also a ValueError for plain callers."""


def _fail(what: str, problems: Mapping[str, str]) -> EndpointInputError:
    lines = [f"{key}: {text}" for key, text in problems.items()]
    shown = "; ".join(lines[:5]) + (f" (and {len(lines) - 5} more)" if len(lines) > 5 else "")
    return EndpointInputError(f"cannot compute {what}: {shown}", dict(problems))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_confidence(confidence: object, problems: dict[str, str]) -> None:
    if not isinstance(confidence, int | float) or not 0.0 < float(confidence) < 1.0:
        problems["confidence"] = f"must be strictly between 0 and 1, got {confidence!r}"


# --------------------------------------------------------------------------- END-1


@dataclass(frozen=True)
class SafetyResult:
    """Freedom from major adverse events in the intervention arm against a performance goal."""

    events: int
    subjects: int
    event_free_rate: float
    lower_bound: float
    confidence: float
    goal: float
    meets_goal: bool
    method: str = "Clopper-Pearson exact one-sided lower bound"


def safety_bound(
    events: int, subjects: int, confidence: float = 0.95, goal: float = 0.90
) -> SafetyResult:
    """END-1: exact one-sided lower bound on the event-free proportion; goal met if bound > goal.

    ``events`` counts subjects with at least one major adverse event (a subject is counted
    once however many events they had), ``subjects`` the intervention subjects analysed.
    """
    problems: dict[str, str] = {}
    if not _is_int(subjects) or subjects < 1:
        problems["subjects"] = f"must be a whole number of at least 1, got {subjects!r}"
    if not _is_int(events) or events < 0:
        problems["events"] = f"must be a whole number of at least 0, got {events!r}"
    elif "subjects" not in problems and events > subjects:
        problems["events"] = f"{events} subjects with events but only {subjects} subjects"
    _check_confidence(confidence, problems)
    if not isinstance(goal, int | float) or not 0.0 <= float(goal) < 1.0:
        problems["goal"] = f"must be at least 0 and below 1, got {goal!r}"
    if problems:
        raise _fail("the safety bound", problems)
    event_free = subjects - events
    lower = _clopper_pearson_lower(event_free, subjects, 1.0 - float(confidence))
    return SafetyResult(
        events=events,
        subjects=subjects,
        event_free_rate=event_free / subjects,
        lower_bound=lower,
        confidence=float(confidence),
        goal=float(goal),
        meets_goal=lower > goal,
    )


def _clopper_pearson_lower(x: int, n: int, alpha: float) -> float:
    """The p with P(X >= x | n, p) = alpha, i.e. Beta(alpha; x, n - x + 1); 0 when x = 0.

    Bisection on the exact binomial upper tail, summed in log space from math.comb (exact
    integers) so large n neither overflows nor loses the small terms.
    """
    if x == 0:
        return 0.0
    log_comb = [math.log(math.comb(n, k)) for k in range(x, n + 1)]

    def upper_tail(p: float) -> float:
        log_p, log_q = math.log(p), math.log1p(-p)
        terms = [
            c + k * log_p + (n - k) * log_q for c, k in zip(log_comb, range(x, n + 1), strict=True)
        ]
        top = max(terms)
        return math.exp(top) * math.fsum(math.exp(t - top) for t in terms)

    lo, hi = 0.0, 1.0  # upper_tail(lo) = 0 < alpha <= 1 = upper_tail(hi); increasing in p
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if mid in (lo, hi):
            break
        if upper_tail(mid) < alpha:
            lo = mid
        else:
            hi = mid
    return lo


# --------------------------------------------------------------------------- END-2


class Level(StrEnum):
    """Levels of the END-2 hierarchy, most important first."""

    DEATH = "death"
    TRANSPLANT_OR_LVAD = "transplant_or_lvad"
    MITRAL_INTERVENTION = "mitral_intervention"
    HF_HOSPITALIZATION = "hf_hospitalization"
    KCCQ = "kccq"


LEVELS: tuple[Level, ...] = tuple(Level)
_EVENT_FIELDS = (
    "death_day",
    "transplant_or_lvad_day",
    "mitral_intervention_day",
    "hf_hospitalization_day",
)
WIN, LOSS, TIE = 1, -1, 0
KCCQ_THRESHOLD = 5.0
_KCCQ_SLACK = 1e-9  # KCCQ is recorded to 2 decimals; absorbs binary rounding at the threshold


@dataclass(frozen=True)
class SubjectOutcome:
    """One randomized subject's END-2 data; days count from randomization (day 0).

    ``follow_up_days`` is the last day on which all the subject's event levels are known
    (inclusive). Each ``*_day`` is the day of the FIRST such event, or None. ``kccq_change``
    is the KCCQ score change from baseline at the protocol landmark (24 months),
    None when not available (died, missed, withdrawn). Higher is better.
    """

    subject_id: str
    arm: str
    follow_up_days: int
    death_day: int | None = None
    transplant_or_lvad_day: int | None = None
    mitral_intervention_day: int | None = None
    hf_hospitalization_day: int | None = None
    kccq_change: float | None = None


@dataclass(frozen=True)
class PairOutcome:
    """``result`` is WIN/LOSS/TIE for the first subject; ``level`` decided it (None for a tie)."""

    result: int
    level: Level | None


_Prepared = tuple[int, tuple[int | None, ...], float | None]


def _prepare(s: SubjectOutcome) -> _Prepared:
    return (s.follow_up_days, tuple(getattr(s, f) for f in _EVENT_FIELDS), s.kccq_change)


def _compare(a: _Prepared, b: _Prepared, threshold: float) -> tuple[int, int]:
    """(result for a, index of deciding level or -1); see docs/endpoints.md "Pair rule"."""
    shared = a[0] if a[0] < b[0] else b[0]
    for k, (da, db) in enumerate(zip(a[1], b[1], strict=True)):
        if da is not None and da <= shared:
            if db is None or db > shared:
                return LOSS, k
            if da != db:
                return (LOSS if da < db else WIN), k
        elif db is not None and db <= shared:
            return WIN, k
    ka, kb = a[2], b[2]
    if ka is not None and kb is not None:
        if ka - kb >= threshold - _KCCQ_SLACK:
            return WIN, 4
        if kb - ka >= threshold - _KCCQ_SLACK:
            return LOSS, 4
    return TIE, -1


def compare_pair(
    a: SubjectOutcome, b: SubjectOutcome, *, kccq_threshold: float = KCCQ_THRESHOLD
) -> PairOutcome:
    """END-2 pair rule for one pair, from ``a``'s side; ``win_ratio`` applies it to every pair."""
    problems: dict[str, str] = {}
    _check_subject(a, problems)
    _check_subject(b, problems)
    _check_threshold(kccq_threshold, problems)
    if problems:
        raise _fail("the pair comparison", problems)
    result, k = _compare(_prepare(a), _prepare(b), float(kccq_threshold))
    return PairOutcome(result, LEVELS[k] if k >= 0 else None)


@dataclass(frozen=True)
class LevelTally:
    """Pairs decided at one level: intervention wins and losses."""

    level: Level
    wins: int
    losses: int


@dataclass(frozen=True)
class Interval:
    lower: float
    upper: float


@dataclass(frozen=True)
class WinLossVariance:
    """Bebu–Lachin estimates for the win and loss proportions (per pair, not counts)."""

    var_wins: float
    var_losses: float
    covariance: float


@dataclass(frozen=True)
class WinRatioResult:
    """END-2 result, from the intervention arm's point of view.

    ``win_ratio`` is inf with no losses and None when there are neither wins nor losses;
    ``ci``/``p_value`` are None then (and in other degenerate cases) and ``ci_note`` says why.
    ``p_value`` is the Wald test of log(WR) = 0 matching ``ci``; ``fs_p_value`` is the
    Finkelstein–Schoenfeld permutation-variance test of the same pairs.
    """

    n_intervention: int
    n_control: int
    wins: int
    losses: int
    ties: int
    by_level: tuple[LevelTally, ...]
    win_ratio: float | None
    confidence: float
    log_se: float | None
    ci: Interval | None
    p_value: float | None
    ci_note: str | None
    variance: WinLossVariance | None
    net_benefit: float
    net_benefit_ci: Interval | None
    win_odds: float | None
    win_odds_ci: Interval | None
    fs_statistic: int
    fs_variance: float
    fs_p_value: float | None
    kccq_threshold: float

    @property
    def pairs(self) -> int:
        return self.n_intervention * self.n_control

    def tally(self, level: Level) -> LevelTally:
        return next(t for t in self.by_level if t.level == level)


def _check_threshold(threshold: object, problems: dict[str, str]) -> None:
    if not isinstance(threshold, int | float) or not 0.0 < float(threshold) < math.inf:
        problems["kccq_threshold"] = f"must be a positive number, got {threshold!r}"


def _check_subject(s: SubjectOutcome, problems: dict[str, str]) -> None:
    who = s.subject_id
    fu = s.follow_up_days
    if not _is_int(fu) or fu < 0:
        problems[f"{who}.follow_up_days"] = f"must be a whole number of days >= 0, got {fu!r}"
        return
    for name in _EVENT_FIELDS:
        day = getattr(s, name)
        if day is None:
            continue
        if not _is_int(day) or not 0 <= day <= fu:
            problems[f"{who}.{name}"] = (
                f"must be a whole day from 0 to follow-up end ({fu}), got {day!r}"
            )
    k = s.kccq_change
    if k is not None and (not isinstance(k, int | float) or not math.isfinite(k)):
        problems[f"{who}.kccq_change"] = f"must be a finite number or None, got {k!r}"


def win_ratio(
    subjects: Iterable[SubjectOutcome],
    *,
    intervention_arm: str = "INT",
    control_arm: str = "CTRL",
    kccq_threshold: float = KCCQ_THRESHOLD,
    confidence: float = 0.95,
) -> WinRatioResult:
    """END-2: Finkelstein–Schoenfeld / Pocock win ratio over every intervention–control pair.

    CI from the Bebu–Lachin U-statistic variance of the win and loss proportions (with their
    covariance), delta method on log(WR). Formulas: docs/endpoints.md.
    """
    rows = list(subjects)
    problems: dict[str, str] = {}
    _check_threshold(kccq_threshold, problems)
    _check_confidence(confidence, problems)
    if intervention_arm == control_arm:
        problems["arms"] = f"intervention and control arm are both {intervention_arm!r}"
    seen: set[str] = set()
    for s in rows:
        if s.subject_id in seen:
            problems[s.subject_id] = "appears more than once"
        seen.add(s.subject_id)
        if s.arm not in (intervention_arm, control_arm):
            problems[f"{s.subject_id}.arm"] = (
                f"{s.arm!r} is neither {intervention_arm!r} nor {control_arm!r}"
            )
        _check_subject(s, problems)
    treated = [_prepare(s) for s in rows if s.arm == intervention_arm]
    controls = [_prepare(s) for s in rows if s.arm == control_arm]
    for arm, members in ((intervention_arm, treated), (control_arm, controls)):
        if not members:
            problems[f"arm {arm}"] = "has no subjects; the win ratio needs both arms"
    if problems:
        raise _fail("the win ratio", problems)
    return _analyse(treated, controls, float(kccq_threshold), float(confidence))


def _analyse(
    treated: list[_Prepared], controls: list[_Prepared], threshold: float, confidence: float
) -> WinRatioResult:
    n1, n0 = len(treated), len(controls)
    row_w, row_l = [0] * n1, [0] * n1  # per intervention subject: wins, losses over controls
    col_w, col_l = [0] * n0, [0] * n0  # per control subject: intervention wins, losses
    level_w, level_l = [0] * len(LEVELS), [0] * len(LEVELS)
    for i, a in enumerate(treated):
        for j, b in enumerate(controls):
            result, k = _compare(a, b, threshold)
            if result == WIN:
                row_w[i] += 1
                col_w[j] += 1
                level_w[k] += 1
            elif result == LOSS:
                row_l[i] += 1
                col_l[j] += 1
                level_l[k] += 1
    wins, losses = sum(row_w), sum(row_l)
    pairs = n1 * n0
    ties = pairs - wins - losses
    z = _NORMAL.inv_cdf(0.5 + confidence / 2.0)

    ratio: float | None = (wins / losses) if losses else (math.inf if wins else None)

    variance = _bebu_lachin(n1, n0, row_w, row_l, col_w, col_l) if n1 >= 2 and n0 >= 2 else None
    pw, pl = Fraction(wins, pairs), Fraction(losses, pairs)

    log_se = ci = p_value = None
    note: str | None = None
    if variance is None:
        note = "the variance needs at least 2 subjects in each arm"
    elif not wins and not losses:
        note = "every pair is tied: no wins and no losses, so the win ratio is undefined"
    elif not losses:
        note = "no losses: the win ratio is infinite and log(WR) has no finite variance"
    elif not wins:
        note = "no wins: the win ratio is 0 and log(WR) is undefined"
    else:
        var_w, var_l, cov = variance
        var_log = var_w / pw**2 + var_l / pl**2 - 2 * cov / (pw * pl)
        if var_log <= 0:
            note = "the variance estimate of log(WR) is not positive (too few informative pairs)"
        else:
            log_se = math.sqrt(var_log)
            centre = math.log(wins / losses)
            ci = Interval(math.exp(centre - z * log_se), math.exp(centre + z * log_se))
            p_value = 2.0 * _NORMAL.cdf(-abs(centre) / log_se)

    net = pw - pl
    net_ci = odds_ci = None
    if variance is not None:
        var_net = variance[0] + variance[1] - 2 * variance[2]
        if var_net > 0:
            se_net = math.sqrt(var_net)
            net_ci = Interval(float(net) - z * se_net, float(net) + z * se_net)
            if abs(net) < 1:
                se_log_odds = 2.0 * se_net / float(1 - net**2)
                centre = math.log((1 + net) / (1 - net))
                odds_ci = Interval(
                    math.exp(centre - z * se_log_odds), math.exp(centre + z * se_log_odds)
                )
    odds = float((1 + net) / (1 - net)) if net < 1 else math.inf

    fs_var = _fs_null_variance(treated, controls, row_w, row_l, col_w, col_l, threshold)
    fs_stat = wins - losses
    fs_p = 2.0 * _NORMAL.cdf(-abs(fs_stat) / math.sqrt(fs_var)) if fs_var > 0 else None

    return WinRatioResult(
        n_intervention=n1,
        n_control=n0,
        wins=wins,
        losses=losses,
        ties=ties,
        by_level=tuple(LevelTally(level, level_w[k], level_l[k]) for k, level in enumerate(LEVELS)),
        win_ratio=ratio,
        confidence=confidence,
        log_se=log_se,
        ci=ci,
        p_value=p_value,
        ci_note=note,
        variance=(WinLossVariance(*(float(v) for v in variance)) if variance is not None else None),
        net_benefit=float(net),
        net_benefit_ci=net_ci,
        win_odds=odds,
        win_odds_ci=odds_ci,
        fs_statistic=fs_stat,
        fs_variance=float(fs_var),
        fs_p_value=fs_p,
        kccq_threshold=threshold,
    )


def _bebu_lachin(
    n1: int, n0: int, row_w: list[int], row_l: list[int], col_w: list[int], col_l: list[int]
) -> tuple[Fraction, Fraction, Fraction]:
    """Var(P_w), Var(P_l), Cov(P_w, P_l), exactly; docs/endpoints.md "Variance".

    Same-intervention-subject second moments average over ordered pairs of DISTINCT controls
    (and vice versa), which is why each arm needs at least 2 subjects.
    """
    pairs = n1 * n0
    pw, pl = Fraction(sum(row_w), pairs), Fraction(sum(row_l), pairs)
    by_treated = n1 * n0 * (n0 - 1)
    by_control = n0 * n1 * (n1 - 1)

    def second(rows_a: list[int], rows_b: list[int], same: bool) -> int:
        return sum(a * (b - 1) if same else a * b for a, b in zip(rows_a, rows_b, strict=True))

    def part(m1: int, m0: int, centre: Fraction) -> Fraction:
        return (Fraction(m1, by_treated) - centre) / n1 + (Fraction(m0, by_control) - centre) / n0

    var_w = part(second(row_w, row_w, True), second(col_w, col_w, True), pw * pw)
    var_l = part(second(row_l, row_l, True), second(col_l, col_l, True), pl * pl)
    cov = part(second(row_w, row_l, False), second(col_w, col_l, False), pw * pl)
    return var_w, var_l, cov


def _fs_null_variance(
    treated: list[_Prepared],
    controls: list[_Prepared],
    row_w: list[int],
    row_l: list[int],
    col_w: list[int],
    col_l: list[int],
    threshold: float,
) -> Fraction:
    """Permutation variance of wins - losses: n1 n0 sum(U_i^2) / (N (N - 1)).

    U_i is subject i's score against every other subject of the pooled sample (wins minus
    losses), so the within-arm pairs are compared too.
    """
    scores = [w - lo for w, lo in zip(row_w, row_l, strict=True)]
    scores += [lo - w for w, lo in zip(col_w, col_l, strict=True)]
    offset = len(treated)
    for group, base in ((treated, 0), (controls, offset)):
        for i in range(len(group)):
            for k in range(i + 1, len(group)):
                result, _ = _compare(group[i], group[k], threshold)
                scores[base + i] += result
                scores[base + k] -= result
    n1, n0 = len(treated), len(controls)
    total = n1 + n0
    return Fraction(n1 * n0 * sum(u * u for u in scores), total * (total - 1))


# --------------------------------------------------------------------------- END-3


def interim_threshold(randomized_count: int) -> int:
    """Subjects past 12 months that make the interim look due: ceil(randomized / 2)."""
    if not _is_int(randomized_count) or randomized_count < 0:
        raise _fail(
            "the interim threshold",
            {"randomized_count": f"must be a whole number >= 0, got {randomized_count!r}"},
        )
    return (randomized_count + 1) // 2


def interim_due(randomized_count: int, completed_12_month_count: int) -> bool:
    """END-3: due once at least half (rounded up) of the randomized subjects are past 12 months.

    A pure predicate of today's counts; recording the first time it turns true (and keeping it
    so as enrolment continues) is the caller's job.
    """
    problems: dict[str, str] = {}
    if not _is_int(randomized_count) or randomized_count < 0:
        problems["randomized_count"] = f"must be a whole number >= 0, got {randomized_count!r}"
    done = completed_12_month_count
    if not _is_int(done) or done < 0:
        problems["completed_12_month_count"] = f"must be a whole number >= 0, got {done!r}"
    elif "randomized_count" not in problems and done > randomized_count:
        problems["completed_12_month_count"] = (
            f"{done} completed 12 months but only {randomized_count} randomized"
        )
    if problems:
        raise _fail("whether the interim look is due", problems)
    return randomized_count > 0 and done >= interim_threshold(randomized_count)
