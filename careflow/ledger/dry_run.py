"""The ledger as a dry run and a preview see it: every read a real run makes, no write."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from careflow.contact_limits import address_holders, cap_counts, choose, naive_utc
from careflow.ledger.state import Claim, ContactLedger, SendRules
from careflow.messages import State


class DryRunLedger(ContactLedger):
    """The ledger as a dry run sees it: every read a real run makes, no write.

    ``claim`` reports what is already there exactly as a real claim would and
    "owns" the rest under made-up negative ids; marking, recording and
    settling do nothing. The route cannot tell the difference, which is the
    point: a dry run makes the same decisions as the run it rehearses.
    Addresses a dry run would take are remembered for the run (its batches
    share this process), so customers sharing an address in different
    batches are counted as the real run would count them.
    """

    _taken: ClassVar[dict[str, dict[tuple[str, str], list]]] = {}
    _taken_lock: ClassVar[threading.Lock] = threading.Lock()

    def claim(self, campaign, run_id, keys, chunk: int = 2000, *, now=None, intents=None,
              rules: SendRules = SendRules(), selected_at=None,
              only_channel=None) -> Claim:  # fmt: skip
        now = naive_utc(now) if now is not None else self.clock()
        already = self.peek(campaign, keys, now=now)
        fresh = [k for k in dict.fromkeys(keys) if k not in already]
        owned = {k: -(i + 1) for i, k in enumerate(fresh)}
        mine = {k: owned[k] for k in owned if intents and k in intents}
        if not mine:
            return Claim(owned, already)
        holders, counted = None, {}
        with self.engine.connect() as conn:
            if rules.one_per_address:
                holders = address_holders(
                    conn, campaign, [o for k in mine for o in intents[k].options]
                )
            if rules.cap is not None:
                counted = cap_counts(conn, [k[0] for k in mine], rules.cap, now)
        with self._taken_lock:
            taken = self._taken.setdefault(run_id, {})
            if holders is not None:
                for address, rows in taken.items():
                    holders.setdefault(address, []).extend(rows)
            choice = choose(
                mine, intents, campaign=campaign, holders=holders, counted=counted,
                cap=rules.cap, now=now,
            )
            for key, (channel, address) in choice.chosen.items():
                taken.setdefault((channel, address), []).append(
                    _Held(owned[key], key[0], key[1], channel, address, State.RESERVED, now)
                )
        return Claim(owned, already, choice.chosen, choice.shared, choice.capped)

    @classmethod
    def forget(cls, run_id: str) -> None:
        """Drop what a finished dry run remembered."""
        with cls._taken_lock:
            cls._taken.pop(run_id, None)

    def mark_sending(self, contact_ids, channel, run_id, texts=None) -> set[int]:
        return set(contact_ids)

    def record(self, outcomes, run_id, details=None) -> None:
        return None

    def unmark_sending(self, contact_ids, run_id) -> int:
        return 0

    def sent_by(self, run_id) -> int:
        return 0

    def resolve_interrupted(self, campaign, keys, run_id) -> int:
        return 0

    def release(self, run_id, reason="run_stopped") -> tuple[int, int]:
        return 0, 0

    def settle_abandoned(self) -> tuple[int, int]:
        return 0, 0

    def settle_deferred(self, campaign, keys, reason, detail) -> int:
        return 0


@dataclass(frozen=True)
class _Held:
    """An address a dry run would take, shaped like a ledger row for ``choose``."""

    id: int
    customer_id: int
    occasion: str
    channel: str
    recipient: str
    state: str
    updated_at: datetime
    sent_at: datetime | None = None
    not_before: datetime | None = None
