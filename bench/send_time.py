"""Simulated shops with a known truth: does the send-time report's interval cover the real gain?

``python -m bench.send_time`` builds, again and again (``--runs``, default 1,000),
a shop of ``--customers`` customers (default 2,000), each with a true best
local hour drawn from an evening-heavy shop pattern and a history of orders,
replies and clicks around it (0 to 12 events, a third of them at random
hours by the shop's pattern: ``--signal``). Each run:

- works out every customer's best hour with careflow's own estimator
  (careflow/policy/send_time.py ``best_hour``, prior weight ``k``) against the
  shop's pattern summed from the same histories;
- splits them with careflow's own sticky draw (``arm_of``, a fresh campaign
  name per run) into the best-hour arm and the fixed-time arm (20%, sent at
  10:00);
- lets each customer convert with ``--base`` (5%), plus ``--lift`` (3 points)
  when the message reaches them at their true best hour;
- reads the two arms as ``careflow report send-time`` does: Newcombe's 95%
  interval for best minus fixed (careflow/uplift_stats.py).

The true effect of the policy in that shop is known exactly: ``lift`` times
(the share of customers whose estimated hour is their true one, minus the share
whose true hour is 10:00), over every customer of the run. The output is how
often the interval covers it (it should be about 95% or more), the mean
measured and true effects, and how often the estimate finds the true hour by
how much history a customer has. Statistics, not timings; tests/test_send_time.py
runs it smaller.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass

import numpy as np

from careflow.policy.send_time import HOURS, arm_of, best_hour
from careflow.uplift_stats import newcombe

FIXED_HOUR = 10
#: where customers' true best hours fall: mostly evenings, some lunchtimes and mornings
PATTERN = np.array(
    [1, 0.5, 0.3, 0.3, 0.3, 0.5, 1, 2, 3, 3, 3, 4, 5, 4, 3, 3, 3, 4, 6, 9, 11, 10, 7, 3]
)


@dataclass(frozen=True)
class Result:
    runs: int
    customers: int
    covered: int  # runs whose 95% interval covered the true effect
    mean_measured: float  # points
    mean_true: float  # points
    found_by_history: dict  # events -> share of customers whose true hour was found
    found: float  # share of all customers whose true hour was found

    @property
    def coverage(self) -> float:
        return self.covered / self.runs


def one_shop(rng, customers: int, signal: float = 2 / 3):
    """Each customer's true hour and 24-hour history of events (``signal``: the share of
    a customer's events at their true hour; the rest fall by the shop's pattern)."""
    p = PATTERN / PATTERN.sum()
    true = rng.choice(HOURS, size=customers, p=p)
    events = rng.integers(0, 13, size=customers)
    counts = np.zeros((customers, HOURS), dtype=int)
    for i in range(customers):
        n = events[i]
        at_true = rng.binomial(n, signal)
        counts[i, true[i]] += at_true
        np.add.at(counts[i], rng.choice(HOURS, size=n - at_true, p=p), 1)
    return true, counts


def simulate(runs: int, customers: int, base: float, lift: float, k: float, seed: int,
             fixed_share: float = 0.2, signal: float = 2 / 3) -> Result:  # fmt: skip
    rng = np.random.default_rng(seed)
    covered = 0
    measured, truths = [], []
    found = np.zeros(13)
    seen = np.zeros(13)
    for r in range(runs):
        true, counts = one_shop(rng, customers, signal)
        shop = tuple(int(v) for v in counts.sum(axis=0))
        guess = np.array([best_hour(tuple(row), shop, k).hour for row in counts.tolist()])
        hit = guess == true
        events = counts.sum(axis=1)
        np.add.at(found, events, hit)
        np.add.at(seen, events, 1)
        fixed = np.array([arm_of(f"sim-{seed}-{r}", i, fixed_share) == "fixed"
                          for i in range(customers)])  # fmt: skip
        reached = np.where(fixed, true == FIXED_HOUR, hit)
        converted = rng.random(customers) < base + lift * reached
        x1, n1 = int(converted[~fixed].sum()), int((~fixed).sum())
        x0, n0 = int(converted[fixed].sum()), int(fixed.sum())
        d, lo, hi = newcombe(x1, n1, x0, n0)
        truth = lift * (hit.mean() - (true == FIXED_HOUR).mean())
        covered += int(lo <= truth <= hi)
        measured.append(d)
        truths.append(truth)
    by_history = {int(e): round(float(found[e] / seen[e]), 3) for e in range(13) if seen[e]}
    return Result(
        runs, customers, covered, round(100 * float(np.mean(measured)), 3),
        round(100 * float(np.mean(truths)), 3), by_history,
        round(float(found.sum() / seen.sum()), 4),
    )  # fmt: skip


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--customers", type=int, default=2000)
    ap.add_argument("--base", type=float, default=0.05)
    ap.add_argument("--lift", type=float, default=0.03)
    ap.add_argument("--k", type=float, default=10.0, help="prior weight (campaign.yaml)")
    ap.add_argument("--signal", type=float, default=2 / 3,
                    help="share of a customer's events at their true hour")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", default=None, help="write the figures to this file too")
    args = ap.parse_args(argv)
    out = simulate(args.runs, args.customers, args.base, args.lift, args.k, args.seed,
                   signal=args.signal)
    figures = {**asdict(out), "coverage": round(out.coverage, 4), "k": args.k,
               "base": args.base, "lift": args.lift, "signal": args.signal}  # fmt: skip
    print(
        f"send-time simulation: {out.runs} shops of {out.customers} customers, "
        f"base {args.base:.0%}, +{args.lift:.0%} at the true best hour, k={args.k:g}\n"
        f"95% interval of best minus fixed covered the true effect in {out.covered} of "
        f"{out.runs} runs ({out.coverage:.1%})\n"
        f"mean measured {out.mean_measured:+.2f} points, mean true {out.mean_true:+.2f} points\n"
        f"true hour found for {out.found:.1%} of customers; by events of history: "
        + ", ".join(f"{e}: {s:.0%}" for e, s in out.found_by_history.items())
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
