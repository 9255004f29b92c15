"""When a message may go out: quiet hours and country sending windows, in the customer's zone.

Everything here works on the customer's *local wall clock* (their IANA
zone, or the business zone when they have none) and answers two questions
for an instant: is it allowed now, and if not, what is the next allowed
instant. The answer is exact across DST changes: local boundaries (09:00,
midnight) are turned into instants with both folds of an ambiguous hour,
and a boundary that falls into a spring-forward gap becomes the instant
the gap ends (the first wall-clock time at or after it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_NAMES = ("Mondays", "Tuesdays", "Wednesdays", "Thursdays", "Fridays", "Saturdays", "Sundays")
_HOURS = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")

#: how far ahead the next allowed time is looked for before giving up
SEARCH_DAYS = 400


@dataclass(frozen=True)
class Hours:
    """A daily span of local time, ``start`` inclusive to ``end`` exclusive; it may wrap
    midnight (21:00-09:00). ``08:00-00:00`` runs to midnight."""

    start: time
    end: time

    @classmethod
    def parse(cls, text: str) -> Hours:
        """``"21:00-09:00"``; ValueError saying what is wrong."""
        m = _HOURS.match(str(text))
        if not m:
            raise ValueError(f"{text!r} is not a span of hours such as 21:00-09:00")
        h1, m1, h2, m2 = (int(g) for g in m.groups())
        if h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59:
            raise ValueError(f"{text!r}: hours run 00:00 to 23:59")
        if (h1, m1) == (h2, m2):
            raise ValueError(f"{text!r} starts and ends at the same time")
        return cls(time(h1, m1), time(h2, m2))

    def contains(self, t: time) -> bool:
        if self.start < self.end:
            return self.start <= t < self.end
        return t >= self.start or t < self.end

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


@dataclass(frozen=True)
class Holidays:
    """Days a country's window is closed: fixed dates, days relative to Easter, one-off dates."""

    fixed: frozenset[tuple[int, int]] = frozenset()  # (month, day)
    easter: frozenset[int] = frozenset()  # days after Western Easter Sunday (-2: Good Friday)
    dates: frozenset[date] = frozenset()

    def __contains__(self, day: date) -> bool:
        if (day.month, day.day) in self.fixed or day in self.dates:
            return True
        return bool(self.easter) and (day - easter_sunday(day.year)).days in self.easter


@lru_cache(maxsize=512)
def easter_sunday(year: int) -> date:
    """Western (Gregorian) Easter Sunday: the anonymous Gregorian computus."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = divmod(b, 4)
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    ell = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * ell) // 451
    month, day = divmod(h + ell - 7 * m + 114, 31)
    return date(year, month, day + 1)


@dataclass(frozen=True)
class Window:
    """When a country allows messages of some categories on some channels (shipped as data)."""

    country: str
    days: frozenset[int] = frozenset(range(7))  # 0 = Monday
    hours: Hours | None = None
    holidays: Holidays | None = None  # closed on these
    channels: frozenset[str] | None = None  # None: every channel
    categories: frozenset[str] = frozenset({"marketing", "care"})
    source: str = ""

    def applies(self, channel: str, category: str) -> bool:
        return category in self.categories and (self.channels is None or channel in self.channels)


@dataclass(frozen=True)
class Blocked:
    """Why a local time is not allowed: a reason code and a sentence for the ledger."""

    reason: str  # quiet_hours | sending_window
    detail: str


def zone_of(name: str | None, business_zone: str) -> tuple[ZoneInfo, str | None]:
    """The customer's zone, or the business zone; the second value says why it was replaced."""
    if name:
        try:
            return ZoneInfo(name), None
        except (ZoneInfoNotFoundError, ValueError):
            return ZoneInfo(business_zone), f"time zone {name[:40]!r} unknown, used {business_zone}"
    return ZoneInfo(business_zone), None


def blocked_at(local: datetime, quiet: Hours | None, window: Window | None) -> Blocked | None:
    """Why ``local`` (an aware local time) is not allowed, or None when it is."""
    if quiet is not None and quiet.contains(local.time()):
        return Blocked("quiet_hours", f"quiet hours {quiet} in {local.tzinfo}")
    if window is None:
        return None
    day = local.date()
    if local.weekday() not in window.days:
        return Blocked("sending_window", f"{window.country}: none on {_DAY_NAMES[local.weekday()]}")
    if window.holidays is not None and day in window.holidays:
        return Blocked("sending_window", f"{window.country}: {day} is a public holiday")
    if window.hours is not None and not window.hours.contains(local.time()):
        return Blocked("sending_window", f"{window.country}: only {window.hours} local time")
    return None


def _aware_utc(instant: datetime) -> datetime:
    return instant.replace(tzinfo=UTC) if instant.tzinfo is None else instant.astimezone(UTC)


def _first_instant_at_or_after(day: date, t: time, zone: ZoneInfo) -> list[datetime]:
    """The UTC instants where the local clock reads ``day t`` (two in a repeated hour),
    or, inside a spring-forward gap, the instant the gap ends."""
    early = datetime.combine(day, t, tzinfo=zone).replace(fold=1).astimezone(UTC)
    late = datetime.combine(day, t, tzinfo=zone).astimezone(UTC)
    wall = datetime.combine(day, t)
    if late.astimezone(zone).replace(tzinfo=None) == wall:
        return [early, late] if early != late else [late]
    # a gap: fold=1 lands before it, fold=0 after; find where the clock jumps past ``wall``
    lo, hi = min(early, late), max(early, late)
    while hi - lo > timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        if mid.astimezone(zone).replace(tzinfo=None) >= wall:
            hi = mid
        else:
            lo = mid
    return [hi.replace(microsecond=0)]


def next_allowed(
    now: datetime, zone: ZoneInfo, quiet: Hours | None, window: Window | None
) -> datetime | None:
    """The first instant at or after ``now`` allowed by both; None if none within a year.

    ``now`` may be naive UTC or aware; the answer is aware UTC.
    """
    return _next_allowed(_aware_utc(now), zone, quiet, window)


@lru_cache(maxsize=4096)
def _next_allowed(now: datetime, zone: ZoneInfo, quiet, window) -> datetime | None:
    if blocked_at(now.astimezone(zone), quiet, window) is None:
        return now
    marks = {time(0)}
    for span in (quiet, window.hours if window else None):
        if span is not None:
            marks |= {span.start, span.end}
    first = now.astimezone(zone).date()
    # a week of local days at a time, one day of overlap so a repeated hour at midnight
    # cannot hide a candidate between two chunks
    for offset in range(0, SEARCH_DAYS, 7):
        candidates = sorted(
            c
            for k in range(offset - 1, offset + 8)
            for t in marks
            for c in _first_instant_at_or_after(first + timedelta(days=k), t, zone)
            if c > now
        )
        for c in candidates:
            if blocked_at(c.astimezone(zone), quiet, window) is None:
                return c
    return None


def describe_local(instant: datetime, zone: ZoneInfo) -> str:
    """``2026-11-23 09:00 Europe/London (09:00 UTC)``: for a marketer reading the ledger."""
    local = instant.astimezone(zone)
    utc = instant.astimezone(UTC)
    same_day = local.date() == utc.date()
    when_utc = f"{utc:%H:%M}" if same_day else f"{utc:%Y-%m-%d %H:%M}"
    return f"{local:%Y-%m-%d %H:%M} {zone} ({when_utc} UTC)"
