"""Enrolment forecast (REP-1): the Anisimov–Fedorov Poisson–Gamma recruitment model.

Each site ``i`` recruits as a Poisson process with an unknown rate ``λ_i ~ Gamma(α, β)``
(shape ``α``, *rate* ``β``; subjects per site per month). After ``k_i`` recruits in ``τ_i``
months the site's rate has the conjugate posterior ``Gamma(α + k_i, β + τ_i)``; a site that
has not opened yet keeps the prior and starts recruiting at its planned opening time.

Time is in months from "now". Calendar dates use a mean Gregorian month of 30.4375 days
(365.25 / 12) and are rounded to the nearest day.

Pure numpy/scipy, no database: the reports layer turns rows into :class:`SiteState` values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt

DAYS_PER_MONTH = 30.4375
"""Mean Gregorian month (365.25 / 12 days), used to turn forecast months into dates."""

FALLBACK_PRIOR: tuple[float, float] = (1.0, 4.0)
"""Prior used by :func:`fit_prior` when too few sites have data: mean 0.25 subjects per site
per month, shape 1 (site-to-site CV 100 %). A planning assumption, not a fitted value."""

DEFAULT_PROBS: tuple[float, float, float] = (0.05, 0.5, 0.95)

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class SiteState:
    """One site as the forecast sees it; a future site has ``months_open == 0``."""

    code: str
    recruited: int
    months_open: float
    opens_in_months: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.code, str) or not self.code:
            raise ValueError("site code must be a non-empty string")
        if (
            isinstance(self.recruited, bool)
            or not isinstance(self.recruited, int)
            or self.recruited < 0
        ):
            raise ValueError(
                f"site {self.code}: recruited must be a whole number >= 0, got {self.recruited!r}"
            )
        for name in ("months_open", "opens_in_months"):
            value = getattr(self, name)
            if not _is_real(value) or not math.isfinite(value) or value < 0:
                raise ValueError(
                    f"site {self.code}: {name} must be a finite number >= 0, got {value!r}"
                )
        if self.opens_in_months > 0 and (self.months_open > 0 or self.recruited > 0):
            raise ValueError(
                f"site {self.code}: a site opening in the future cannot have been open "
                "or have recruited"
            )


@dataclass(frozen=True)
class Forecast:
    """Months (and dates when ``as_of`` was given) until the target is reached.

    ``never`` is the fraction of simulations in which the target is never reached (every
    remaining rate is zero); when it is positive the upper quantiles and the mean are ``inf``.
    """

    target: int
    already: int
    remaining: int
    simulations: int
    p05: float
    p50: float
    p95: float
    mean: float
    never: float
    as_of: date | None = None
    date_p05: date | None = None
    date_p50: date | None = None
    date_p95: date | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: dates as ISO strings, ``inf`` as ``None``."""
        out: dict[str, Any] = {}
        for key, value in asdict(self).items():
            if isinstance(value, date):
                out[key] = value.isoformat()
            elif isinstance(value, float) and not math.isfinite(value):
                out[key] = None
            else:
                out[key] = value
        return out


def posterior(alpha: float, beta: float, site: SiteState) -> tuple[float, float]:
    """Conjugate update: (shape, rate) of the site's rate after its own recruitment."""
    _check_prior(alpha, beta)
    return alpha + site.recruited, beta + site.months_open


def posterior_mean(alpha: float, beta: float, site: SiteState) -> float:
    """Expected subjects per month at this site: (α + k) / (β + τ)."""
    shape, rate = posterior(alpha, beta, site)
    return shape / rate


def simulate_completion(
    alpha: float,
    beta: float,
    sites: Sequence[SiteState],
    remaining: int,
    simulations: int,
    seed: int | None,
) -> FloatArray:
    """Months from now until ``remaining`` more subjects are recruited, one value per simulation.

    Exact, vectorised by random time change: given the rates, the pooled process has intensity
    ``Λ(t) = Σ λ_i [t ≥ o_i]`` (piecewise constant, steps at the opening times ``o_i``), and
    its cumulative intensity ``A(t) = ∫Λ`` is piecewise linear. ``A`` maps the process onto a
    unit-rate Poisson process, so the n-th event happens at ``A⁻¹(E_n)`` with
    ``E_n ~ Gamma(n, 1)``. Per simulation that is one Gamma draw per site (its rate), one
    Gamma draw for ``E_n`` and a linear inversion of ``A`` on the piece where it crosses
    ``E_n``.

    If ``E_n`` exceeds what ``A`` can ever reach (the last piece has total rate zero, e.g.
    every sampled rate underflowed to 0 for a tiny shape), the target is never reached and
    that simulation returns ``inf``.
    """
    _check_prior(alpha, beta)
    _check_sites(sites)
    _check_count("remaining", remaining)
    _check_simulations(simulations)
    if remaining == 0:
        return np.zeros(simulations)
    rng = np.random.default_rng(seed)

    shapes = np.array([alpha + s.recruited for s in sites], dtype=float)
    rates = np.array([beta + s.months_open for s in sites], dtype=float)
    opens = np.array([s.opens_in_months for s in sites], dtype=float)
    lam = rng.gamma(shapes, 1.0 / rates, size=(simulations, len(sites)))

    # Piece j is [starts[j], starts[j+1]); the last piece runs to infinity.
    starts = np.unique(np.concatenate(([0.0], opens)))
    is_open = (opens[:, None] <= starts[None, :]).astype(float)  # site × piece
    piece_rate = lam @ is_open  # simulation × piece
    lengths = np.diff(starts)
    crossed = np.zeros_like(piece_rate)  # A at the start of each piece
    crossed[:, 1:] = np.cumsum(piece_rate[:, :-1] * lengths, axis=1)

    target = rng.gamma(float(remaining), 1.0, size=simulations)
    piece = (crossed <= target[:, None]).sum(axis=1) - 1
    rows = np.arange(simulations)
    rate_here = piece_rate[rows, piece]
    left = target - crossed[rows, piece]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        months = np.where(rate_here > 0, starts[piece] + left / rate_here, np.inf)
    return np.asarray(months, dtype=float)


def forecast(
    alpha: float,
    beta: float,
    sites: Sequence[SiteState],
    target: int,
    already: int,
    simulations: int = 10_000,
    seed: int | None = None,
    as_of: date | None = None,
) -> Forecast:
    """Monte Carlo forecast of when ``target`` is reached, given ``already`` recruited.

    A target already met gives zero months (and ``as_of`` as every date).
    """
    _check_count("target", target)
    _check_count("already", already)
    remaining = max(target - already, 0)
    months = simulate_completion(alpha, beta, sites, remaining, simulations, seed)
    p05, p50, p95 = _quantiles(months, DEFAULT_PROBS)
    never = float(np.mean(np.isinf(months)))
    mean = float(np.mean(months))
    dates: list[date | None] = [None, None, None]
    if as_of is not None:
        if not isinstance(as_of, date):
            raise ValueError(f"as_of must be a date, got {as_of!r}")
        dates = [to_date(as_of, m) for m in (p05, p50, p95)]
    return Forecast(
        target=target,
        already=already,
        remaining=remaining,
        simulations=simulations,
        p05=p05,
        p50=p50,
        p95=p95,
        mean=mean,
        never=never,
        as_of=as_of,
        date_p05=dates[0],
        date_p50=dates[1],
        date_p95=dates[2],
    )


def to_date(as_of: date, months: float) -> date | None:
    """``as_of`` plus ``months`` of 30.4375 days, to the nearest day; ``None`` for never."""
    if not math.isfinite(months):
        return None
    return as_of + timedelta(days=round(months * DAYS_PER_MONTH))


def closed_form_quantiles(
    alpha: float,
    beta: float,
    sites: int | Sequence[SiteState],
    target: int,
    probs: Sequence[float] = DEFAULT_PROBS,
) -> dict[str, float]:
    """Exact quantiles and mean when all K sites open now with the same prior and no data.

    ``Λ = Σλ_i ~ Gamma(Kα, β)`` and ``T_n | Λ ~ Gamma(n, Λ)``, so ``T_n = β·G/H`` with
    ``G ~ Gamma(n, 1)``, ``H ~ Gamma(Kα, 1)``: ``T_n / β ~ BetaPrime(n, Kα)`` (Pearson VI),
    with mean ``β·n / (Kα − 1)`` when ``Kα > 1`` and ``inf`` otherwise.
    Keys are ``p05``, ``p50``, ``p95`` (from ``probs``) and ``mean``.
    """
    _check_prior(alpha, beta)
    _check_count("target", target)
    k = _site_count(sites)
    keys = [_prob_key(p) for p in probs]
    if target == 0:
        return {**dict.fromkeys(keys, 0.0), "mean": 0.0}
    from scipy import stats  # lazy: ~1 s of import, needed only for the closed form

    dist = stats.betaprime(target, k * alpha, scale=beta)
    out = {key: float(dist.ppf(p)) for key, p in zip(keys, probs, strict=True)}
    out["mean"] = beta * target / (k * alpha - 1) if k * alpha > 1 else math.inf
    return out


def planning(
    target: int,
    sites: int,
    shape: float,
    rate: float,
    simulations: int = 10_000,
    seed: int | None = None,
) -> dict[str, Any]:
    """Design-stage forecast: ``sites`` sites open now with prior Gamma(shape, rate), no data.

    Gives the Monte Carlo answer beside the closed form, so the two can be compared.
    """
    k = _site_count(sites)
    states = [SiteState(f"S{i + 1:03d}", 0, 0.0) for i in range(k)]
    fc = forecast(shape, rate, states, target, 0, simulations=simulations, seed=seed)
    closed = closed_form_quantiles(shape, rate, k, target)

    def _json(x: float) -> float | None:
        return x if math.isfinite(x) else None

    return {
        "target": target,
        "sites": k,
        "shape": shape,
        "rate": rate,
        "simulations": simulations,
        "months": {
            "p05": _json(fc.p05),
            "p50": _json(fc.p50),
            "p95": _json(fc.p95),
            "mean": _json(fc.mean),
        },
        "closed_form": {key: _json(value) for key, value in closed.items()},
    }


def fit_prior(
    sites: Sequence[SiteState],
    *,
    fallback: tuple[float, float] = FALLBACK_PRIOR,
    min_sites: int = 5,
    min_months: float = 1.0,
    max_shape: float = 20.0,
) -> tuple[float, float]:
    """Empirical-Bayes (α, β) by the method of moments on observed per-site rates.

    Uses sites open at least ``min_months``. Mean ``m = Σk / Στ`` (pooled). Under the model
    ``Var(k_i/τ_i) = α/β² + m/τ_i``, so the between-site variance is the sample variance of
    the rates minus the Poisson part ``m·mean(1/τ_i)``; then ``α = m²/v`` and ``β = m/v``.
    No detectable over-dispersion (``v ≤ 0``) or ``α > max_shape`` caps the shape at
    ``max_shape``. The default cap of 20 (site-to-site CV at least ~22 %) is deliberately
    conservative: with tens of sites and short exposures the moment estimate of ``v`` is noisy
    and too small a ``v`` would make the forecast interval falsely narrow. Fewer than
    ``min_sites`` usable sites, or no recruits at all, returns ``fallback``: the per-site
    posteriors still carry the data.
    """
    _check_prior(*fallback)
    if not all(isinstance(s, SiteState) for s in sites):
        raise ValueError("sites must be SiteState values")
    if min_sites < 2:
        raise ValueError("min_sites must be at least 2 to estimate a variance")
    if not (math.isfinite(max_shape) and max_shape > 0):
        raise ValueError("max_shape must be a finite number > 0")
    used = [s for s in sites if s.months_open >= min_months]
    recruited = np.array([s.recruited for s in used], dtype=float)
    months = np.array([s.months_open for s in used], dtype=float)
    if len(used) < min_sites or recruited.sum() == 0:
        return fallback
    mean = float(recruited.sum() / months.sum())
    between = float(np.var(recruited / months, ddof=1) - mean * np.mean(1.0 / months))
    shape = mean * mean / between if between > 0 else math.inf
    shape = min(shape, max_shape)
    return shape, shape / mean


# --- helpers -------------------------------------------------------------------------------


def _quantiles(months: FloatArray, probs: Sequence[float]) -> list[float]:
    # Linear interpolation is undefined next to inf; fall back to the empirical-CDF inverse.
    q = np.asarray(probs, dtype=float)
    if bool(np.all(np.isfinite(months))):
        return [float(x) for x in np.quantile(months, q, method="linear")]
    return [float(x) for x in np.quantile(months, q, method="inverted_cdf")]


def _prob_key(p: float) -> str:
    if not (0 < p < 1):
        raise ValueError(f"probabilities must lie strictly between 0 and 1, got {p!r}")
    pct = f"{p * 100:g}"
    return f"p{pct.zfill(2) if '.' not in pct else pct}"


def _is_real(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_prior(alpha: float, beta: float) -> None:
    for name, value in (("alpha (shape)", alpha), ("beta (rate)", beta)):
        if not _is_real(value) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def _check_count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise ValueError(f"{name} must be a whole number >= 0, got {value!r}")


def _check_simulations(simulations: int) -> None:
    if isinstance(simulations, bool) or not isinstance(simulations, int) or simulations < 1:
        raise ValueError(f"simulations must be a whole number >= 1, got {simulations!r}")


def _check_sites(sites: Sequence[SiteState]) -> None:
    if not all(isinstance(s, SiteState) for s in sites):
        raise ValueError("sites must be SiteState values")
    if len(sites) == 0:
        raise ValueError("at least one site is needed for a forecast")
    codes = [s.code for s in sites]
    if len(set(codes)) != len(codes):
        dupes = sorted({c for c in codes if codes.count(c) > 1})
        raise ValueError(f"duplicate site codes: {', '.join(dupes)}")


def _site_count(sites: int | Sequence[SiteState]) -> int:
    if isinstance(sites, int) and not isinstance(sites, bool):
        if sites < 1:
            raise ValueError(f"at least one site is needed, got {sites}")
        return sites
    if isinstance(sites, bool):
        raise ValueError("sites must be a count or a list of sites")
    _check_sites(sites)
    if any(s.recruited or s.months_open or s.opens_in_months for s in sites):
        raise ValueError(
            "the closed form applies only when every site opens now with no data; "
            "use forecast() for sites with data or staggered openings"
        )
    return len(sites)
