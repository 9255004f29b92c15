"""What comes back after a send, in one shape whatever the provider.

Each provider module in careflow/webhooks/ does three things only: verify a request
the way that provider signs it, parse it, and map it to :class:`InboundEvent`,
reading the provider's own codes into its normalised fields (``kind``,
``suppress``). Everything after that (de-duplication, delivery-state precedence, opt-out
and suppression, attribution) is written once, against this type.

``event_id`` is what makes an event idempotent: providers retry, duplicate
and reorder, and the same ``(provider, event_id)`` is recorded once. Where a
provider sends no event id (Twilio status callbacks), the module builds one
from what identifies the event (message id and status).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class EventKind(StrEnum):
    """The normalised kinds of event; providers' own names map onto these."""

    QUEUED = "queued"
    SENT = "sent"  # left the provider
    DELIVERED = "delivered"
    DEFERRED = "deferred"  # the receiving side asked to try later
    UNDELIVERED = "undelivered"
    FAILED = "failed"
    BOUNCED = "bounced"
    DROPPED = "dropped"
    OPENED = "opened"
    CLICKED = "clicked"
    SPAM_REPORT = "spam_report"
    UNSUBSCRIBED = "unsubscribed"
    REPLIED = "replied"
    UNKNOWN = "unknown"
    #: the provider sent it, but it could not be read or stored: kept with the reason,
    #: acted on by nobody
    REJECTED = "rejected"


#: Delivery states in the order a message moves through them. A later event of a
#: lower rank never overwrites a higher one (a late "sent" after "delivered").
DELIVERY_RANK: dict[EventKind, int] = {
    EventKind.QUEUED: 1,
    EventKind.SENT: 2,
    EventKind.DEFERRED: 2,
    EventKind.DELIVERED: 3,
    EventKind.UNDELIVERED: 4,
    EventKind.FAILED: 4,
    EventKind.BOUNCED: 4,
    EventKind.DROPPED: 4,
}


@dataclass(frozen=True)
class InboundEvent:
    """One thing a provider told us about a message or a customer."""

    provider: str  # twilio, sendgrid, sinch, careflow (the unsubscribe page)
    kind: EventKind
    event_id: str  # unique per provider: the de-duplication key
    occurred_at: datetime  # UTC, naive (as the ledger stores times)
    channel: str | None = None
    provider_message_id: str | None = None  # what the send recorded as provider_id
    recipient: str | None = None  # the customer's address (never logged)
    contact_key: str | None = None  # careflow's ledger key, where the provider echoes it
    customer_id: int | None = None  # where the source names the customer (unsubscribe links)
    text: str | None = None  # a reply's text
    reason: str | None = None  # error code, bounce reason
    #: the provider's own word that this address is dead for good, as a suppression
    #: reason (``bounced``, ``landline``...): its module reads the provider's codes
    #: (a hard bounce, not a block), so the core acts on this alone
    suppress: str | None = None
    raw: dict = field(default_factory=dict, compare=False, hash=False)  # kept for audit
