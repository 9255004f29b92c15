"""A campaign pauses itself when its sending domain's spam-report rate passes the limit.

Before a run that may send email selects anyone, :func:`check` looks at the
campaign's pause: one in force refuses the run; else it judges the sending domain's
UTC days (careflow/compliance.py) from yesterday to today, and a day with at least
CAREFLOW_SPAM_RATE_MIN_DELIVERED delivered messages whose spam reports passed
CAREFLOW_SPAM_RATE_LIMIT pauses the campaign: the pause is written to
``campaign_pauses`` with the numbers, and the run is refused with one line saying
why and how to resume. Yesterday counts because a run early in the UTC day sees
only a few hours of today; a day a resumed pause was about never pauses the campaign
again (the operator has dealt with it), a later day does.

A dry run judges the same way and writes nothing: it says the campaign would pause.
``careflow campaign resume NAME`` (:func:`resume`) ends the pause, recording who and
why. At most one pause per campaign is in force (a partial unique index): two runs
judging at once record it once.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Engine, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from careflow import clock
from careflow.clock import utcnow
from careflow.compliance import domain_days, percent, sending_domain
from careflow.db.models import CampaignPause
from careflow.errors import ConfigError
from careflow.settings import Settings
from careflow.tables import shorten, text_table

PAUSES = CampaignPause.__table__


@dataclass(frozen=True)
class Pause:
    """A campaign's pause, in force or about to be, with the numbers that caused it."""

    campaign: str
    domain: str
    day: date
    delivered: int
    spam_reports: int
    rate_limit: float
    min_delivered: int
    #: None: a dry run's judgement, never written
    paused_at: datetime | None
    run_id: str | None = None
    #: written by this check (False: it was in force already, or a dry run judged it)
    new: bool = False

    @property
    def rate(self) -> float:
        return self.spam_reports / self.delivered

    def why(self) -> str:
        """Why, in one clause: ``spam reports on shop.example.com were 0.42% of ...``."""
        return (
            f"spam reports on {self.domain} were {percent(self.rate)} of delivered email on "
            f"{self.day.isoformat()} (UTC; {self.spam_reports:,} of {self.delivered:,}), over "
            f"the {percent(self.rate_limit)} limit (CAREFLOW_SPAM_RATE_LIMIT)"
        )

    def refusal(self, dry_run: bool = False) -> str:
        """The one line a refused run says."""
        state = "would pause itself" if dry_run and self.paused_at is None else "is paused"
        return (
            f"{self.campaign} {state}: {self.why()}; find the cause (docs/compliance.md), "
            f"then resume it with `careflow campaign resume {self.campaign}`"
        )

    def as_dict(self) -> dict:
        """For the run's summary, its artifact, JSON reports and the Prefect event."""
        return {
            "campaign": self.campaign,
            "domain": self.domain,
            "day": self.day.isoformat(),
            "delivered": self.delivered,
            "spam_reports": self.spam_reports,
            "spam_rate": self.rate,
            "rate_limit": self.rate_limit,
            "min_delivered": self.min_delivered,
            "paused_at": self.paused_at.isoformat(sep=" ", timespec="seconds")
            if self.paused_at
            else None,
            "run_id": self.run_id,
            "why": self.why(),
        }


def _pause(row) -> Pause:
    return Pause(
        row.campaign, row.domain, row.day, row.delivered, row.spam_reports, row.rate_limit,
        row.min_delivered, row.paused_at, row.run_id,
    )  # fmt: skip


def in_force(conn, campaign: str) -> Pause | None:
    row = conn.execute(
        select(PAUSES).where(PAUSES.c.campaign == campaign, PAUSES.c.resumed_at.is_(None))
    ).first()
    return _pause(row) if row else None


def check(
    engine: Engine,
    settings: Settings,
    campaign: str,
    run_id: str | None,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
) -> Pause | None:
    """The pause that refuses this run of ``campaign``, or None to go on (module docs).
    ``now`` (naive UTC; default the real clock, ``careflow.clock.now``) says which days
    are judged."""
    now = now or clock.now().astimezone(UTC).replace(tzinfo=None)
    with engine.connect() as conn:
        found = in_force(conn, campaign)
        if found:
            return found
        dealt_with = conn.execute(
            select(func.max(PAUSES.c.day)).where(
                PAUSES.c.campaign == campaign, PAUSES.c.resumed_at.is_not(None)
            )
        ).scalar()
        today = now.date()
        since = today - timedelta(days=1)
        if dealt_with is not None:
            since = max(since, dealt_with + timedelta(days=1))
        if since > today:
            return None
        domain = sending_domain(settings)
        limit, minimum = settings.spam_rate_limit, settings.spam_rate_min_delivered
        over = [
            d for d in domain_days(conn, domain, since, today)
            if d.verdict(limit, minimum) == "over limit"
        ]  # fmt: skip
    if not over:
        return None
    worst = max(over, key=lambda d: d.spam_reports / d.delivered)
    pause = Pause(
        campaign, domain, worst.day, worst.delivered, worst.spam_reports, limit, minimum,
        None if dry_run else now, run_id, new=not dry_run,
    )  # fmt: skip
    if dry_run:
        return pause
    try:
        with engine.begin() as conn:
            conn.execute(
                insert(PAUSES).values(
                    campaign=campaign, domain=domain, day=worst.day, delivered=worst.delivered,
                    spam_reports=worst.spam_reports, rate_limit=limit, min_delivered=minimum,
                    run_id=run_id, paused_at=now,
                )
            )  # fmt: skip
    except IntegrityError:  # another run of it paused it a moment ago: that pause stands
        with engine.connect() as conn:
            return in_force(conn, campaign) or pause
    return pause


def resume(engine: Engine, campaign: str, note: str | None = None, by: str | None = None) -> Pause:
    """End ``campaign``'s pause, recording who (``by``, default the operating system's
    user) and ``note``; ConfigError in one line when it is not paused."""
    by = (by or _user())[:64]
    with engine.begin() as conn:
        found = in_force(conn, campaign)
        if found is None:
            raise ConfigError(
                f"{campaign} is not paused (`careflow report compliance` lists pauses)"
            )
        conn.execute(
            update(PAUSES)
            .where(PAUSES.c.campaign == campaign, PAUSES.c.resumed_at.is_(None))
            .values(resumed_at=utcnow(), resumed_by=by, resume_note=note)
        )
    return found


def _user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no user name in this environment (a container)
        return "unknown"


def paused_campaigns(engine: Engine) -> list[dict]:
    """The pauses in force, by campaign."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(PAUSES).where(PAUSES.c.resumed_at.is_(None)).order_by(PAUSES.c.campaign)
        ).all()
    return [_pause(r).as_dict() for r in rows]


def history(engine: Engine, campaign: str | None = None) -> list[dict]:
    """Every pause (of ``campaign``), newest first, with who resumed it, when and why."""
    query = select(PAUSES).order_by(PAUSES.c.paused_at.desc(), PAUSES.c.id.desc())
    if campaign is not None:
        query = query.where(PAUSES.c.campaign == campaign)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return [
        {
            **_pause(r).as_dict(),
            "resumed_at": r.resumed_at.isoformat(sep=" ", timespec="seconds")
            if r.resumed_at
            else None,
            "resumed_by": r.resumed_by,
            "resume_note": r.resume_note,
        }
        for r in rows
    ]


def history_table(pauses: list[dict]) -> str:
    """One line per pause: when, which campaign, the day's numbers, and its resume."""
    return text_table(
        ["paused (UTC)", "campaign", "domain", "day", "spam reports", "resumed (UTC)", "by",
         "note"],
        [
            [p["paused_at"], p["campaign"], p["domain"], p["day"],
             f"{p['spam_reports']:,} of {p['delivered']:,} ({percent(p['spam_rate'])})",
             p["resumed_at"] or "paused now", p["resumed_by"] or "-",
             shorten(p["resume_note"] or "-", 60)]
            for p in pauses
        ],
    )  # fmt: skip


def prefect_event(pause: Pause) -> dict:
    """``careflow.campaign.paused`` about the campaign, with the numbers (no addresses)."""
    return {
        "event": "careflow.campaign.paused",
        "resource": {
            "prefect.resource.id": f"careflow.campaign.{pause.campaign}",
            "prefect.resource.name": pause.campaign,
        },
        "related": [
            {
                "prefect.resource.id": f"careflow.domain.{pause.domain}",
                "prefect.resource.role": "sending-domain",
            }
        ],
        "payload": pause.as_dict(),
    }
