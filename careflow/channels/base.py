"""The Channel protocol every delivery channel implements.

A channel:
- has a ``name`` and declares its limits as attributes;
- is declared once in the registry (careflow/registry.py, careflow/channels/__init__.py);
- raises ConfigError at construction for bad configuration;
- ``send_batch(messages)`` returns exactly one Outcome per message, in any
  order, and never raises for one bad recipient; it raises ``ChannelDown``
  (with the outcomes of what it attempted) when it can deliver nothing more;
- may declare ``marks_sending``: then ``send_batch(messages, start)`` calls
  ``start`` (careflow/channels/delivery.py ``Starts``) as each request begins, and
  only then is the message in doubt; otherwise the route marks the whole
  chunk ``sending`` as it hands it over;
- may declare ``send_chunk_size``: how many messages the route marks
  'sending' and hands over at a time; without it, CAREFLOW_SEND_CHUNK_SIZE
  (50), which bounds what a provider has in flight and a crash leaves in
  doubt. The outbox, writing local files, takes 1,000: in chunks of 50 the
  sending marks and outcome records cost it about 25 µs a message more;
- may declare ``matched_by_text = True``: its provider keeps a message log
  that reconciliation reads (careflow/flows/reconcile.py: Twilio) and matches a
  message in doubt by its text, so the route keeps each message's recipient
  and text on its row when it marks it 'sending' (about 40 µs a message on
  SQLite, which other channels do not pay).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Protocol, runtime_checkable

from careflow.messages import Message, Outcome


@runtime_checkable
class Channel(Protocol):
    name: ClassVar[str]

    def send_batch(self, messages: Sequence[Message]) -> list[Outcome]: ...
