"""Message and Outcome: the two values that cross the channel seam.

Both are small frozen dataclasses so they pickle cheaply between Prefect
tasks and can be compared in tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class State(StrEnum):
    """Where one ledger row stands. See careflow/ledger/state.py for the transitions."""

    RESERVED = "reserved"  # claimed by a run, not yet handed to a channel
    SENDING = "sending"  # handed to a channel; outcome not yet recorded
    SENT = "sent"
    SKIPPED = "skipped"
    FAILED = "failed"
    DEFERRED = "deferred"  # not now: due at ``not_before``, sent once by a later run
    #: kept out of the campaign for this occasion to measure it (the holdout group): never
    #: contacted for it, final like ``sent`` (careflow/uplift.py compares the two)
    HELD_OUT = "held_out"


@dataclass(frozen=True, slots=True)
class Message:
    """One rendered message for one customer on one channel.

    ``contact_id`` is the ledger row reserved for it; ``key`` is the
    idempotency key (campaign, customer, occasion) that row is unique on.
    """

    contact_id: int
    campaign: str
    customer_id: int
    occasion: str
    channel: str
    to: str
    body: str
    subject: str | None = None
    html: str | None = None
    locale: str = "en"
    marketing: bool = True
    #: the campaign's category (care, marketing, transactional): marketing and care email
    #: carries the preference centre's link; None (not from a campaign) carries none
    category: str | None = None
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def key(self) -> str:
        return f"{self.campaign}:{self.customer_id}:{self.occasion}"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one message. Channels return one per message, never raise."""

    contact_id: int
    state: State
    reason: str | None = None
    provider_id: str | None = None
    retryable: bool = False
    detail: str | None = None
    not_before: datetime | None = None  # deferred: due at this instant (UTC, naive)

    @classmethod
    def sent(cls, contact_id: int, provider_id: str | None = None) -> Outcome:
        return cls(contact_id, State.SENT, provider_id=provider_id)

    @classmethod
    def skipped(cls, contact_id: int, reason: str, detail: str | None = None) -> Outcome:
        return cls(contact_id, State.SKIPPED, reason=reason, detail=detail)

    @classmethod
    def deferred(
        cls, contact_id: int, reason: str, not_before: datetime, detail: str | None = None
    ) -> Outcome:
        return cls(contact_id, State.DEFERRED, reason=reason, detail=detail, not_before=not_before)

    @classmethod
    def held_out(
        cls, contact_id: int, detail: str | None = None, would_send_at: datetime | None = None
    ) -> Outcome:
        """Held out; ``would_send_at`` (kept as ``not_before``, never acted on) is when the
        message would have gone out had the send time deferred it."""
        return cls(
            contact_id, State.HELD_OUT, reason="holdout", detail=detail, not_before=would_send_at
        )

    @classmethod
    def failed(
        cls, contact_id: int, reason: str, *, retryable: bool = False, detail: str | None = None
    ) -> Outcome:
        return cls(contact_id, State.FAILED, reason=reason, retryable=retryable, detail=detail)
