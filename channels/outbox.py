"""The outbox channel: the embedded default, delivering to a local folder.

Every message is written as a readable file under
``<outbox>/<campaign>/<channel>/<customer>-<occasion>.txt`` and reported as
sent with a provider id of ``outbox:<relative path>``. It needs no
credentials, so a fresh clone can run every campaign end to end.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from careflow.messages import Message, Outcome

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


class OutboxChannel:
    name: ClassVar[str] = "outbox"
    max_body_chars: ClassVar[int | None] = None
    rate_per_second: ClassVar[float | None] = None

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def send_batch(self, messages: Sequence[Message]) -> list[Outcome]:
        outcomes = []
        for msg in messages:
            rel = Path(
                _UNSAFE.sub("_", msg.campaign),
                _UNSAFE.sub("_", msg.channel),
                f"{msg.customer_id}-{_UNSAFE.sub('_', msg.occasion)}.txt",
            )
            try:
                path = self.folder / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(self._format(msg), encoding="utf-8")
            except OSError as exc:
                outcomes.append(
                    Outcome.failed(msg.contact_id, "outbox_write_error", detail=str(exc))
                )
            else:
                outcomes.append(
                    Outcome.sent(msg.contact_id, provider_id=f"outbox:{rel.as_posix()}")
                )
        return outcomes

    @staticmethod
    def _format(msg: Message) -> str:
        head = [f"To: {msg.to}", f"Channel: {msg.channel}", f"Key: {msg.key}"]
        if msg.subject:
            head.append(f"Subject: {msg.subject}")
        return "\n".join(head) + "\n\n" + msg.body.rstrip("\n") + "\n"
