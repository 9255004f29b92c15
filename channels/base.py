"""The Channel protocol every delivery channel implements.

A channel:
- has a ``name`` and declares its limits as attributes;
- says which customer field it delivers to (``contact_field``);
- raises ConfigError at construction for bad configuration;
- ``send_batch(messages)`` returns exactly one Outcome per message, in any
  order, and never raises for one bad recipient.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Protocol, runtime_checkable

from careflow.messages import Message, Outcome

# Which customer column each channel delivers to. The outbox simulates
# whatever the campaign would have used, so it accepts any contact point.
CONTACT_FIELD = {"sms": "mobile", "email": "email", "fax": "fax", "outbox": None}


@runtime_checkable
class Channel(Protocol):
    name: ClassVar[str]
    #: longest body the channel accepts (characters), None if unlimited
    max_body_chars: ClassVar[int | None]
    #: messages per second the provider allows this account, None if unlimited
    rate_per_second: ClassVar[float | None]

    def send_batch(self, messages: Sequence[Message]) -> list[Outcome]: ...
