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

The statements' shapes for each database are careflow/ledger/plans.py; what a
row can hold, careflow/ledger/storable.py; the read models (a customer's
history and timeline, deferred and failed messages), careflow/ledger/history.py.
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

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
    or_,
    select,
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
from careflow.db.models import ContactHistory
from careflow.db.sqlfunc import unindexed
from careflow.ledger import withheld
from careflow.ledger.plans import (
    insert_reserved,
    keys_query,
    row_guard,
    rows_for,
    unnested,
    write_by_id,
)
from careflow.ledger.storable import fit
from careflow.messages import Outcome, State

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


def _kept_detail(state, detail):
    """The ``detail`` an outcome writes: its own; a ``sent`` one without any keeps the
    row's, which says why it went at that hour (a deferral's, a best hour's:
    ``keep_send_times``)."""
    return case((state == State.SENT, func.coalesce(detail, CH.c.detail)), else_=detail)


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
            "detail": _kept_detail(bindparam("b_state"), bindparam("b_detail", type_=Text)),
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


def retry_busy_database(method):
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

    @retry_busy_database
    def _claim_chunk(self, campaign, run_id, keys, now, intents, rules, selected_at, only):
        clock = self.clock()
        stale = clock - self.lease
        with self.engine.begin() as conn:
            if conn.dialect.name == "sqlite":
                # the write lock from the first statement: the cap and address checks
                # below must not race another claim (contact_limits.py)
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            # every key, in one statement: rows another run holds stay as they are
            insert_reserved(
                conn, campaign, run_id, keys, clock, rules.category, selected_at, only
            )
            rows = rows_for(conn, campaign, keys)
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
                rows = rows_for(conn, campaign, keys)
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
                query = keys_query(
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
                query = keys_query(conn, campaign, part, (CH.c.state,), kept)
                wanted = set(part)
                for cid, occasion, state in conn.execute(query).all():
                    if (cid, occasion) in wanted:
                        out[(cid, occasion)] = state
        return out

    @retry_busy_database
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

    @retry_busy_database
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

    @retry_busy_database
    def mark_sending(
        self,
        contact_ids: Iterable[int],
        channel: str,
        run_id: str,
        texts: Mapping[int, tuple[str | None, str | None, str | None]] | None = None,
        held: dict[int, tuple[str, str]] | None = None,
    ) -> set[int]:
        """Move this run's reserved rows to ``sending``; return the ids actually moved.

        In the same statement, a row whose customer has said no since the policy
        decided (paused marketing, a refusal, a suppressed address, fewer messages:
        careflow/ledger/withheld.py) is recorded ``skipped`` with the reason instead;
        ``held`` (when given) gets contact id -> (reason, detail) for each.

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
        now = self.clock()
        why = withheld.reason(channel, now)
        with self.engine.begin() as conn:
            rows = conn.execute(
                update(CH)
                .where(CH.c.id.in_(ids), row_guard(run_id, State.RESERVED))
                .values(
                    state=case((why.is_(None), State.SENDING), else_=State.SKIPPED),
                    reason=case((why.is_(None), CH.c.reason), else_=why),
                    channel=channel,
                    updated_at=now,
                    attempts=CH.c.attempts + case((why.is_(None), 1), else_=0),
                )
                .returning(CH.c.id, CH.c.state, CH.c.reason)
            ).all()
            moved = {r.id for r in rows if r.state == State.SENDING}
            skipped = {r.id: r.reason for r in rows if r.state != State.SENDING}
            for contact_id, reason in skipped.items():
                conn.execute(
                    update(CH)
                    .where(CH.c.id == contact_id)
                    .values(detail=withheld.detail(reason))
                )
                if held is not None:
                    held[contact_id] = (reason, withheld.detail(reason))
            kept = [
                (i, fit(to, "recipient"), fit(subject, "subject"), body)
                for i in moved
                if texts and i in texts
                for to, subject, body in [texts[i]]
            ]
            if kept:
                write_by_id(conn, _TEXT_COLUMNS, kept)
            return moved

    def sent_by(self, run_id: str) -> int:
        """How many messages ``run_id`` has recorded as sent."""
        with self.engine.connect() as conn:
            return conn.execute(
                select(func.count()).where(CH.c.run_id == run_id, CH.c.state == State.SENT)
            ).scalar_one()

    @retry_busy_database
    def unmark_sending(self, contact_ids: Sequence[int], run_id: str) -> int:
        """Put back in ``reserved`` this run's rows marked sending whose request never
        started (its channel stopped first, ``ChannelDown``): they did not go out, so
        they are not in doubt; releasing the run hands them to the next run."""
        if not contact_ids:
            return 0
        with self.engine.begin() as conn:
            return conn.execute(
                update(CH)
                .where(CH.c.id.in_(list(contact_ids)), row_guard(run_id, State.SENDING))
                .values(
                    state=State.RESERVED, updated_at=self.clock(), attempts=CH.c.attempts - 1
                )
            ).rowcount

    # --- after sending -------------------------------------------------------
    @retry_busy_database
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
                    fit(o.reason, "reason"),
                    bool(o.retryable),
                    fit(o.detail, "detail"),
                    fit(o.provider_id, "provider_id"),
                    now if o.state == State.SENT else None,
                    fit(d.get("channel"), "channel"),
                    fit(d.get("recipient"), "recipient"),
                    fit(d.get("subject"), "subject"),
                    fit(d.get("body"), "body"),
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
            # one statement that compiles once, however many outcomes there are
            o = unnested(_OUTCOME_COLUMNS, data, "o")
            conn.execute(
                update(CH)
                .where(CH.c.id == o.c.id, row_guard(run_id))
                .values(
                    state=o.c.state,
                    reason=o.c.reason,
                    retryable=o.c.retryable,
                    detail=_kept_detail(o.c.state, o.c.detail),
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

    @retry_busy_database
    def keep_variants(self, drawn: dict[int, str]) -> dict[int, str]:
        """contact id -> its experiment variant: the one its row was given before, else
        the one ``drawn`` for it, written now. A row's variant never changes, so a retry, a
        deferral or a re-run renders what the first attempt chose (careflow/variants.py)."""
        ids = sorted(drawn)
        kept: dict[int, str] = {}
        with self.engine.begin() as conn:
            for start in range(0, len(ids), 1000):
                part = ids[start : start + 1000]
                for variant in {drawn[i] for i in part}:
                    conn.execute(
                        update(CH)
                        .where(
                            CH.c.id.in_([i for i in part if drawn[i] == variant]),
                            CH.c.variant.is_(None),
                        )
                        .values(variant=variant)
                    )
                read = select(CH.c.id, CH.c.variant).where(CH.c.id.in_(part))
                kept.update(conn.execute(read).all())
        return kept

    def timed_keys(self, campaign: str, keys: Sequence[tuple[int, str]]) -> set[tuple[int, str]]:
        """Which of ``keys`` were timed by send-time optimisation already (their row has an
        arm): the rule never moves them again (careflow/policy/send_time.py)."""
        wanted = set(keys)
        ids = sorted({cid for cid, _ in wanted})
        found: set[tuple[int, str]] = set()
        with self.engine.connect() as conn:
            for start in range(0, len(ids), 1000):
                part = ids[start : start + 1000]
                rows = conn.execute(
                    select(CH.c.customer_id, CH.c.occasion).where(
                        CH.c.campaign == campaign,
                        CH.c.customer_id.in_(part),
                        CH.c.send_time_arm.is_not(None),
                    )
                )
                found.update(k for k in map(tuple, rows) if k in wanted)
        return found

    @retry_busy_database
    def keep_send_times(self, timed: dict[int, tuple[str | None, str | None]]) -> None:
        """Write each message's send-time arm, once: a row's arm never changes
        (``timed[contact_id] = (arm, why)``); ``why``, for a message sent now, becomes the
        row's detail, which its ``sent`` outcome keeps (``record``), so it can say why it
        went at that hour."""
        if not timed:
            return
        with self.engine.begin() as conn:
            conn.execute(
                update(CH)
                .where(CH.c.id == bindparam("b_id"))
                .values(
                    send_time_arm=func.coalesce(
                        CH.c.send_time_arm, bindparam("b_arm", type_=String)
                    ),
                    detail=func.coalesce(bindparam("b_why", type_=Text), CH.c.detail),
                ),
                [
                    {"b_id": cid, "b_arm": arm, "b_why": fit(why, "detail")}
                    for cid, (arm, why) in timed.items()
                ],
            )

    @retry_busy_database
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
                    CH.c.id.in_([r.id for r in rows_for(conn, campaign, keys)]),
                    row_guard(state=State.SENDING),
                    or_(CH.c.run_id == run_id, CH.c.updated_at < stale),
                )
                .values(_INTERRUPTED | {"updated_at": self.clock()})
            )
        return result.rowcount

    @retry_busy_database
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
            retryable_deferred(),
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

    @retry_busy_database
    def settle_deferred(
        self, campaign: str, keys: Sequence[tuple[int, str]], reason: str, detail: str
    ) -> int:
        """Skip deferred messages nobody can send any more (the customer left the segment),
        a dead run's reservation of one or a retryable failure of one included; a later
        run of the campaign decides about them again like any skip."""
        if not keys:
            return 0
        with self.engine.begin() as conn:
            ids = [r.id for r in rows_for(conn, campaign, keys)]
            return conn.execute(
                update(CH)
                .where(
                    CH.c.id.in_(ids),
                    or_(
                        row_guard(state=State.DEFERRED),
                        self._left_taken(unindexed(CH.c.state), [State.RESERVED]),
                        retryable_deferred(unindexed(CH.c.state)),
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


def retryable_deferred(state=CH.c.state):
    """Deferred messages whose attempt failed and may be tried again."""
    return and_(state == State.FAILED, CH.c.retryable.is_(True), CH.c.not_before.is_not(None))


#: what ``mark_sending`` keeps of a message about to go: (id, recipient, subject, body)
_TEXT_COLUMNS = (
    column("id", BigInteger),
    column("recipient", String),
    column("subject", String),
    column("body", Text),
)


def _reclaimable(stale: datetime, now: datetime):
    """Rows a claim may take over: skipped, retryable failures, reserved rows whose run
    died (lease passed), and deferred rows that are due."""
    return or_(
        CH.c.state == State.SKIPPED,
        and_(CH.c.state == State.FAILED, CH.c.retryable.is_(True)),
        and_(CH.c.state == State.RESERVED, CH.c.updated_at < stale),
        and_(CH.c.state == State.DEFERRED, CH.c.not_before <= now),
    )
