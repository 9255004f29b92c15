"""ContactLedger: the contact history, and the only judge of what still needs sending.

One row per (campaign, customer, occasion). A row moves:

    (none) --claim--> reserved --mark_sending--> sending --record--> sent | failed
                          \\------------------------record--> skipped | failed | deferred | held_out

- ``deferred`` (quiet hours, a country's sending window, a frequency cap)
  carries ``not_before``: once that instant has passed, the next claim of
  the key, by a run of the campaign or the follow-up flow, takes it like a
  skipped row, decides again and sends it; only one claim can win it. A
  deferred row a run has taken keeps its ``not_before`` (and reason) until
  its outcome is recorded, so it stays the follow-up's to find: a run that
  dies holding it leaves it ``reserved`` for the next follow-up to take over
  once the lease has passed (``due_deferred``), and a run that stops puts
  it back as ``deferred`` (``release``). A failure keeps it too: one in
  doubt that reconciliation (or a person) releases, or a retryable one, is
  the follow-up's to send again. ``only_channel`` (the run's ``--channel``)
  travels with it.

- ``held_out`` (the campaign's holdout for this occasion, careflow/policy/holdout.py)
  is final like ``sent``: no claim takes it again, so nobody held out is ever
  contacted for that occasion. Its ``not_before`` says when the message would
  have gone out (careflow/uplift.py waits for it); nothing acts on it.

- ``claim`` inserts rows for keys never seen and re-claims rows that may be
  tried again: skipped (a customer may have gained a phone or consent),
  failed with ``retryable``, and ``reserved`` rows left behind by a run that
  died before handing them to a channel. It returns only the rows *this* run
  now owns; everything else is reported back as already handled.
- ``mark_sending`` happens just before the channel call. A row still in
  ``sending`` after its run died may or may not have reached the customer
  (the provider may have accepted it before the crash). Those rows are never
  sent again automatically: ``resolve_interrupted`` marks them
  ``failed: interrupted`` so a person decides. Never messaging a customer
  twice is worth more than never missing one.

Writes use SQLAlchemy Core executemany (tens of thousands of rows/s on
SQLite); the ORM is ~10x slower here.
"""

from __future__ import annotations

import functools
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import ClassVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Engine,
    String,
    Text,
    and_,
    bindparam,
    case,
    column,
    false,
    func,
    literal,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.exc import OperationalError

from careflow.clock import utcnow
from careflow.contact_limits import (
    CapCheck,
    Capped,
    Choice,
    Earlier,
    Intent,
    address_holders,
    cap_counts,
    choose,
    lock,
    naive_utc,
    write_choices,
)
from careflow.db.models import ContactEvent, ContactHistory, Order
from careflow.db.sqlfunc import unindexed
from careflow.errors import DataError
from careflow.messages import Outcome, State
from careflow.money import from_minor
from careflow.tables import shorten

CH = ContactHistory.__table__

_OUTCOME_COLUMNS = (
    column("id", BigInteger),
    column("state", String),
    column("reason", String),
    column("retryable", Boolean),
    column("detail", Text),
    column("provider_id", String),
    column("sent_at", DateTime),
    column("channel", String),
    column("recipient", String),
    column("subject", String),
    column("body", Text),
    column("not_before", DateTime),
)

def _kept_due(state, not_before):
    """The ``not_before`` an outcome writes: its own, and for a failure the row's own as
    well, so a deferred message that failed (in doubt, or retryably) stays one: once
    released (reconciliation, ``careflow retry``) or when retryable, the follow-up
    sends it (``ContactLedger.due_deferred``)."""
    return case((state == State.FAILED, func.coalesce(not_before, CH.c.not_before)),
                else_=not_before)  # fmt: skip


_RECORD_ONE = (
    update(CH)
    .where(CH.c.id == bindparam("b_id"), CH.c.run_id == bindparam("b_run"))
    .values(
        {
            name: bindparam(f"b_{name}")
            for name in (
                "state",
                "reason",
                "retryable",
                "detail",
                "provider_id",
                "sent_at",
                "recipient",
                "subject",
                "body",
            )
        }
        | {
            "updated_at": bindparam("b_now"),
            "channel": func.coalesce(bindparam("b_channel"), CH.c.channel),
            "not_before": _kept_due(bindparam("b_state"), bindparam("b_not_before")),
        }
    )
)

INTERRUPTED_DETAIL = (
    "the run stopped after handing this message to the channel; "
    "it may have been delivered, so it is not sent again automatically"
)

#: a row left in ``sending`` settled: in doubt, kept with its text (reconciliation
#: matches it against the provider's log) and, for a deferred message, its due time
_INTERRUPTED = {
    "state": State.FAILED,
    "reason": "interrupted",
    "retryable": False,
    "detail": INTERRUPTED_DETAIL,
}

#: attempts at a ledger write while the database is busy (SQLite's file lock)
WRITE_ATTEMPTS = 6

#: default for how long a row may sit in ``reserved`` or ``sending`` before it
#: counts as abandoned by a dead run (CAREFLOW_RESERVATION_LEASE_SECONDS)
RESERVATION_LEASE_SECONDS = 15 * 60


def _retry_busy_database(method):
    """Retry a ledger write when the database is momentarily unavailable.

    Every write method runs in its own transaction and is idempotent, so
    running it again is safe. This matters most after a send: the outcomes
    are known, and losing them to a locked SQLite file would leave rows in
    ``sending`` to be settled as ``interrupted``.
    """

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        for attempt in range(WRITE_ATTEMPTS):
            try:
                return method(*args, **kwargs)
            except OperationalError:
                if attempt == WRITE_ATTEMPTS - 1:
                    raise
                time.sleep(min(8.0, 0.25 * 2**attempt) * (0.5 + random.random()))
        raise AssertionError("unreachable")

    return wrapper


@dataclass(frozen=True)
class Claim:
    """Result of claiming a batch of keys.

    With intents (see :meth:`ContactLedger.claim`), every owned key that had
    one is in exactly one of ``chosen`` (send on this channel and address),
    ``shared`` (another customer's message holds every address) or
    ``capped`` (the frequency cap has no room).
    """

    owned: dict[tuple[int, str], int]  # (customer_id, occasion) -> contact_id
    already: dict[tuple[int, str], str]  # key -> state it was already in
    chosen: dict[tuple[int, str], tuple[str, str]] = field(default_factory=dict)
    shared: dict[tuple[int, str], Earlier] = field(default_factory=dict)
    capped: dict[tuple[int, str], Capped] = field(default_factory=dict)


@dataclass(frozen=True)
class DueBatch:
    """Deferred messages of one campaign and as-of instant, due now, in one id range."""

    campaign: str
    selected_at: datetime | None
    only_channel: str | None  # the channel the deferring run was limited to
    lo: int
    hi: int
    count: int


@dataclass(frozen=True)
class SendRules:
    """What a claim checks before it lets a send go: the campaign's category (stored on
    its rows, caps count by it), its cap, and one message per address per occasion."""

    category: str | None = None
    cap: CapCheck | None = None
    one_per_address: bool = False


class ContactLedger:
    def __init__(
        self,
        engine: Engine,
        lease_seconds: float = RESERVATION_LEASE_SECONDS,
        clock: Callable[[], datetime] = utcnow,
    ):
        self.engine = engine
        self.lease = timedelta(seconds=lease_seconds)
        #: naive-UTC "now" for the rows' own times (created, updated, sent); tests fake it
        self.clock = clock

    # --- before sending ------------------------------------------------------
    def claim(
        self,
        campaign: str,
        run_id: str,
        keys: Sequence[tuple[int, str]],
        chunk: int = 2000,
        *,
        now: datetime | None = None,
        intents: Mapping[tuple[int, str], Intent] | None = None,
        rules: SendRules = SendRules(),
        selected_at: datetime | None = None,
        only_channel: str | None = None,
    ) -> Claim:
        """Reserve (customer_id, occasion) keys for ``run_id``; see module docs.

        ``now`` is the run's policy instant: deferred rows due by then are
        taken, and caps count back from it. ``intents`` are the sends the
        route would make; for those the claim also applies ``rules`` (shared
        addresses, the frequency cap) atomically, see careflow/contact_limits.py.
        ``selected_at`` (the run's as-of instant) and ``only_channel`` (the one
        channel the run may use, its ``--channel``) are kept on the rows for the
        follow-up flow.
        """
        now = naive_utc(now) if now is not None else self.clock()
        selected = naive_utc(selected_at) if selected_at is not None else None
        out = Claim({}, {})
        for start in range(0, len(keys), chunk):
            part = list(dict.fromkeys(keys[start : start + chunk]))
            mine = {k: intents[k] for k in part if k in intents} if intents else {}
            o, a, choice = self._claim_chunk(
                campaign, run_id, part, now, mine, rules, selected, only_channel
            )
            out.owned.update(o)
            out.already.update(a)
            if choice is not None:
                out.chosen.update(choice.chosen)
                out.shared.update(choice.shared)
                out.capped.update(choice.capped)
        return out

    @_retry_busy_database
    def _claim_chunk(self, campaign, run_id, keys, now, intents, rules, selected_at, only):
        clock = self.clock()
        stale = clock - self.lease
        with self.engine.begin() as conn:
            if conn.dialect.name == "sqlite":
                # the write lock from the first statement: the cap and address checks
                # below must not race another claim (contact_limits.py)
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            # every key, in one statement: rows another run holds stay as they are
            _insert_reserved(
                conn, campaign, run_id, keys, clock, rules.category, selected_at, only
            )
            rows = _rows_for(conn, campaign, keys)
            # Take over rows that may be tried again. The state test is repeated in
            # the UPDATE so two runs racing for the same row cannot both win it.
            reclaim = [r.id for r in rows if r.run_id != run_id and r.state != State.SENT]
            if reclaim:
                # a deferred message stays one (due time, reason) until its outcome is
                # recorded: taken over from a dead run's reservation, or retried after
                # a failure, too (module docs)
                deferred = CH.c.state.in_([State.DEFERRED, State.RESERVED])
                conn.execute(
                    update(CH)
                    .where(CH.c.id.in_(reclaim), _reclaimable(stale, now))
                    .values(
                        state=State.RESERVED,
                        run_id=run_id,
                        reason=case((deferred, CH.c.reason), else_=None),
                        detail=case((deferred, CH.c.detail), else_=None),
                        recipient=None,
                        only_channel=only,
                        category=rules.category,
                        selected_at=func.coalesce(
                            bindparam("sel", selected_at, type_=DateTime), CH.c.selected_at
                        ),
                        updated_at=clock,
                    )
                )
                rows = _rows_for(conn, campaign, keys)
            owned, already = {}, {}
            for r in rows:
                key = (r.customer_id, r.occasion)
                if r.run_id == run_id and r.state == State.RESERVED:
                    owned[key] = r.id
                else:
                    already[key] = r.state
            choice = self._check_sends(conn, campaign, owned, intents, rules, now)
        return owned, already, choice

    @staticmethod
    def _check_sends(conn, campaign, owned, intents, rules: SendRules, now) -> Choice | None:
        """Shared addresses and caps for the owned keys with intents, under locks."""
        mine = {k: owned[k] for k in intents if k in owned}
        if not mine:
            return None
        if rules.cap is None and not rules.one_per_address:
            return Choice({k: intents[k].options[0] for k in mine}, {}, {})
        lock(conn, campaign, {k: intents[k] for k in mine}, rules.cap, rules.one_per_address)
        own = set(mine.values())  # a retried task's rows may still hold its earlier choice
        holders = None
        if rules.one_per_address:
            found = address_holders(conn, campaign, [o for k in mine for o in intents[k].options])
            holders = {a: [r for r in rs if r.id not in own] for a, rs in found.items()}
        counted: dict = {}
        if rules.cap is not None:
            counted = {
                c: [e for e in es if e.contact_id not in own]
                for c, es in cap_counts(conn, [k[0] for k in mine], rules.cap, now).items()
            }
        choice = choose(
            mine, intents, campaign=campaign, holders=holders, counted=counted, cap=rules.cap,
            now=now,
        )
        write_choices(conn, mine, choice.chosen)
        return choice

    def channel_limits(
        self, campaign: str, keys: Sequence[tuple[int, str]]
    ) -> dict[tuple[int, str], str]:
        """The channel each of these keys' deferred messages is limited to, where one is
        (``only_channel``: the ``--channel`` of the run that deferred it)."""
        out: dict[tuple[int, str], str] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(keys), 2000):
                part = list(dict.fromkeys(keys[start : start + 2000]))
                wanted = set(part)
                query = _keys_query(
                    conn,
                    campaign,
                    part,
                    (CH.c.only_channel,),
                    CH.c.only_channel.is_not(None),
                    CH.c.not_before.is_not(None),
                )
                for cid, occasion, only in conn.execute(query).all():
                    if (cid, occasion) in wanted:
                        out[(cid, occasion)] = only
        return out

    def peek(
        self, campaign: str, keys: Sequence[tuple[int, str]], now: datetime | None = None
    ) -> dict[tuple[int, str], str]:
        """The state of each key already in the ledger, writing nothing (dry runs).

        A dry run asks what a claim would find: keys a real run would not own
        (sent, in progress, failed for good) come back with their state; keys
        missing here, or skipped or retryable, would be sent again.
        """
        out: dict[tuple[int, str], str] = {}
        stale = self.clock() - self.lease
        now = naive_utc(now) if now is not None else self.clock()
        # the database leaves out what a claim could take (NULL counts as no)
        kept = ~func.coalesce(_reclaimable(stale, now), false())
        with self.engine.connect() as conn:
            for start in range(0, len(keys), 2000):
                part = list(dict.fromkeys(keys[start : start + 2000]))
                query = _keys_query(conn, campaign, part, (CH.c.state,), kept)
                wanted = set(part)
                for cid, occasion, state in conn.execute(query).all():
                    if (cid, occasion) in wanted:
                        out[(cid, occasion)] = state
        return out

    @_retry_busy_database
    def release(self, run_id: str, reason: str = "run_stopped") -> tuple[int, int]:
        """Settle what a stopping run still holds; returns (released, interrupted).

        Rows it reserved but never handed to a channel become ``skipped`` with
        ``reason``, so the next run takes them at once instead of waiting out
        the lease; deferred messages it had taken go back to ``deferred``, due,
        for the next follow-up. Rows it left in ``sending`` may have gone out:
        they become ``failed: interrupted``, never resent automatically.
        """
        with self.engine.begin() as conn:
            return _put_down(
                conn,
                CH.c.run_id == run_id,
                reason,
                "the run stopped before sending this message; the next run will",
                self.clock(),
            )

    @_retry_busy_database
    def settle_abandoned(self) -> tuple[int, int]:
        """Settle, as ``release`` does, what runs that died still hold once their lease has
        passed; returns (released, interrupted). A later claim of the same key does this
        too, but a campaign run meets a key only when it selects the customer again, and
        a birthday may not come round for a year: without this, those rows stayed
        ``reserved`` or ``sending``, and a message in doubt was never reconciled."""
        now = self.clock()
        with self.engine.begin() as conn:
            return _put_down(
                conn,
                CH.c.updated_at < now - self.lease,
                "run_died",
                "the run that reserved this message died before sending it; the next run will",
                now,
            )

    @_retry_busy_database
    def mark_sending(
        self,
        contact_ids: Iterable[int],
        channel: str,
        run_id: str,
        texts: Mapping[int, tuple[str | None, str | None, str | None]] | None = None,
    ) -> set[int]:
        """Move this run's reserved rows to ``sending``; return the ids actually moved.

        Send only those. A run that stalled past its lease (a paused VM, a long
        I/O wait) may have lost some rows to another run meanwhile; they are
        not its to send any more.

        ``texts[contact_id]`` is (recipient, subject, body) of the message about
        to go: a row left in doubt keeps what went out, which is how
        reconciliation tells it apart from other messages to the same number
        (careflow/flows/reconcile.py).
        """
        ids = list(contact_ids)
        if not ids:
            return set()
        with self.engine.begin() as conn:
            moved = set(
                conn.execute(
                    update(CH)
                    .where(CH.c.id.in_(ids), _row_guard(run_id, State.RESERVED))
                    .values(
                        state=State.SENDING,
                        channel=channel,
                        updated_at=self.clock(),
                        attempts=CH.c.attempts + 1,
                    )
                    .returning(CH.c.id)
                ).scalars()
            )
            kept = [
                (i, _fit(to, "recipient"), _fit(subject, "subject"), body)
                for i in moved
                if texts and i in texts
                for to, subject, body in [texts[i]]
            ]
            if kept:
                _write_by_id(conn, _TEXT_COLUMNS, kept)
            return moved

    def sent_by(self, run_id: str) -> int:
        """How many messages ``run_id`` has recorded as sent."""
        with self.engine.connect() as conn:
            return conn.execute(
                select(func.count()).where(CH.c.run_id == run_id, CH.c.state == State.SENT)
            ).scalar_one()

    @_retry_busy_database
    def unmark_sending(self, contact_ids: Sequence[int], run_id: str) -> int:
        """Put back in ``reserved`` this run's rows marked sending whose request never
        started (its channel stopped first, ``ChannelDown``): they did not go out, so
        they are not in doubt; releasing the run hands them to the next run."""
        if not contact_ids:
            return 0
        with self.engine.begin() as conn:
            return conn.execute(
                update(CH)
                .where(CH.c.id.in_(list(contact_ids)), _row_guard(run_id, State.SENDING))
                .values(
                    state=State.RESERVED, updated_at=self.clock(), attempts=CH.c.attempts - 1
                )
            ).rowcount

    # --- after sending -------------------------------------------------------
    @_retry_busy_database
    def record(self, outcomes: Sequence[Outcome], run_id: str, details: dict | None = None) -> None:
        """Store each outcome on its row. ``details[contact_id]`` may carry
        channel, recipient, subject and body to keep with the row.

        On PostgreSQL one UPDATE ... FROM unnest(arrays): psycopg runs an
        UPDATE executemany one row at a time (~1k rows/s here). SQLite's
        executemany is fast, and SQLite has no arrays.
        """
        if not outcomes:
            return
        now = self.clock()
        details = details or {}
        data = []
        for o in outcomes:
            d = details.get(o.contact_id, {})
            data.append(
                (
                    o.contact_id,
                    str(o.state),
                    _fit(o.reason, "reason"),
                    bool(o.retryable),
                    _fit(o.detail, "detail"),
                    _fit(o.provider_id, "provider_id"),
                    now if o.state == State.SENT else None,
                    _fit(d.get("channel"), "channel"),
                    _fit(d.get("recipient"), "recipient"),
                    _fit(d.get("subject"), "subject"),
                    _fit(d.get("body"), "body"),
                    naive_utc(o.not_before) if o.not_before is not None else None,
                )
            )
        with self.engine.begin() as conn:
            if conn.dialect.name != "postgresql":
                names = [c.name for c in _OUTCOME_COLUMNS]
                conn.execute(
                    _RECORD_ONE,
                    [
                        {f"b_{k}": v for k, v in zip(names, row, strict=True)}
                        | {"b_run": run_id, "b_now": now}
                        for row in data
                    ],
                )
                return
            from sqlalchemy.dialects.postgresql import ARRAY

            # One array parameter per column, unnested into rows: one statement
            # that compiles once, however many outcomes there are.
            columns = list(zip(*data, strict=True))
            arrays = [
                bindparam(f"o_{c.name}", list(col), type_=ARRAY(c.type))
                for c, col in zip(_OUTCOME_COLUMNS, columns, strict=True)
            ]
            o = (
                func.unnest(*arrays)
                .table_valued(*[c.name for c in _OUTCOME_COLUMNS])
                .render_derived(name="o")
            )
            conn.execute(
                update(CH)
                .where(CH.c.id == o.c.id, _row_guard(run_id))
                .values(
                    state=o.c.state,
                    reason=o.c.reason,
                    retryable=o.c.retryable,
                    detail=o.c.detail,
                    provider_id=o.c.provider_id,
                    updated_at=now,
                    sent_at=o.c.sent_at,
                    channel=func.coalesce(o.c.channel, CH.c.channel),
                    recipient=o.c.recipient,
                    subject=o.c.subject,
                    body=o.c.body,
                    not_before=_kept_due(o.c.state, o.c.not_before),
                )
            )

    @_retry_busy_database
    def resolve_interrupted(
        self, campaign: str, keys: Sequence[tuple[int, str]], run_id: str
    ) -> int:
        """Mark rows left in ``sending`` as failed: interrupted (they are never resent).

        Only rows of ``run_id`` (an earlier attempt of this task died) or rows
        untouched for longer than the lease (their run died) qualify, so a run
        still busy sending them elsewhere is left alone.
        """
        if not keys:
            return 0
        stale = self.clock() - self.lease
        with self.engine.begin() as conn:
            result = conn.execute(
                update(CH)
                .where(
                    CH.c.id.in_([r.id for r in _rows_for(conn, campaign, keys)]),
                    _row_guard(state=State.SENDING),
                    or_(CH.c.run_id == run_id, CH.c.updated_at < stale),
                )
                .values(_INTERRUPTED | {"updated_at": self.clock()})
            )
        return result.rowcount

    def failure_reasons(self, campaign: str) -> dict[str, int]:
        """How many failed messages of ``campaign`` there are, by reason."""
        with self.engine.connect() as conn:
            return dict(
                conn.execute(
                    select(CH.c.reason, func.count())
                    .where(CH.c.campaign == campaign, CH.c.state == State.FAILED)
                    .group_by(CH.c.reason)
                ).all()
            )

    @_retry_busy_database
    def allow_retry(self, campaign: str, reason: str, customer_id: int | None = None) -> int:
        """Let the next run try failed messages again (an operator's decision).

        Typically for ``interrupted`` rows after checking with the provider that
        they did not go out. Returns how many rows were released.
        """
        where = [CH.c.campaign == campaign, CH.c.state == State.FAILED, CH.c.reason == reason]
        if customer_id is not None:
            where.append(CH.c.customer_id == customer_id)
        with self.engine.begin() as conn:
            return conn.execute(
                update(CH).where(*where).values(retryable=True, updated_at=self.clock())
            ).rowcount

    # --- deferred messages -----------------------------------------------------
    def _due(self, now: datetime):
        """Deferred messages due at ``now``; those a run took and left when it died (its
        lease has passed): reserved ones are taken over like any reservation, ``sending``
        ones settled as in doubt by the claim that finds them; and those that failed
        retryably (released after reconciliation, too), sent again like a run's."""
        return or_(
            and_(CH.c.state == State.DEFERRED, CH.c.not_before <= naive_utc(now)),
            self._left_taken(CH.c.state, [State.RESERVED, State.SENDING]),
            _retryable_deferred(),
        )

    def _left_taken(self, state, states: list[State]):
        """Deferred messages a run took (``states``) and left: its lease has passed."""
        return and_(
            state.in_(states),
            CH.c.not_before.is_not(None),
            CH.c.updated_at < self.clock() - self.lease,
        )

    def due_deferred(self, now: datetime, batch_size: int) -> list[DueBatch]:
        """Deferred messages due at ``now`` (with those a dead run had taken), as batches
        for the follow-up flow: per campaign, as-of instant and channel limit, customer-id
        ranges of at most ``batch_size`` messages."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(CH.c.campaign, CH.c.selected_at, CH.c.only_channel, CH.c.customer_id)
                .where(self._due(now))
                .order_by(CH.c.campaign, CH.c.selected_at, CH.c.only_channel, CH.c.customer_id)
            ).all()
        groups: dict[tuple[str, datetime | None, str | None], list[int]] = {}
        for r in rows:
            groups.setdefault((r.campaign, r.selected_at, r.only_channel), []).append(
                r.customer_id
            )
        out = []
        for (campaign, selected_at, only), ids in groups.items():
            for start in range(0, len(ids), batch_size):
                part = ids[start : start + batch_size]
                out.append(DueBatch(campaign, selected_at, only, part[0], part[-1], len(part)))
        return out

    def due_keys(
        self,
        campaign: str,
        selected_at: datetime | None,
        id_range,
        now: datetime,
        only_channel: str | None = None,
    ) -> set[tuple[int, str]]:
        """The (customer, occasion) keys of ``campaign`` deferred and due in ``id_range``
        for a follow-up limited to ``only_channel`` (see ``due_deferred``)."""
        where = [
            CH.c.campaign == campaign,
            self._due(now),
            CH.c.customer_id.between(*id_range),
            CH.c.only_channel.is_(None)
            if only_channel is None
            else CH.c.only_channel == only_channel,
        ]
        if selected_at is not None:
            where.append(CH.c.selected_at == naive_utc(selected_at))
        with self.engine.connect() as conn:
            return {
                (r.customer_id, r.occasion)
                for r in conn.execute(select(CH.c.customer_id, CH.c.occasion).where(*where))
            }

    @_retry_busy_database
    def settle_deferred(
        self, campaign: str, keys: Sequence[tuple[int, str]], reason: str, detail: str
    ) -> int:
        """Skip deferred messages nobody can send any more (the customer left the segment),
        a dead run's reservation of one or a retryable failure of one included; a later
        run of the campaign decides about them again like any skip."""
        if not keys:
            return 0
        with self.engine.begin() as conn:
            ids = [r.id for r in _rows_for(conn, campaign, keys)]
            return conn.execute(
                update(CH)
                .where(
                    CH.c.id.in_(ids),
                    or_(
                        _row_guard(state=State.DEFERRED),
                        self._left_taken(unindexed(CH.c.state), [State.RESERVED]),
                        _retryable_deferred(unindexed(CH.c.state)),
                    ),
                )
                .values(
                    state=State.SKIPPED,
                    reason=reason,
                    detail=detail,
                    not_before=None,
                    recipient=None,
                    updated_at=self.clock(),
                )
            ).rowcount

    # --- after delivery: the customer's timeline ------------------------------
    def history(self, customer_id: int, limit: int = 50) -> list[dict]:
        """The customer's contact history, newest first, each contact with its events."""
        with self.engine.connect() as conn:
            rows = (
                conn.execute(
                    select(CH)
                    .where(CH.c.customer_id == customer_id)
                    .order_by(CH.c.created_at.desc(), CH.c.id.desc())
                    .limit(limit)
                )
                .mappings()
                .all()
            )
            events = (
                conn.execute(
                    select(ContactEvent.__table__)
                    .where(ContactEvent.customer_id == customer_id)
                    .order_by(ContactEvent.occurred_at)
                )
                .mappings()
                .all()
            )
        by_contact: dict[int | None, list[dict]] = {}
        for e in events:
            by_contact.setdefault(e["contact_id"], []).append(dict(e))
        out = [dict(r) | {"events": by_contact.get(r["id"], [])} for r in rows]
        return out


def timeline(engine: Engine, customer_id: int, limit: int = 50) -> list[dict]:
    """Everything that happened with one customer, oldest first (the last ``limit`` items):
    messages and their outcomes, delivery states, replies, opt-outs, bounces, orders."""
    items: list[dict] = []
    with engine.connect() as conn:
        campaign_of = {}
        for r in conn.execute(select(CH).where(CH.c.customer_id == customer_id)).mappings():
            campaign_of[r["id"]] = r["campaign"]
            text = r["subject"] or (r["body"] or "").split("\n")[0]
            items.append(
                {
                    "at": r["sent_at"] or r["updated_at"],
                    "what": r["state"] + (f": {r['reason']}" if r["reason"] else ""),
                    "campaign": r["campaign"],
                    "channel": r["channel"],
                    "text": shorten(text, 120) or None,
                    "detail": r["detail"],
                }
            )
        for e in conn.execute(
            select(ContactEvent.__table__).where(ContactEvent.customer_id == customer_id)
        ).mappings():
            items.append(
                {
                    "at": e["occurred_at"],
                    "what": e["kind"],
                    "campaign": campaign_of.get(e["contact_id"]),
                    "channel": e["channel"],
                    "text": e["detail"],
                    "detail": None,
                }
            )
        for o in conn.execute(
            select(Order.ordered_at, Order.amount_minor, Order.currency).where(
                Order.customer_id == customer_id
            )
        ):
            try:
                text, why = f"{from_minor(o.amount_minor, o.currency)} {o.currency}", None
            except DataError as exc:  # that order's own line says so; the rest is shown
                text, why = f"? {o.currency}", f"unreadable amount: {exc}"
            items.append(
                {
                    "at": o.ordered_at,
                    "what": "order",
                    "campaign": None,
                    "channel": None,
                    "text": text,
                    "detail": why,
                }
            )
    items.sort(key=lambda i: i["at"])
    return items[-limit:] if limit else items


def _put_down(conn, held, reason: str, detail: str, now: datetime) -> tuple[int, int]:
    """Settle the rows ``held`` selects that are still reserved or sending; returns
    (released, interrupted). See ``ContactLedger.release``."""
    reserved = and_(held, CH.c.state == State.RESERVED)
    released = conn.execute(
        update(CH)
        .where(reserved, CH.c.not_before.is_(None))
        .values(state=State.SKIPPED, reason=reason, detail=detail, updated_at=now)
    ).rowcount
    released += conn.execute(  # a deferred message: due again, for the follow-up
        update(CH)
        .where(reserved, CH.c.not_before.is_not(None))
        .values(state=State.DEFERRED, reason=func.coalesce(CH.c.reason, reason), updated_at=now)
    ).rowcount
    interrupted = conn.execute(
        update(CH)
        .where(held, CH.c.state == State.SENDING)
        .values(_INTERRUPTED | {"updated_at": now})
    ).rowcount
    return released, interrupted


def _retryable_deferred(state=CH.c.state):
    """Deferred messages whose attempt failed and may be tried again."""
    return and_(state == State.FAILED, CH.c.retryable.is_(True), CH.c.not_before.is_not(None))


def deferred_summary(engine: Engine) -> list[dict]:
    """Deferred messages not yet sent, per campaign and reason: how many (``count``, those
    whose attempt failed and will be tried again included, under the failure's reason),
    of which a run has taken and not yet sent (``taken``: being sent now, or left by a
    run that died, for the next follow-up), and the first and last due (UTC)."""
    taken = CH.c.state.in_([State.RESERVED, State.SENDING])
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                CH.c.campaign,
                CH.c.reason,
                func.count().label("count"),
                func.count(case((taken, 1))).label("taken"),
                func.min(CH.c.not_before).label("first_due"),
                func.max(CH.c.not_before).label("last_due"),
            )
            .where(
                or_(
                    CH.c.state == State.DEFERRED,
                    and_(taken, CH.c.not_before.is_not(None)),
                    _retryable_deferred(),
                )
            )
            .group_by(CH.c.campaign, CH.c.reason)
            .order_by(CH.c.campaign, CH.c.reason)
        ).all()
    return [dict(r._mapping) for r in rows]


#: how much of a free-text detail (a provider's error text, say) a row keeps
DETAIL_CHARS = 2000


#: what ``mark_sending`` keeps of a message about to go: (id, recipient, subject, body)
_TEXT_COLUMNS = (
    column("id", BigInteger),
    column("recipient", String),
    column("subject", String),
    column("body", Text),
)


def _write_by_id(conn, columns, rows: list[tuple]) -> None:
    """Set ``columns[1:]`` on each row found by its id (``columns[0]``), from ``rows``.

    PostgreSQL gets one UPDATE ... FROM unnest(arrays) (psycopg runs an
    executemany row by row); SQLite an executemany.
    """
    names = [c.name for c in columns]
    if conn.dialect.name != "postgresql":
        conn.execute(
            update(CH)
            .where(CH.c.id == bindparam("b_id"))
            .values({n: bindparam(f"b_{n}") for n in names[1:]}),
            [{f"b_{n}": v for n, v in zip(names, row, strict=True)} for row in rows],
        )
        return
    from sqlalchemy.dialects.postgresql import ARRAY

    arrays = [
        bindparam(f"w_{c.name}", list(col), type_=ARRAY(c.type))
        for c, col in zip(columns, zip(*rows, strict=True), strict=True)
    ]
    w = func.unnest(*arrays).table_valued(*names).render_derived(name="w")
    conn.execute(update(CH).where(CH.c.id == w.c.id).values({n: w.c[n] for n in names[1:]}))


def unstorable(**values: str | None) -> str | None:
    """Why the ledger cannot keep these message values (``recipient=``, ``subject=``,
    ``body=``: column names) exactly as they are, or None.

    PostgreSQL refuses a NUL character in text and any text that is not valid
    Unicode (a lone surrogate), and a value longer than its column; SQLite would
    keep them, and the ledger holds the same on both. The route asks before
    sending (``careflow/flows/route.build_message``): a message the ledger cannot record
    as sent must never go out, since its record would fail after the provider
    took it (``failed: invalid_content``).
    """
    for name, value in values.items():
        if value is None:
            continue
        if "\x00" in value:
            return f"{name} contains a NUL character (at position {value.index(chr(0))})"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            return f"{name} is not valid Unicode text (a lone surrogate at position {exc.start})"
        limit = CH.c[name].type.length
        if limit is not None and len(value) > limit:
            return f"{name} has {len(value)} characters; the ledger keeps {limit}"
    return None


def _fit(value: str | None, column_name: str) -> str | None:
    """``value`` as its column can store it, so recording never fails: NUL characters
    and lone surrogates replaced by U+FFFD, cut to the column's size (a detail to
    ``DETAIL_CHARS``) with an ellipsis.

    Record-after-send must not fail on data a provider already accepted: what
    goes out was checked before sending (:func:`unstorable`), and this is the
    last line of defence for the rest (provider ids and error texts).
    """
    if value is None:
        return None
    value = str(value)
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    limit = DETAIL_CHARS if column_name == "detail" else CH.c[column_name].type.length
    if limit is None or len(value) <= limit:
        return value
    return value[: limit - 1] + "…"


def _rows_for(conn, campaign: str, keys: Sequence[tuple[int, str]]) -> list:
    """Ledger rows of ``campaign`` for exactly these (customer_id, occasion) keys."""
    wanted = set(keys)
    query = _keys_query(conn, campaign, keys, (CH.c.id, CH.c.state, CH.c.run_id))
    return [r for r in conn.execute(query).all() if (r.customer_id, r.occasion) in wanted]


#: keys whose customers fill at least 1/DENSE_SPAN of their id range are read as a range
DENSE_SPAN = 8


def _keys_query(conn, campaign: str, keys: Sequence[tuple[int, str]], cols, *where):
    """customer_id, occasion and ``cols`` of ``campaign``'s rows matching ``where`` for
    ``keys``, and perhaps rows of other keys: callers keep their own.

    A batch's keys are customers of one id range. Where they fill a good part of it,
    the campaign's rows for the whole range come in one walk of the unique index
    (campaign, customer_id, occasion): on PostgreSQL 2.4 ms for a win-back batch of
    4,940 keys, against 48 ms looked up one by one. SQLite gets an IN list of the
    customers. Otherwise, on PostgreSQL, the keys arrive as two arrays and each is
    looked up on its own by customer (a lateral join).

    The plan must not depend on statistics: the table grows by a million rows in one
    run, and with the statistics from before, a join of the keys against the
    campaign's rows read all its rows for every batch (205 us a key instead of 4 on a
    re-run), and a lookup by campaign walked the campaign's rows once per key. A
    row-value IN list becomes a per-row OR filter, and ``= ANY(array)`` an array scan
    per row: both grow with table size x batch size. A range on the unique index's
    first two columns has no such rival: every other index serves one of them only.
    """
    ids = sorted({c for c, _ in keys})
    rows = select(CH.c.customer_id, CH.c.occasion, *cols).where(CH.c.campaign == campaign, *where)
    if conn.dialect.name != "postgresql":
        return rows.where(CH.c.customer_id.in_(ids))
    if ids and ids[-1] - ids[0] < DENSE_SPAN * len(ids):
        return rows.where(CH.c.customer_id.between(ids[0], ids[-1]))
    from sqlalchemy.dialects.postgresql import ARRAY

    unique = list(dict.fromkeys(keys))
    k = (
        func.unnest(
            bindparam("customer_ids", [c for c, _ in unique], type_=ARRAY(BigInteger)),
            bindparam("occasions", [o for _, o in unique], type_=ARRAY(String)),
        )
        .table_valued("cid", "occ")
        .render_derived(name="k")
    )
    # Each key's rows of any campaign (a customer has few), through the one index that
    # starts with the customer: an index starting with the campaign looks cheapest to a
    # planner that believes the campaign has no rows yet, and is walked whole per key.
    hit = (
        select(CH.c.campaign, CH.c.customer_id, CH.c.occasion, *cols)
        .where(CH.c.customer_id == k.c.cid, CH.c.occasion == k.c.occ, *where)
        .offset(0)  # keeps PostgreSQL from flattening this into one join of everything,
        .lateral("hit")  # and the campaign test below out of it
    )
    return (
        select(*[c for c in hit.c if c.name != "campaign"])
        .select_from(k)
        .join(hit, true())
        .where(hit.c.campaign == campaign)
    )


def _row_guard(run_id: str | None = None, state: State | None = None):
    """What a write that finds its rows by id checks on each row, in a form no index serves.

    PostgreSQL's statistics come from before a run: they hold none of its rows, and
    few reserved ones. Written plainly, these tests look selective enough to find the
    rows through ix_contact_history_run or the state index instead of the ids, and
    each write walked every row the run had written so far (29 ms a batch at 60,000
    rows) or every reserved row of every batch in flight.
    """
    guard = []
    if run_id is not None:
        guard.append(unindexed(CH.c.run_id) == run_id)
    if state is not None:
        guard.append(unindexed(CH.c.state) == state)
    return and_(*guard)


def _reclaimable(stale: datetime, now: datetime):
    """Rows a claim may take over: skipped, retryable failures, reserved rows whose run
    died (lease passed), and deferred rows that are due."""
    return or_(
        CH.c.state == State.SKIPPED,
        and_(CH.c.state == State.FAILED, CH.c.retryable.is_(True)),
        and_(CH.c.state == State.RESERVED, CH.c.updated_at < stale),
        and_(CH.c.state == State.DEFERRED, CH.c.not_before <= now),
    )


def _insert_reserved(
    conn,
    campaign: str,
    run_id: str,
    keys,
    now: datetime,
    category: str | None = None,
    selected_at: datetime | None = None,
    only_channel: str | None = None,
) -> None:
    """Insert ``reserved`` rows for keys, leaving alone any another run inserted first.

    PostgreSQL gets one INSERT ... SELECT unnest(ids), unnest(occasions):
    psycopg runs an executemany row by row. SQLite's executemany is fast, and its VALUES
    lists cannot name their columns.
    """
    fixed = {
        "campaign": campaign,
        "state": State.RESERVED,
        "run_id": run_id,
        "attempts": 0,
        "retryable": False,
        "created_at": now,
        "updated_at": now,
        "category": category,
        "selected_at": selected_at,
        "only_channel": only_channel,
    }
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import ARRAY
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        # Two array parameters, whatever the batch size: the statement compiles once.
        ids = bindparam("ids", [c for c, _ in keys], type_=ARRAY(BigInteger))
        occasions = bindparam("occasions", [o for _, o in keys], type_=ARRAY(String))
        names = ["customer_id", "occasion", *fixed]
        source = select(
            func.unnest(ids), func.unnest(occasions), *[literal(x) for x in fixed.values()]
        )
        conn.execute(
            pg_insert(CH)
            .from_select(names, source)
            .on_conflict_do_nothing(constraint="uq_contact_key")
        )
        return
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    conn.execute(
        sqlite_insert(CH).on_conflict_do_nothing(),
        [{"customer_id": c, "occasion": o, **fixed} for c, o in keys],
    )


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
