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
