"""SendGrid's Event Webhook as SendGrid posts it: every documented event type with its
documented fields (tests/webhooks/payloads.py), signed, over real HTTP."""

from __future__ import annotations

from tests.factories import add_customer
from tests.service.test_serve import events, row, sendgrid_post, sent, suppressed
from tests.webhooks.payloads import SENDGRID_EVENTS, sendgrid_blocked, sendgrid_event


def test_a_blocked_bounce_does_not_suppress_and_a_hard_one_does(served, engine, sendgrid_keys):
    """SendGrid's bounce of type "blocked" is the receiving server's temporary no; it
    suppressed the address for good because the bounce's reason text hid its type."""
    private, _ = sendgrid_keys
    add_customer(engine, 1, email="ann@example.com")
    add_customer(engine, 2, email="bob@example.com")
    c1 = sent(engine, 1, "vip_care", "email", "ann@example.com", "MSGANN")
    sent(engine, 2, "vip_care", "email", "bob@example.com", "MSGBOB")
    batch = [
        sendgrid_blocked("ann@example.com", 1, sg_message_id="MSGANN.filter0"),
        sendgrid_event("bounce", "bob@example.com", 2, sg_message_id="MSGBOB.filter0"),
    ]
    assert sendgrid_post(served, batch, private)[0] == 204
    assert suppressed(engine) == {("email", "bob@example.com"): "bounced"}
    assert row(engine, c1).delivery_state == "bounced"  # this message did not arrive
    assert [e.detail.split(":")[0] for e in events(engine)] == ["blocked", "bounce"]


def test_every_documented_event_is_recorded(served, engine, sendgrid_keys):
    private, _ = sendgrid_keys
    add_customer(engine, 1, email="ann@example.com")
    sent(engine, 1, "vip_care", "email", "ann@example.com", "14c5d75ce93dfd64b469")
    batch = [sendgrid_event(name, "ann@example.com", n, careflow_key="vip_care:1:2026")
             for n, name in enumerate(SENDGRID_EVENTS)]
    assert sendgrid_post(served, batch, private)[0] == 204
    assert len(events(engine)) == len(SENDGRID_EVENTS)
    assert all(e.contact_id is not None for e in events(engine))


def test_an_unreadable_event_costs_only_itself(served, engine, sendgrid_keys):
    """One element without sg_event_id, or with a timestamp that is no time, made the
    whole post a 400: SendGrid retried it for a day and its good events were lost."""
    private, _ = sendgrid_keys
    add_customer(engine, 1, email="bob@example.com")
    sent(engine, 1, "vip_care", "email", "bob@example.com", "MSGBOB")
    bounce = sendgrid_event("bounce", "bob@example.com", 1, sg_message_id="MSGBOB.filter0")
    batch = [{"event": "delivered", "email": "bob@example.com"}, bounce,
             sendgrid_event("open", "bob@example.com", 2, timestamp="soon")]
    assert sendgrid_post(served, batch, private)[0] == 204
    assert suppressed(engine) == {("email", "bob@example.com"): "bounced"}
    kinds = sorted(e.kind for e in events(engine))
    assert kinds == ["bounced", "rejected", "rejected"]
    assert sendgrid_post(served, batch, private)[0] == 204  # SendGrid's retry: nothing new
    assert len(events(engine)) == 3
