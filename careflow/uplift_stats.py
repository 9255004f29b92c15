"""The statistics of a holdout comparison: intervals, sample sizes, detectable effects.

Pure functions of counts and values: no database, no text (careflow/uplift.py reads
the groups and writes the report).

Statistics, at 95%:

- each group's conversion rate with a Wilson score interval;
- the absolute uplift (contacted minus held out, in percentage points) with
  Newcombe's hybrid score interval (Newcombe 1998, method 10), built from the
  two Wilson intervals: unlike the textbook Wald interval it stays inside
  [-1, 1] and keeps its coverage with few conversions, the usual case here;
- revenue per customer with Welch's t interval for a difference of means
  (unequal variances, Welch-Satterthwaite degrees of freedom);
- sample size for equal groups and the minimum detectable effect (MDE) at
  80% power and 5% two-sided, from the normal approximation for two
  proportions with the pooled variance under no difference (Fleiss, as R's
  ``power.prop.test`` solves it; for unequal groups each variance term is
  divided by its own group's size).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist, fmean, variance

ALPHA = 0.05
POWER = 0.80


def _z(p: float) -> float:
    return NormalDist().inv_cdf(p)


def wilson(x: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for x successes in n trials."""
    if n == 0:
        return 0.0, 1.0
    z = _z(0.5 + level / 2)
    p = x / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe(x1: int, n1: int, x0: int, n0: int, level: float = 0.95):
    """(p1 - p0, lower, upper): Newcombe's hybrid score interval for a difference of
    two independent proportions (method 10 of Newcombe 1998)."""
    p1, p0 = x1 / n1, x0 / n0
    l1, u1 = wilson(x1, n1, level)
    l0, u0 = wilson(x0, n0, level)
    d = p1 - p0
    return (
        d,
        d - math.sqrt((p1 - l1) ** 2 + (u0 - p0) ** 2),
        d + math.sqrt((u1 - p1) ** 2 + (p0 - l0) ** 2),
    )


def welch(a: Sequence[float], b: Sequence[float], level: float = 0.95):
    """(mean(a) - mean(b), lower, upper): Welch's t interval; None with fewer than 2 in a
    group. Two groups without any spread give a zero-width interval."""
    if len(a) < 2 or len(b) < 2:
        return None
    from scipy.stats import t

    d = fmean(a) - fmean(b)
    va, vb = variance(a) / len(a), variance(b) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return d, d, d
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = float(t.ppf(0.5 + level / 2, df)) * se
    return d, d - half, d + half


def power_two_proportions(
    n1: float, n0: float, p0: float, p1: float, alpha: float = ALPHA
) -> float:
    """Power of the two-sided test of p1 = p0 with groups of n1 and n0 (normal approximation,
    pooled variance under the null; the far tail is left out, as is usual)."""
    pbar = (n1 * p1 + n0 * p0) / (n1 + n0)
    null_sd = math.sqrt(pbar * (1 - pbar) * (1 / n1 + 1 / n0))
    alt_sd = math.sqrt(p1 * (1 - p1) / n1 + p0 * (1 - p0) / n0)
    if alt_sd == 0:
        return 1.0 if p1 != p0 else 0.0
    return NormalDist().cdf((abs(p1 - p0) - _z(1 - alpha / 2) * null_sd) / alt_sd)


def sample_size(p0: float, p1: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """Customers needed in each of two equal groups to detect p0 -> p1 (Fleiss, no
    continuity correction; R's ``power.prop.test(p1=.5, p2=.75, power=.9)`` gives 76.7)."""
    pbar = (p0 + p1) / 2
    top = _z(1 - alpha / 2) * math.sqrt(2 * pbar * (1 - pbar)) + _z(power) * math.sqrt(
        p0 * (1 - p0) + p1 * (1 - p1)
    )
    return (top / (p1 - p0)) ** 2


def mde(
    n1: float, n0: float, p0: float, alpha: float = ALPHA, power: float = POWER
) -> float | None:
    """The smallest rise over the baseline ``p0`` that groups of n1 (contacted) and n0
    (held out) detect with ``power``, as a proportion; None when even 100% would not."""
    if n1 <= 0 or n0 <= 0:
        return None
    lo, hi = 0.0, 1.0 - p0
    if power_two_proportions(n1, n0, p0, p0 + hi, alpha) < power:
        return None
    for _ in range(60):  # bisection: power rises with the effect
        mid = (lo + hi) / 2
        if power_two_proportions(n1, n0, p0, p0 + mid, alpha) >= power:
            hi = mid
        else:
            lo = mid
    return hi
