"""REP-1: enrolment forecast by the Poisson–Gamma recruitment model (trialdesk.stats.forecast)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import date, timedelta

import numpy as np
import pytest
from scipy import optimize, stats

from trialdesk.stats.forecast import (
    DAYS_PER_MONTH,
    FALLBACK_PRIOR,
    SiteState,
    closed_form_quantiles,
    fit_prior,
    forecast,
    planning,
    posterior,
    posterior_mean,
    simulate_completion,
    to_date,
)

pytestmark = pytest.mark.req("REP-1")

PROBS = (0.05, 0.25, 0.5, 0.75, 0.95)


def _fresh_sites(k: int) -> list[SiteState]:
    return [SiteState(f"S{i:03d}", 0, 0.0) for i in range(k)]


def _quantile_z(sample: np.ndarray, alpha: float, beta: float, k: int, n: int) -> list[float]:
    """Distance of each sample quantile from the closed form, in standard errors.

    SE of the p-quantile is sqrt(p(1-p)/S) / f(q), f the exact (beta-prime) density.
    """
    dist = stats.betaprime(n, k * alpha, scale=beta)
    z = []
    for p in PROBS:
        q = dist.ppf(p)
        se = math.sqrt(p * (1 - p) / sample.size) / dist.pdf(q)
        z.append(abs(float(np.quantile(sample, p)) - q) / se)
    return z


def _exact_cdf(alpha: float, beta: float, sites: list[SiteState], n: int, t: float) -> float:
    """P(n-th recruit by month t) = P(N(t) >= n), N(t) a sum of negative binomials.

    Site i recruits Poisson(λ_i · d_i) with d_i = (t - o_i)+ and λ_i ~ Gamma(a_i, rate b_i),
    i.e. NB(a_i, b_i / (b_i + d_i)); the pmfs are convolved up to n - 1.
    """
    pmf = np.zeros(n)
    pmf[0] = 1.0
    for site in sites:
        a, b = posterior(alpha, beta, site)
        d = max(t - site.opens_in_months, 0.0)
        site_pmf = stats.nbinom.pmf(np.arange(n), a, b / (b + d))
        pmf = np.convolve(pmf, site_pmf)[:n]
    return 1.0 - float(pmf.sum())


def _mixed_sites() -> list[SiteState]:
    """Slow, fast and fresh open sites plus sites opening 2, 5 and 9 months from now."""
    return [
        SiteState("SLOW", 1, 10.0),
        SiteState("FAST", 12, 6.0),
        SiteState("MID", 3, 4.0),
        SiteState("NEW", 0, 0.0),
        SiteState("F2", 0, 0.0, opens_in_months=2.0),
        SiteState("F5", 0, 0.0, opens_in_months=5.0),
        SiteState("F5B", 0, 0.0, opens_in_months=5.0),
        SiteState("F9", 0, 0.0, opens_in_months=9.0),
        SiteState("F14", 0, 0.0, opens_in_months=14.0),
    ]


def _exact_quantile(alpha: float, beta: float, sites: list[SiteState], n: int, p: float) -> float:
    return float(optimize.brentq(lambda t: _exact_cdf(alpha, beta, sites, n, t) - p, 0.0, 1000.0))


def test_rep1_monte_carlo_quantiles_agree_with_beta_prime_closed_form() -> None:
    """All sites open now, no data: simulated quantiles within 4 SE of T/β ~ BetaPrime(n, Kα)."""
    alpha, beta, k, n = 1.2, 6.0, 75, 352
    sample = simulate_completion(alpha, beta, _fresh_sites(k), n, 20_000, seed=11)
    assert max(_quantile_z(sample, alpha, beta, k, n)) < 4.0
    closed = closed_form_quantiles(alpha, beta, k, n, probs=PROBS)
    assert closed["mean"] == pytest.approx(beta * n / (k * alpha - 1))
    assert abs(sample.mean() - closed["mean"]) < 4 * sample.std() / math.sqrt(sample.size)


def test_rep1_quantile_check_rejects_a_wrong_rate() -> None:
    """The agreement test has power: a 2 % wrong rate (or two sites too few) fails it."""
    alpha, beta, k, n = 1.2, 6.0, 75, 352
    sample = simulate_completion(alpha, beta, _fresh_sites(k), n, 20_000, seed=11)
    assert max(_quantile_z(sample, alpha, beta * 1.02, k, n)) > 4.0
    assert max(_quantile_z(sample, alpha, beta, k - 2, n)) > 4.0


def test_rep1_staggered_simulation_matches_exact_negative_binomial_cdf() -> None:
    """With data and staggered openings the simulated CDF matches the exact one within 4 SE."""
    alpha, beta, n, sims = 1.5, 5.0, 40, 20_000
    sites = _mixed_sites()
    sample = simulate_completion(alpha, beta, sites, n, sims, seed=5)
    for p in PROBS:
        t = _exact_quantile(alpha, beta, sites, n, p)
        se = math.sqrt(p * (1 - p) / sims)
        assert abs(float(np.mean(sample <= t)) - p) < 4 * se, (p, t)


def test_rep1_exact_cdf_check_rejects_ignoring_opening_times() -> None:
    """The staggered check has power: treating every site as open now is rejected."""
    alpha, beta, n, sims = 1.5, 5.0, 40, 20_000
    sites = _mixed_sites()
    all_now = [SiteState(s.code, s.recruited, s.months_open) for s in sites]
    sample = simulate_completion(alpha, beta, all_now, n, sims, seed=5)
    t = _exact_quantile(alpha, beta, sites, n, 0.5)
    assert abs(float(np.mean(sample <= t)) - 0.5) > 4 * math.sqrt(0.25 / sims)


def test_rep1_posterior_means_for_slow_and_fast_site() -> None:
    """Gamma(α + k, β + τ): a slow site is pulled below, a fast one above the prior mean."""
    alpha, beta = 2.0, 8.0  # prior mean 0.25 per month
    slow = SiteState("SLOW", 1, 12.0)
    fast = SiteState("FAST", 18, 6.0)
    assert posterior(alpha, beta, slow) == (3.0, 20.0)
    assert posterior(alpha, beta, fast) == (20.0, 14.0)
    assert posterior_mean(alpha, beta, slow) == pytest.approx(0.15)
    assert posterior_mean(alpha, beta, fast) == pytest.approx(20 / 14)
    future = SiteState("LATER", 0, 0.0, opens_in_months=3.0)
    assert posterior(alpha, beta, future) == (alpha, beta)


def test_rep1_posterior_rates_drive_the_simulation() -> None:
    """A fast site's data shortens the forecast against the same site with slow data."""
    alpha, beta = 2.0, 8.0
    fast = simulate_completion(alpha, beta, [SiteState("A", 18, 6.0)], 10, 4000, seed=2)
    slow = simulate_completion(alpha, beta, [SiteState("A", 1, 12.0)], 10, 4000, seed=2)
    # Expected months ≈ n / posterior mean: 10 / 1.43 ≈ 7 against 10 / 0.15 ≈ 67.
    assert np.median(fast) < 10 < 40 < np.median(slow)


def test_rep1_staggered_openings_delay_the_forecast() -> None:
    """Same seed, same rates: opening sites later can only make every simulated date later."""
    alpha, beta, n = 1.2, 6.0, 100
    now = [SiteState(f"S{i}", 0, 0.0) for i in range(20)]
    later = [SiteState(f"S{i}", 0, 0.0, opens_in_months=float(i % 4) * 3) for i in range(20)]
    t_now = simulate_completion(alpha, beta, now, n, 5000, seed=3)
    t_later = simulate_completion(alpha, beta, later, n, 5000, seed=3)
    assert np.all(t_later >= t_now)
    f_now = forecast(alpha, beta, now, n, 0, 5000, seed=3)
    f_later = forecast(alpha, beta, later, n, 0, 5000, seed=3)
    assert f_later.p05 > f_now.p05
    assert f_later.p50 > f_now.p50 + 1.0
    assert f_later.p95 > f_now.p95


def test_rep1_same_seed_same_result_different_seed_differs() -> None:
    sites = _mixed_sites()
    a = simulate_completion(1.5, 5.0, sites, 30, 1000, seed=42)
    b = simulate_completion(1.5, 5.0, sites, 30, 1000, seed=42)
    c = simulate_completion(1.5, 5.0, sites, 30, 1000, seed=43)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert forecast(1.5, 5.0, sites, 60, 30, seed=7) == forecast(1.5, 5.0, sites, 60, 30, seed=7)


def test_rep1_forecast_dates_use_30_4375_day_months() -> None:
    as_of = date(2025, 3, 1)
    assert to_date(as_of, 12.0) == as_of + timedelta(days=365)  # 365.25 rounds to 365
    assert to_date(as_of, 1.0) == as_of + timedelta(days=30)
    assert to_date(as_of, math.inf) is None
    fc = forecast(1.2, 6.0, _mixed_sites(), 80, 16, simulations=2000, seed=1, as_of=as_of)
    assert fc.remaining == 64
    for months, when in ((fc.p05, fc.date_p05), (fc.p50, fc.date_p50), (fc.p95, fc.date_p95)):
        assert when == as_of + timedelta(days=round(months * DAYS_PER_MONTH))
    assert fc.date_p05 is not None
    assert fc.date_p95 is not None
    assert as_of < fc.date_p05 < fc.date_p95


def test_rep1_target_already_met_is_zero_months() -> None:
    fc = forecast(1.2, 6.0, _mixed_sites(), 40, 41, simulations=100, seed=1, as_of=date(2025, 1, 2))
    assert fc.remaining == 0
    assert (fc.p05, fc.p50, fc.p95, fc.mean) == (0.0, 0.0, 0.0, 0.0)
    assert fc.date_p50 == date(2025, 1, 2)


def test_rep1_target_never_reached_is_inf_and_null_in_json() -> None:
    """Rates that underflow to zero give inf months, no dates, and null in the JSON form."""
    sites = [SiteState("A", 0, 0.0), SiteState("B", 0, 0.0, opens_in_months=2.0)]
    months = simulate_completion(1e-300, 1.0, sites, 5, 200, seed=1)
    assert np.all(np.isinf(months))
    fc = forecast(1e-300, 1.0, sites, 5, 0, simulations=200, seed=1, as_of=date(2025, 1, 1))
    assert fc.never == 1.0
    assert fc.p50 == math.inf
    assert fc.date_p50 is None
    as_json = json.loads(json.dumps(fc.to_dict()))
    assert as_json["p50"] is None
    assert as_json["mean"] is None
    assert as_json["as_of"] == "2025-01-01"


def test_rep1_partly_never_reached_keeps_finite_lower_quantiles() -> None:
    """One site with a tiny shape: about half the simulations never finish, the rest do."""
    fc = forecast(1e-3, 1.0, [SiteState("A", 0, 0.0)], 1, 0, simulations=4000, seed=9)
    assert 0.3 < fc.never < 0.7
    assert math.isfinite(fc.p05)
    assert fc.p95 == math.inf
    assert fc.mean == math.inf


def test_rep1_planning_reports_monte_carlo_beside_closed_form() -> None:
    out = planning(352, 75, 1.2, 6.0, simulations=10_000, seed=1)
    assert json.loads(json.dumps(out)) == out
    assert {"target", "sites", "simulations", "months", "closed_form"} <= out.keys()
    assert (out["target"], out["sites"], out["simulations"]) == (352, 75, 10_000)
    assert set(out["months"]) == set(out["closed_form"]) == {"p05", "p50", "p95", "mean"}
    for key in ("p05", "p50", "p95", "mean"):
        assert out["months"][key] == pytest.approx(out["closed_form"][key], rel=0.02)


def test_rep1_closed_form_refuses_sites_with_data_or_late_openings() -> None:
    with pytest.raises(ValueError, match="closed form applies only"):
        closed_form_quantiles(1.0, 4.0, _mixed_sites(), 10)
    assert closed_form_quantiles(1.0, 4.0, _fresh_sites(3), 10) == closed_form_quantiles(
        1.0, 4.0, 3, 10
    )


def test_rep1_closed_form_mean_is_infinite_when_k_alpha_at_most_one() -> None:
    assert closed_form_quantiles(0.5, 4.0, 2, 10)["mean"] == math.inf


def test_rep1_fit_prior_recovers_a_known_prior() -> None:
    """Method of moments with the Poisson correction recovers (α, β) from many sites."""
    rng = np.random.default_rng(2024)
    alpha, beta, tau = 2.0, 8.0, 24.0
    rates = rng.gamma(alpha, 1 / beta, size=3000)
    counts = rng.poisson(rates * tau)
    sites = [SiteState(f"S{i}", int(c), tau) for i, c in enumerate(counts)]
    shape, rate = fit_prior(sites)
    assert shape == pytest.approx(alpha, rel=0.1)
    assert rate == pytest.approx(beta, rel=0.1)
    assert shape / rate == pytest.approx(counts.sum() / (tau * len(counts)))


def test_rep1_fit_prior_falls_back_with_too_few_sites_or_no_recruits() -> None:
    few = [SiteState(f"S{i}", 3, 6.0) for i in range(4)]
    assert fit_prior(few) == FALLBACK_PRIOR
    assert fit_prior(few, fallback=(2.0, 3.0)) == (2.0, 3.0)
    barely_open = [SiteState(f"S{i}", 1, 0.5) for i in range(10)]
    assert fit_prior(barely_open) == FALLBACK_PRIOR
    silent = [SiteState(f"S{i}", 0, 6.0) for i in range(10)]
    assert fit_prior(silent) == FALLBACK_PRIOR


def test_rep1_fit_prior_caps_shape_when_sites_look_identical() -> None:
    """No over-dispersion beyond Poisson noise: the shape is capped, the mean kept (0.25)."""
    same = [SiteState(f"S{i}", 5, 20.0) for i in range(10)]
    assert fit_prior(same) == (20.0, 80.0)
    assert fit_prior(same, max_shape=50.0) == (50.0, 200.0)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: forecast(1.0, 4.0, _mixed_sites(), -1, 0), "target must be a whole number"),
        (lambda: forecast(0.0, 4.0, _mixed_sites(), 10, 0), r"alpha \(shape\) must be"),
        (lambda: forecast(-1.0, 4.0, _mixed_sites(), 10, 0), r"alpha \(shape\) must be"),
        (lambda: forecast(1.0, math.nan, _mixed_sites(), 10, 0), r"beta \(rate\) must be"),
        (lambda: forecast(1.0, 4.0, [], 10, 0), "at least one site"),
        (lambda: forecast(1.0, 4.0, _mixed_sites(), 10, -2), "already must be"),
        (lambda: forecast(1.0, 4.0, _mixed_sites(), 10, 0, simulations=0), "simulations must"),
        (lambda: simulate_completion(1.0, 4.0, _mixed_sites(), -3, 10, 1), "remaining must"),
        (lambda: closed_form_quantiles(1.0, 4.0, 0, 10), "at least one site"),
        (lambda: closed_form_quantiles(1.0, 4.0, 3, 10, probs=(0.5, 1.0)), "strictly between"),
        (lambda: planning(-5, 75, 1.0, 4.0), "target must be"),
        (lambda: planning(10, 0, 1.0, 4.0), "at least one site"),
        (lambda: fit_prior(_mixed_sites(), fallback=(0.0, 1.0)), r"alpha \(shape\) must be"),
        (lambda: SiteState("A", -1, 3.0), "recruited must be"),
        (lambda: SiteState("A", 1, -3.0), "months_open must be"),
        (lambda: SiteState("A", 0, 0.0, opens_in_months=math.inf), "opens_in_months must be"),
        (lambda: SiteState("A", 2, 3.0, opens_in_months=1.0), "opening in the future"),
        (lambda: SiteState("", 0, 0.0), "non-empty"),
        (
            lambda: forecast(1.0, 4.0, [SiteState("A", 0, 0.0), SiteState("A", 1, 2.0)], 5, 0),
            "duplicate site codes: A",
        ),
    ],
)
def test_rep1_bad_input_raises_clear_value_error(call: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
