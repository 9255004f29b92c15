"""Consent proof: every change of consent, suppression or cadence, kept append-only.

Whatever changes a customer's consent (``consents``) or an address's suppression
(``suppressions``) writes one record here, in the same transaction as the change
it proves, through :func:`record` (or :func:`record_many` for a batch):

- a reply (STOP, TD, 退订, and START back) and a provider's own opt-out code or
  unsubscribe event, a bounce, a spam report: careflow/responses.py;
- the RFC 8058 one-click POST and the unsubscribe page (careflow/service/, through
  responses.py as the event it posts);
- a consent import: careflow/importers/consents.py;
- a sign-up posted by the shop with the consent its form gave: careflow/signups.py;
- the preference centre (careflow/preferences.py ``apply_change``: each choice it
  changes, and the cadence, paused or fewer) and an operator call :func:`record` with
  ``source="page"`` or ``"operator"`` the same way.

A record says who (customer, or the address when no customer matched), through
what (``source``), on which channel and category, what changed (consent and
suppression, before and after), what the customer was shown or sent (the reply's
text, the page's wording, the import file and line), the locale, when, and the
request's evidence: ids only (provider message and event ids, a token's id from
:func:`token_id`, the ledger row a reply answered, the file's digest), never a
secret or a whole token. A request that finds the state already as asked (a
second STOP from a different message) is recorded too, before equal to after: it
is proof the request came and was honoured. The same evidence twice (a
provider's retry, the same file imported again) is recorded once:
``evidence_key`` is unique.

**Append-only.** Triggers (migration 0014) refuse any UPDATE of a record, and a
DELETE of one recorded less than :data:`LEGAL_MINIMUM_DAYS` ago, on SQLite and
PostgreSQL, whoever asks. :func:`prune` deletes what is older than
``CAREFLOW_CONSENT_PROOF_RETENTION_DAYS`` except the newest record of each
customer, channel and category and of each suppressed address: the proof of the
state careflow acts on today is never pruned. docs/preferences.md says which legal
points this serves.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Engine, and_, delete, func, or_, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from careflow.clock import utcnow
from careflow.db.models import ConsentProof, Customer
from careflow.errors import ConfigError
from careflow.tables import shorten, text_table

PROOF = ConsentProof.__table__

#: where a change came from
SOURCES = (
    "reply",  # an SMS or email reply read as an opt-out or opt-in keyword
    "one_click",  # the RFC 8058 one-click POST (the mail client's Unsubscribe button)
    "page",  # a page the customer confirmed on (unsubscribe page, preference centre)
    "bounce",  # a provider's permanent delivery failure (hard bounce, dropped)
    "spam_report",  # the customer marked a message as spam
    "provider",  # a provider's own opt-out or dead-number code (Twilio 21610, 30006...)
    "import",  # a consent file (careflow import consents)
    "signup",  # the shop's sign-up form, posted as a signup event (careflow/signups.py)
    "operator",  # a person at the shop, by a command
)

#: Records younger than this cannot be deleted (the database's triggers refuse it), and
#: the retention setting cannot be lower. China's rules on commercial SMS want proof
#: of consent kept at least 5 months: at most 153 days of calendar, and 180 adds a
#: margin for a complaint about the last message of the period to reach the shop.
LEGAL_MINIMUM_DAYS = 180

#: evidence keys that would hold a secret: refused, whatever the caller meant
_SECRET_KEYS = {"token", "secret", "password", "signature", "auth_token", "api_key"}
_EVIDENCE_KEY = PROOF.c.evidence_key.type.length
_SHOWN_CHARS = 4000
_VALUE_CHARS = 300


def check_retention(days: int) -> int:
    """``days`` if it keeps proof as long as the law asks; ValueError otherwise (the
    settings turn it into a one-line ConfigError naming the variable)."""
    if days < LEGAL_MINIMUM_DAYS:
        raise ValueError(
            f"must be at least {LEGAL_MINIMUM_DAYS} days (China's SMS rules keep consent "
            "proof at least 5 months; docs/preferences.md)"
        )
    return days


def token_id(token: str) -> str:
    """What a proof keeps of a token (an unsubscribe link's, a preference page's): a
    digest that names it and cannot be used as it."""
    return "sha256:" + hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()[:24]


def consent_word(granted: bool | None) -> str:
    """How a consent state is written in a record: granted, withdrawn, none (never asked)."""
    return "none" if granted is None else ("granted" if granted else "withdrawn")


@dataclass(frozen=True)
class Proof:
    """One record to write (:func:`record`'s arguments as a value, for batches).

    ``consent``: (before, after) as ``True``/``False``/``None``, or None when the change
    does not touch consent; ``suppression``: (before, after) suppression reasons, None for
    not suppressed, or None when it does not touch suppression."""

    customer_id: int | None
    source: str
    channel: str
    evidence_key: str
    category: str = "all"
    consent: tuple[bool | None, bool | None] | None = None
    suppression: tuple[str | None, str | None] | None = None
    address: str | None = None
    shown: str | None = None
    locale: str | None = None
    evidence: dict = field(default_factory=dict)
    occurred_at: datetime | None = None
    #: (before, after) cadence as the preference centre says it (``normal``, ``fewer``,
    #: ``paused until 2027-01-07 00:00 UTC``), or None when the change does not touch it
    cadence: tuple[str, str] | None = None


def record(
    conn,
    customer_id: int | None,
    *,
    source: str,
    channel: str,
    evidence_key: str,
    category: str = "all",
    consent: tuple[bool | None, bool | None] | None = None,
    suppression: tuple[str | None, str | None] | None = None,
    address: str | None = None,
    shown: str | None = None,
    locale: str | None = None,
    evidence: dict | None = None,
    occurred_at: datetime | None = None,
    now: datetime | None = None,
) -> bool:
    """Record one change of consent or suppression on ``conn``, inside the caller's
    transaction (the one making the change). True when written, False when a record of
    the same ``evidence_key`` exists (a retry of the same request).

    ``evidence_key`` names the request uniquely across sources (``twilio:SM...``,
    ``page:<token id>:<submission>``); ``evidence`` holds its ids (never a secret or a
    whole token: use :func:`token_id`); ``occurred_at`` is when the customer acted
    (naive UTC; default ``now``). Example, a preference page's "stop all marketing"::

        record(conn, customer_id, source="page", channel="email", category="marketing",
               consent=(True, False), shown=page_text, locale="zh-CN",
               evidence_key=f"page:{token_id(token)}:{form_id}",
               evidence={"token_id": token_id(token)})
    """
    proof = Proof(
        customer_id=customer_id,
        source=source,
        channel=channel,
        evidence_key=evidence_key,
        category=category,
        consent=consent,
        suppression=suppression,
        address=address,
        shown=shown,
        locale=locale,
        evidence=dict(evidence or {}),
        occurred_at=occurred_at,
    )
    return record_many(conn, [proof], now=now) == 1


def record_many(conn, proofs: Sequence[Proof], *, now: datetime | None = None) -> int:
    """Record a batch of changes in one statement on ``conn`` (the caller's transaction);
    returns how many were new (an evidence key already recorded is passed over)."""
    if not proofs:
        return 0
    now = now or utcnow()
    rows = {}
    for p in proofs:  # one row per key: a batch may hold a request twice
        row = _row(p, now)
        rows.setdefault(row["evidence_key"], row)
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    inserted = conn.execute(
        insert(PROOF)
        .on_conflict_do_nothing(index_elements=[PROOF.c.evidence_key])
        .returning(PROOF.c.id),
        [rows[k] for k in sorted(rows)],  # key order: concurrent writers never deadlock
    )
    return len(inserted.all())


def _row(p: Proof, now: datetime) -> dict:
    if p.source not in SOURCES:
        raise ValueError(f"consent proof source {p.source!r} is not one of {', '.join(SOURCES)}")
    if p.consent is None and p.suppression is None and p.cadence is None:
        raise ValueError("a consent proof records a change of consent, suppression or cadence")
    if not p.evidence_key:
        raise ValueError("a consent proof needs the request's evidence key")
    secret = _SECRET_KEYS & {str(k).lower() for k in p.evidence}
    if secret:
        raise ValueError(f"consent proof evidence may not hold {sorted(secret)[0]!r}: keep an id")
    before, after = p.consent or (None, None)
    s_before, s_after = p.suppression or (None, None)
    return {
        "customer_id": p.customer_id,
        "source": p.source,
        "channel": p.channel,
        "category": p.category or "all",
        "address": _clean(p.address, PROOF.c.address.type.length),
        "consent_before": consent_word(before) if p.consent is not None else None,
        "consent_after": consent_word(after) if p.consent is not None else None,
        "suppression_before": (s_before or "none") if p.suppression is not None else None,
        "suppression_after": (s_after or "none") if p.suppression is not None else None,
        "cadence_before": _clean(p.cadence[0], 64) if p.cadence else None,
        "cadence_after": _clean(p.cadence[1], 64) if p.cadence else None,
        "shown": _clean(p.shown, _SHOWN_CHARS),
        "locale": _clean(p.locale, PROOF.c.locale.type.length),
        "occurred_at": p.occurred_at or now,
        "recorded_at": now,
        "evidence_key": _key(p.evidence_key),
        "evidence": {str(k): _value(v) for k, v in p.evidence.items() if _given(v)} or None,
    }


def _given(value) -> bool:
    """False for an evidence value that says nothing: None, NaN (a file's empty cell)."""
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _clean(value, limit: int) -> str | None:
    """Text as both databases keep it: no NUL, no lone surrogate, cut to ``limit``."""
    if value is None:
        return None
    text = str(value).replace("\x00", "")
    text = text.encode("utf-8", "replace").decode("utf-8")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _value(value):
    if isinstance(value, bool | int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    return _clean(value, _VALUE_CHARS)


def _key(key: str) -> str:
    """The evidence key as stored: a long one keeps its head and a digest of the whole, so
    two long keys stay two."""
    key = _clean(key, 10**6) or ""
    if len(key) <= _EVIDENCE_KEY:
        return key
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    return f"{key[: _EVIDENCE_KEY - 33]}~{digest}"


# --- reading: the export -------------------------------------------------------------


def find_customer(conn, given: str) -> tuple[int, str | None] | None:
    """(id, ref) of the customer ``given`` names: ``#17`` or ``17`` by id, ``ref:C-17`` or
    any other text by the shop's ref (``careflow import customers``). Digits that are one
    customer's id and another's ref are ambiguous: ConfigError asking for ``#`` or ``ref:``.
    None when nobody matches."""
    given = given.strip()
    by_ref = select(Customer.id, Customer.external_ref)
    if given.startswith("ref:"):
        row = conn.execute(by_ref.where(Customer.external_ref == given[4:])).first()
        return tuple(row) if row else None
    digits = given[1:] if given.startswith("#") else given
    if digits.isdigit() and int(digits) < 2**63:
        by_id = conn.execute(by_ref.where(Customer.id == int(digits))).first()
        if given.startswith("#"):
            return tuple(by_id) if by_id else None
        named = conn.execute(by_ref.where(Customer.external_ref == given)).first()
        if by_id and named and by_id.id != named.id:
            raise ConfigError(
                f"{given} is customer #{by_id.id}'s id and customer #{named.id}'s ref: "
                f"write #{given} for the id or ref:{given} for the ref"
            )
        row = by_id or named
        return tuple(row) if row else None
    row = conn.execute(by_ref.where(Customer.external_ref == given)).first()
    return tuple(row) if row else None


def proof_of(conn, customer_id: int, addresses: Iterable[tuple[str, str]] = ()) -> list[dict]:
    """Every record about one customer, oldest first: theirs, and those of an address of
    theirs (``addresses``: (channel, address) pairs) that arrived without a customer (a
    bounce for an address no message matched)."""
    mine = PROOF.c.customer_id == customer_id
    pairs = sorted(set(addresses))
    if pairs:
        mine = or_(
            mine,
            and_(
                PROOF.c.customer_id.is_(None),
                tuple_(PROOF.c.channel, PROOF.c.address).in_(pairs),
            ),
        )
    rows = conn.execute(
        select(PROOF).where(mine).order_by(PROOF.c.occurred_at, PROOF.c.id)
    ).mappings()
    return [_exported(r) for r in rows]


def _exported(r) -> dict:
    return {
        "id": r["id"],
        "occurred_at": r["occurred_at"].isoformat(timespec="seconds") + "Z",
        "recorded_at": r["recorded_at"].isoformat(timespec="seconds") + "Z",
        "customer_id": r["customer_id"],
        "source": r["source"],
        "channel": r["channel"],
        "category": r["category"],
        "address": r["address"],
        "consent": _pair(r["consent_before"], r["consent_after"]),
        "suppression": _pair(r["suppression_before"], r["suppression_after"]),
        "cadence": _pair(r["cadence_before"], r["cadence_after"]),
        "change": change_text(r),
        "shown": r["shown"],
        "locale": r["locale"],
        "evidence_key": r["evidence_key"],
        "evidence": r["evidence"] or {},
    }


def _pair(before, after) -> dict | None:
    return None if before is None and after is None else {"before": before, "after": after}


def change_text(r) -> str:
    """What a record changed, in a few words: ``consent granted→withdrawn; suppressed
    (opted_out)``; an unchanged state says ``(already)``."""
    parts = []
    if r["consent_after"] is not None:
        before, after = r["consent_before"], r["consent_after"]
        same = before == after
        parts.append(f"consent {after} (already)" if same else f"consent {before}→{after}")
    if r["suppression_after"] is not None:
        before, after = r["suppression_before"], r["suppression_after"]
        if before == after:
            parts.append("suppressed (already)" if after != "none" else "not suppressed (already)")
        elif after == "none":
            parts.append(f"unsuppressed (was {before})")
        else:
            parts.append(f"suppressed ({after})")
    if r["cadence_after"] is not None:
        parts.append(f"cadence {r['cadence_before']}→{r['cadence_after']}")
    return "; ".join(parts)


def evidence_text(item: dict) -> str:
    """A record's evidence on one line: its ids, key=value, each value once (a Twilio
    reply's event id is its message id) and without the event's kind (the source says it)."""
    shown, parts = set(), []
    for k, v in (item["evidence"] or {}).items():
        if k != "kind" and v not in shown:
            shown.add(v)
            parts.append(f"{k}={v}")
    return " ".join(parts) or item["evidence_key"]


def table(items: Sequence[dict]) -> str:
    """The records as a terminal table: time (UTC), source, channel, change, evidence."""
    rows = [
        [
            i["occurred_at"].replace("T", " ")[:16],
            i["source"],
            i["channel"] + ("" if i["category"] == "all" else f"/{i['category']}"),
            i["change"],
            shorten(evidence_text(i), 100),
        ]
        for i in items
    ]
    return text_table(["time (UTC)", "source", "channel", "change", "evidence"], rows)


# --- retention -------------------------------------------------------------------------


@dataclass(frozen=True)
class Pruned:
    """What a prune deleted (or would delete), and before which instant."""

    deleted: int
    before: datetime
    dry_run: bool

    def as_dict(self) -> dict:
        return {**asdict(self), "before": self.before.isoformat(timespec="seconds") + "Z"}


def prune(
    engine: Engine, retention_days: int, *, now: datetime | None = None, dry_run: bool = False
) -> Pruned:
    """Delete the records older than ``retention_days`` (counted from when careflow wrote
    them), except the newest of each customer, channel and category and of each address
    and channel: the proof of today's state stays however old. ``dry_run`` counts only."""
    check_retention(retention_days)
    cut = (now or utcnow()) - timedelta(days=retention_days)
    newest_per_customer = select(func.max(PROOF.c.id)).group_by(
        PROOF.c.customer_id, PROOF.c.channel, PROOF.c.category
    )
    newest_per_address = (
        select(func.max(PROOF.c.id))
        .where(PROOF.c.address.is_not(None))
        .group_by(PROOF.c.channel, PROOF.c.address)
    )
    old = and_(
        PROOF.c.recorded_at < cut,
        PROOF.c.id.not_in(newest_per_customer),
        PROOF.c.id.not_in(newest_per_address),
    )
    with engine.begin() as conn:
        if dry_run:
            count = conn.execute(select(func.count()).select_from(PROOF).where(old)).scalar_one()
        else:
            count = conn.execute(delete(PROOF).where(old)).rowcount
    return Pruned(count, cut, dry_run)
