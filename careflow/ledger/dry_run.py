"""The ledger as a dry run and a preview see it: every read a real run makes, no ledger write.

A real run's claim counts what its own earlier batches took: their reserved
rows hold addresses (one message per address per occasion) and cap slots. A
dry run reserves nothing, so it keeps what it would take in ``dry_run_holds``
(one row per message it would send, keyed by run id) and counts those rows
as its claims count reserved ones. The table, not the memory of one process,
is what its batches share: they may run on threads of the flow's process or
on Dask workers (careflow/flows/runners.py). ``forget`` drops a run's rows
when it ends; a preview (one claim) keeps nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, delete, or_, select, tuple_

from careflow.clock import utcnow
from careflow.contact_limits import (
    Choice,
    Earlier,
    Intent,
    Key,
    address_holders,
    cap_counts,
    choose,
    lock,
    naive_utc,
)
from careflow.db.models import DryRunHold
from careflow.ledger.plans import insert_rows
from careflow.ledger.state import (
    RESERVATION_LEASE_SECONDS,
    Claim,
    ContactLedger,
    SendRules,
    retry_busy_database,
)
from careflow.messages import State

HOLDS = DryRunHold.__table__

#: what a dry run that died before its end (SIGKILL) would have taken is dropped at the
#: end of any later dry run once it is this old
ABANDONED_AFTER = timedelta(days=1)


class DryRunLedger(ContactLedger):
    """The ledger as a dry run sees it: every read a real run makes, no ledger write.

    ``claim`` reports what is already there exactly as a real claim would and
    "owns" the rest under made-up negative ids; marking, recording and
    settling do nothing. The route cannot tell the difference, which is the
    point: a dry run makes the same decisions as the run it rehearses.
    What its claims would take is kept for the run's later claims, in any
    process (module docs), unless ``remember`` is off (a preview's one claim).
    """

    def __init__(
        self,
        engine: Engine,
        lease_seconds: float = RESERVATION_LEASE_SECONDS,
        clock: Callable[[], datetime] = utcnow,
        *,
        remember: bool = True,
    ):
        super().__init__(engine, lease_seconds, clock)
        self.remember = remember

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
        choice = self._choose(campaign, run_id, mine, intents, rules, now)
        return Claim(owned, already, choice.chosen, choice.shared, choice.capped)

    @retry_busy_database
    def _choose(
        self,
        campaign: str,
        run_id: str,
        mine: Mapping[Key, int],
        intents: Mapping[Key, Intent],
        rules: SendRules,
        now: datetime,
    ) -> Choice:
        """Shared addresses and caps as a real claim checks them (``ContactLedger``), the
        run's holds counted with the ledger's rows, under the same locks; what it would
        take is held for its later claims. A batch tried again decides its keys afresh:
        their earlier holds neither count nor stay."""
        if rules.cap is None and not rules.one_per_address:
            return Choice({k: intents[k].options[0] for k in mine}, {}, {})
        with self.engine.begin() as conn:
            if self.remember:
                if conn.dialect.name == "sqlite":
                    # the write lock from the first statement, as a real claim takes it
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                wanted = {k: intents[k] for k in mine}
                lock(conn, campaign, wanted, rules.cap, rules.one_per_address)
            holders = None
            if rules.one_per_address:
                addresses = [o for k in mine for o in intents[k].options]
                holders = address_holders(conn, campaign, addresses)
                for held in _held_addresses(conn, campaign, run_id, addresses, mine):
                    holders.setdefault((held.channel, held.recipient), []).append(held)
            counted: dict = {}
            if rules.cap is not None:
                counted = cap_counts(conn, [k[0] for k in mine], rules.cap, now)
                for e in _held_slots(conn, run_id, mine, rules.cap.counted):
                    counted.setdefault(e.customer_id, []).append(e)
            choice = choose(
                mine, intents, campaign=campaign, holders=holders, counted=counted,
                cap=rules.cap, now=now,
            )  # fmt: skip
            if self.remember:
                _hold(
                    conn, campaign, run_id, list(mine), choice.chosen, rules.category, now,
                    self.clock(),
                )  # fmt: skip
        return choice

    @retry_busy_database
    def forget(self, run_id: str) -> None:
        """The dry run ``run_id`` has ended: drop what it would have taken, and what dry
        runs that died before their end left ``ABANDONED_AFTER`` ago or more."""
        with self.engine.begin() as conn:
            conn.execute(
                delete(HOLDS).where(
                    or_(
                        HOLDS.c.run_id == run_id,
                        HOLDS.c.created_at < self.clock() - ABANDONED_AFTER,
                    )
                )
            )

    def mark_sending(self, contact_ids, channel, run_id, texts=None, held=None) -> set[int]:
        return set(contact_ids)

    def record(self, outcomes, run_id, details=None) -> None:
        return None

    def unmark_sending(self, contact_ids, run_id) -> int:
        return 0

    def sent_by(self, run_id) -> int:
        return 0

    def resolve_interrupted(self, campaign, keys, run_id) -> int:
        return 0

    def keep_variants(self, drawn: dict[int, str]) -> dict[int, str]:
        return dict(drawn)

    def keep_send_times(self, timed) -> None:
        return None

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


def _held_addresses(conn, campaign, run_id, addresses, mine) -> list[_Held]:
    """The run's holds of these (channel, address) pairs, but those of its keys ``mine``."""
    wanted = set(addresses)
    recipients = sorted({a for _, a in wanted})
    out = []
    for start in range(0, len(recipients), 1000):
        for r in conn.execute(
            select(HOLDS).where(
                HOLDS.c.run_id == run_id,
                HOLDS.c.recipient.in_(recipients[start : start + 1000]),
                HOLDS.c.campaign == campaign,
            )
        ):
            if (r.channel, r.recipient) in wanted and (r.customer_id, r.occasion) not in mine:
                # no ledger row (id 0): it holds the address from the instant it decided at
                held = (r.customer_id, r.occasion, r.channel, r.recipient)
                out.append(_Held(0, *held, State.RESERVED, r.decided_at))
    return out


def _held_slots(conn, run_id, mine, categories) -> list[Earlier]:
    """The run's holds that count towards a cap on the customers of ``mine`` (by category),
    but those of the keys ``mine``: messages it would send now, as a real claim counts
    the reserved rows of its run."""
    ids = sorted({cid for cid, _ in mine})
    out = []
    for start in range(0, len(ids), 1000):
        for r in conn.execute(
            select(HOLDS).where(
                HOLDS.c.run_id == run_id,
                HOLDS.c.customer_id.in_(ids[start : start + 1000]),
                HOLDS.c.category.in_(categories),
            )
        ):
            if (r.customer_id, r.occasion) not in mine:
                out.append(Earlier(0, r.campaign, r.customer_id, r.channel, State.RESERVED, None))
    return out


_HELD_COLUMNS = (
    HOLDS.c.run_id,
    HOLDS.c.customer_id,
    HOLDS.c.occasion,
    HOLDS.c.campaign,
    HOLDS.c.channel,
    HOLDS.c.recipient,
    HOLDS.c.category,
    HOLDS.c.decided_at,
    HOLDS.c.created_at,
)


def _hold(conn, campaign, run_id, keys: list[Key], chosen, category, now, clock) -> None:
    """Hold what the claim of ``keys`` chose, in place of what an earlier attempt held."""
    for start in range(0, len(keys), 500):
        part = keys[start : start + 500]
        conn.execute(
            delete(HOLDS).where(
                HOLDS.c.run_id == run_id,
                HOLDS.c.customer_id.in_(sorted({cid for cid, _ in part})),
                tuple_(HOLDS.c.customer_id, HOLDS.c.occasion).in_(part),
            )
        )
    rows = [
        (run_id, cid, occasion, campaign, channel, address, category, now, clock)
        for (cid, occasion), (channel, address) in chosen.items()
    ]
    insert_rows(conn, HOLDS, _HELD_COLUMNS, rows)
