"""Endpoint statistics (END-1 safety bound, END-2 win ratio, END-3 interim trigger).

scipy appears here only as an independent reference; the domain module is stdlib-only.
"""

from __future__ import annotations

import itertools
import math
import random
import statistics
from collections.abc import Callable
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import beta, binom

from trialdesk.domain.endpoints import (
    LOSS,
    TIE,
    WIN,
    EndpointInputError,
    Level,
    SubjectOutcome,
    compare_pair,
    interim_due,
    interim_threshold,
    safety_bound,
    win_ratio,
)
from trialdesk.domain.errors import ValidationFailed

S = SubjectOutcome

# --------------------------------------------------------------------------- END-1


@pytest.mark.parametrize("n", [1, 2, 5, 10, 29, 30, 100, 250, 1000])
@pytest.mark.parametrize("confidence", [0.95, 0.975])
def test_end1_lower_bound_matches_scipy_beta_quantile(n: int, confidence: float) -> None:
    """Clopper–Pearson lower bound = Beta(alpha; x, n - x + 1), x = event-free subjects."""
    alpha = 1 - confidence
    for x in sorted({0, 1, 2, n // 2, n - 2, n - 1, n} & set(range(n + 1))):
        result = safety_bound(events=n - x, subjects=n, confidence=confidence)
        expected = 0.0 if x == 0 else float(beta.ppf(alpha, x, n - x + 1))
        assert result.lower_bound == pytest.approx(expected, abs=1e-12), (n, x)
        assert result.event_free_rate == x / n
        if x > 0:  # the defining property: P(X >= x | p = bound) = alpha
            assert float(binom.sf(x - 1, n, result.lower_bound)) == pytest.approx(alpha, rel=1e-9)


def test_end1_zero_events_bound_is_alpha_to_the_one_over_n_and_29_subjects_meet_90() -> None:
    """No events: P(X = n) = p^n = alpha; 28 event-free subjects miss the 90 % goal, 29 meet it."""
    at_28 = safety_bound(events=0, subjects=28)
    at_29 = safety_bound(events=0, subjects=29)
    assert at_28.lower_bound == pytest.approx(0.05 ** (1 / 28), abs=1e-14)  # 0.8985
    assert at_29.lower_bound == pytest.approx(0.05 ** (1 / 29), abs=1e-14)  # 0.9019
    assert not at_28.meets_goal
    assert at_29.meets_goal


def test_end1_all_subjects_with_events_gives_bound_zero() -> None:
    result = safety_bound(events=40, subjects=40)
    assert result.event_free_rate == 0.0
    assert result.lower_bound == 0.0
    assert not result.meets_goal


def test_end1_goal_is_met_only_when_bound_strictly_exceeds_it() -> None:
    """END-1 uses "lower bound > goal": a bound equal to the goal does not meet it."""
    result = safety_bound(events=10, subjects=200)  # 95 % event-free, bound about 0.916
    assert result.lower_bound > 0.9
    assert result.meets_goal
    assert not safety_bound(10, 200, goal=result.lower_bound).meets_goal
    assert not safety_bound(10, 200, goal=0.95).meets_goal


@pytest.mark.parametrize(
    ("events", "subjects", "confidence", "goal", "field"),
    [
        (5, 4, 0.95, 0.9, "events"),
        (-1, 4, 0.95, 0.9, "events"),
        (0, 0, 0.95, 0.9, "subjects"),
        (0, True, 0.95, 0.9, "subjects"),
        (1, 10, 1.0, 0.9, "confidence"),
        (1, 10, 0.95, 1.0, "goal"),
    ],
)
def test_end1_bad_input_is_one_clear_value_error(
    events: int, subjects: int, confidence: float, goal: float, field: str
) -> None:
    with pytest.raises(EndpointInputError) as caught:
        safety_bound(events, subjects, confidence, goal)
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, ValidationFailed)
    assert field in caught.value.problems
    assert str(caught.value).startswith("cannot compute the safety bound: ")


# --------------------------------------------------------------------------- END-2

HAND_EXAMPLE = [
    S("I1", "INT", 730, mitral_intervention_day=150),
    S("I2", "INT", 700, death_day=700, hf_hospitalization_day=50),
    S("I3", "INT", 730, hf_hospitalization_day=400, kccq_change=9.0),
    S("C1", "CTRL", 100),
    S("C2", "CTRL", 700, transplant_or_lvad_day=300, death_day=700),
    S("C3", "CTRL", 730, hf_hospitalization_day=400, kccq_change=4.0),
]


def test_end2_hand_computed_three_by_three() -> None:
    """END-2 worked by hand. Shared follow-up = min of the two follow-up ends (inclusive).

    I1 fu 730, mitral day 150          C1 fu 100 (withdrew), nothing, no KCCQ
    I2 fu 700, HF hosp 50, died 700    C2 fu 700, LVAD 300, died 700
    I3 fu 730, HF hosp 400, KCCQ +9    C3 fu 730, HF hosp 400, KCCQ +4

    1 I1-C1 shared 100: I1's mitral (150) is after 100, no KCCQ for C1   -> tie
    2 I1-C2 shared 700: C2 died on day 700 (counts: last shared day)    -> win,  death
    3 I1-C3 shared 730: no deaths, no LVAD; I1 mitral 150               -> loss, mitral
    4 I2-C1 shared 100: I2's death (700) is after 100; I2 HF hosp 50    -> loss, HF hosp
    5 I2-C2 shared 700: both died on day 700 (tie), C2 LVAD 300          -> win,  LVAD
    6 I2-C3 shared 700: I2 died 700, C3 did not                         -> loss, death
    7 I3-C1 shared 100: I3's HF hosp (400) after 100, no KCCQ for C1    -> tie
    8 I3-C2 shared 700: C2 died 700                                     -> win,  death
    9 I3-C3 shared 730: HF hosp same day (tie); KCCQ 9 - 4 = 5 >= 5     -> win,  KCCQ

    Wins 4 (death 2, LVAD 1, KCCQ 1), losses 3 (death 1, mitral 1, HF 1), ties 2:
    WR = 4/3, net benefit = (4 - 3)/9, win odds = (4 + 2/2)/(3 + 2/2) = 5/4.
    """
    by_id = {s.subject_id: s for s in HAND_EXAMPLE}
    expected = {
        ("I1", "C1"): (TIE, None),
        ("I1", "C2"): (WIN, Level.DEATH),
        ("I1", "C3"): (LOSS, Level.MITRAL_INTERVENTION),
        ("I2", "C1"): (LOSS, Level.HF_HOSPITALIZATION),
        ("I2", "C2"): (WIN, Level.TRANSPLANT_OR_LVAD),
        ("I2", "C3"): (LOSS, Level.DEATH),
        ("I3", "C1"): (TIE, None),
        ("I3", "C2"): (WIN, Level.DEATH),
        ("I3", "C3"): (WIN, Level.KCCQ),
    }
    for (i, c), (result, level) in expected.items():
        outcome = compare_pair(by_id[i], by_id[c])
        assert (outcome.result, outcome.level) == (result, level), (i, c)

    r = win_ratio(HAND_EXAMPLE)
    assert (r.n_intervention, r.n_control, r.pairs) == (3, 3, 9)
    assert (r.wins, r.losses, r.ties) == (4, 3, 2)
    assert [(t.level, t.wins, t.losses) for t in r.by_level] == [
        (Level.DEATH, 2, 1),
        (Level.TRANSPLANT_OR_LVAD, 1, 0),
        (Level.MITRAL_INTERVENTION, 0, 1),
        (Level.HF_HOSPITALIZATION, 0, 1),
        (Level.KCCQ, 1, 0),
    ]
    assert r.tally(Level.KCCQ).wins == 1
    assert r.win_ratio == pytest.approx(4 / 3, abs=1e-15)
    assert r.net_benefit == pytest.approx(1 / 9, abs=1e-15)
    assert r.win_odds == pytest.approx(5 / 4, abs=1e-15)
    assert r.ci is not None
    assert r.ci.lower < 4 / 3 < r.ci.upper


def test_end2_kccq_threshold_is_inclusive_despite_binary_rounding() -> None:
    """END-2 KCCQ level: a difference of at least 5 points wins; 8.04 - 3.04 is 5 on paper but
    4.999999999999999 in binary floating point, and must still win."""
    assert 8.04 - 3.04 < 5  # the trap this test guards against
    a = S("a", "INT", 730, kccq_change=8.04)
    assert compare_pair(a, S("b", "CTRL", 730, kccq_change=3.04)).result == WIN
    assert compare_pair(S("b", "INT", 730, kccq_change=3.04), a).result == LOSS
    assert compare_pair(a, S("b", "CTRL", 730, kccq_change=3.05)).result == TIE
    assert compare_pair(a, S("b", "CTRL", 730, kccq_change=13.04)).result == LOSS
    assert compare_pair(a, S("b", "CTRL", 730, kccq_change=None)).result == TIE
    assert compare_pair(a, S("b", "CTRL", 730, kccq_change=-6.0), kccq_threshold=15).result == TIE


def _subjects(arm: str, max_day: int = 800) -> st.SearchStrategy[SubjectOutcome]:
    @st.composite
    def build(draw: st.DrawFn) -> SubjectOutcome:
        fu = draw(st.integers(0, max_day))
        day = st.none() | st.integers(0, fu)
        kccq = st.none() | st.integers(-10000, 10000).map(lambda c: c / 100)
        d, t, m, h = (draw(day) for _ in range(4))
        return S(draw(st.text(min_size=1, max_size=4)), arm, fu, d, t, m, h, draw(kccq))

    return build()


@given(_subjects("INT"), _subjects("CTRL"))
def test_end2_pair_rule_is_antisymmetric(a: SubjectOutcome, b: SubjectOutcome) -> None:
    """Swapping the two subjects turns a win into a loss at the same level (END-2)."""
    ab, ba = compare_pair(a, b), compare_pair(b, a)
    assert ab.result == -ba.result
    assert ab.level == ba.level
    assert (ab.level is None) == (ab.result == TIE)


def _simulated(rng: random.Random, n: int, arm: str, death: float, kccq_mean: float) -> list[S]:
    """Subjects with censoring, deaths, HF hospitalizations and KCCQ (better arm: fewer, higher)."""
    out = []
    for i in range(n):
        fu = 730 if rng.random() < 0.8 else rng.randint(200, 729)
        died = rng.randint(0, fu) if rng.random() < death else None
        fu = died if died is not None else fu
        hosp = rng.randint(0, fu) if rng.random() < 0.3 else None
        mitral = rng.randint(0, fu) if rng.random() < 0.05 else None
        kccq = None if died is not None or fu < 700 else round(rng.gauss(kccq_mean, 12), 2)
        out.append(S(f"{arm}{i}", arm, fu, died, None, mitral, hosp, kccq))
    return out


def _trial(seed: int, n1: int, n0: int) -> list[S]:
    rng = random.Random(seed)
    return _simulated(rng, n1, "INT", 0.1, 8.0) + _simulated(rng, n0, "CTRL", 0.2, 3.0)


def _outcome_matrix(subjects: list[S]) -> list[list[int]]:
    treated = [s for s in subjects if s.arm == "INT"]
    controls = [s for s in subjects if s.arm == "CTRL"]
    return [[compare_pair(a, b).result for b in controls] for a in treated]


def test_end2_variance_equals_bebu_lachin_definition_by_brute_force() -> None:
    """END-2 variance checked term by term from its definition, in exact fractions.

    Bebu & Lachin (2016): Var(P_w) = (E[W_ij W_ik] - P_w^2)/n1 + (E[W_ij W_kj] - P_w^2)/n0, the
    expectations estimated by averaging over every triple (i, j != k) resp. (j, i != k); same for
    losses and for Cov(P_w, P_l) with W_ij L_ik. The module computes these from row sums instead.
    """
    subjects = _trial(seed=11, n1=7, n0=6)
    m = _outcome_matrix(subjects)
    n1, n0 = len(m), len(m[0])
    win = [[int(x == WIN) for x in row] for row in m]
    loss = [[int(x == LOSS) for x in row] for row in m]
    pw = Fraction(sum(map(sum, win)), n1 * n0)
    pl = Fraction(sum(map(sum, loss)), n1 * n0)

    def same_treated(f: list[list[int]], g: list[list[int]]) -> Fraction:
        triples = [(i, j, k) for i in range(n1) for j in range(n0) for k in range(n0) if j != k]
        return Fraction(sum(f[i][j] * g[i][k] for i, j, k in triples), len(triples))

    def same_control(f: list[list[int]], g: list[list[int]]) -> Fraction:
        triples = [(j, i, k) for j in range(n0) for i in range(n1) for k in range(n1) if i != k]
        return Fraction(sum(f[i][j] * g[k][j] for j, i, k in triples), len(triples))

    var_w = (same_treated(win, win) - pw**2) / n1 + (same_control(win, win) - pw**2) / n0
    var_l = (same_treated(loss, loss) - pl**2) / n1 + (same_control(loss, loss) - pl**2) / n0
    cov = (same_treated(win, loss) - pw * pl) / n1 + (same_control(win, loss) - pw * pl) / n0
    var_log = var_w / pw**2 + var_l / pl**2 - 2 * cov / (pw * pl)

    r = win_ratio(subjects)
    assert r.wins > 0
    assert r.losses > 0
    assert r.variance is not None
    assert r.log_se is not None
    assert r.variance.var_wins == pytest.approx(float(var_w), rel=1e-12)
    assert r.variance.var_losses == pytest.approx(float(var_l), rel=1e-12)
    assert r.variance.covariance == pytest.approx(float(cov), rel=1e-12)
    assert r.log_se == pytest.approx(math.sqrt(var_log), rel=1e-12)
    z = statistics.NormalDist().inv_cdf(0.975)
    assert r.ci is not None
    assert r.ci.lower == pytest.approx(math.exp(math.log(pw / pl) - z * r.log_se), rel=1e-12)
    assert r.ci.upper == pytest.approx(math.exp(math.log(pw / pl) + z * r.log_se), rel=1e-12)


def test_end2_standard_errors_agree_with_numerically_differentiated_projection() -> None:
    """END-2 SEs vs an independent large-sample route: the infinitesimal jackknife.

    Each subject's influence is the numerical derivative of the statistic when that subject's
    weight is nudged (central differences), computed from explicit per-subject win/loss
    proportions, with no variance algebra shared with the module. It equals the first-order
    Hoeffding projection (divisor n); Bebu–Lachin differs by O(1/n), ~1 % at 100 per arm.
    """
    subjects = _trial(seed=5, n1=100, n0=100)
    m = _outcome_matrix(subjects)
    n1, n0 = len(m), len(m[0])
    pw = sum(x == WIN for row in m for x in row) / (n1 * n0)
    pl = sum(x == LOSS for row in m for x in row) / (n1 * n0)
    per_treated = [(row.count(WIN) / n0, row.count(LOSS) / n0) for row in m]
    columns = [[m[i][j] for i in range(n1)] for j in range(n0)]
    per_control = [(col.count(WIN) / n1, col.count(LOSS) / n1) for col in columns]

    statistics_of: dict[str, Callable[[float, float], float]] = {
        "log_wr": lambda w, lo: math.log(w / lo),
        "net_benefit": lambda w, lo: w - lo,
        "log_win_odds": lambda w, lo: math.log((1 + w - lo) / (1 - w + lo)),
    }

    def ij_se(f: Callable[[float, float], float]) -> float:
        eps, total = 1e-6, 0.0
        for group, n in ((per_treated, n1), (per_control, n0)):
            for w_i, l_i in group:
                up = f(pw + eps * (w_i - pw), pl + eps * (l_i - pl))
                down = f(pw - eps * (w_i - pw), pl - eps * (l_i - pl))
                total += ((up - down) / (2 * eps)) ** 2 / n**2
        return math.sqrt(total)

    r = win_ratio(subjects)
    assert r.log_se is not None
    assert r.net_benefit_ci is not None
    assert r.win_odds_ci is not None
    z = statistics.NormalDist().inv_cdf(0.975)
    se_net = (r.net_benefit_ci.upper - r.net_benefit_ci.lower) / (2 * z)
    se_log_odds = (math.log(r.win_odds_ci.upper) - math.log(r.win_odds_ci.lower)) / (2 * z)
    assert r.log_se == pytest.approx(ij_se(statistics_of["log_wr"]), rel=0.025)
    assert se_net == pytest.approx(ij_se(statistics_of["net_benefit"]), rel=0.025)
    assert se_log_odds == pytest.approx(ij_se(statistics_of["log_win_odds"]), rel=0.025)


def test_end2_log_se_matches_spread_of_log_wr_over_simulated_trials() -> None:
    """END-2 SE is calibrated: mean reported SE vs the SD of log(WR) over 400 seeded trials.

    With 400 replicates the SD is known to about 3.5 %, so 12 % is a 3-sigma band. Dropping the
    covariance term (a plausible bug) understates the SE by about 25 %, far outside it.
    """
    rng = random.Random(2024)
    logs, ses, ses_without_cov = [], [], []
    for _ in range(400):
        r = win_ratio(_simulated(rng, 40, "INT", 0.1, 8.0) + _simulated(rng, 40, "CTRL", 0.2, 3.0))
        assert r.win_ratio is not None
        assert r.log_se is not None
        assert r.variance is not None
        logs.append(math.log(r.win_ratio))
        ses.append(r.log_se)
        pw, pl = r.wins / r.pairs, r.losses / r.pairs
        ses_without_cov.append(
            math.sqrt(r.variance.var_wins / pw**2 + r.variance.var_losses / pl**2)
        )
    spread = statistics.stdev(logs)
    assert statistics.mean(ses) == pytest.approx(spread, rel=0.12)
    assert statistics.mean(ses_without_cov) < 0.85 * spread


def test_end2_single_binary_level_gives_odds_ratio_and_woolf_standard_error() -> None:
    """Textbook check: with one yes/no outcome (deaths all on one day, full follow-up) every pair
    is decided by death alone, so WR = (alive_I * dead_C)/(dead_I * alive_C) is the odds ratio of
    death, and SE(log WR) tends to Woolf's (1955) sqrt(1/a + 1/b + 1/c + 1/d); they differ by
    O(1/n), under 1 % with 400 per arm.
    """
    dead_i, dead_c, n = 60, 100, 400

    def arm(name: str, dead: int) -> list[S]:
        return [S(f"{name}{k}", name, 730, death_day=365 if k < dead else None) for k in range(n)]

    r = win_ratio(arm("INT", dead_i) + arm("CTRL", dead_c))
    odds_ratio = ((n - dead_i) * dead_c) / (dead_i * (n - dead_c))
    woolf = math.sqrt(1 / dead_i + 1 / (n - dead_i) + 1 / dead_c + 1 / (n - dead_c))
    assert r.win_ratio == pytest.approx(odds_ratio, rel=1e-15)
    assert r.log_se == pytest.approx(woolf, rel=0.01)
    assert r.tally(Level.DEATH).wins == r.wins


def test_end2_fs_variance_is_the_exact_permutation_variance() -> None:
    """Finkelstein–Schoenfeld null variance = variance of (wins - losses) over every re-labelling
    of the same subjects into arms of the same sizes, enumerated here (70 labellings of 8)."""
    base = _trial(seed=3, n1=4, n0=4)
    reported = win_ratio(base).fs_variance
    stats = []
    for chosen in itertools.combinations(range(8), 4):
        relabelled = [
            S(s.subject_id, "INT" if k in chosen else "CTRL", *_fields(s))
            for k, s in enumerate(base)
        ]
        r = win_ratio(relabelled)
        stats.append(r.fs_statistic)
        assert r.fs_variance == reported  # the null variance does not depend on the labels
    assert sum(stats) == 0
    exact = Fraction(sum(t * t for t in stats), len(stats))
    assert reported == pytest.approx(float(exact), rel=1e-12)
    assert reported > 0


def _fields(s: S) -> tuple[int, int | None, int | None, int | None, int | None, float | None]:
    return (
        s.follow_up_days,
        s.death_day,
        s.transplant_or_lvad_day,
        s.mitral_intervention_day,
        s.hf_hospitalization_day,
        s.kccq_change,
    )


def test_end2_fs_test_reduces_to_mann_whitney_on_one_continuous_level() -> None:
    """Textbook check (Mann & Whitney 1947): with KCCQ only and no ties, wins - losses = 2U - n1 n0
    and its null variance is 4 * n1 n0 (N + 1)/12 = n1 n0 (N + 1)/3."""
    values = list(range(0, 120, 10))  # 12 distinct values, 10 apart: no pair within 5 points
    random.Random(1).shuffle(values)
    subjects = [
        S(f"s{k}", "INT" if k < 5 else "CTRL", 730, kccq_change=float(v))
        for k, v in enumerate(values)
    ]
    r = win_ratio(subjects)
    n1, n0 = 5, 7
    assert r.ties == 0
    assert r.fs_variance == pytest.approx(n1 * n0 * (n1 + n0 + 1) / 3, rel=1e-12)
    u = sum(a > b for a in values[:5] for b in values[5:])
    assert r.fs_statistic == 2 * u - n1 * n0
    z = r.fs_statistic / math.sqrt(r.fs_variance)
    assert r.fs_p_value == pytest.approx(2 * statistics.NormalDist().cdf(-abs(z)), rel=1e-12)


def test_end2_swapping_arms_inverts_the_ratio_and_keeps_the_evidence() -> None:
    subjects = _trial(seed=8, n1=30, n0=25)
    swapped = [S(s.subject_id, "CTRL" if s.arm == "INT" else "INT", *_fields(s)) for s in subjects]
    r, q = win_ratio(subjects), win_ratio(swapped)
    assert (q.wins, q.losses, q.ties) == (r.losses, r.wins, r.ties)
    assert r.win_ratio is not None
    assert q.win_ratio is not None
    assert q.win_ratio == pytest.approx(1 / r.win_ratio, rel=1e-12)
    assert q.log_se == pytest.approx(r.log_se, rel=1e-12)
    assert r.ci is not None
    assert q.ci is not None
    assert q.ci.lower == pytest.approx(1 / r.ci.upper, rel=1e-12)
    assert q.p_value == pytest.approx(r.p_value, rel=1e-12)
    assert q.fs_p_value == pytest.approx(r.fs_p_value, rel=1e-12)
    assert q.net_benefit == pytest.approx(-r.net_benefit, abs=1e-15)


def test_end2_no_losses_gives_infinite_ratio_and_an_undefined_ci_with_reason() -> None:
    subjects = [S(f"I{k}", "INT", 730, kccq_change=20.0) for k in range(3)]
    subjects += [S(f"C{k}", "CTRL", 730, kccq_change=0.0) for k in range(3)]
    r = win_ratio(subjects)
    assert (r.wins, r.losses) == (9, 0)
    assert r.win_ratio == math.inf
    assert r.ci is None
    assert r.log_se is None
    assert r.p_value is None
    assert r.ci_note is not None
    assert "no losses" in r.ci_note
    assert r.win_odds == math.inf
    flipped = win_ratio(
        [S(s.subject_id, "CTRL" if s.arm == "INT" else "INT", *_fields(s)) for s in subjects]
    )
    assert flipped.win_ratio == 0.0
    assert flipped.ci is None
    assert flipped.ci_note is not None
    assert "no wins" in flipped.ci_note
    assert r.fs_p_value is not None
    assert r.fs_p_value < 0.1


def test_end2_all_ties_and_tiny_arms_say_why_the_ci_is_missing() -> None:
    tied = win_ratio(
        [S("I1", "INT", 730), S("I2", "INT", 730), S("C1", "CTRL", 730), S("C2", "CTRL", 730)]
    )
    assert (tied.wins, tied.losses, tied.ties) == (0, 0, 4)
    assert tied.win_ratio is None
    assert tied.ci is None
    assert tied.ci_note is not None
    assert "every pair is tied" in tied.ci_note
    assert tied.fs_p_value is None

    one_each = win_ratio([S("I1", "INT", 730, kccq_change=9.0), S("C1", "CTRL", 730, death_day=5)])
    assert one_each.win_ratio == math.inf
    assert one_each.ci is None
    assert one_each.variance is None
    assert one_each.ci_note is not None
    assert "at least 2 subjects in each arm" in one_each.ci_note


def test_end2_empty_arm_is_a_value_error_naming_the_arm() -> None:
    with pytest.raises(ValueError, match=r"arm CTRL: has no subjects") as caught:
        win_ratio([S("I1", "INT", 730), S("I2", "INT", 100)])
    assert isinstance(caught.value, EndpointInputError)
    with pytest.raises(ValueError, match=r"arm INT: has no subjects.*arm CTRL: has no subjects"):
        win_ratio([])


def test_end2_bad_subjects_are_reported_together_in_one_error() -> None:
    subjects = [
        S("I1", "INT", 300, hf_hospitalization_day=400),
        S("I1", "INT", 730),
        S("X9", "SHAM", 730),
        S("C1", "CTRL", -1),
        S("C2", "CTRL", 730, kccq_change=math.nan),
    ]
    with pytest.raises(EndpointInputError) as caught:
        win_ratio(subjects, kccq_threshold=0)
    problems = caught.value.problems
    assert set(problems) == {
        "I1.hf_hospitalization_day",
        "I1",
        "X9.arm",
        "C1.follow_up_days",
        "C2.kccq_change",
        "kccq_threshold",
    }
    assert "follow-up end (300)" in problems["I1.hf_hospitalization_day"]
    assert str(caught.value).startswith("cannot compute the win ratio: ")
    assert "(and 1 more)" in str(caught.value)


# --------------------------------------------------------------------------- END-3


@pytest.mark.parametrize(
    ("randomized", "completed", "due"),
    [
        (10, 4, False),
        (10, 5, True),
        (11, 5, False),
        (11, 6, True),
        (1, 0, False),
        (1, 1, True),
        (0, 0, False),
    ],
)
def test_end3_interim_due_when_half_rounded_up_are_past_12_months(
    randomized: int, completed: int, due: bool
) -> None:
    assert interim_due(randomized, completed) is due


@given(st.integers(0, 5000).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n))))
def test_end3_due_exactly_when_twice_the_completed_reach_the_randomized(
    pair: tuple[int, int],
) -> None:
    randomized, completed = pair
    assert interim_due(randomized, completed) is (randomized > 0 and 2 * completed >= randomized)
    assert interim_threshold(randomized) == math.ceil(randomized / 2)


@pytest.mark.parametrize(("randomized", "completed"), [(10, 11), (-1, 0), (10, -2), (10, 2.5)])
def test_end3_impossible_counts_are_rejected(randomized: int, completed: int) -> None:
    with pytest.raises(EndpointInputError, match="cannot compute whether the interim look is due"):
        interim_due(randomized, completed)
