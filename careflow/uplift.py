"""Does contact pay? Contacted customers against the held-out group, with honest intervals.

Every campaign holds out a share of the customers it would contact
(careflow/policy/holdout.py): their ledger rows are ``held_out``, the
others' ``sent``. This module compares the two groups over the same
window after a run took each customer up:

- **unit**: one ledger row, a customer on one occasion. Pooling a date
  range pools every occasion of the campaign taken up in it (each month's
  birthdays, each VIP month);
- **window**: from the moment a run first took up the customer for the
  occasion (the ledger row's ``created_at``) to
  ``CAREFLOW_ATTRIBUTION_WINDOW_DAYS`` later. That moment comes before the
  holdout draw and does not depend on it, so it is alike in both groups:
  a message deferred to the customer's morning, or sent by a later run
  after a skip, starts its window when its held-out twin would (the send
  time would start held-out windows hours earlier than contacted ones).
  Every order in the window counts, whoever or whatever caused it: this
  is not the last-touch attribution of careflow/responses.py, which can
  only credit messages and so has nothing to say about customers left
  alone;
- **not yet**: a message still deferred (quiet hours, a sending window) is
  not in the contacted group until it is sent, and a held-out customer
  whose message would still be waiting (the policy keeps that time on the
  row, ``not_before``) not in the held-out group until then: comparing
  sent messages with all held-out customers would set customers whose
  morning has come against everyone;
- **conversion**: at least one order in the window; **revenue per
  customer**: what the unit ordered in the window, 0 for most, per currency
  (amounts in different currencies are never added).

The statistics (intervals, sample sizes, detectable effects) are pure functions in
careflow/uplift_stats.py; this module reads the groups from the database and writes
the comparison as data, tables and sentences.

When the uplift's interval contains 0 the report says plainly whether the
groups were too small to tell, and how many per group it would take.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from statistics import fmean
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, Select, select

from careflow.clock import utcnow
from careflow.db.models import ContactHistory, Order
from careflow.messages import State
from careflow.money import from_minor
from careflow.tables import text_table
from careflow.uplift_stats import mde, newcombe, sample_size, welch, wilson

CH = ContactHistory.__table__

#: past units (customer-occasions with a closed window) needed before a campaign's own
#: conversion rate replaces the default baseline
MIN_BASELINE_UNITS = 30
#: the smallest difference the "too few to tell" sentence asks about, in proportion
MIN_TARGET_EFFECT = 0.005


# --- the comparison ------------------------------------------------------------------------
@dataclass
class Unit:
    """One customer on one occasion, and what they ordered in its window."""

    customer_id: int
    occasion: str
    held_out: bool
    start: datetime  # naive UTC
    waiting: bool = False  # deferred, or held out with a would-be send time still to come
    converted: bool = False
    revenue: dict | None = None  # currency -> minor units
    variant: str | None = None  # the experiment's variant a contacted customer got


def taken_up_between(since: date | None, until: date | None) -> list:
    """The conditions on a ledger row first taken up by a run in [since, until] (UTC dates;
    None: open)."""
    where = []
    if since is not None:
        where.append(CH.c.created_at >= datetime.combine(since, datetime.min.time()))
    if until is not None:
        where.append(
            CH.c.created_at < datetime.combine(until + timedelta(days=1), datetime.min.time())
        )
    return where


def orders_after(
    conn, where: list, starts: list[datetime], window: timedelta, shop_zone: str
) -> dict[int, list[tuple[datetime, int, str]]]:
    """customer -> (instant in UTC, amount in minor units, currency) of each order that may
    fall in the ``window`` after one of the ledger rows ``where`` selects, whose instants
    are ``starts``; one query. Orders keep the shop's clock: read as instants, as
    attribute_orders does."""
    return orders_of(conn, select(CH.c.customer_id).where(*where), starts, window, shop_zone)


def orders_of(
    conn, who: Select, starts: list[datetime], window: timedelta, shop_zone: str
) -> dict[int, list[tuple[datetime, int, str]]]:
    """:func:`orders_after` for the customers ``who`` selects (a journey's entries:
    careflow/journeys/holdout.py)."""
    if not starts:
        return {}
    first = min(starts) - timedelta(days=1)
    last = max(starts) + window + timedelta(days=1)
    orders = conn.execute(
        select(Order.customer_id, Order.ordered_at, Order.amount_minor, Order.currency).where(
            Order.customer_id.in_(who), Order.ordered_at >= first, Order.ordered_at <= last
        )
    ).all()
    zone = ZoneInfo(shop_zone)
    found: dict[int, list[tuple[datetime, int, str]]] = {}
    for o in orders:
        at = o.ordered_at.replace(tzinfo=zone).astimezone(UTC).replace(tzinfo=None)
        found.setdefault(o.customer_id, []).append((at, o.amount_minor, o.currency))
    return found


def load_units(
    engine: Engine,
    campaign: str,
    window_days: int,
    shop_zone: str,
    since: date | None = None,
    until: date | None = None,
    now: datetime | None = None,
) -> list[Unit]:
    """The campaign's contacted and held-out customer-occasions first taken up by a run in
    [since, until] (UTC dates), each with its orders in the window that follows."""
    now = now or utcnow()
    start = CH.c.created_at
    states = [State.SENT, State.HELD_OUT, State.DEFERRED]
    where = [CH.c.campaign == campaign, CH.c.state.in_(states)]
    where += taken_up_between(since, until)
    window = timedelta(days=window_days)
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                CH.c.customer_id,
                CH.c.occasion,
                CH.c.state,
                CH.c.not_before,
                CH.c.variant,
                start.label("start"),
            ).where(*where)
        ).all()
        by_customer = orders_after(conn, where, [r.start for r in rows], window, shop_zone)
    units = []
    for r in rows:
        waiting = r.state == State.DEFERRED or (r.not_before is not None and r.not_before > now)
        u = Unit(
            r.customer_id,
            r.occasion,
            r.state == State.HELD_OUT,
            r.start,
            waiting,
            revenue={},
            variant=r.variant,
        )
        for at, amount, currency in by_customer.get(r.customer_id, ()):
            if r.start <= at <= r.start + window:
                u.converted = True
                u.revenue[currency] = u.revenue.get(currency, 0) + int(amount)
        units.append(u)
    return units


def _pct(p: float) -> float:
    """A proportion in percent, kept precise enough that showing it with one decimal gives
    what formatting the proportion itself would."""
    return round(100 * p, 4)


def compare(
    units: Sequence[Unit],
    *,
    window_days: int,
    now: datetime | None = None,
    campaign: str = "",
    since: date | None = None,
    until: date | None = None,
) -> dict:
    """The holdout comparison of ``units`` as data: groups, uplift with intervals, verdict.

    Rates and differences are in percent / percentage points; money in the
    currency's units (strings, exact)."""
    now = now or utcnow()
    waiting = [u for u in units if u.waiting]
    units = [u for u in units if not u.waiting]
    contacted = [u for u in units if not u.held_out]
    held = [u for u in units if u.held_out]
    n1, n0 = len(contacted), len(held)
    x1, x0 = sum(u.converted for u in contacted), sum(u.converted for u in held)
    out: dict = {
        "campaign": campaign,
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "window_days": window_days,
        "occasions": sorted({u.occasion for u in units}),
        "occasion_count": len({u.occasion for u in units}),
        "windows_open": sum(u.start + timedelta(days=window_days) > now for u in units),
        "waiting": {
            "contacted": sum(not u.held_out for u in waiting),
            "held_out": sum(u.held_out for u in waiting),
        },
        "groups": {},
        "conversion_uplift": None,
        "revenue_uplift": {},
    }
    for name, group, x in (("contacted", contacted, x1), ("held_out", held, x0)):
        lo, hi = wilson(x, len(group))
        out["groups"][name] = {
            "customers": len(group),
            "converted": x,
            "conversion": _pct(x / len(group)) if group else None,
            "conversion_ci": [_pct(lo), _pct(hi)] if group else None,
            "revenue_per_customer": {},
        }
    currencies = sorted({c for u in units for c in (u.revenue or {})})
    for currency in currencies:
        per = {
            name: [float(from_minor((u.revenue or {}).get(currency, 0), currency)) for u in g]
            for name, g in (("contacted", contacted), ("held_out", held))
        }
        for name, values in per.items():
            if values:
                out["groups"][name]["revenue_per_customer"][currency] = round(fmean(values), 2)
        found = welch(per["contacted"], per["held_out"])
        if found:
            out["revenue_uplift"][currency] = [round(v, 2) for v in found]
    if n1 and n0:
        d, lo, hi = newcombe(x1, n1, x0, n0)
        out["conversion_uplift"] = {"points": _pct(d), "ci": [_pct(lo), _pct(hi)]}
        baseline = x0 / n0 if x0 else (x1 + x0) / (n1 + n0)
        found = mde(n1, n0, baseline) if 0 < baseline < 1 else None
        out["mde_points"] = _pct(found) if found is not None else None
    out["verdict"] = verdict(x1, n1, x0, n0)
    return out


def verdict(x1: int, n1: int, x0: int, n0: int) -> str:
    """One plain sentence on what the comparison shows (or cannot show)."""
    if not n0:
        return "no held-out customers in this range: nothing to compare with (holdout 0?)"
    if not n1:
        return "no contacted customers in this range: nothing to compare"
    d, lo, hi = newcombe(x1, n1, x0, n0)
    ci = f"95% CI {100 * lo:+.1f} to {100 * hi:+.1f} points"
    if lo > 0 or hi < 0:
        more = "more" if d > 0 else "less"
        return (
            f"contacted customers converted {100 * abs(d):.1f} points {more} often than "
            f"held-out ones ({ci})"
        )
    p0 = x0 / n0 if x0 else (x1 + x0) / (n1 + n0)
    p0 = min(max(p0, 0.001), 0.99)
    target = max(abs(d), MIN_TARGET_EFFECT)
    target = min(target, 1 - p0 - 1e-9)
    need = math.ceil(sample_size(p0, p0 + target))
    if min(n1, n0) < need:
        return (
            f"too few customers to tell: need about {need:,} per group to detect "
            f"{100 * target:.1f} points (have {n1:,} contacted, {n0:,} held out; {ci})"
        )
    return (
        f"no clear difference: groups this size would most likely have shown "
        f"{100 * target:.1f} points ({ci})"
    )


def uplift_report(
    engine: Engine,
    campaign: str,
    *,
    window_days: int,
    shop_zone: str,
    since: date | None = None,
    until: date | None = None,
    now: datetime | None = None,
) -> dict:
    """The campaign's holdout comparison over occasions selected in [since, until]."""
    units = load_units(engine, campaign, window_days, shop_zone, since, until, now)
    return compare(
        units, window_days=window_days, now=now, campaign=campaign, since=since, until=until
    )


#: the comparison's table columns (:func:`group_rows`)
GROUP_HEADER = ["group", "customers", "converted", "conversion (95% CI)", "revenue per customer"]


def group_rows(report: dict, groups: Sequence[tuple[str, str]]) -> list[list[str]]:
    """The comparison's table rows: each group of ``groups`` (key in the report, label),
    then the uplift, the first group against the second, with its intervals."""
    def rate(g: dict) -> str:
        if g["conversion"] is None:
            return "-"
        lo, hi = g["conversion_ci"]
        return f"{g['conversion']:.1f}% ({lo:.1f}-{hi:.1f})"

    def money(g: dict) -> str:
        found = g["revenue_per_customer"]
        return ", ".join(f"{v:.2f} {c}" for c, v in found.items()) or "-"

    found = report["groups"]
    rows = [
        [
            label,
            f"{found[key]['customers']:,}",
            f"{found[key]['converted']:,}",
            rate(found[key]),
            money(found[key]),
        ]
        for key, label in groups
    ]
    up = report["conversion_uplift"]
    if up:
        revenue = ", ".join(
            f"{d:+.2f} {c} ({lo:+.2f} to {hi:+.2f})"
            for c, (d, lo, hi) in report["revenue_uplift"].items()
        )
        rows.append(
            [
                "uplift",
                "",
                "",
                f"{up['points']:+.1f} pts ({up['ci'][0]:+.1f} to {up['ci'][1]:+.1f})",
                revenue or "-",
            ]
        )
    return rows


def uplift_table(report: dict) -> str:
    """The comparison as an operator reads it: two groups, the uplift, the verdict."""
    rows = group_rows(report, (("contacted", "contacted"), ("held_out", "held out")))
    since, until = report["since"], report["until"]
    span = (
        f"from {since} to {until}" if since and until
        else f"from {since}" if since
        else f"until {until}" if until
        else "at any time"
    )  # fmt: skip
    occasions, count = report["occasions"], report["occasion_count"]
    shown = ", ".join(occasions)
    if count > len(occasions) or count > 4:
        shown = f"{occasions[0]} ... {occasions[-1]}"
    lines = [
        f"{report['campaign']}: contacted against held out, taken up {span}; "
        f"{count} occasion(s) pooled{' (' + shown + ')' if occasions else ''}",
        f"orders within {report['window_days']} day(s) of being taken up, every order counted, "
        "95% intervals",
        "",
        text_table(GROUP_HEADER, rows),
        "",
        report["verdict"],
    ]
    if report.get("mde_points") is not None:
        lines.append(
            f"(with these groups the smallest difference detectable at 80% power is about "
            f"{report['mde_points']:.1f} points)"
        )
    wait = report["waiting"]
    if wait["contacted"] or wait["held_out"]:
        lines.append(
            f"not compared yet: {wait['contacted']:,} message(s) still deferred and "
            f"{wait['held_out']:,} held-out customer(s) whose message would still be waiting"
        )
    if report["windows_open"]:
        lines.append(
            f"{report['windows_open']:,} customer(s) are still inside their window: "
            "the numbers may still move"
        )
    return "\n".join(lines)


def uplift_overview(reports: Sequence[dict]) -> str:
    """One line per campaign: both groups' conversion, the uplift and its interval."""
    def group(g: dict) -> str:
        if not g["customers"]:
            return "-"
        return f"{g['converted']}/{g['customers']:,} ({g['conversion']:.1f}%)"

    rows = []
    for r in reports:
        up = r["conversion_uplift"]
        rows.append(
            [
                r["campaign"],
                group(r["groups"]["contacted"]),
                group(r["groups"]["held_out"]),
                f"{up['points']:+.1f} ({up['ci'][0]:+.1f} to {up['ci'][1]:+.1f})" if up else "-",
            ]
        )
    return text_table(
        ["campaign", "contacted: converted", "held out: converted", "uplift, points (95% CI)"],
        rows,
    )


def uplift_markdown(report: dict) -> str:
    """The comparison for a run's Prefect artifact."""
    return (
        "### Did contact pay? Held out against contacted, so far\n\n```\n"
        + uplift_table(report)
        + "\n```"
    )


# --- before sending: what the split can detect --------------------------------------------
def baseline_for(engine: Engine, campaign: str, settings) -> tuple[float, str]:
    """:func:`baseline_conversion` with the shop's attribution window, zone and default
    (``settings``: careflow.settings.Settings)."""
    return baseline_conversion(
        engine,
        campaign,
        window_days=settings.attribution_window_days,
        shop_zone=settings.time_zone,
        default=settings.uplift_baseline_conversion,
    )


def baseline_conversion(
    engine: Engine,
    campaign: str,
    *,
    window_days: int,
    shop_zone: str,
    default: float,
    now: datetime | None = None,
) -> tuple[float, str]:
    """(rate, where it comes from) for the MDE, from the campaign's last year
    (:func:`baseline_of`)."""
    now = now or utcnow()
    since = (now - timedelta(days=365 + window_days)).date()
    units = load_units(engine, campaign, window_days, shop_zone, since=since, now=now)
    return baseline_of(units, campaign, window_days=window_days, default=default, now=now)


def baseline_of(
    units: Sequence[Unit], campaign: str, *, window_days: int, default: float, now: datetime
) -> tuple[float, str]:
    """The conversion rate without contact: the held-out customers of past occasions whose
    window has closed, else all past customers of the campaign, else ``default``
    (CAREFLOW_UPLIFT_BASELINE_CONVERSION); at least MIN_BASELINE_UNITS of them."""
    closed = [
        u for u in units if u.start + timedelta(days=window_days) <= now and not u.waiting
    ]
    held = [u for u in closed if u.held_out]
    for group, what in ((held, "held-out"), (closed, "past")):
        rate = sum(u.converted for u in group) / len(group) if group else 0.0
        if len(group) >= MIN_BASELINE_UNITS and 0 < rate < 1:
            return rate, f"{len(group):,} {what} customers of {campaign}'s past occasions"
    return default, "default, CAREFLOW_UPLIFT_BASELINE_CONVERSION"


def split_summary(
    to_contact: int, held_out: int, share: float, baseline: float, source: str
) -> dict:
    """What a run's split can detect, before anything is sent (for summaries and previews)."""
    found = mde(to_contact, held_out, baseline)
    return {
        "share": share,
        "to_contact": to_contact,
        "held_out": held_out,
        "baseline": round(100 * baseline, 2),
        "baseline_source": source,
        "mde_points": _pct(found) if found is not None else None,
    }


def split_lines(s: dict) -> list[str]:
    """The split, and the smallest effect it can detect: two lines."""
    if not s["share"]:
        return ["holdout off: nobody is held out, so this campaign cannot be measured"]
    basis = (
        f"80% power, 5% two-sided, baseline conversion {s['baseline']:g}%: "
        f"{s['baseline_source']}"
    )
    found = s["mde_points"]
    return [
        f"holdout {100 * s['share']:g}%: {s['to_contact']:,} to contact, "
        f"{s['held_out']:,} held out",
        f"smallest detectable difference in conversion: {found:.1f} points ({basis})"
        if found is not None
        else f"smallest detectable difference in conversion: none, too few customers ({basis})",
    ]


def describe_split(s: dict) -> str:
    """The split and what it can detect, in one line."""
    return "; ".join(split_lines(s))


# --- in a marketer's words, the numbers beside ---------------------------------------------
def split_in_words(s: dict) -> str:
    """What a run's split can tell, for a marketer: the sentence first, the statistics in
    brackets after it (the run's artifact; :func:`describe_split` is the operator's line)."""
    if not s["share"]:
        return (
            "Nobody is held out, so nobody can tell whether this campaign works "
            "(holdout off: set a holdout share to measure it)."
        )
    groups = (
        f"{s['to_contact']:,} customers to contact, {s['held_out']:,} held out "
        f"({100 * s['share']:g}%)"
    )
    basis = f"80% power, buying rate without the message {s['baseline']:g}%"
    found = s["mde_points"]
    if found is None:
        return (
            f"Too few customers to tell whether this campaign works: even a campaign that "
            f"got everyone to buy would go unnoticed ({groups}; {basis})."
        )
    if found > s["baseline"]:  # it would have to more than double the buying rate
        return (
            f"Too few customers to tell whether this campaign works: a difference smaller "
            f"than {found:.1f} points in how many buy would go unnoticed ({groups}; {basis})."
        )
    return (
        f"Enough customers to tell: a difference of {found:.1f} points or more in how many "
        f"buy would most likely show ({groups}; {basis})."
    )


def uplift_in_words(report: dict) -> str:
    """What the held-out comparison shows so far, for a marketer, numbers beside."""
    contacted, held = report["groups"]["contacted"], report["groups"]["held_out"]
    rates = (
        f"{contacted['conversion']:.1f}% of {contacted['customers']:,} contacted customers "
        f"bought, against {held['conversion']:.1f}% of {held['customers']:,} held out"
        if contacted["conversion"] is not None and held["conversion"] is not None
        else f"{contacted['customers']:,} contacted, {held['customers']:,} held out"
    )
    up = report.get("conversion_uplift")
    if up and (up["ci"][0] > 0 or up["ci"][1] < 0):
        more = "more" if up["points"] > 0 else "less"
        return (
            f"Customers who got the message bought {more} often: {rates} "
            f"({up['points']:+.1f} points; 95% interval {up['ci'][0]:+.1f} to "
            f"{up['ci'][1]:+.1f})."
        )
    unseen = report.get("mde_points")
    if report["verdict"].startswith(("too few", "no held-out", "no contacted")):
        missed = (
            f"a difference smaller than {unseen:.1f} points would go unnoticed (80% power)"
            if unseen is not None
            else "even a large difference would go unnoticed"
        )
        return f"Too few customers so far to tell whether this campaign works: {rates}; {missed}."
    return (
        f"No clear sign that the message changes how many buy: {rates}"
        + (f" (a difference of {unseen:.1f} points would most likely have shown)." if unseen
           is not None else ".")
    )  # fmt: skip

