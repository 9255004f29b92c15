"""Compliance monitors: what mailbox providers judge a sender by, measured from what
careflow already records (docs/compliance.md).

Gmail and Yahoo (their bulk-sender rules, in force since February 2024) want a
sending domain's spam-report rate under 0.3% (Google advises under 0.1%), and an
unsubscribe honoured within 2 days. careflow records every SendGrid event once
(careflow/responses.py, ``contact_events``), and every opt-out, by any route (a STOP
or 退订 reply, SendGrid's unsubscribe and spam report, the one-click POST and the
unsubscribe page), as an event whose suppression it writes with the event's key as
its ``source``. So, per UTC day, all in SQL:

- per sending domain (the From address's, ``Settings.from_email``): SendGrid's
  ``delivered``, ``spamreport`` and ``bounce`` events (a ``blocked`` bounce
  included), the spam-report rate (reports / delivered) and the bounce rate
  (bounced / (delivered + bounced): of the messages a receiving server answered);
- the time from each opt-out (the instant the provider says the customer acted) to
  its suppression being written, worst case per day (p100), by route; an opt-out
  whose address is not suppressed is counted as not applied, unless the customer
  opted in again since (which lifts it on purpose).

careflow sends email from one address, so every SendGrid event counts for the domain
configured now (CAREFLOW_SENDGRID_FROM_EMAIL): after a change of domain, read the
days since (``--days``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date, datetime, time, timedelta

from sqlalchemy import Engine, and_, exists, func, literal, select

from careflow.db.models import ContactEvent, ContactHistory, Suppression
from careflow.db.sqlfunc import day_of, seconds_between
from careflow.settings import Settings
from careflow.tables import text_table

CE = ContactEvent.__table__
CH = ContactHistory.__table__
SUPPRESSION = Suppression.__table__

#: Google's advice: keep the spam-report rate under 0.1% (marked "warn")
WARN_RATE = 0.001
#: Gmail and Yahoo: an unsubscribe honoured within 2 days
OPT_OUT_DEADLINE = timedelta(days=2)
#: timeline kinds that are an opt-out, whatever the route (a spam report is one too:
#: careflow suppresses the address)
OPT_OUT_KINDS = ("opted_out", "unsubscribed", "spam_report")
#: what a route is called in the report, by (provider, timeline kind)
ROUTES = {
    ("careflow", "unsubscribed"): "one-click / unsubscribe page",
    ("sendgrid", "unsubscribed"): "SendGrid unsubscribe",
    ("sendgrid", "spam_report"): "SendGrid spam report",
    ("twilio", "opted_out"): "SMS reply (STOP, 退订)",
}


def sending_domain(settings: Settings) -> str:
    """The domain email goes out from: the From address's, lower case."""
    return settings.from_email.rpartition("@")[2].strip().lower()


@dataclass(frozen=True)
class DomainDay:
    """One sending domain's SendGrid events on one UTC day."""

    domain: str
    day: date
    delivered: int
    spam_reports: int
    bounced: int

    @property
    def spam_rate(self) -> float | None:
        return self.spam_reports / self.delivered if self.delivered else None

    @property
    def bounce_rate(self) -> float | None:
        answered = self.delivered + self.bounced
        return self.bounced / answered if answered else None

    def verdict(self, limit: float, min_delivered: int) -> str:
        """``over limit``, ``warn`` (over 0.1%), ``ok``, or ``too few`` to judge."""
        if self.delivered < min_delivered:
            return "too few"
        if self.spam_reports > limit * self.delivered:
            return "over limit"
        return "warn" if self.spam_reports > WARN_RATE * self.delivered else "ok"

    def as_dict(self, limit: float, min_delivered: int) -> dict:
        return {
            **asdict(self),
            "day": self.day.isoformat(),
            "spam_rate": self.spam_rate,
            "bounce_rate": self.bounce_rate,
            "verdict": self.verdict(limit, min_delivered),
        }


def _bounds(since: date, until: date) -> tuple[datetime, datetime]:
    return datetime.combine(since, time()), datetime.combine(until + timedelta(days=1), time())


def domain_days(engine_or_conn, domain: str, since: date, until: date) -> list[DomainDay]:
    """The domain's days from ``since`` to ``until`` (UTC, both included) that have
    SendGrid events, newest first: one grouped query."""
    start, end = _bounds(since, until)
    day = day_of(CE.c.occurred_at).label("day")
    query = (
        select(
            day,
            func.count().filter(CE.c.kind == "delivered").label("delivered"),
            func.count().filter(CE.c.kind == "spam_report").label("spam_reports"),
            func.count().filter(CE.c.kind == "bounced").label("bounced"),
        )
        .where(
            CE.c.kind.in_(["delivered", "spam_report", "bounced"]),
            CE.c.occurred_at >= start,
            CE.c.occurred_at < end,
            CE.c.provider == "sendgrid",
        )
        .group_by(day)
        .order_by(day.desc())
    )
    rows = _execute(engine_or_conn, query)
    return [DomainDay(domain, r.day, r.delivered, r.spam_reports, r.bounced) for r in rows]


def _execute(engine_or_conn, query) -> list:
    if isinstance(engine_or_conn, Engine):
        with engine_or_conn.connect() as conn:
            return conn.execute(query).all()
    return engine_or_conn.execute(query).all()


@dataclass(frozen=True)
class OptOutDay:
    """Opt-outs received on one UTC day, every route, and how long their suppression took."""

    day: date
    opt_outs: int
    applied: int
    #: the worst time from an opt-out to its suppression (p100), seconds; None: none applied
    worst_seconds: float | None
    worst_route: str | None
    #: opt-outs whose address is not suppressed, and the customer did not opt in again
    not_applied: int
    #: opt-outs lifted since by the customer's own opt-in (not a failure)
    opted_in_again: int
    #: opt-outs by route
    routes: dict[str, int]

    @property
    def within_deadline(self) -> bool:
        deadline = OPT_OUT_DEADLINE.total_seconds()
        late = self.worst_seconds is not None and self.worst_seconds > deadline
        return not late and not self.not_applied

    def as_dict(self) -> dict:
        return {**asdict(self), "day": self.day.isoformat(), "within_2_days": self.within_deadline}


def opt_out_days(engine: Engine, since: date, until: date) -> list[OptOutDay]:
    """Every opt-out from ``since`` to ``until`` (UTC days, both included), per day, with
    the worst time to its suppression, newest first: one grouped query by day and route.

    An opt-out's suppression is the row its own event wrote (``source`` is the event's
    key), else the one already on the address it answered (an address suppressed before
    counts as applied at once)."""
    start, end = _bounds(since, until)
    by_source = SUPPRESSION.alias("by_source")
    by_address = SUPPRESSION.alias("by_address")
    again = CE.alias("again")
    key = func.substr(CE.c.provider + literal(":") + CE.c.event_id, 1, 64)
    applied_at = func.coalesce(by_source.c.created_at, by_address.c.created_at)
    opted_in_again = exists().where(
        again.c.customer_id == CE.c.customer_id,
        again.c.channel == CE.c.channel,
        again.c.kind == "opted_in",
        again.c.occurred_at >= CE.c.occurred_at,
    )
    day = day_of(CE.c.occurred_at).label("day")
    unapplied = applied_at.is_(None)
    query = (
        select(
            day,
            CE.c.provider,
            CE.c.kind,
            func.count().label("opt_outs"),
            func.count(applied_at).label("applied"),
            func.max(seconds_between(applied_at, CE.c.occurred_at)).label("worst"),
            func.count().filter(and_(unapplied, ~opted_in_again)).label("not_applied"),
            func.count().filter(and_(unapplied, opted_in_again)).label("opted_in_again"),
        )
        .select_from(
            CE.outerjoin(by_source, by_source.c.source == key)
            .outerjoin(CH, CH.c.id == CE.c.contact_id)
            .outerjoin(
                by_address,
                and_(by_address.c.channel == CE.c.channel, by_address.c.address == CH.c.recipient),
            )
        )
        .where(CE.c.kind.in_(OPT_OUT_KINDS), CE.c.occurred_at >= start, CE.c.occurred_at < end)
        .group_by(day, CE.c.provider, CE.c.kind)
    )
    days: dict[date, dict] = {}
    for r in _execute(engine, query):  # a few rows a day: one per route
        route = ROUTES.get((r.provider, r.kind), f"{r.provider} {r.kind}")
        d = days.setdefault(
            r.day,
            {"opt_outs": 0, "applied": 0, "worst": None, "route": None, "not_applied": 0,
             "opted_in_again": 0, "routes": {}},
        )  # fmt: skip
        for name in ("opt_outs", "applied", "not_applied", "opted_in_again"):
            d[name] += getattr(r, name)
        d["routes"][route] = d["routes"].get(route, 0) + r.opt_outs
        if r.worst is not None:
            worst = max(0.0, float(r.worst))  # suppressed before the opt-out: at once
            if d["worst"] is None or worst > d["worst"]:
                d["worst"], d["route"] = worst, route
    return [
        OptOutDay(day, d["opt_outs"], d["applied"], d["worst"], d["route"], d["not_applied"],
                  d["opted_in_again"], d["routes"])
        for day, d in sorted(days.items(), reverse=True)
    ]  # fmt: skip


def compliance_report(
    engine: Engine, settings: Settings, days: int, today: date, paused: list[dict]
) -> dict:
    """The last ``days`` UTC days up to ``today``: the sending domain's days, the opt-out
    days, the thresholds, and ``paused``, the campaigns paused now
    (``careflow.pauses.paused_campaigns``)."""
    since = today - timedelta(days=days - 1)
    limit, minimum = settings.spam_rate_limit, settings.spam_rate_min_delivered
    domain = sending_domain(settings)
    return {
        "domain": domain,
        "since": since.isoformat(),
        "until": today.isoformat(),
        "warn_rate": WARN_RATE,
        "limit_rate": limit,
        "min_delivered": minimum,
        "domain_days": [
            d.as_dict(limit, minimum) for d in domain_days(engine, domain, since, today)
        ],
        "opt_out_days": [d.as_dict() for d in opt_out_days(engine, since, today)],
        "paused": paused,
    }


def percent(rate: float | None) -> str:
    return "-" if rate is None else f"{100 * rate:.2f}%"


def duration(seconds: float | None) -> str:
    """``3 s``, ``4 min``, ``2.5 h``, ``3.1 days``."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


#: what each verdict shows beside the rate
_MARKS = {
    "over limit": "OVER LIMIT",
    "warn": "over 0.1%",
    "ok": "",
    "too few": "(too few to judge)",
}


def compliance_table(report: dict) -> str:
    """The report at a glance: the domain's days with the thresholds marked, the opt-out
    days with their worst time, and the campaigns paused now."""
    limit, minimum = report["limit_rate"], report["min_delivered"]
    lines = [
        f"sending domain {report['domain']}, UTC days {report['since']} to {report['until']}",
        f"spam-report rate: warn over {percent(report['warn_rate'])} (Google's advice), "
        f"limit {percent(limit)} (Gmail/Yahoo bulk senders; campaigns pause past it),",
        f"judged on days with at least {minimum:,} delivered",
        "",
    ]
    if report["domain_days"]:
        lines.append(text_table(
            ["domain", "day", "delivered", "spam reports", "spam rate", "bounced", "bounce rate"],
            [
                [d["domain"], d["day"], f"{d['delivered']:,}", f"{d['spam_reports']:,}",
                 " ".join(filter(None, [percent(d["spam_rate"]), _MARKS[d["verdict"]]])),
                 f"{d['bounced']:,}", percent(d["bounce_rate"])]
                for d in report["domain_days"]
            ],
        ))  # fmt: skip
    else:
        lines.append("no SendGrid delivery events in these days")
    lines += ["", "opt-out -> suppression applied, every route, worst per day (p100); "
              "Gmail/Yahoo: within 2 days", ""]  # fmt: skip
    if report["opt_out_days"]:
        lines.append(text_table(
            ["day", "opt-outs", "applied", "worst (p100)", "slowest route", "not applied"],
            [
                [o["day"], f"{o['opt_outs']:,}", f"{o['applied']:,}",
                 duration(o["worst_seconds"]) + ("" if o["within_2_days"] else " LATE"),
                 o["worst_route"] or "-",
                 f"{o['not_applied']:,}" + (" NOT APPLIED" if o["not_applied"] else "")]
                for o in report["opt_out_days"]
            ],
        ))  # fmt: skip
    else:
        lines.append("no opt-outs in these days")
    if report["paused"]:
        lines += ["", "paused campaigns:"]
        lines += [f"  {p['campaign']}: {p['why']}" for p in report["paused"]]
    return "\n".join(lines)
