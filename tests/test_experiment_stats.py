"""Experiment intervals that may be read every day (careflow/experiment_stats.py).

The claims a marketer relies on: reading every morning and acting on the first
clear answer declares a false winner at most 5% of the time (where the
holdout's fixed-horizon interval, read the same way, does far more often);
a rise as large as the one stated as detectable is found with the stated
power; and the closed-form boundary is the normal-mixture likelihood ratio
it is derived from.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import integrate, optimize

from bench.experiments import Shop, simulate, simulate_revenue
from careflow import experiment_stats as xs
from careflow.uplift_stats import mde

SHOP = Shop(per_day=40, days=60, baseline=0.03)
EXPERIMENTS = 400
#: three standard errors of a 5% rate estimated from EXPERIMENTS experiments
SLACK = 3 * math.sqrt(0.05 * 0.95 / EXPERIMENTS)


def test_looking_every_morning_keeps_false_winners_at_five_percent():
    sequence = simulate(SHOP, 0.0, EXPERIMENTS, seed=1, method="sequence")
    assert sequence.rate <= xs.ALPHA + SLACK


def test_the_fixed_interval_read_every_morning_finds_false_winners_far_more_often():
    """The failure the always-valid intervals exist to prevent (and proof that the
    simulation can see it)."""
    fixed = simulate(SHOP, 0.0, EXPERIMENTS, seed=1, method="fixed")
    assert fixed.rate > 2 * xs.ALPHA


def test_the_rise_stated_as_detectable_is_found_with_the_stated_power():
    rise = xs.detectable_rise(SHOP.per_arm, SHOP.baseline)
    found = simulate(SHOP, rise, EXPERIMENTS, seed=2, method="sequence")
    assert found.right_winners / EXPERIMENTS >= xs.POWER - 3 * math.sqrt(0.2 * 0.8 / EXPERIMENTS)
    assert found.right_winners == found.winners, "a worse variant was never called better"


def test_peeking_costs_a_larger_detectable_rise_than_one_reading():
    """Said to marketers before launch: the price of reading every day."""
    sequential = xs.detectable_rise(SHOP.per_arm, SHOP.baseline)
    once = mde(SHOP.per_arm, SHOP.per_arm, SHOP.baseline)
    assert once < sequential < 2 * once


def _mixture_ratio_by_integration(d: float, variance: float, tau2: float) -> float:
    """The mSPRT statistic from its definition: the likelihood of the estimate under a
    difference drawn from N(0, tau2), over its likelihood under no difference."""

    def integrand(theta: float) -> float:
        like = math.exp(-((d - theta) ** 2) / (2 * variance) + d**2 / (2 * variance))
        prior = math.exp(-(theta**2) / (2 * tau2)) / math.sqrt(2 * math.pi * tau2)
        return like * prior

    spread = 12 * math.sqrt(tau2 + variance)
    value, _ = integrate.quad(integrand, d - spread, d + spread, limit=200)
    return value


@pytest.mark.parametrize(
    "d, variance, tau2", [(0.0, 1.0, 1.0), (0.01, 2e-5, 1e-4), (-0.03, 4e-5, 3e-4), (2.5, 0.5, 4.0)]
)
def test_the_closed_form_is_the_mixture_it_comes_from(d, variance, tau2):
    assert xs.mixture_ratio(d, variance, tau2) == pytest.approx(
        _mixture_ratio_by_integration(d, variance, tau2), rel=1e-6
    )


@pytest.mark.parametrize("variance, tau2", [(1e-4, 1e-4), (2e-5, 5e-4), (1.0, 0.1)])
def test_the_interval_ends_where_the_ratio_reaches_one_over_alpha(variance, tau2):
    """The interval is every difference not rejected at alpha: its edge is where the
    mixture ratio of (estimate - edge) equals 1/alpha."""
    h = xs.half_width(variance, tau2)
    edge = optimize.brentq(
        lambda x: xs.mixture_ratio(x, variance, tau2) - 1 / xs.ALPHA, 0, 100 * math.sqrt(variance + tau2)
    )
    assert h == pytest.approx(edge, rel=1e-9)


def test_at_the_planned_audience_the_interval_is_a_known_factor_wider():
    variance = 2 * 0.03 * 0.97 / 2_400
    tau2 = xs.tuned_mixture(variance)
    ratio = xs.half_width(variance, tau2) / (1.959964 * math.sqrt(variance))
    assert ratio == pytest.approx(1.55, abs=0.005)  # the docstring's figure


@given(
    x1=st.integers(0, 500),
    x0=st.integers(0, 500),
    extra1=st.integers(0, 5_000),
    extra0=st.integers(0, 5_000),
)
def test_an_always_valid_interval_holds_the_fixed_one(x1, x0, extra1, extra0):
    """Wider than the fixed 95% interval everywhere, whatever the counts."""
    n1, n0 = x1 + extra1 + 1, x0 + extra0 + 1
    tau2 = xs.planned_mixture(2_000, 0.05)
    r = xs.compare_rates((x1, n1), (x0, n0), tau2)
    se = math.sqrt(xs.rate_variance(x1, n1) / n1 + xs.rate_variance(x0, n0) / n0)
    assert r.lower <= r.difference - 1.959964 * se
    assert r.upper >= r.difference + 1.959964 * se
    assert 0 < r.p_value <= 1
    assert (r.verdict == "undecided") == (r.lower <= 0 <= r.upper)


def test_no_customers_yet_means_no_verdict():
    r = xs.compare_rates((0, 0), (3, 100), xs.planned_mixture(1_000, 0.03))
    assert r.verdict == "undecided" and r.p_value == 1.0


def test_more_variants_need_a_clearer_answer_each():
    assert xs.detectable_rise(2_400, 0.03, arms=3) > xs.detectable_rise(2_400, 0.03, arms=2)


def test_an_audience_too_small_to_find_anything_says_so():
    assert xs.detectable_rise(3, 0.5) is None


def test_the_power_stated_is_the_chance_the_detectable_rise_is_built_on():
    """power_at and detectable_rise say the same thing from both ends."""
    rise = xs.detectable_rise(SHOP.per_arm, SHOP.baseline, arms=3)
    assert xs.power_at(rise, SHOP.per_arm, SHOP.baseline, arms=3) == pytest.approx(xs.POWER)
    assert xs.power_at(rise / 2, SHOP.per_arm, SHOP.baseline) < xs.POWER
    assert xs.power_at(0.0, SHOP.per_arm, SHOP.baseline) == 0.0


def test_a_smaller_rise_is_found_at_least_as_often_as_its_stated_power():
    """The power stated before launch is a floor: earlier looks only add to it."""
    rise = 0.6 * xs.detectable_rise(SHOP.per_arm, SHOP.baseline)
    stated = xs.power_at(rise, SHOP.per_arm, SHOP.baseline)
    found = simulate(SHOP, rise, EXPERIMENTS, seed=3, method="sequence")
    assert 0.1 < stated < 0.7
    assert found.right_winners / EXPERIMENTS >= stated - 3 * math.sqrt(0.25 / EXPERIMENTS)


def test_looking_at_skewed_revenue_every_morning_keeps_false_differences_at_five_percent():
    """Most customers spend nothing and a few spend much (lognormal orders): the revenue
    interval, read daily for 60 days, names a difference between equal variants no more
    often than it promises."""
    for sigma in (1.2, 2.0):
        found = simulate_revenue(SHOP, EXPERIMENTS, seed=4, sigma=sigma)
        assert found.rate <= xs.ALPHA + SLACK, sigma


def test_a_revenue_interval_waits_for_enough_buyers_and_is_wider_than_a_fixed_one():
    few = xs.spread([0.0] * 90 + [25.0] * (xs.MIN_BUYERS - 1))
    enough = xs.spread([0.0] * 90 + [25.0, 40.0] * xs.MIN_BUYERS)
    assert not math.isfinite(xs.compare_revenue(few, enough, 1_000).lower)
    assert not math.isfinite(xs.mean_sequence(few, 1_000).lower)
    r = xs.compare_revenue(enough, enough, 1_000)
    se = math.sqrt(2 * enough.variance / enough.customers)
    assert r.lower < -1.959964 * se and r.upper > 1.959964 * se
    m = xs.mean_sequence(enough, 1_000)
    assert m.lower < enough.mean - 1.959964 * math.sqrt(enough.variance / enough.customers)
