"""Which variant pays more? A campaign's experiment, each variant against the control
and against the held-out customers, with always-valid intervals.

Customers are counted as careflow/uplift.py counts them (a customer-occasion
taken up by a run, an order within the attribution window after it; those
still deferred, or held out with a send time to come, wait). A contacted
customer belongs to the variant written on the message's ledger row
(careflow/variants.py); messages sent before the campaign had its experiment
have none and are left out.

Intervals are the confidence sequences of careflow/experiment_stats.py, at a
level shared among the comparisons with the control (5% over all of them),
so the report may be read every day. Their mixture is fixed before any data:
tuned to the experiment's ``audience`` at CAREFLOW_UPLIFT_BASELINE_CONVERSION.
Revenue per customer is shown, not judged.
"""

from __future__ import annotations

import math
from datetime import date, datetime
from statistics import fmean

from sqlalchemy import Engine

from careflow import experiment_stats as xs
from careflow.campaigns import CampaignSpec
from careflow.money import from_minor
from careflow.tables import text_table
from careflow.uplift import Unit, load_units
from careflow.variants import Experiment


def experiment_report(
    engine: Engine,
    spec: CampaignSpec,
    *,
    window_days: int,
    shop_zone: str,
    baseline: float,
    since: date | None = None,
    until: date | None = None,
    now: datetime | None = None,
) -> dict:
    """The experiment of ``spec`` as data: groups, comparisons, the state of the rule."""
    experiment = spec.experiment
    if experiment is None:
        raise ValueError(f"{spec.name} has no experiment")
    units = load_units(engine, spec.name, window_days, shop_zone, since, until, now)
    settled = [u for u in units if not u.waiting]
    arms = len(experiment.variants)
    per_arm = experiment.audience / arms
    alpha = xs.comparison_alpha(arms)
    tau2 = xs.planned_mixture(per_arm, baseline, arms)
    contacted = [u for u in settled if not u.held_out]
    groups = {v: [u for u in contacted if u.variant == v] for v in experiment.names}
    held = [u for u in settled if u.held_out]
    control = groups[experiment.control]
    out: dict = {
        "campaign": spec.name,
        "control": experiment.control,
        "audience": experiment.audience,
        "window_days": window_days,
        "level": 1 - alpha,
        "waiting": sum(u.waiting for u in units),
        "detectable_rise_points": _points(xs.detectable_rise(per_arm, baseline, arms)),
        "baseline": baseline,
        "groups": {name: _group(g) for name, g in [*groups.items(), ("held_out", held)]},
        "against_control": {},
        "against_held_out": {},
    }
    for name, group in groups.items():
        if name != experiment.control:
            out["against_control"][name] = _compare(group, control, tau2, alpha)
        out["against_held_out"][name] = _compare(group, held, tau2, alpha)
    out["verdict"] = verdict(out)
    return out


def experiment_plan(experiment: Experiment, to_contact: int, baseline: float) -> dict:
    """What a run's experiment can find, before anything is known (dry runs, summaries):
    the split of this run's customers and the smallest rise found at the planned audience."""
    arms = len(experiment.variants)
    rise = xs.detectable_rise(experiment.audience / arms, baseline, arms)
    return {
        "variants": experiment.names,
        "control": experiment.control,
        "per_variant": to_contact // arms,
        "audience": experiment.audience,
        "baseline": round(100 * baseline, 2),
        "detectable_rise_points": _points(rise),
    }


def plan_in_words(plan: dict) -> str:
    """The plan for a marketer: the sentence first, the numbers beside."""
    head = (
        f"A/B test of {', '.join(plan['variants'])} ({plan['control']} is the control): "
        f"about {plan['per_variant']:,} customers each in this run"
    )
    rise = plan["detectable_rise_points"]
    if rise is None:
        return (
            f"{head}; at the planned {plan['audience']:,} customers the test cannot find "
            "any difference: plan a larger audience or send one message"
        )
    return (
        f"{head}; at the planned {plan['audience']:,} customers it finds a rise of {rise} "
        f"points in how many buy 8 times in 10 (buying rate without a change "
        f"{plan['baseline']:g}%; read it any day: docs/experiments.md)"
    )


def _points(p: float | None) -> float | None:
    return None if p is None else round(100 * p, 2)


def _group(units: list[Unit]) -> dict:
    converted = sum(u.converted for u in units)
    currencies = sorted({c for u in units for c in (u.revenue or {})})
    return {
        "customers": len(units),
        "converted": converted,
        "conversion": round(100 * converted / len(units), 2) if units else None,
        "revenue_per_customer": {
            c: round(fmean(float(from_minor((u.revenue or {}).get(c, 0), c)) for u in units), 2)
            for c in currencies
        },
    }


def _compare(treated: list[Unit], control: list[Unit], tau2: float, alpha: float) -> dict:
    r = xs.compare_rates(
        (sum(u.converted for u in treated), len(treated)),
        (sum(u.converted for u in control), len(control)),
        tau2,
        alpha,
    )
    return {
        "points": round(100 * r.difference, 2),
        # no customers on one side yet: no interval
        "ci": (
            [round(100 * r.lower, 2), round(100 * r.upper, 2)] if math.isfinite(r.lower) else None
        ),
        "p_value": round(r.p_value, 4),
        "verdict": r.verdict,
    }


def verdict(report: dict) -> str:
    """One plain sentence: the winner, or why there is none yet."""
    control = report["control"]
    better = [n for n, c in report["against_control"].items() if c["verdict"] == "better"]
    worse = [n for n, c in report["against_control"].items() if c["verdict"] == "worse"]
    if better:
        best = max(better, key=lambda n: report["against_control"][n]["points"])
        c = report["against_control"][best]
        return (
            f"{best} converts better than {control}: {c['points']:+.2f} points "
            f"(always-valid interval {c['ci'][0]:+.2f} to {c['ci'][1]:+.2f})"
        )
    if worse and len(worse) == len(report["against_control"]):
        return f"{control} converts better than every other variant"
    rise = report["detectable_rise_points"]
    sized = (
        f"; at {report['audience']:,} customers it finds a rise of {rise} points 8 times in 10"
        if rise is not None
        else "; the planned audience is too small to find any rise"
    )
    return f"no winner yet{sized}"


def experiment_table(report: dict) -> str:
    """The experiment as a marketer reads it: one row per variant, then the verdict."""
    rows = []
    for name, g in report["groups"].items():
        label = f"{name} (control)" if name == report["control"] else name
        vs_control = report["against_control"].get(name)
        vs_held = report["against_held_out"].get(name)
        rows.append(
            [
                "held out (nothing sent)" if name == "held_out" else label,
                f"{g['customers']:,}",
                f"{g['converted']:,}",
                "-" if g["conversion"] is None else f"{g['conversion']:.2f}%",
                _difference(vs_control),
                _difference(vs_held),
                ", ".join(f"{v:,.2f} {c}" for c, v in g["revenue_per_customer"].items()) or "-",
            ]
        )
    table = text_table(
        [
            "variant",
            "customers",
            "converted",
            "conversion",
            "vs control (points)",
            "vs held out (points)",
            "revenue per customer",
        ],
        rows,
    )
    level = f"{100 * report['level']:.1f}%".replace(".0%", "%")
    waiting = report["waiting"]
    return (
        f"{report['campaign']}: experiment, {report['window_days']}-day attribution window\n\n"
        f"{table}\n\n{report['verdict']}.\n"
        f"Intervals are always-valid at {level} (docs/experiments.md): read them every day."
        + (f"\n{waiting:,} customers still waiting to be sent." if waiting else "")
    )


def _difference(c: dict | None) -> str:
    if c is None:
        return "-"
    if c["ci"] is None:
        return "no customers yet"
    return f"{c['points']:+.2f} ({c['ci'][0]:+.2f} to {c['ci'][1]:+.2f})"
