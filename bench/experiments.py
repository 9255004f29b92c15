"""Simulated shops with a known truth: do careflow's experiment intervals keep their word?

``python -m bench.experiments`` runs, for a small shop (40 customers a day
into each of two variants, a 3% conversion rate, read every morning for 60
days):

- 1,000 experiments where the variants are identical: how often a winner is
  declared (the first morning the interval excludes no difference) with the
  always-valid intervals of careflow/experiment_stats.py, and with the
  fixed-horizon interval careflow uses for a holdout read once (Newcombe's,
  careflow/uplift_stats.py) read the same way every morning;
- 1,000 experiments where the variant truly converts better by the rise
  ``detectable_rise`` states for this audience at 80% power: how often it is
  found by day 60, and on which day on average.

Statistics, not timings: the figures do not depend on the machine. The
tests (tests/test_experiment_stats.py) run the same simulation smaller.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass

import numpy as np

from careflow import experiment_stats as xs
from careflow.uplift_stats import mde, newcombe


@dataclass(frozen=True)
class Shop:
    per_day: int = 40  # customers entering each arm a day
    days: int = 60
    baseline: float = 0.03

    @property
    def per_arm(self) -> int:
        return self.per_day * self.days


@dataclass(frozen=True)
class Outcome:
    experiments: int
    winners: int  # experiments in which a winner was declared on some morning
    right_winners: int  # ... and it was the variant that truly converts better
    mean_day_found: float | None

    @property
    def rate(self) -> float:
        return self.winners / self.experiments


def simulate(shop: Shop, rise: float, experiments: int, seed: int, method: str) -> Outcome:
    """Run ``experiments`` experiments whose variant truly converts ``rise`` above the
    control and read each every morning with ``method`` (``"sequence"``: the always-valid
    interval; ``"fixed"``: a fixed-horizon 95% interval), stopping at the first winner."""
    rng = np.random.default_rng(seed)
    size = (experiments, shop.days)
    control = rng.binomial(shop.per_day, shop.baseline, size).cumsum(axis=1)
    treated = rng.binomial(shop.per_day, shop.baseline + rise, size).cumsum(axis=1)
    tau2 = xs.planned_mixture(shop.per_arm, shop.baseline)
    winners = right = 0
    days_found = []
    for e in range(experiments):
        for day in range(shop.days):
            n = shop.per_day * (day + 1)
            x1, x0 = int(treated[e, day]), int(control[e, day])
            if method == "sequence":
                reading = xs.compare_rates((x1, n), (x0, n), tau2)
                lower, upper = reading.lower, reading.upper
            else:
                lower, upper = newcombe(x1, n, x0, n)[1:]
            if lower > 0 or upper < 0:
                winners += 1
                right += lower > 0 and rise > 0
                days_found.append(day + 1)
                break
    mean_day = sum(days_found) / len(days_found) if days_found else None
    return Outcome(experiments, winners, right, mean_day)


def _daily_spreads(rng, shop: Shop, experiments: int, sigma: float):
    """Per experiment and day, the cumulative revenue Spread of one arm: each customer
    buys with the baseline chance, an order's value lognormal (median 30, ``sigma``)."""
    size = (experiments, shop.days, shop.per_day)
    bought = rng.random(size) < shop.baseline
    value = np.where(bought, rng.lognormal(np.log(30.0), sigma, size), 0.0)
    sums = value.sum(axis=2).cumsum(axis=1)
    squares = (value**2).sum(axis=2).cumsum(axis=1)
    buyers = bought.sum(axis=2).cumsum(axis=1)
    return sums, squares, buyers


def _spread(total: float, square: float, buyers: int, n: int) -> xs.Spread:
    mean = total / n
    return xs.Spread(mean, max(square - n * mean * mean, 0.0) / (n - 1), n, int(buyers))


def simulate_revenue(shop: Shop, experiments: int, seed: int, sigma: float = 1.2) -> Outcome:
    """Experiments whose variants truly have the same revenue per customer, with skewed
    orders (lognormal values; sigma 1.2 puts the largest order in a hundred at 16 times
    the median), read every morning with the revenue interval of careflow/
    experiment_stats.py: how often it declares a difference."""
    rng = np.random.default_rng(seed)
    arms = [_daily_spreads(rng, shop, experiments, sigma) for _ in range(2)]
    winners = 0
    days_found = []
    for e in range(experiments):
        for day in range(shop.days):
            n = shop.per_day * (day + 1)
            t, c = (_spread(a[0][e, day], a[1][e, day], a[2][e, day], n) for a in arms)
            r = xs.compare_revenue(t, c, shop.per_arm)
            if r.lower > 0 or r.upper < 0:
                winners += 1
                days_found.append(day + 1)
                break
    mean_day = sum(days_found) / len(days_found) if days_found else None
    return Outcome(experiments, winners, 0, mean_day)


def run(experiments: int = 1_000, shop: Shop = Shop(), seed: int = 20261207) -> dict:
    rise = xs.detectable_rise(shop.per_arm, shop.baseline)
    return {
        "shop": asdict(shop),
        "detectable_rise": rise,
        "detectable_rise_read_once": mde(shop.per_arm, shop.per_arm, shop.baseline),
        "no_difference": {
            m: asdict(simulate(shop, 0.0, experiments, seed, m)) for m in ("sequence", "fixed")
        },
        "true_rise": asdict(simulate(shop, rise, experiments, seed + 1, "sequence")),
        "revenue_no_difference": asdict(simulate_revenue(shop, experiments, seed + 2)),
    }


def table(r: dict) -> str:
    shop, rise = r["shop"], r["detectable_rise"]
    null, found = r["no_difference"], r["true_rise"]
    n = found["experiments"]

    def share(count: int) -> str:
        return f"{count / n:.1%}"

    return "\n".join(
        [
            f"{shop['per_day']} customers a day into each arm for {shop['days']} days, "
            f"{shop['baseline']:.0%} baseline, read every morning, {n} experiments each:",
            "",
            "| truth | interval | winner declared | stated |",
            "| --- | --- | ---: | ---: |",
            f"| no difference | always-valid (careflow) | {share(null['sequence']['winners'])} "
            "| at most 5% |",
            f"| no difference | fixed-horizon 95%, peeked daily | "
            f"{share(null['fixed']['winners'])} "
            "| 5% if read once |",
            f"| +{rise * 100:.2f} points | always-valid (careflow) | "
            f"{share(found['right_winners'])} (mean day {found['mean_day_found']:.0f}) "
            "| at least 80% |",
            f"| same revenue, skewed orders | always-valid revenue interval | "
            f"{share(r['revenue_no_difference']['winners'])} | at most 5% |",
            "",
            f"Detectable at 80% power by day {shop['days']}: +{rise * 100:.2f} points read "
            f"every morning, +{r['detectable_rise_read_once'] * 100:.2f} points read once on "
            f"day {shop['days']}.",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=1_000)
    args = parser.parse_args()
    result = run(args.experiments)
    print(table(result))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
