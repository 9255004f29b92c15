"""What "as of" means for a run: a calendar date and an instant; and the real clock.

``--as-of`` says which day's occasions a run selects and renders. A real
run still sends *now*, so whether a message may go out now (quiet hours,
country windows, a deferral's ``not_before``, frequency caps) is judged at
``now()``, the real clock, never at the as-of instant (docs/policy.md).
Only dry runs and previews judge at the as-of instant, to rehearse a day.

careflow works with dates from 1900-01-01 to 2200-12-31 (``EARLIEST`` and
``LATEST``). That covers any real purchase history and any schedule, and
stays far enough from the ends of Python's calendar (years 1 and 9999) that
shifting an instant into any time zone, or a segment's window of up to ten
years, can never overflow.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Literal
from zoneinfo import ZoneInfo

from careflow.errors import ConfigError

#: calendar periods: a campaign's occasion, a journey's "once per" rule
Period = Literal["yearly", "quarterly", "monthly", "weekly", "daily"]

#: what a run form's ``as_of`` says by default: today's occasions, decided when the run
#: starts (careflow/flows/params.py); read like no date at all
TODAY = "today"
EARLIEST = date(1900, 1, 1)
LATEST = date(2200, 12, 31)


def now() -> datetime:
    """The real clock (aware, UTC): the instant a real run judges send times at. Tests
    replace this function to fake the clock."""
    return datetime.now(UTC)


def utcnow() -> datetime:
    """The real clock as the ledger keeps instants: naive UTC."""
    return datetime.now(UTC).replace(tzinfo=None)


def start_of_day(day: date, zone: str) -> datetime:
    """Midnight at the start of ``day`` in ``zone``, as the ledger keeps instants (naive
    UTC): where a day of the shop's calendar begins for comparisons with the ledger."""
    local = datetime.combine(day, time(), tzinfo=ZoneInfo(zone))
    return local.astimezone(UTC).replace(tzinfo=None)


def period_key(period: Period, day: date) -> str:
    """The period ``day`` falls in, as a ledger key: ``2026``, ``2026-Q4``, ``2026-11``,
    ``2026-W47``, ``2026-11-22``."""
    match period:
        case "yearly":
            return f"{day:%Y}"
        case "quarterly":
            return f"{day.year}-Q{(day.month - 1) // 3 + 1}"
        case "monthly":
            return f"{day:%Y-%m}"
        case "weekly":
            iso = day.isocalendar()
            return f"{iso.year}-W{iso.week:02d}"
        case "daily":
            return day.isoformat()
    raise AssertionError(period)


def check_in_range(day: date | datetime, what: str = "--as-of") -> None:
    """ConfigError unless ``day`` (a date, or an instant's date) lies in EARLIEST..LATEST."""
    plain = day.date() if isinstance(day, datetime) else day
    if not EARLIEST <= plain <= LATEST:
        raise ConfigError(
            f"{what} {day.isoformat()} is outside the dates careflow works with: "
            f"{EARLIEST.isoformat()} to {LATEST.isoformat()}"
        )


def resolve_as_of(as_of: str | date | datetime | None, zone: str) -> tuple[date, datetime]:
    """(calendar date, instant) for a run. A plain date means noon of it in ``zone``;
    nothing (or ``TODAY``, the run form's default) means now. ConfigError for anything
    unreadable or outside EARLIEST..LATEST."""
    tz = ZoneInfo(zone)
    if as_of is None or as_of == "" or as_of == TODAY:
        at = datetime.now(UTC)
    elif isinstance(as_of, datetime):
        check_in_range(as_of)
        at = as_of if as_of.tzinfo else as_of.replace(tzinfo=tz)
    elif isinstance(as_of, date):
        check_in_range(as_of)
        at = datetime.combine(as_of, time(12), tzinfo=tz)
    else:
        text = str(as_of).strip()
        try:
            if len(text) == 10:
                day = date.fromisoformat(text)
                check_in_range(day)
                at = datetime.combine(day, time(12), tzinfo=tz)
            else:
                parsed = datetime.fromisoformat(text)
                check_in_range(parsed)
                at = parsed if parsed.tzinfo else parsed.replace(tzinfo=tz)
        except ValueError:
            raise ConfigError(
                f"--as-of {as_of!r} is not a date (YYYY-MM-DD) or ISO date-time"
            ) from None
    # Both ends are days inside the range, so no zone shift can leave Python's calendar.
    local = at.astimezone(tz)
    check_in_range(local)
    return local.date(), at
