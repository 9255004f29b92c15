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

from sqlalchemy import Engine

from careflow import experiment_stats as xs
from careflow.campaigns import CampaignSpec
from careflow.errors import ConfigError
from careflow.experiment_decisions import decision_of, judge, record, rule_text
from careflow.journey_spec import parse_step_campaign
from careflow.money import from_minor
from careflow.tables import text_table
from careflow.uplift import Unit, baseline_for, load_units
from careflow.variants import Experiment


def report_for(
    engine: Engine, spec: CampaignSpec, settings, since: date | None = None,
    until: date | None = None,
) -> dict:
    """:func:`experiment_report` with the shop's attribution window, zone and baseline
    (``settings``: careflow.settings.Settings)."""
    return experiment_report(
        engine,
        spec,
        window_days=settings.attribution_window_days,
        shop_zone=settings.time_zone,
        baseline=settings.uplift_baseline_conversion,
        since=since,
        until=until,
    )


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
    """The experiment of ``spec`` as data: groups, comparisons, revenue, the rule's state.

    Once a winner is decided (careflow/experiment_decisions.py) every new customer gets
    it, so the comparisons with the control read only the customers taken up before the
    decision (later ones are not a random split any more); the comparisons with the
    held-out customers read everyone, the holdout running on beside the winner."""
    experiment = spec.experiment
    if experiment is None:
        raise ValueError(f"{spec.name} has no experiment")
    units = load_units(engine, spec.name, window_days, shop_zone, since, until, now)
    settled = [u for u in units if not u.waiting]
    arms = len(experiment.variants)
    per_arm = experiment.audience / arms
    alpha = xs.comparison_alpha(arms, experiment.alpha)
    tau2 = xs.planned_mixture(per_arm, baseline, arms, experiment.alpha)
    decided = decision_of(engine, spec.name)
    contacted = [u for u in settled if not u.held_out]
    groups = {v: [u for u in contacted if u.variant == v] for v in experiment.names}
    held = [u for u in settled if u.held_out]
    # a journey's holdout is drawn at entry, so its send steps hold nobody out: their
    # held-out customers are the journey's (careflow/journeys/advance.py), never a step's
    step_of = parse_step_campaign(spec.name)
    held_groups = [] if step_of else [("held_out", held)]
    split_groups = groups
    if decided is not None:
        cut = datetime.fromisoformat(decided["decided_at"])
        split_groups = {v: [u for u in g if u.start <= cut] for v, g in groups.items()}
    control = split_groups[experiment.control]
    currencies = sorted({c for u in settled for c in (u.revenue or {})})
    out: dict = {
        "campaign": spec.name,
        "control": experiment.control,
        "audience": experiment.audience,
        "window_days": window_days,
        "level": 1 - alpha,
        "waiting": sum(u.waiting for u in units),
        "detectable_rise_points": _points(
            xs.detectable_rise(per_arm, baseline, arms, experiment.alpha)
        ),
        "baseline": baseline,
        "rule": rule_text(experiment),
        "min_per_arm": experiment.min_per_arm,
        "decision": decided,
        "groups": {
            name: _group(g, currencies, per_arm, alpha)
            for name, g in [*groups.items(), *held_groups]
        },
        "against_control": {},
        "against_held_out": {},
    }
    if step_of:
        out["held_out_note"] = (
            f"No held-out group: journey {step_of[0]} holds customers out when they enter "
            "it, before any step; its send steps compare their variants with each other"
        )
    for name in experiment.names:
        if name != experiment.control:
            out["against_control"][name] = _compare(
                split_groups[name], control, currencies, tau2, per_arm, alpha
            )
        if held_groups:
            out["against_held_out"][name] = _compare(
                groups[name], held, currencies, tau2, per_arm, alpha
            )
    # the rule on the customers before the decision: what was decided, or would be now
    counted = {"groups": {n: {"customers": len(g)} for n, g in split_groups.items()}}
    out["rule_met"] = judge({**counted, "against_control": out["against_control"]}, experiment)
    out["verdict"] = verdict(out)
    return out


def decide(
    engine: Engine,
    spec: CampaignSpec,
    report: dict,
    decided_by: str,
    now: datetime | None = None,
) -> tuple[dict | None, bool]:
    """Apply the rule to ``report`` and keep its decision (careflow/experiment_decisions.py):
    (the decision that stands, whether it was taken now). Asked again, or by two at once,
    the first decision stands and nothing new is written; a rule not met decides nothing."""
    if report["decision"] is not None:
        return report["decision"], False
    found = report["rule_met"]
    if found is None or spec.experiment is None:
        return None, False
    counts = {
        n: {"customers": g["customers"], "converted": g["converted"]}
        for n, g in report["groups"].items()
    }
    return record(engine, spec.name, spec.experiment, found, counts, decided_by, now)


def experiment_plan(experiment: Experiment, to_contact: int | None, baseline: float) -> dict:
    """What a run's experiment can find, before anything is known (dry runs, previews,
    summaries): the split of this run's customers, the smallest rise found 8 times in 10
    at the planned audience, and the chance of finding the rise worth finding (power)."""
    arms = len(experiment.variants)
    per_arm = experiment.audience / arms
    rise = xs.detectable_rise(per_arm, baseline, arms, experiment.alpha)
    worth = experiment.rise_worth_finding(baseline)
    return {
        "variants": experiment.names,
        "control": experiment.control,
        # None before a run knows how many it contacts (before launch, previews)
        "per_variant": None if to_contact is None else to_contact // arms,
        "audience": experiment.audience,
        "baseline": round(100 * baseline, 2),
        "detectable_rise_points": _points(rise),
        "rise_points": _points(worth),
        "rise_source": "campaign.yaml" if experiment.rise is not None else "a fifth of the rate",
        "power": round(xs.power_at(worth, per_arm, baseline, arms, experiment.alpha), 3),
    }


def plan_for(engine: Engine, spec: CampaignSpec, settings, underpowered: str) -> dict:
    """The plan of ``spec``'s experiment at the campaign's own baseline, with the warning
    :func:`check_power` gives (``underpowered``: warn, or refuse, which raises)."""
    baseline, _ = baseline_for(engine, spec.name, settings)
    plan = experiment_plan(spec.experiment, None, baseline)
    warning = check_power(plan, settings.experiment_min_power, underpowered)
    if warning:
        plan["warning"] = warning
    return plan


def check_power(plan: dict, min_power: float, underpowered: str) -> str | None:
    """The warning for a plan below ``min_power`` (CAREFLOW_EXPERIMENT_MIN_POWER), None
    at or above it; raises ConfigError instead when CAREFLOW_EXPERIMENT_UNDERPOWERED is
    ``refuse``: nothing is sent."""
    if plan["power"] >= min_power:
        return None
    said = (
        f"{', '.join(plan['variants'])}: at the planned {plan['audience']:,} customers the "
        f"chance of finding a rise of {plan['rise_points']} points is only "
        f"{100 * plan['power']:.0f}%, below CAREFLOW_EXPERIMENT_MIN_POWER={min_power:g}; "
        "plan a larger audience, fewer variants or a larger rise, or send one message"
    )
    if underpowered == "refuse":
        raise ConfigError(f"experiment refused: {said}")
    return f"warning: {said}"


def plan_in_words(plan: dict) -> str:
    """The plan for a marketer: the sentence first, the numbers beside."""
    head = f"A/B test of {', '.join(plan['variants'])} ({plan['control']} is the control)"
    if plan["per_variant"] is not None:
        head += f": about {plan['per_variant']:,} customers each in this run"
    rise = plan["detectable_rise_points"]
    if rise is None:
        said = (
            f"{head}; at the planned {plan['audience']:,} customers the test cannot find "
            "any difference: plan a larger audience or send one message"
        )
    else:
        said = (
            f"{head}; at the planned {plan['audience']:,} customers it finds a rise of {rise} "
            f"points in how many buy 8 times in 10 (buying rate without a change "
            f"{plan['baseline']:g}%; read it any day: docs/experiments.md)"
        )
    if "power" in plan:
        said += (
            f"; power {100 * plan['power']:.0f}% for the rise worth finding, "
            f"{plan['rise_points']} points ({plan['rise_source']})"
        )
    if plan.get("warning"):
        said += f"\n{plan['warning']}"
    return said


def _points(p: float | None) -> float | None:
    return None if p is None else round(100 * p, 2)


def _revenues(units: list[Unit], currency: str) -> list[float]:
    """One value a customer: their revenue in ``currency`` in the window, 0 for none."""
    return [float(from_minor((u.revenue or {}).get(currency, 0), currency)) for u in units]


def _interval(r: xs.Reading, scale: float = 1.0) -> list[float] | None:
    """``[lower, upper]`` rounded, or None while there is no interval yet."""
    if not math.isfinite(r.lower):
        return None
    return [round(scale * r.lower, 2), round(scale * r.upper, 2)]


def _group(units: list[Unit], currencies: list[str], per_arm: float, alpha: float) -> dict:
    converted = sum(u.converted for u in units)
    revenue = {}
    for c in currencies:
        r = xs.mean_sequence(xs.spread(_revenues(units, c)), per_arm, alpha)
        revenue[c] = {"mean": round(r.difference, 2), "ci": _interval(r)}
    return {
        "customers": len(units),
        "converted": converted,
        "conversion": round(100 * converted / len(units), 2) if units else None,
        "revenue_per_customer": revenue,
    }


def _compare(
    treated: list[Unit],
    control: list[Unit],
    currencies: list[str],
    tau2: float,
    per_arm: float,
    alpha: float,
) -> dict:
    r = xs.compare_rates(
        (sum(u.converted for u in treated), len(treated)),
        (sum(u.converted for u in control), len(control)),
        tau2,
        alpha,
    )
    revenue = {}
    for c in currencies:
        rr = xs.compare_revenue(
            xs.spread(_revenues(treated, c)), xs.spread(_revenues(control, c)), per_arm, alpha
        )
        revenue[c] = {"difference": round(rr.difference, 2), "ci": _interval(rr)}
    return {
        "points": round(100 * r.difference, 2),
        "ci": _interval(r, 100),  # no customers on one side yet: no interval
        "p_value": round(r.p_value, 4),
        "verdict": r.verdict,
        "revenue": revenue,
    }


def verdict(report: dict) -> str:
    """One plain sentence: the winner decided, the rule met, or why there is none yet."""
    control = report["control"]
    decided = report["decision"]
    if decided is not None:
        return (
            f"{decided['winner']} won on {decided['decided_at'][:10]} by the rule set before "
            f"the test ({decided['points']:+.2f} points against "
            f"{decided['control']}, always-valid interval {decided['lower']:+.2f} to "
            f"{decided['upper']:+.2f}): every new customer gets {decided['winner']}"
        )
    met = report["rule_met"]
    if met is not None:
        who = (
            f"{control} converts better than every other variant: {met['points']:+.2f} points "
            "against the closest"
            if met["winner"] == control
            else f"{met['winner']} converts better than {control}: {met['points']:+.2f} points"
        )
        return (
            f"{who} (always-valid interval {met['lower']:+.2f} to {met['upper']:+.2f}); the "
            "rule set before the test declares it the winner: the next run records it and "
            "sends it to every new customer"
        )
    ahead = [n for n, c in report["against_control"].items() if c["verdict"] != "undecided"]
    short = {
        n: g["customers"]
        for n, g in report["groups"].items()
        if n != "held_out" and g["customers"] < report["min_per_arm"]
    }
    if ahead and short:
        fewest = min(short, key=short.get)
        return (
            f"no winner yet: the rule waits for {report['min_per_arm']:,} customers in each "
            f"variant ({fewest} has {short[fewest]:,})"
        )
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
                _revenue_cell(g["revenue_per_customer"]),
                _revenue_difference(vs_control),
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
            "revenue vs control",
        ],
        rows,
    )
    level = f"{100 * report['level']:.1f}%".replace(".0%", "%")
    waiting = report["waiting"]
    return (
        f"{report['campaign']}: experiment, {report['window_days']}-day attribution window\n\n"
        f"{table}\n\n{report['verdict']}.\n"
        f"The rule, set before the test: {report['rule']}.\n"
        f"Intervals are always-valid at {level} (docs/experiments.md): read them every day."
        + (
            "\nAgainst the control: customers taken up before the decision only."
            if report["decision"]
            else ""
        )
        + (f"\n{waiting:,} customers still waiting to be sent." if waiting else "")
        + (f"\n{report['held_out_note']}." if report.get("held_out_note") else "")
    )


def _difference(c: dict | None) -> str:
    if c is None:
        return "-"
    if c["ci"] is None:
        return "no customers yet"
    return f"{c['points']:+.2f} ({c['ci'][0]:+.2f} to {c['ci'][1]:+.2f})"


def _revenue_cell(revenue: dict) -> str:
    cells = []
    for c, r in revenue.items():
        ci = f" ({r['ci'][0]:,.2f} to {r['ci'][1]:,.2f})" if r["ci"] else ""
        cells.append(f"{r['mean']:,.2f}{ci} {c}")
    return ", ".join(cells) or "-"


def _revenue_difference(c: dict | None) -> str:
    if c is None or not c["revenue"]:
        return "-"
    cells = []
    for cur, r in c["revenue"].items():
        ci = f" ({r['ci'][0]:+,.2f} to {r['ci'][1]:+,.2f})" if r["ci"] else " (too few buyers)"
        cells.append(f"{r['difference']:+,.2f}{ci} {cur}")
    return ", ".join(cells)


def experiment_markdown(report: dict) -> str:
    """The report as a Prefect artifact: the verdict, one row per group, the rule."""
    level = f"{100 * report['level']:.1f}%".replace(".0%", "%")
    lines = [
        f"## {report['campaign']}: which variant pays more",
        "",
        f"**{report['verdict']}.**",
        "",
        "| group | customers | bought | rate | vs control (points) | vs held out (points) "
        "| revenue per customer | revenue vs control |",
        "| --- | ---: | ---: | ---: | --- | --- | --- | --- |",
    ]
    for name, g in report["groups"].items():
        label = "held out (nothing sent)" if name == "held_out" else name
        if name == report["control"]:
            label += " (control)"
        vs_control = report["against_control"].get(name)
        rate = "-" if g["conversion"] is None else f"{g['conversion']:.2f}%"
        lines.append(
            f"| {label} | {g['customers']:,} | {g['converted']:,} | {rate} "
            f"| {_difference(vs_control)} | {_difference(report['against_held_out'].get(name))} "
            f"| {_revenue_cell(g['revenue_per_customer'])} | {_revenue_difference(vs_control)} |"
        )
    lines += [
        "",
        f"Intervals are always-valid at {level}: read them every day. "
        f"The rule, set before the test: {report['rule']}.",
    ]
    if report.get("held_out_note"):
        lines.append(f"{report['held_out_note']}.")
    return "\n".join(lines)
