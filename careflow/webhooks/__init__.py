"""Provider callbacks turned into careflow events: one module per provider.

Each module does what its provider needs and nothing else, in the shape
django-anymail's webhook modules made familiar: **verify** a request the way
that provider signs it, **parse** it, and **map** it to
:class:`careflow.events.InboundEvent`, reading the provider's own codes
(statuses, bounce types, error codes) into the event's ``kind`` and
``suppress``. It ends with its ``PROVIDER`` entry (careflow/webhooks/registry.py):
its routes, settings, pre-check, body bound, content types and answers.

- careflow/webhooks/twilio.py: SMS status callbacks and inbound SMS (X-Twilio-Signature)
- careflow/webhooks/sendgrid.py: the Event Webhook (Signed Event Webhook, ECDSA)
- careflow/webhooks/sinch.py: fax status callbacks (a secret path token; see there)

careflow/webhooks/bodies.py decodes bodies (bounded JSON, urlencoded and multipart
forms). Nothing here touches the database or HTTP: careflow serve
(careflow/service/app.py) serves every registered provider, and de-duplication,
delivery-state precedence, opt-outs and attribution are written once,
against the event type, by whatever receives these events.
"""

from __future__ import annotations

from careflow.webhooks import registry, sendgrid, sinch, twilio

# in this order careflow serve lists them when it starts
for _module in (twilio, sendgrid, sinch):
    registry.register(_module.PROVIDER)
