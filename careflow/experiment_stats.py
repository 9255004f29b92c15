"""The statistics of an experiment that may be looked at every day: always-valid intervals.

Pure functions of counts and values: no database, no text (as careflow/uplift_stats.py
is for a holdout read once).

A marketer looks at an A/B test every morning. An ordinary 95% interval read
every day and acted on the first time it excludes zero declares a winner
between two identical messages far more often than 5% of the time (bench/
experiments.py measures it: about a quarter of null experiments over 60 daily
looks). These intervals are **confidence sequences**: with probability 95%
they hold the true difference on *every* day at once, so looking daily, or
hourly, and stopping at the first clear answer keeps the false-winner rate at
5%. The price is width: at the audience they are tuned for they are 1.55
times as wide as the fixed-horizon interval.

The method is the two-sided normal-mixture boundary (Robbins 1970; Howard,
Ramdas, McAuliffe and Sekhon, "Time-uniform, nonparametric, nonasymptotic
confidence sequences", Annals of Statistics 49(2), 2021, the normal mixture
of their section 3): for an estimate ``D`` of a difference ``θ`` with
standard error ``s``, and a mixing variance ``τ²``,

    |D - θ| <= sqrt( s²(s² + τ²)/τ² · log((s² + τ²) / (s² α²)) )

holds for all sample sizes at once with probability at least ``1 - α``. It is
the mixture sequential probability ratio test of Johari, Koomen, Pekelis and
Walsh ("Peeking at A/B tests", KDD 2017; "Always valid inference", Operations
Research 70(3), 2022), which Optimizely's stats engine uses, written as an
interval. Conversion rates and revenue per customer are means of many small
independent outcomes, so their difference is close to normal and its
variance is estimated from the data as it comes (Waudby-Smith, Arbour,
Sinha, Kennedy and Ramdas, "Time-uniform central limit theory and
asymptotic confidence sequences", Annals of Statistics 52(6), 2024, justify
that plug-in).

``τ²`` decides where the boundary is tightest; :func:`tuned_mixture` puts
that at the experiment's planned audience, by Howard et al.'s rule for
tuning the normal mixture to a target sample size (their ``confseq`` package
calls it ``best_rho``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

ALPHA = 0.05
POWER = 0.80


@dataclass(frozen=True)
class Reading:
    """One look at a difference between two groups (``treated - control``)."""

    difference: float
    lower: float
    upper: float
    #: the always-valid p-value of "no difference" at this look (not yet minimised over
    #: earlier looks: see :func:`running_p`)
    p_value: float

    @property
    def verdict(self) -> str:
        """``"better"``, ``"worse"`` or ``"undecided"``: whether the interval excludes 0."""
        if self.lower > 0:
            return "better"
        if self.upper < 0:
            return "worse"
        return "undecided"


def tuned_mixture(planned_variance: float, alpha: float = ALPHA) -> float:
    """The mixing variance ``τ²`` whose boundary is narrowest when the difference's
    variance (standard error squared) has come down to ``planned_variance``."""
    if planned_variance <= 0:
        raise ValueError("the planned variance of the difference must be positive")
    log_a = math.log(1 / alpha)
    return planned_variance * (2 * log_a + math.log(1 + 2 * log_a))


def half_width(variance: float, tau2: float, alpha: float = ALPHA) -> float:
    """The confidence sequence's half-width when the difference has this variance."""
    if variance <= 0:
        return 0.0
    spread = variance * (variance + tau2) / tau2
    return math.sqrt(spread * math.log((variance + tau2) / (variance * alpha**2)))


def mixture_ratio(difference: float, variance: float, tau2: float) -> float:
    """The normal-mixture likelihood ratio against "no difference" (Johari et al.'s
    mSPRT statistic); its inverse is an always-valid p-value."""
    if variance <= 0:
        return math.inf if difference else 1.0
    log_ratio = 0.5 * math.log(variance / (variance + tau2)) + tau2 * difference**2 / (
        2 * variance * (variance + tau2)
    )
    return math.exp(min(log_ratio, 700.0))


def compare_means(
    treated: tuple[float, float, int],
    control: tuple[float, float, int],
    tau2: float,
    alpha: float = ALPHA,
) -> Reading:
    """Difference of two means, each given as (mean, variance of one customer's outcome,
    customers): revenue per customer, or a conversion rate (see :func:`compare_rates`)."""
    (m1, v1, n1), (m0, v0, n0) = treated, control
    if n1 <= 0 or n0 <= 0:
        return Reading(0.0, -math.inf, math.inf, 1.0)
    d = m1 - m0
    var = v1 / n1 + v0 / n0
    h = half_width(var, tau2, alpha)
    return Reading(d, d - h, d + h, min(1.0, 1 / mixture_ratio(d, var, tau2)))


def rate_variance(converted: int, customers: int) -> float:
    """One customer's outcome variance for a conversion rate, read as if one conversion
    and one non-conversion had been added: with 0 of 40 converted the plain p(1 - p)
    says the rate is known exactly, which is false."""
    p = (converted + 1) / (customers + 2)
    return p * (1 - p)


def compare_rates(
    treated: tuple[int, int], control: tuple[int, int], tau2: float, alpha: float = ALPHA
) -> Reading:
    """Difference of two conversion rates, each given as (converted, customers)."""
    (x1, n1), (x0, n0) = treated, control
    return compare_means(
        (x1 / n1 if n1 else 0.0, rate_variance(x1, n1), n1),
        (x0 / n0 if n0 else 0.0, rate_variance(x0, n0), n0),
        tau2,
        alpha,
    )


def running_p(p_values: list[float]) -> float:
    """The always-valid p-value after several looks: the smallest so far is still valid."""
    return min(p_values, default=1.0)


def planned_mixture(
    customers_per_arm: float, baseline: float, arms: int = 2, alpha: float = ALPHA
) -> float:
    """``τ²`` for a conversion experiment expected to reach ``customers_per_arm`` per
    variant at a ``baseline`` conversion rate, corrected for comparing ``arms - 1``
    variants with the control (Bonferroni)."""
    variance = 2 * baseline * (1 - baseline) / customers_per_arm
    return tuned_mixture(variance, comparison_alpha(arms, alpha))


def comparison_alpha(arms: int, alpha: float = ALPHA) -> float:
    """The level each variant-against-control comparison gets so that the chance of any
    false winner among ``arms - 1`` comparisons stays at ``alpha``."""
    return alpha / max(1, arms - 1)


def detectable_rise(
    customers_per_arm: float,
    baseline: float,
    arms: int = 2,
    alpha: float = ALPHA,
    power: float = POWER,
) -> float | None:
    """The smallest rise of the conversion rate over ``baseline`` (a proportion) that an
    experiment finds with ``power`` by the time each arm has ``customers_per_arm``,
    looking every day with these intervals; None when even 100% would not be found.

    A lower bound on the chance (earlier looks can only add to it): the rise is found at
    the planned audience when the estimate clears the boundary, which it does with
    probability ``power`` when rise = half-width + z(power) x standard error."""
    if customers_per_arm <= 0:
        return None
    a = comparison_alpha(arms, alpha)
    tau2 = planned_mixture(customers_per_arm, baseline, arms, alpha)
    z = NormalDist().inv_cdf(power)

    def found(rise: float) -> bool:
        p1 = baseline + rise
        var = (baseline * (1 - baseline) + p1 * (1 - p1)) / customers_per_arm
        return rise >= half_width(var, tau2, a) + z * math.sqrt(var)

    lo, hi = 0.0, 1.0 - baseline
    if not found(hi):
        return None
    for _ in range(60):  # bisection: the margin grows with the rise
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if found(mid) else (mid, hi)
    return hi


def power_at(
    rise: float,
    customers_per_arm: float,
    baseline: float,
    arms: int = 2,
    alpha: float = ALPHA,
) -> float:
    """The chance that a true rise of ``rise`` (a proportion) over ``baseline`` is found by
    the time each arm has ``customers_per_arm``, looking every day: the inverse of
    :func:`detectable_rise` (the same lower bound: earlier looks can only add to it)."""
    if customers_per_arm <= 0 or rise <= 0:
        return 0.0
    p1 = min(baseline + rise, 1.0)
    a = comparison_alpha(arms, alpha)
    tau2 = planned_mixture(customers_per_arm, baseline, arms, alpha)
    var = (baseline * (1 - baseline) + p1 * (1 - p1)) / customers_per_arm
    if var <= 0:
        return 1.0
    return NormalDist().cdf((rise - half_width(var, tau2, a)) / math.sqrt(var))


#: buyers each group needs before a revenue interval is shown: below it the normal
#: approximation of a skewed mean is too rough to promise anything (docs/experiments.md)
MIN_BUYERS = 10


@dataclass(frozen=True)
class Spread:
    """One group's revenue per customer, summarised: what its intervals need."""

    mean: float
    #: the variance of one customer's value (n - 1 denominator)
    variance: float
    customers: int
    #: customers whose value is above 0
    buyers: int


def spread(values: list[float]) -> Spread:
    """Summarise one value a customer (0 for a customer who bought nothing)."""
    n = len(values)
    mean = math.fsum(values) / n if n else 0.0
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return Spread(mean, var, n, sum(v > 0 for v in values))


def mean_sequence(group: Spread, planned: float, alpha: float = ALPHA) -> Reading:
    """A group's mean revenue per customer with an always-valid interval, its mixture
    tuned to ``planned`` customers: the asymptotic confidence sequence of Waudby-Smith et
    al. (2024, Theorem 2.2), whose mixture is a fixed multiple of the estimated variance of
    one customer's value (their ``ρ²``), so it fits the data's units whatever they are.
    No interval (-inf, inf) before :data:`MIN_BUYERS` buyers; ``p_value`` is unused (1)."""
    if group.buyers < MIN_BUYERS or group.variance <= 0:
        return Reading(group.mean, -math.inf, math.inf, 1.0)
    tau2 = tuned_mixture(group.variance / max(planned, 1), alpha)
    h = half_width(group.variance / group.customers, tau2, alpha)
    return Reading(group.mean, group.mean - h, group.mean + h, 1.0)


def compare_revenue(
    treated: Spread, control: Spread, planned_per_arm: float, alpha: float = ALPHA
) -> Reading:
    """Difference of mean revenue per customer (``treated - control``) with an always-valid
    interval.

    Revenue is skewed (most customers 0, a few large orders), so nothing is assumed of its
    shape: each group's variance is its own customers' (Welch), and the mixture is a fixed
    multiple of the difference's variance at the planned audience at that estimate, as in
    :func:`mean_sequence`. The guarantee is asymptotic: no interval (-inf, inf) until each
    group has :data:`MIN_BUYERS` buyers (bench/experiments.py measures it on skewed orders)."""
    d = treated.mean - control.mean
    if min(treated.buyers, control.buyers) < MIN_BUYERS:
        return Reading(d, -math.inf, math.inf, 1.0)
    tau2 = tuned_mixture((treated.variance + control.variance) / max(planned_per_arm, 1), alpha)
    return compare_means(
        (treated.mean, treated.variance, treated.customers),
        (control.mean, control.variance, control.customers),
        tau2,
        alpha,
    )
