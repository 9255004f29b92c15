"""Provider callbacks turned into careflow events: one module per provider.

Each module does three things only, in the shape django-anymail's webhook
modules made familiar: **verify** a request the way that provider signs it,
**parse** it, and **map** it to :class:`careflow.events.InboundEvent`.

- webhooks/twilio.py: SMS status callbacks and inbound SMS (X-Twilio-Signature)
- webhooks/sendgrid.py: the Event Webhook (Signed Event Webhook, ECDSA)
- webhooks/sinch.py: fax status callbacks (a secret path token; see there)

Nothing here touches the database: de-duplication, delivery-state
precedence, opt-outs and attribution are written once, against the event
type, by whatever receives these events.
"""
