"""The recorder: what a dry run hands its messages to instead of a provider.

It accepts every message and keeps it in memory, so a dry run goes through
the same route as a real one (rendering, the channel's checks, counting)
and only the delivery itself is left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from careflow.messages import Message, Outcome


class RecordingChannel:
    name: ClassVar[str] = "recorder"

    def __init__(self) -> None:
        self.messages: list[Message] = []

    def send_batch(self, messages: Sequence[Message]) -> list[Outcome]:
        self.messages.extend(messages)
        return [Outcome.sent(m.contact_id, provider_id="dry-run") for m in messages]
