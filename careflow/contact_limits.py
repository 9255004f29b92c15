"""The two policy decisions that count other messages, made when the ledger reserves a send.

- **One message per address per occasion**: customers who share a phone or
  email (a household, a shop's front desk) get one message of a campaign
  per occasion at that address. Another customer's message *holds* the
  address when it is sent, being sent, reserved to send, or deferred; for
  ``last_purchase`` occasions any message of the campaign to that address
  since this customer's purchase day began (midnight in the shop's zone)
  holds it.
- **Frequency caps across campaigns**: at most N messages of the counted
  categories per customer (or per customer and channel) per rolling D
  days: sent ones within the window plus those reserved or being sent now.

Both are checked inside the claim's transaction, under locks that make
two runs wait for each other instead of both taking the last slot:
PostgreSQL transaction-scoped advisory locks on each customer (caps) and
each address (sharing), hashed into :data:`LOCK_SLOTS` slots and taken in
one sorted order so runs cannot deadlock; on SQLite the claim holds the
database's write lock from its first statement (``BEGIN IMMEDIATE``). The
counting queries run after the locks are granted, so they see what the
run that held them committed.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import BigInteger, and_, bindparam, func, or_, select, text, true

from careflow.db.models import ContactHistory
from careflow.db.sqlfunc import unindexed
from careflow.messages import State

CH = ContactHistory.__table__

Key = tuple[int, str]  # (customer_id, occasion)


@dataclass(frozen=True)
class Intent:
    """What the route would send for one key: its usable (channel, address) options in
    preference order, and, for ``last_purchase`` occasions, the instant the occasion
    began: the start of the purchase day in the shop's zone, naive UTC as the ledger
    keeps instants (``careflow.clock.start_of_day``)."""

    options: tuple[tuple[str, str], ...]
    occasion_since: datetime | None = None


@dataclass(frozen=True)
class Earlier:
    """A message that decided another: it holds a shared address, or counts towards a cap."""

    contact_id: int
    campaign: str
    customer_id: int
    channel: str | None
    state: str
    at: datetime | None  # sent, due (deferred) or reserved at; naive UTC

    def describe(self) -> str:
        when = f" {self.at:%Y-%m-%d %H:%M} UTC" if self.at else ""
        what = {
            State.SENT: "sent",
            State.DEFERRED: "deferred to",
        }.get(self.state, "reserved to send now")
        if self.state not in (State.SENT, State.DEFERRED):
            when = ""
        return f"{self.campaign} {self.channel or ''} to customer {self.customer_id}, {what}{when}"


@dataclass(frozen=True)
class Capped:
    """A send the cap holds back: the messages counted, and when a slot frees (None: never)."""

    earlier: tuple[Earlier, ...]
    free_at: datetime | None  # naive UTC


@dataclass(frozen=True)
class CapCheck:
    """The cap as the ledger applies it (careflow.policy.config.CapRule carries the same)."""

    limit: int
    days: int
    per_channel: bool
    counted: tuple[str, ...]


@dataclass
class Choice:
    """What the checks decided for the keys with intents."""

    chosen: dict[Key, tuple[str, str]]
    shared: dict[Key, Earlier]
    capped: dict[Key, Capped]


def naive_utc(instant: datetime) -> datetime:
    return instant if instant.tzinfo is None else instant.astimezone(UTC).replace(tzinfo=None)


#: advisory lock slots the checks hash customers and addresses into. Every lock
#: held takes a slot in PostgreSQL's shared lock table (max_locks_per_transaction x
#: max_connections, 6,400 by default), so a claim of 2,000 customers must not take
#: one per customer; two claims that share a slot merely wait for each other.
LOCK_SLOTS = 128
_LOCK_BASE = 0x6361_7265_0000  # "care": keeps careflow's advisory locks apart from others'


def _lock_key(*parts: object) -> int:
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return _LOCK_BASE + int.from_bytes(digest, "big") % LOCK_SLOTS


def lock(conn, campaign: str, intents: Mapping[Key, Intent], cap, one_per_address: bool) -> None:
    """PostgreSQL: wait for every other claim touching these customers' caps or these
    addresses to commit. SQLite needs nothing here: the claim holds the write lock."""
    if conn.dialect.name != "postgresql":
        return
    keys: set[int] = set()
    for (customer_id, _), intent in intents.items():
        if cap is not None:
            keys.add(_lock_key("cap", customer_id))
        if one_per_address:
            keys |= {_lock_key("address", campaign, ch, addr) for ch, addr in intent.options}
    if not keys:
        return
    from sqlalchemy.dialects.postgresql import ARRAY

    ordered = sorted(keys)  # one order for every run: no deadlocks between claims
    conn.execute(
        text(
            "SELECT count(pg_advisory_xact_lock(k)) FROM "
            "(SELECT unnest(CAST(:keys AS bigint[])) AS k ORDER BY 1) AS ordered"
        ).bindparams(bindparam("keys", ordered, type_=ARRAY(BigInteger)))
    )


def _in_flight():
    """Rows that hold a slot: reserved to send (a recipient chosen) or being sent."""
    return and_(
        unindexed(CH.c.state).in_([State.RESERVED, State.SENDING]), CH.c.recipient.is_not(None)
    )


def address_holders(conn, campaign: str, addresses: Iterable[tuple[str, str]]):
    """(channel, address) -> the campaign's messages that hold it (sent, in flight, deferred)."""
    out: dict[tuple[str, str], list] = defaultdict(list)
    by_channel: dict[str, list[str]] = defaultdict(list)
    for ch, addr in set(addresses):
        by_channel[ch].append(addr)
    cols = (
        CH.c.id,
        CH.c.customer_id,
        CH.c.occasion,
        CH.c.channel,
        CH.c.recipient,
        CH.c.state,
        CH.c.sent_at,
        CH.c.not_before,
        CH.c.updated_at,
    )
    # Sent, in flight (reserved with a recipient chosen, or sending) or deferred with
    # one: a row found by its recipient has one. The rows are found through the
    # address index alone: written plainly, the campaign and state tests sent SQLite
    # (no statistics) and PostgreSQL (statistics from before the run) through the
    # unique key or the state index, a walk of every row the campaign had sent, each
    # batch: the Christmas run at a million customers settled 1,054-1,199 a second
    # on SQLite, and 3,071 without that walk (bench/README.md).
    holding = unindexed(CH.c.state).in_(
        [State.SENT, State.RESERVED, State.SENDING, State.DEFERRED]
    )
    for ch, found in by_channel.items():
        for start in range(0, len(found), 1000):
            for r in conn.execute(
                select(*cols).where(
                    CH.c.recipient.in_(found[start : start + 1000]),
                    unindexed(CH.c.campaign) == campaign,
                    CH.c.channel == ch,
                    holding,
                )
            ):
                out[(ch, r.recipient)].append(r)
    return out


def cap_counts(conn, customer_ids: Sequence[int], cap: CapCheck, now: datetime):
    """customer_id -> the messages that count towards ``cap`` at ``now``."""
    out: dict[int, list[Earlier]] = defaultdict(list)
    if not customer_ids:
        return out
    since = naive_utc(now) - timedelta(days=cap.days)
    where = and_(
        CH.c.category.in_(cap.counted),
        # the customers' rows are found by customer: a state test an index could serve
        # walked every sent row of every campaign instead (see address_holders)
        or_(and_(unindexed(CH.c.state) == State.SENT, CH.c.sent_at >= since), _in_flight()),
    )
    cols = (CH.c.id, CH.c.customer_id, CH.c.campaign, CH.c.channel, CH.c.state, CH.c.sent_at)
    ids = sorted(set(customer_ids))
    for start in range(0, len(ids), 2000):
        part = ids[start : start + 2000]
        if conn.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import ARRAY

            batch = func.unnest(bindparam("cap_ids", part, type_=ARRAY(BigInteger)))
            k = batch.table_valued("cid").render_derived(name="k")
            # each customer looked up on its own: joined, a planner that believed the
            # ledger empty read all of it once per customer (careflow/ledger/plans.py,
            # keys_query)
            hit = select(*cols).where(CH.c.customer_id == k.c.cid, where).offset(0).lateral()
            query = select(hit).select_from(k).join(hit, true())
        else:
            query = select(*cols).where(CH.c.customer_id.in_(part), where)
        for r in conn.execute(query):
            out[r.customer_id].append(
                Earlier(r.id, r.campaign, r.customer_id, r.channel, r.state, r.sent_at)
            )
    return out


def _holds(row, key: Key, intent: Intent) -> bool:
    if row.customer_id == key[0]:
        return False
    if row.occasion == key[1]:
        return True
    if intent.occasion_since is None:
        return False
    at = row.sent_at or row.not_before or row.updated_at
    return at is not None and at >= intent.occasion_since


def choose(
    owned: Mapping[Key, int],
    intents: Mapping[Key, Intent],
    *,
    campaign: str,
    holders,
    counted,
    cap: CapCheck | None,
    now: datetime,
) -> Choice:
    """For each owned key with an intent: the first option whose address is free and whose
    cap has room, else why not. Keys go in customer order, so who wins is reproducible."""
    out = Choice({}, {}, {})
    now = naive_utc(now)
    taken_here: dict[tuple[str, str], Earlier] = {}
    for key in sorted(k for k in owned if k in intents):
        intent = intents[key]
        blocked: Earlier | None = None
        over: Capped | None = None
        for option in intent.options:
            holder = taken_here.get(option) if holders is not None else None
            if holder is None and holders is not None:
                row = next((r for r in holders.get(option, ()) if _holds(r, key, intent)), None)
                if row is not None:
                    holder = Earlier(
                        row.id,
                        campaign,
                        row.customer_id,
                        row.channel,
                        row.state,
                        row.sent_at or row.not_before or row.updated_at,
                    )
            if holder is not None and holder.customer_id != key[0]:
                blocked = blocked or holder
                continue
            if cap is not None:
                mine = counted.get(key[0], [])
                relevant = [e for e in mine if not cap.per_channel or e.channel == option[0]]
                if len(relevant) >= cap.limit:
                    over = over or _capped(relevant, cap, now)
                    if cap.per_channel:
                        continue
                    break
            out.chosen[key] = option
            if holders is not None:
                taken_here[option] = Earlier(
                    owned[key], campaign, key[0], option[0], State.RESERVED, now
                )
            counted.setdefault(key[0], []).append(
                Earlier(owned[key], campaign, key[0], option[0], State.RESERVED, None)
            )
            break
        if key in out.chosen:
            continue
        if over is not None:
            out.capped[key] = over
        elif blocked is not None:
            out.shared[key] = blocked
    return out


def _capped(relevant: list[Earlier], cap: CapCheck, now: datetime) -> Capped:
    if cap.limit == 0:
        return Capped(tuple(relevant), None)
    # a slot frees when enough of the counted messages have left the rolling window;
    # one still being sent counts from now
    times = sorted(e.at or now for e in relevant)
    free_at = times[len(times) - cap.limit] + timedelta(days=cap.days)
    return Capped(tuple(sorted(relevant, key=lambda e: e.at or now)), max(free_at, now))


def write_choices(conn, owned: Mapping[Key, int], chosen: Mapping[Key, tuple[str, str]]) -> None:
    """Record each chosen channel and address on its reserved row: from here it holds the
    address and counts towards caps, for every other claim."""
    if not chosen:
        return
    if conn.dialect.name == "postgresql":  # one statement: psycopg runs executemany row by row
        from sqlalchemy.dialects.postgresql import ARRAY

        rows = [(owned[k], ch, addr) for k, (ch, addr) in chosen.items()]
        ids, channels, recipients = (list(col) for col in zip(*rows, strict=True))
        c = (
            func.unnest(
                bindparam("c_ids", ids, type_=ARRAY(BigInteger)),
                bindparam("c_channels", channels, type_=ARRAY(CH.c.channel.type)),
                bindparam("c_recipients", recipients, type_=ARRAY(CH.c.recipient.type)),
            )
            .table_valued("id", "channel", "recipient")
            .render_derived(name="c")
        )
        conn.execute(
            CH.update()
            .where(CH.c.id == c.c.id)
            .values(channel=c.c.channel, recipient=c.c.recipient)
        )
        return
    conn.execute(
        CH.update()
        .where(CH.c.id == bindparam("b_id"))
        .values(channel=bindparam("b_channel"), recipient=bindparam("b_recipient")),
        [
            {"b_id": owned[k], "b_channel": ch, "b_recipient": addr}
            for k, (ch, addr) in chosen.items()
        ],
    )
