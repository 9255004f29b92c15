"""The Channel protocol every delivery channel implements.

A channel:
- has a ``name`` and declares its limits as attributes;
- is declared once in the registry (careflow/registry.py, channels/__init__.py);
- raises ConfigError at construction for bad configuration;
- ``send_batch(messages)`` returns exactly one Outcome per message, in any
  order, and never raises for one bad recipient.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Protocol, runtime_checkable

from careflow.messages import Message, Outcome


@runtime_checkable
class Channel(Protocol):
    name: ClassVar[str]
    #: longest body the channel accepts (characters), None if unlimited
    max_body_chars: ClassVar[int | None]
    #: messages per second the provider allows this account, None if unlimited
    rate_per_second: ClassVar[float | None]

    def send_batch(self, messages: Sequence[Message]) -> list[Outcome]: ...
