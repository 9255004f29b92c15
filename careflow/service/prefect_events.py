"""Every recorded response as a Prefect event, so operators can build automations on them.

``careflow.message.delivered``, ``careflow.message.failed``,
``careflow.message.replied``, ``careflow.customer.opted-out``,
``careflow.customer.opted-in``, ``careflow.order.converted`` (and opens and
clicks), and what the shop posts (``careflow.order.placed``,
``careflow.customer.signed-up``, ``careflow.cart.updated``,
``careflow.event.<name>``; not for events too old to act on), each about a
customer resource (``careflow.customer.<id>``) with the campaign as a related
resource. No contact details travel: an automation
that needs the number looks the customer up.

Emitting is best-effort and off the request path: when no Prefect API is
configured (PREFECT_API_URL) nothing is sent, and a failure to emit never
fails a webhook or a shop's post.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable

log = logging.getLogger(__name__)

#: timeline kind -> Prefect event name (kinds not listed are not emitted)
EVENT_NAMES = {
    "delivered": "careflow.message.delivered",
    "undelivered": "careflow.message.failed",
    "failed": "careflow.message.failed",
    "bounced": "careflow.message.bounced",
    "dropped": "careflow.message.bounced",
    "spam_report": "careflow.message.spam-reported",
    "opened": "careflow.message.opened",
    "clicked": "careflow.message.clicked",
    "replied": "careflow.message.replied",
    "help": "careflow.message.replied",
    "opted_out": "careflow.customer.opted-out",
    "unsubscribed": "careflow.customer.opted-out",
    "opted_in": "careflow.customer.opted-in",
    "converted": "careflow.order.converted",
    # what the shop posts (POST /events, careflow/shop_events.py)
    "order_placed": "careflow.order.placed",
    "signed_up": "careflow.customer.signed-up",
    "cart_updated": "careflow.cart.updated",
}
#: a shop's custom event: timeline kind ``event:<name>``, Prefect event ``careflow.event.<name>``
CUSTOM_PREFIX = "event:"

Recorded = Iterable[tuple[str, int | None, int | None, str | None]]


def prefect_events(recorded: Recorded) -> list[dict]:
    """The Prefect events for recorded (kind, customer, contact, campaign) tuples."""
    out = []
    for kind, customer_id, contact_id, campaign in recorded:
        name = EVENT_NAMES.get(kind)
        if name is None and kind.startswith(CUSTOM_PREFIX):
            name = f"careflow.event.{kind.removeprefix(CUSTOM_PREFIX)}"
        if name is None or customer_id is None:
            continue
        related = (
            [
                {
                    "prefect.resource.id": f"careflow.campaign.{campaign}",
                    "prefect.resource.role": "campaign",
                }
            ]
            if campaign
            else []
        )
        if contact_id is not None:
            related.append(
                {
                    "prefect.resource.id": f"careflow.message.{contact_id}",
                    "prefect.resource.role": "message",
                }
            )
        out.append(
            {
                "event": name,
                "resource": {
                    "prefect.resource.id": f"careflow.customer.{customer_id}",
                    "prefect.resource.name": f"customer {customer_id}",
                },
                "related": related,
                "payload": {"kind": kind, "campaign": campaign},
            }
        )
    return out


def _prefect_emit(event: dict) -> None:
    from prefect.events import emit_event

    emit_event(**event)


def emit(recorded: Recorded, emitter: Callable[[dict], None] | None = None) -> int:
    """Emit what was recorded; returns how many events went out (0 without a Prefect API)."""
    if emitter is None:
        if not os.environ.get("PREFECT_API_URL"):
            return 0
        emitter = _prefect_emit
    sent = 0
    for event in prefect_events(recorded):
        try:
            emitter(event)
            sent += 1
        except Exception as exc:  # an unreachable Prefect must not fail a webhook
            log.warning("could not emit %s: %s", event["event"], type(exc).__name__)
            break
    return sent
