"""A journey against its holdout: did going through it make customers buy?

A customer drawn into a journey's holdout when they enter (``advance.is_held_out``:
state ``held_out``) gets nothing from it and is the comparison group for the whole
journey, every step and message of it at once. Here each entry (journey, customer,
entry key) is one unit, as a ledger row is for a campaign (careflow/uplift.py):

- **in the journey**: every entry past the entry step that was not held out, whatever
  became of it after (sent, skipped for want of consent, exited): the draw split
  everyone who reached it, so only the whole of either side is a fair comparison;
- **held out**: entries drawn into the holdout;
- entries still at the entry step (not drawn yet), or that left by an exit rule before
  it, are in neither group;
- **window**: from entering (``entered_at``, before the draw and alike in both groups) to
  ``CAREFLOW_ATTRIBUTION_WINDOW_DAYS`` later; **converted**: at least one order in it,
  whoever or whatever caused it; **revenue per customer**: what the entry ordered in it,
  per currency.

The statistics are the campaign holdout's (``uplift.compare``: Wilson, Newcombe, Welch,
the detectable difference), so a journey and a campaign with the same numbers get the
same intervals. `careflow journey status` shows it, and the journey's Prefect artifact
after each advance (careflow/flows/journey.py).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Engine, select

from careflow.clock import utcnow
from careflow.db.models import JourneyPosition
from careflow.journey_spec import ENTRY_STEP, JourneySpec
from careflow.tables import text_table
from careflow.uplift import GROUP_HEADER, Unit, compare, group_rows, orders_of

P = JourneyPosition.__table__.c

#: the report's groups: key, label
GROUPS = (("in_journey", "in the journey"), ("held_out", "held out"))


def load_units(
    engine: Engine, journey: str, window_days: int, shop_zone: str
) -> tuple[list[Unit], int]:
    """(the journey's entries in either group with their orders in the window, entries in
    neither yet)."""
    window = timedelta(days=window_days)
    where = [P.journey == journey]
    with engine.connect() as conn:
        rows = conn.execute(
            select(P.customer_id, P.entry_key, P.step, P.state, P.entered_at).where(*where)
        ).all()
        drawn = [r for r in rows if r.state == "held_out" or r.step != ENTRY_STEP]
        who = select(P.customer_id).where(*where)
        found = orders_of(conn, who, [r.entered_at for r in drawn], window, shop_zone)
    units = []
    for r in drawn:
        unit = Unit(r.customer_id, r.entry_key, r.state == "held_out", r.entered_at, revenue={})
        for at, amount, currency in found.get(r.customer_id, ()):
            if r.entered_at <= at <= r.entered_at + window:
                unit.converted = True
                unit.revenue[currency] = unit.revenue.get(currency, 0) + int(amount)
        units.append(unit)
    return units, len(rows) - len(units)


def journey_uplift(
    engine: Engine, spec: JourneySpec, settings, now: datetime | None = None
) -> dict:
    """The journey's entries against its held-out ones, as data (``uplift.compare``'s
    numbers; groups ``in_journey`` and ``held_out``); ``settings``: the window, the
    shop's zone and the holdout share a journey without its own uses."""
    now = now or utcnow()
    window = settings.attribution_window_days
    units, undrawn = load_units(engine, spec.name, window, settings.time_zone)
    found = compare(units, window_days=window, now=now, campaign=spec.name)
    groups = found.pop("groups")
    for key in ("campaign", "since", "until", "occasions", "occasion_count", "waiting"):
        found.pop(key)
    share = settings.holdout if spec.holdout is None else spec.holdout
    report = {
        "journey": spec.name,
        "holdout": share,
        "groups": {"in_journey": groups["contacted"], "held_out": groups["held_out"]},
        "not_counted_yet": undrawn,
        **found,
    }
    report["in_words"] = in_words(report)
    return report


def in_words(report: dict) -> str:
    """What the comparison shows, for a marketer: the sentence first, the numbers beside."""
    journey, held = report["groups"]["in_journey"], report["groups"]["held_out"]
    window = report["window_days"]
    if not held["customers"]:
        how = (
            f"its holdout is {100 * report['holdout']:g}% and nobody has been drawn into it yet"
            if report["holdout"]
            else "its holdout is off: set holdout in journey.yaml to measure it"
        )
        return f"Nobody is held out of this journey, so nobody can tell whether it works ({how})."
    if not journey["customers"]:
        return f"Nobody has gone through the journey yet ({held['customers']:,} held out)."
    rates = (
        f"{journey['conversion']:.1f}% of {journey['customers']:,} customers in the journey "
        f"bought within {window} day(s) of entering, against {held['conversion']:.1f}% of "
        f"{held['customers']:,} held out"
    )
    up, unseen = report["conversion_uplift"], report.get("mde_points")
    if up["ci"][0] > 0 or up["ci"][1] < 0:
        more = "more" if up["points"] > 0 else "less"
        said = (
            f"Customers who went through the journey bought {more} often than those held "
            f"out of it: {rates} ({up['points']:+.1f} points; 95% interval "
            f"{up['ci'][0]:+.1f} to {up['ci'][1]:+.1f})."
        )
    elif report["verdict"].startswith("too few"):
        missed = (
            f"a difference smaller than {unseen:.1f} points would go unnoticed (80% power)"
            if unseen is not None
            else "even a large difference would go unnoticed"
        )
        said = f"Too few customers so far to tell whether this journey works: {rates}; {missed}."
    else:
        said = f"No clear sign that the journey changes how many buy: {rates}" + (
            f" (a difference of {unseen:.1f} points would most likely have shown)."
            if unseen is not None
            else "."
        )
    for currency, (d, lo, hi) in report["revenue_uplift"].items():
        spent = journey["revenue_per_customer"].get(currency, 0.0)
        spared = held["revenue_per_customer"].get(currency, 0.0)
        said += (
            f" Revenue per customer: {spent:.2f} {currency} in the journey, {spared:.2f} "
            f"{currency} held out ({d:+.2f}; 95% interval {lo:+.2f} to {hi:+.2f})."
        )
    return said


def notes(report: dict) -> list[str]:
    """What is not in the numbers yet."""
    out = []
    n = report["not_counted_yet"]
    if n:
        out.append(
            f"{n:,} {'entry' if n == 1 else 'entries'} not counted: not through the entry "
            "step yet, or left by an exit rule before it"
        )
    if report["windows_open"]:
        out.append(
            f"{report['windows_open']:,} customer(s) entered less than {report['window_days']} "
            "day(s) ago: the numbers may still move"
        )
    return out


def table(report: dict) -> str:
    """The comparison for a terminal: both groups, the difference, the sentence."""
    lines = [
        f"against its holdout: orders within {report['window_days']} day(s) of entering, "
        "every order counted, 95% intervals",
        "",
        text_table(GROUP_HEADER, group_rows(report, GROUPS)),
        "",
        report["in_words"],
    ]
    return "\n".join(lines + notes(report))


def markdown(report: dict) -> str:
    """The comparison for the journey's Prefect artifact."""
    rows = "\n".join(
        ["```", text_table(GROUP_HEADER, group_rows(report, GROUPS)), "```"]
    )
    return "\n".join(
        ["## Does the journey pay? Against its holdout", "", f"**{report['in_words']}**", "",
         rows, *(f"\n{n}." for n in notes(report))]
    ) + "\n"  # fmt: skip


__all__ = ["in_words", "journey_uplift", "load_units", "markdown", "table"]
