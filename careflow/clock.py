"""What "as of" means for a run: a calendar date and an instant."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

from careflow.errors import ConfigError


def resolve_as_of(as_of: str | date | datetime | None, zone: str) -> tuple[date, datetime]:
    """(calendar date, instant) for a run. A plain date means noon of it in ``zone``;
    nothing means now."""
    tz = ZoneInfo(zone)
    if as_of is None or as_of == "":
        at = datetime.now(UTC)
    elif isinstance(as_of, datetime):
        at = as_of if as_of.tzinfo else as_of.replace(tzinfo=tz)
    elif isinstance(as_of, date):
        at = datetime.combine(as_of, time(12), tzinfo=tz)
    else:
        text = str(as_of).strip()
        try:
            if len(text) == 10:
                at = datetime.combine(date.fromisoformat(text), time(12), tzinfo=tz)
            else:
                parsed = datetime.fromisoformat(text)
                at = parsed if parsed.tzinfo else parsed.replace(tzinfo=tz)
        except ValueError:
            raise ConfigError(
                f"--as-of {as_of!r} is not a date (YYYY-MM-DD) or ISO date-time"
            ) from None
    return at.astimezone(tz).date(), at
