"""Cadence: what a customer asked for in the preference centre about how often we write.

Two choices besides ``normal`` (careflow/preferences.py keeps them, migration 0015):

- ``paused`` until an instant: no marketing message until then, skipped with
  reason ``paused`` (a later run, after the pause, decides again);
- ``fewer``: at most :data:`FEWER_LIMIT` marketing message per :data:`FEWER_DAYS`
  days, over every campaign, counting messages sent in the window and those being
  sent now; a message over it is deferred, reason ``fewer``, until the counted one
  leaves the window (then decided again, like any deferral).

Both govern marketing only (:data:`CADENCE_CATEGORY`): care messages are switched
per channel on the same page, and transactional ones are never held back. They
are the policy table's ``cadence`` rule (careflow/policy/__init__.py), so every
decision is on the ledger with its reason and shown by dry runs and previews; the
ledger checks them again as it marks each message sending (careflow/ledger/state.py
``mark_sending``), so a change made during a run wins for every message not yet
handed to a provider.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

#: what a cadence governs
CADENCE_CATEGORY = "marketing"
#: "fewer": at most this many marketing messages per this many days (the default cap,
#: CAREFLOW_FREQUENCY_CAP, is 2 per 7 days)
FEWER_LIMIT = 1
FEWER_DAYS = 14


@dataclass(frozen=True)
class Cadence:
    """One customer's cadence in force at the run's instant: paused until when (naive
    UTC), or fewer with the marketing messages that count (campaign, channel, sent at
    naive UTC, None while being sent) in the last :data:`FEWER_DAYS` days."""

    cadence: str
    paused_until: datetime | None = None
    counted: tuple[tuple[str, str | None, datetime | None], ...] = ()


def _aware(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


def verdict(cadence: Cadence | None, category: str, now: datetime | None):
    """(action, reason, detail, until) for a message of ``category`` at ``now``, or None
    when the cadence lets it through. ``until`` is aware UTC (a deferral's due time)."""
    if cadence is None or category != CADENCE_CATEGORY or now is None:
        return None
    now = _aware(now)
    if cadence.cadence == "paused" and cadence.paused_until is not None:
        until = _aware(cadence.paused_until)
        if until > now:
            return (
                "skip",
                "paused",
                f"the customer paused marketing until {until:%Y-%m-%d %H:%M} UTC "
                "(preference centre)",
                None,
            )
        return None
    if cadence.cadence != "fewer":
        return None
    window = timedelta(days=FEWER_DAYS)
    counted = [
        (campaign, channel, at)
        for campaign, channel, at in cadence.counted
        if at is None or _aware(at) > now - window
    ]
    if len(counted) < FEWER_LIMIT:
        return None
    times = sorted(_aware(at) if at is not None else now for _, _, at in counted)
    free_at = max(times[len(times) - FEWER_LIMIT] + window, now + timedelta(minutes=1))
    named = "; ".join(
        f"{campaign} {channel or ''} "
        + (f"sent {at:%Y-%m-%d %H:%M} UTC" if at is not None else "being sent now")
        for campaign, channel, at in counted[:3]
    )
    return (
        "defer",
        "fewer",
        f"the customer asked for fewer messages: at most {FEWER_LIMIT} marketing message(s) "
        f"per {FEWER_DAYS} days, {len(counted)} already ({named}); "
        f"sending at {free_at:%Y-%m-%d %H:%M} UTC",
        free_at,
    )
