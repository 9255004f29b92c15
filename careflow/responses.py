"""What comes back, recorded once: delivery states, replies, opt-outs, bounces, conversions.

Written once against :class:`careflow.events.InboundEvent`, whatever the
provider (careflow/webhooks/ turns each provider's callbacks into those events):

1. **Idempotent.** Every event is inserted under its unique
   ``(provider, event_id)``; a retried or duplicated callback inserts
   nothing and changes nothing.
2. **Matched** to the message it is about: by careflow's ledger key where
   the provider echoes it (SendGrid's ``custom_args``), else by the
   provider's message id, else (a reply) by the number we last texted.
   An event whose message is not known yet is kept and matched later
   (:func:`match_orphans`): a status callback can outrun the ledger write
   of its own send.
3. **Ordered.** A message's delivery state only moves up the ranks in
   ``careflow.events.DELIVERY_RANK``: a late "sent" never overwrites
   "delivered", whatever order the provider posts them in.
4. **Acted on.** An opt-out keyword (careflow/keywords.py, in the language
   of the message the customer answered, read from its stored text) or a
   provider's unsubscribe revokes consent for that channel and suppresses
   the address; an opt-in keyword restores it; spam reports suppress the
   address, and so does whatever the provider's module read as permanent
   (``InboundEvent.suppress``: a hard bounce, a landline). The policy
   stage skips suppressed addresses with the suppression's reason.
5. **Attributed.** An order within the attribution window after a
   delivered message is linked to it (last touch: the latest delivered
   message before the order), see :func:`attribute_orders`.

All of it is set-based: one call handles a whole batch of events in one
transaction, so a burst of callbacks is a few statements, not a storm.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import (
    Engine,
    String,
    and_,
    bindparam,
    cast,
    delete,
    exists,
    func,
    literal,
    or_,
    select,
    true,
    tuple_,
    update,
)
from sqlalchemy.exc import (
    DBAPIError,
    InterfaceError,
    OperationalError,
    StatementError,
)
from sqlalchemy.exc import TimeoutError as SATimeoutError

from careflow import consent_proof
from careflow.clock import utcnow
from careflow.db import sqlfunc
from careflow.db.models import (
    Consent,
    ContactEvent,
    ContactHistory,
    Customer,
    Order,
    Suppression,
)
from careflow.db.sqlfunc import unindexed
from careflow.events import DELIVERY_RANK, EventKind, InboundEvent
from careflow.keywords import classify, language_of
from careflow.ledger.plans import keys_query, unnested

CH = ContactHistory.__table__
CE = ContactEvent.__table__
SUPPRESSION = Suppression.__table__
CONSENT = Consent.__table__

#: kinds that suppress whoever sent them (a provider's permanent failures come as
#: ``InboundEvent.suppress``, read by its module from its own codes)
_SUPPRESSING = {
    EventKind.SPAM_REPORT: "spam_report",
    EventKind.UNSUBSCRIBED: "unsubscribed",
}


@dataclass
class Ingested:
    """What one batch of events did, for the service's answer, logs and Prefect events."""

    received: int = 0
    duplicates: int = 0
    unmatched: int = 0
    #: events the database refused even once made storable, kept as ``rejected`` rows
    rejected: int = 0
    kinds: Counter = field(default_factory=Counter)  # recorded kind -> count
    #: (timeline kind, customer_id, contact_id, campaign) of each new event, for Prefect
    recorded: list[tuple[str, int | None, int | None, str | None]] = field(default_factory=list)

    def __add__(self, other: Ingested) -> Ingested:
        return Ingested(
            self.received + other.received,
            self.duplicates + other.duplicates,
            self.unmatched + other.unmatched,
            self.rejected + other.rejected,
            self.kinds + other.kinds,
            self.recorded + other.recorded,
        )


@dataclass
class _Row:
    event: InboundEvent
    contact_id: int | None = None
    customer_id: int | None = None
    campaign: str | None = None
    #: whose keywords a reply is read with: the answered message's language, the customer's
    languages: tuple[str | None, ...] = ()
    kind: str = ""
    #: the provider's id of the message a reply answered (its consent proof's evidence)
    answered: str | None = None


def record_events(engine: Engine, events: Sequence[InboundEvent]) -> Ingested:
    """Record a batch of provider events exactly once and act on them (module docs).

    One bad event costs only itself. Values are made storable first (no NUL
    characters, each cut to its column). Should the database still refuse the
    batch, it is written again in halves, down to the one event it refuses,
    which is kept as a ``rejected`` row with the reason (so a provider's retry
    of it is a duplicate, answered at once). A database that cannot be
    reached (OperationalError, InterfaceError) raises: nothing is written.
    """
    clean = [_storable(e) for e in events]
    try:
        return _record(engine, clean)
    except (StatementError, ValueError, TypeError) as exc:
        if database_unavailable(exc):
            raise
        if len(clean) == 1:
            return _reject(engine, clean[0], exc)
        half = len(clean) // 2
        return record_events(engine, clean[:half]) + record_events(engine, clean[half:])


def database_unavailable(exc: BaseException) -> bool:
    """True when ``exc`` says the database cannot be used now (down, unreachable, locked,
    a deadlock), as opposed to refusing what it was given: try again later."""
    return isinstance(exc, OperationalError | InterfaceError | SATimeoutError)


def _record(engine: Engine, events: Sequence[InboundEvent]) -> Ingested:
    result = Ingested(received=len(events))
    if not events:
        return result
    now = utcnow()
    unique = list({(e.provider, e.event_id): e for e in events}.values())  # as they came
    with engine.begin() as conn:
        seen = _existing(conn, unique)
        rows = [_Row(e) for e in unique if (e.provider, e.event_id) not in seen]
        if rows:
            _match(conn, rows)
            for r in rows:
                r.kind = _timeline_kind(r)
            # another receiver may have written some of them since _existing looked
            new = _insert_events(conn, rows, now)
            rows = [r for r in rows if (r.event.provider, r.event.event_id) in new]
        result.duplicates = len(events) - len(rows)
        if not rows:
            return result
        _advance_delivery(conn, [(r.contact_id, r.event.kind) for r in rows if r.contact_id], now)
        _act(conn, rows, now)
    for r in rows:
        result.kinds[r.kind] += 1
        result.unmatched += r.contact_id is None and r.customer_id is None
        result.recorded.append((r.kind, r.customer_id, r.contact_id, r.campaign))
    return result


def _insert_events(conn, rows: Sequence[_Row], now: datetime) -> set[tuple[str, str]]:
    """Insert the events no one has recorded yet; returns the keys this call inserted.
    In key order, so two receivers writing the same events wait for each other rather
    than deadlock."""
    rows = sorted(rows, key=lambda r: (r.event.provider, r.event.event_id))
    postgresql = conn.dialect.name == "postgresql"
    # the rows as one JSON document, one statement text and one parameter whatever the
    # batch's size: as a multi-row VALUES list SQLAlchemy and psycopg handled each of
    # thousands of values in Python (psycopg parsed each batch's new text anew), a
    # third or more of a SendGrid event's CPU; each database reads JSON in C
    stamp = _pg_time if postgresql else _sqlite_time
    received = stamp(now)
    document = json.dumps(
        [
            {
                "provider": r.event.provider,
                "event_id": r.event.event_id,
                "kind": r.kind,
                "occurred_at": stamp(r.event.occurred_at),
                "received_at": received,
                "channel": r.event.channel,
                "provider_id": r.event.provider_message_id,
                "contact_id": r.contact_id,
                "customer_id": r.customer_id,
                "detail": r.event.text if r.event.text is not None else r.event.reason,
                "payload": r.event.raw or None,
            }
            for r in rows
        ]
    )
    columns = ", ".join(name for name, _ in _EVENT_COLUMNS)
    if postgresql:
        record = ", ".join(f"{name} {kind}" for name, kind in _EVENT_COLUMNS)
        source = f"SELECT {columns} FROM json_to_recordset(%(rows)s::json) AS e({record})"
        parameters: dict | tuple = {"rows": document}
    else:  # json_extract: a value as SQL, an object (the payload) as JSON text, null NULL
        values = ", ".join(f"json_extract(value, '$.{name}')" for name, _ in _EVENT_COLUMNS)
        # (WHERE true: SQLite's upsert after a SELECT needs one to parse)
        source = f"SELECT {values} FROM json_each(?) WHERE true"
        parameters = (document,)
    inserted = conn.exec_driver_sql(
        f"INSERT INTO {CE.name} ({columns}) {source} "
        "ON CONFLICT (provider, event_id) DO NOTHING RETURNING provider, event_id",
        parameters,
    )
    return {(p, e) for p, e in inserted}


#: the timeline's columns an event fills, with their PostgreSQL types (json_to_recordset)
_EVENT_COLUMNS = (
    ("provider", "text"), ("event_id", "text"), ("kind", "text"), ("occurred_at", "timestamp"),
    ("received_at", "timestamp"), ("channel", "text"), ("provider_id", "text"),
    ("contact_id", "bigint"), ("customer_id", "bigint"), ("detail", "text"),
    ("payload", "json"),
)  # fmt: skip


def _pg_time(at: datetime) -> str:
    return _naive_utc(at).isoformat()


def _sqlite_time(at: datetime) -> str:
    """As SQLAlchemy's DateTime keeps a time in SQLite (microseconds always written), so
    the timeline's times compare as text alike however they were written."""
    return f"{_naive_utc(at):%Y-%m-%d %H:%M:%S.%f}"


def _naive_utc(at: datetime) -> datetime:
    """``at`` as the timeline keeps it: naive UTC."""
    return at if at.tzinfo is None else at.astimezone(UTC).replace(tzinfo=None)


def _reject(engine: Engine, e: InboundEvent, exc: Exception) -> Ingested:
    """Keep an event the database refuses as a ``rejected`` row: its key, where it came
    from and why, without the values that were refused."""
    cause = exc.orig if isinstance(exc, DBAPIError) else exc
    why = f"not stored: {type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}"
    with engine.begin() as conn:
        conn.execute(
            sqlfunc.insert(conn, CE)
            .values(
                provider=e.provider,
                event_id=e.event_id,
                kind=str(EventKind.REJECTED),
                occurred_at=e.occurred_at,
                received_at=utcnow(),
                channel=e.channel,
                provider_id=e.provider_message_id,
                detail=why[:500],
            )
            .on_conflict_do_nothing(index_elements=[CE.c.provider, CE.c.event_id])
        )
    return Ingested(received=1, rejected=1, kinds=Counter({str(EventKind.REJECTED): 1}))



#: column sizes an event's values are cut to
_EVENT_ID, _PROVIDER, _CHANNEL, _PROVIDER_ID = (
    CE.c[name].type.length for name in ("event_id", "provider", "channel", "provider_id")
)
_ADDRESS, _SUPPRESSION_REASON = SUPPRESSION.c.address.type.length, SUPPRESSION.c.reason.type.length


def _storable(e: InboundEvent) -> InboundEvent:
    """``e`` as the database can keep it: no NUL characters (PostgreSQL's text refuses
    them) or lone surrogates, each value cut to its column as the ledger cuts it (so a
    long message id still matches the one the send recorded), an over-long event id
    shortened with a digest of the whole (two long ids stay two events), JSON without
    NaN. Idempotent."""
    event_id = _text(e.event_id) or ""
    if len(event_id) > _EVENT_ID:
        digest = hashlib.sha256(event_id.encode()).hexdigest()[:32]
        event_id = f"{event_id[: _EVENT_ID - 33]}~{digest}"
    values = {
        "provider": _cut(_text(e.provider), _PROVIDER) or "",
        "event_id": event_id,
        "channel": _cut(_text(e.channel), _CHANNEL),
        "provider_message_id": _cut(_text(e.provider_message_id), _PROVIDER_ID),
        "recipient": _cut(_text(e.recipient), _ADDRESS),
        "contact_key": _text(e.contact_key),
        "text": _text(e.text),
        "reason": _text(e.reason),
        "suppress": _cut(_text(e.suppress), _SUPPRESSION_REASON),
    }
    values["raw"] = e.raw if _clean(e.raw) else _json(e.raw)
    changed = {name: v for name, v in values.items() if v is not getattr(e, name)}
    return replace(e, **changed) if changed else e


def _text(value) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        value = str(value)
    if "\x00" in value:
        value = value.replace("\x00", "")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate, as JSON allows ("\ud800")
            value = value.encode("utf-8", "replace").decode("utf-8")
    return value


def _cut(value: str | None, limit: int) -> str | None:
    """``value`` cut to ``limit`` characters with an ellipsis, as the ledger cuts
    (careflow/ledger/storable.py)."""
    if value is None or len(value) <= limit:
        return value
    return value[: limit - 1] + "…"


def _clean(value) -> bool:
    """True when ``_json(value)`` would change nothing (what a provider's JSON nearly always
    is): checked without building a copy."""
    kind = type(value)
    if kind is str:
        return value.isascii() and "\x00" not in value
    if kind is dict:  # a provider's event: a flat dict of strings and numbers, mostly
        for k, v in value.items():
            if type(k) is not str or not k.isascii() or "\x00" in k:
                return False
            t = type(v)
            if t is str:
                if not v.isascii() or "\x00" in v:
                    return False
            elif not (t is int or t is bool or v is None or _clean(v)):
                return False
        return True
    if kind is list:
        return all(_clean(v) for v in value)
    if kind is float:
        return math.isfinite(value)
    return kind is int or kind is bool or value is None  # anything else: _json decides


def _json(value):
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, dict):
        return {_text(k): _json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _existing(conn, events: Sequence[InboundEvent]) -> set[tuple[str, str]]:
    out = set()
    for provider in {e.provider for e in events}:
        ids = [e.event_id for e in events if e.provider == provider]
        for start in range(0, len(ids), 1000):
            part = ids[start : start + 1000]
            query = select(CE.c.event_id).where(CE.c.provider == provider, CE.c.event_id.in_(part))
            if conn.dialect.name == "postgresql":
                # each id looked up by the unique index: with statistics from before a burst
                # (a provider's thousand rows, not its 400,000), a prepared IN list was
                # planned as a walk of all the provider's rows, ~100 ms per batch
                from sqlalchemy.dialects.postgresql import ARRAY

                k = (
                    func.unnest(bindparam("event_ids", part, type_=ARRAY(String)))
                    .table_valued("id")
                    .render_derived(name="k")
                )
                hit = (
                    select(CE.c.event_id)
                    .where(CE.c.provider == provider, CE.c.event_id == k.c.id)
                    .offset(0)  # keeps it a lookup per id, not one join of everything
                    .lateral("hit")
                )
                query = select(hit.c.event_id).select_from(k).join(hit, true())
            out |= {(provider, r.event_id) for r in conn.execute(query)}
    return out


def _match(conn, rows: Sequence[_Row]) -> None:
    """Find each event's ledger row: by ledger key, provider message id, or last number texted."""
    base = select(CH.c.id, CH.c.customer_id, CH.c.campaign)
    keys: dict[tuple[str, int, str], list[_Row]] = {}
    for r in rows:  # a batch often holds several events of one message
        key = r.event.contact_key
        if key and key.count(":") >= 2:
            campaign, customer, occasion = key.split(":", 2)
            if customer.isdigit():
                keys.setdefault((campaign, int(customer), occasion), []).append(r)
    by_campaign: dict[str, list[tuple[int, str]]] = {}
    for campaign, customer, occasion in keys:
        by_campaign.setdefault(campaign, []).append((customer, occasion))
    for campaign, wanted in by_campaign.items():  # a query per campaign, not per message
        for start in range(0, len(wanted), 1000):
            part = wanted[start : start + 1000]
            for hit in conn.execute(keys_query(conn, campaign, part, (CH.c.id,))):
                for r in keys.get((campaign, hit.customer_id, hit.occasion), ()):
                    r.contact_id, r.customer_id, r.campaign = hit.id, hit.customer_id, campaign
    by_pid: dict[str, list[_Row]] = {}
    for r in rows:
        if r.contact_id is None and r.event.provider_message_id:
            by_pid.setdefault(r.event.provider_message_id, []).append(r)
    pids = list(by_pid)
    rows_of: dict[str, list] = {}
    for start in range(0, len(pids), 1000):
        for hit in conn.execute(
            base.add_columns(CH.c.provider_id, CH.c.recipient).where(
                CH.c.provider_id.in_(pids[start : start + 1000])
            )
        ):
            rows_of.setdefault(hit.provider_id, []).append(hit)
    for pid, hits in rows_of.items():
        # One SendGrid request may carry several recipients (personalizations): they
        # share its message id, so the event's recipient picks the row.
        for r in by_pid[pid]:
            to = (r.event.recipient or "").casefold()
            mine = [h for h in hits if (h.recipient or "").casefold() == to]
            if len(hits) == 1 or len(mine) == 1:
                r.contact_id, r.customer_id, r.campaign = (mine or hits)[0][:3]
    for r in rows:  # the source named the customer (an unsubscribe link)
        if r.contact_id is None and r.event.customer_id is not None:
            r.customer_id = r.event.customer_id
    # Replies come from the number we texted, and are read in the language of the
    # message they answer, from its text as sent (the customer's locale may be empty,
    # and the message was in the default; or changed since), and in the customer's.
    # The batch's replies are looked up together: each sender's latest message, one
    # query per channel and 500 numbers (a query per reply was most of a batch's statements).
    replies = [
        r
        for r in rows
        if r.event.kind == EventKind.REPLIED and r.contact_id is None and r.event.recipient
    ]
    latest = {}
    for channel in {r.event.channel for r in replies}:
        numbers = sorted({r.event.recipient for r in replies if r.event.channel == channel})
        for start in range(0, len(numbers), 500):
            ranked = (
                base.add_columns(
                    CH.c.body,
                    Customer.locale,
                    CH.c.provider_id,
                    CH.c.recipient,
                    func.row_number()
                    .over(
                        partition_by=CH.c.recipient,
                        order_by=(CH.c.sent_at.desc().nulls_last(), CH.c.id.desc()),
                    )
                    .label("newest"),
                )
                .join(Customer, Customer.id == CH.c.customer_id)
                .where(CH.c.channel == channel, CH.c.recipient.in_(numbers[start : start + 500]))
                .subquery()
            )
            for hit in conn.execute(select(ranked).where(ranked.c.newest == 1)):
                latest[(channel, hit.recipient)] = hit
    for r in replies:
        hit = latest.get((r.event.channel, r.event.recipient))
        if hit:
            r.contact_id, r.customer_id, r.campaign = hit.id, hit.customer_id, hit.campaign
            r.languages = (language_of(hit.body), hit.locale)
            r.answered = hit.provider_id


def _timeline_kind(r: _Row) -> str:
    """What the event is on the customer's timeline (a reply is read as a keyword first)."""
    if r.event.kind == EventKind.REPLIED:
        intent = classify(r.event.text, *r.languages)
        return {"opt_out": "opted_out", "opt_in": "opted_in", "help": "help"}.get(intent, "replied")
    return str(r.event.kind)


def _advance_delivery(conn, updates: Sequence[tuple[int, EventKind]], now: datetime) -> None:
    """Move each message's delivery state up, never down (a late 'sent' changes nothing)."""
    best: dict[int, tuple[int, str]] = {}
    for contact_id, kind in updates:
        rank = DELIVERY_RANK.get(kind)
        if rank is not None and rank > best.get(contact_id, (0, ""))[0]:
            best[contact_id] = (rank, str(kind))
    if not best:
        return
    ordered = sorted(best.items())
    if conn.dialect.name == "postgresql":  # one statement: psycopg's executemany is per row
        w = unnested(
            (CH.c.id, CH.c.delivery_rank, CH.c.delivery_state),
            [(cid, rank, state) for cid, (rank, state) in ordered],
            "w",
        )
        conn.execute(
            update(CH)
            .where(
                CH.c.id == w.c.id,
                or_(CH.c.delivery_rank.is_(None), CH.c.delivery_rank < w.c.delivery_rank),
            )
            .values(
                delivery_state=w.c.delivery_state,
                delivery_rank=w.c.delivery_rank,
                delivery_updated_at=now,
            )
        )
        return
    conn.execute(
        update(CH)
        .where(
            CH.c.id == bindparam("b_id"),
            or_(CH.c.delivery_rank.is_(None), CH.c.delivery_rank < bindparam("b_rank")),
        )
        .values(
            delivery_state=bindparam("b_state"),
            delivery_rank=bindparam("b_rank"),
            delivery_updated_at=now,
        ),
        [
            {"b_id": cid, "b_rank": rank, "b_state": state}
            for cid, (rank, state) in ordered
        ],
    )


def _act(conn, rows: Sequence[_Row], now: datetime) -> None:
    """Opt-outs, opt-ins and suppressions the new events call for (address by address, in
    one order, so receivers acting at once wait for each other rather than deadlock; an
    address's own events keep theirs), each with its consent proof in this transaction
    (careflow/consent_proof.py)."""
    acting = [(r, _action(r)) for r in rows if r.event.recipient and r.event.channel]
    acting = [(r, a) for r, a in acting if a]
    if not acting:
        return
    state = _State.read(conn, [r for r, _ in acting])
    proofs = []
    # written together after the loop (a statement each, not one per event); the
    # suppressions waiting are written before an opt-in deletes one, as in order
    suppressions: list[dict] = []
    consents: dict[tuple[int, str], dict] = {}
    for r, action in sorted(
        acting, key=lambda x: (x[0].event.channel or "", x[0].event.recipient or "")
    ):
        e = r.event
        address, channel = e.recipient, e.channel
        held = state.suppressed.get((channel, address))
        consent = None
        if action != "opted_in":
            source = f"{e.provider}:{e.event_id}"[:64]
            suppressions.append(_suppression(channel, address, action, source, now))
            state.suppressed[(channel, address)] = held or action  # the first reason stays
            if r.customer_id and action in ("opted_out", "unsubscribed"):
                source = f"{e.provider} {r.kind}"
                consents[(r.customer_id, channel)] = _consent(
                    r.customer_id, channel, False, source, now
                )
                consent = (state.consent.get((r.customer_id, channel)), False)
        else:
            _suppress_all(conn, suppressions)
            suppressions = []
            conn.execute(
                delete(Suppression).where(
                    Suppression.channel == channel,
                    Suppression.address == address,
                    Suppression.reason == "opted_out",
                )
            )
            state.suppressed[(channel, address)] = None if held == "opted_out" else held
            if r.customer_id:
                source = f"{e.provider} opted_in"
                consents[(r.customer_id, channel)] = _consent(
                    r.customer_id, channel, True, source, now
                )
                consent = (state.consent.get((r.customer_id, channel)), True)
        if consent is not None:
            state.consent[(r.customer_id, channel)] = consent[1]
        proofs.append(
            _proof(r, consent, (held, state.suppressed[(channel, address)]), state.locales)
        )
    _suppress_all(conn, suppressions)
    _consent_all(conn, [consents[k] for k in sorted(consents)])  # the later write wins
    consent_proof.record_many(conn, proofs, now=now)


def _suppression(channel: str, address: str, reason: str, source: str, now) -> dict:
    return {"channel": channel, "address": address, "reason": reason, "source": source,
            "created_at": now}  # fmt: skip


def _suppress_all(conn, rows: list[dict]) -> None:
    """Block each address of ``rows`` (:func:`_suppression`) on its channel, in one
    statement (the first reason recorded stays, whoever wrote it: two receivers
    suppressing one address at once both succeed)."""
    if rows:
        conn.execute(
            sqlfunc.insert(conn, SUPPRESSION).on_conflict_do_nothing(
                index_elements=[SUPPRESSION.c.channel, SUPPRESSION.c.address]
            ),
            rows,
        )


def _consent(customer_id: int, channel: str, granted: bool, source: str, now) -> dict:
    return {"customer_id": customer_id, "channel": channel, "category": "all",
            "granted": granted, "source": source[:64], "updated_at": now}  # fmt: skip


def _consent_all(conn, rows: list[dict]) -> None:
    """Record each customer's consent (or its withdrawal) of ``rows`` (:func:`_consent`, one
    per customer and channel) for a whole channel (category ``all``: a STOP reply or an
    unsubscribe is about every message on it), in one statement; the later write wins,
    also when two receivers write it at once."""
    if not rows:
        return
    insert = sqlfunc.insert(conn, CONSENT)
    conn.execute(
        insert.on_conflict_do_update(
            index_elements=[CONSENT.c.customer_id, CONSENT.c.channel, CONSENT.c.category],
            set_={
                "granted": insert.excluded.granted,
                "source": insert.excluded.source,
                "updated_at": insert.excluded.updated_at,
            },
        ),
        rows,
    )


def _action(r: _Row) -> str | None:
    """What an event calls for: a suppression reason, ``opted_in``, or None."""
    if r.kind == "opted_out":
        return "opted_out"
    if r.kind == "opted_in":
        return "opted_in"
    return _SUPPRESSING.get(r.event.kind) or r.event.suppress


@dataclass
class _State:
    """Consent and suppression as they stand before a batch acts (its proof's "before"),
    read in one query each and kept up to date as the batch acts."""

    suppressed: dict[tuple[str, str], str | None]
    consent: dict[tuple[int, str], bool | None]
    locales: dict[int, str | None]

    @classmethod
    def read(cls, conn, rows: Sequence[_Row]) -> _State:
        pairs = sorted({(r.event.channel, r.event.recipient) for r in rows})
        customers = sorted({r.customer_id for r in rows if r.customer_id})
        suppressed, consent, locales = {}, {}, {}
        for start in range(0, len(pairs), 500):
            suppressed.update(
                ((c, a), why)
                for c, a, why in conn.execute(
                    select(Suppression.channel, Suppression.address, Suppression.reason).where(
                        tuple_(Suppression.channel, Suppression.address).in_(
                            pairs[start : start + 500]
                        )
                    )
                )
            )
        for start in range(0, len(customers), 1000):
            part = customers[start : start + 1000]
            consent.update(
                ((c, ch), granted)
                for c, ch, granted in conn.execute(
                    select(Consent.customer_id, Consent.channel, Consent.granted).where(
                        Consent.customer_id.in_(part), Consent.category == "all"
                    )
                )
            )
            locales.update(
                (i, loc)
                for i, loc in conn.execute(
                    select(Customer.id, Customer.locale).where(Customer.id.in_(part))
                )
            )
        return cls(suppressed, consent, locales)


def _proof(r: _Row, consent, suppression, locales) -> consent_proof.Proof:
    """The proof of what one event changed: its source, what the customer sent or was
    shown, and its ids."""
    e = r.event
    raw = e.raw if isinstance(e.raw, dict) else {}
    if r.kind in ("opted_out", "opted_in"):
        source, shown = "reply", e.text
    elif e.kind == EventKind.SPAM_REPORT:
        source, shown = "spam_report", None
    elif e.kind == EventKind.UNSUBSCRIBED and e.provider == "careflow":
        source = "one_click" if e.reason == "one-click" else "page"
        shown = raw.get("shown")
    elif e.kind in (EventKind.BOUNCED, EventKind.DROPPED):
        source, shown = "bounce", None
    else:  # a provider's own opt-out or dead-number code, its unsubscribe event
        source, shown = "provider", None
    if source == "reply":
        locale = (r.languages[0] if r.languages else None) or locales.get(r.customer_id)
    else:
        locale = raw.get("locale") if source in ("one_click", "page") else None
        locale = locale or locales.get(r.customer_id)
    evidence = {
        "provider": e.provider,
        "event_id": e.event_id,
        "provider_message_id": e.provider_message_id,
        "kind": str(e.kind),
        "reason": e.reason if source not in ("one_click", "page") else None,
        "answered_contact_id": r.contact_id,
        "answered_message_id": r.answered,
        "campaign": r.campaign or raw.get("campaign"),
        "occasion": raw.get("occasion") if e.provider == "careflow" else None,
        "token_id": raw.get("token_id") if e.provider == "careflow" else None,
    }
    return consent_proof.Proof(
        customer_id=r.customer_id,
        source=source,
        channel=e.channel,
        address=e.recipient,
        consent=consent,
        suppression=suppression,
        shown=shown,
        locale=locale,
        evidence=evidence,
        evidence_key=f"{e.provider}:{e.event_id}",
        occurred_at=e.occurred_at,
    )


def match_orphans(engine: Engine) -> int:
    """Attach events that arrived before their send was recorded; returns how many."""
    with engine.begin() as conn:
        orphans = conn.execute(
            select(CE.c.id, CE.c.provider_id, CE.c.kind).where(
                CE.c.contact_id.is_(None), CE.c.provider_id.is_not(None)
            )
        ).all()
        if not orphans:
            return 0
        pids = list({o.provider_id for o in orphans})
        found = {}
        for start in range(0, len(pids), 1000):
            for r in conn.execute(
                select(CH.c.id, CH.c.customer_id, CH.c.provider_id).where(
                    CH.c.provider_id.in_(pids[start : start + 1000])
                )
            ):
                found[r.provider_id] = (r.id, r.customer_id)
        matched = [o for o in orphans if o.provider_id in found]
        if matched:
            conn.execute(
                update(CE)
                .where(CE.c.id == bindparam("b_id"))
                .values(contact_id=bindparam("b_contact"), customer_id=bindparam("b_customer")),
                [
                    {
                        "b_id": o.id,
                        "b_contact": found[o.provider_id][0],
                        "b_customer": found[o.provider_id][1],
                    }
                    for o in matched
                ],
            )
            _advance_delivery(
                conn,
                [(found[o.provider_id][0], _kind(o.kind)) for o in matched],
                utcnow(),
            )
        return len(matched)


def _kind(value: str) -> EventKind:
    try:
        return EventKind(value)
    except ValueError:  # a timeline kind that is not a delivery state (opted_out...)
        return EventKind.UNKNOWN


def attribute_orders(
    engine: Engine,
    window_days: int = 7,
    shop_zone: str = "UTC",
    *,
    order_ids: Sequence[int] | None = None,
) -> int:
    """Link orders to the latest delivered message before them, within ``window_days``
    (:func:`attribute`); returns how many new conversions were recorded."""
    return len(attribute(engine, window_days, shop_zone, order_ids=order_ids))


def attribute(
    engine: Engine,
    window_days: int = 7,
    shop_zone: str = "UTC",
    *,
    order_ids: Sequence[int] | None = None,
) -> list[tuple[str, int, int, str]]:
    """Link orders to the latest delivered message before them, within ``window_days``.

    Last touch: an order belongs to the latest message delivered to that
    customer before the order and no more than ``window_days`` earlier.
    Orders keep the shop's clock (``shop_zone``, CAREFLOW_TIME_ZONE) and
    sends are UTC; both are compared as instants. Each order is attributed
    at most once (its event id is the order id), so running this after every
    import is safe. ``order_ids`` limits it to those orders (the shop's events attribute
    the orders they just wrote). A quiet order (an old one the shop posted outside a
    backfill, careflow/shop_record.py) is never attributed. Returns the conversions
    this call recorded as (``converted``, customer, message, campaign), for Prefect.
    """
    zone = ZoneInfo(shop_zone)
    with engine.begin() as conn:
        delivered = and_(CH.c.state == "sent", CH.c.delivery_state == "delivered")
        if order_ids is not None:  # the orders named, by id (no scan of the ledger)
            narrow = Order.id.in_(list(order_ids))
        else:
            first = conn.execute(select(func.min(CH.c.sent_at)).where(delivered)).scalar()
            if first is None:
                return []
            narrow = Order.ordered_at >= first - timedelta(days=1)
        done = select(CE.c.id).where(
            CE.c.provider == "careflow",
            CE.c.event_id == literal("order:") + cast(Order.id, String),
        )
        # the database narrows it to customers with a delivered message and orders
        # after the first one (a day of slack for the shop's clock), or to the orders
        # named; Python decides exactly
        orders = (Order.id, Order.customer_id, Order.ordered_at, Order.amount_minor,
                  Order.currency)  # fmt: skip
        if order_ids is not None and conn.dialect.name == "postgresql":
            # the orders named first, then each customer's messages by its index: with
            # statistics from before a campaign's sends, PostgreSQL otherwise walks every
            # sent message and probes the orders for each (a whole-ledger scan per post)
            named = select(*orders).where(narrow, ~exists(done), Order.quiet.is_not(True))
            named = named.subquery("named")
            hit = (
                select(CH.c.id.label("contact_id"), CH.c.campaign, CH.c.sent_at)
                .where(
                    CH.c.customer_id == named.c.customer_id,
                    unindexed(CH.c.state) == "sent",  # by customer only, not every sent row
                    CH.c.delivery_state == "delivered",
                )
                .offset(0)  # keeps it a lookup per order, not one join of everything
                .lateral("hit")
            )
            query = (
                select(named, hit)
                .select_from(named)
                .join(hit, true())
                .order_by(named.c.id, hit.c.sent_at.desc(), hit.c.contact_id.desc())
            )
        else:
            query = (
                select(*orders, CH.c.id.label("contact_id"), CH.c.campaign, CH.c.sent_at)
                .join(CH, and_(CH.c.customer_id == Order.customer_id, delivered))
                .where(narrow, ~exists(done), Order.quiet.is_not(True))
                .order_by(Order.id, CH.c.sent_at.desc(), CH.c.id.desc())
            )
        candidates = conn.execute(query).all()
        window = timedelta(days=window_days)
        latest: dict[int, tuple] = {}
        for c in candidates:
            at = c.ordered_at.replace(tzinfo=zone).astimezone(UTC).replace(tzinfo=None)
            if c.id not in latest and c.sent_at <= at <= c.sent_at + window:
                latest[c.id] = (c, at)  # the first that fits is the last touch
        if not latest:
            return []
        now = utcnow()
        # (another attribution, a report's or the receiver's, may write the same at once)
        inserted = conn.execute(
            sqlfunc.insert(conn, CE)
            .on_conflict_do_nothing(index_elements=[CE.c.provider, CE.c.event_id])
            .returning(CE.c.event_id),
            [
                {
                    "provider": "careflow",
                    "event_id": f"order:{c.id}",
                    "kind": "converted",
                    "occurred_at": at,
                    "received_at": now,
                    "contact_id": c.contact_id,
                    "customer_id": c.customer_id,
                    "payload": {
                        "order_id": c.id,
                        "amount_minor": c.amount_minor,
                        "currency": c.currency,
                        "campaign": c.campaign,
                    },
                }
                for c, at in latest.values()
            ],
        )
        new = {event_id for (event_id,) in inserted}
        return [
            ("converted", c.customer_id, c.contact_id, c.campaign)
            for c, _ in latest.values()
            if f"order:{c.id}" in new
        ]
