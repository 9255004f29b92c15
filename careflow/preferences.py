"""The preference centre's core: its links, a customer's effective state, and the one write.

A customer opens ``/p/<token>`` (careflow serve, careflow/service/preference_pages.py)
from the footer of an email or from an SMS, sees what careflow would send them
now, and changes it:

- **per category and channel**: care and marketing, on each content channel they
  have an address for. These choices are consents (the ``consents`` table,
  source ``preference_centre``, one row per category and channel), so the policy
  reads them as it reads every other consent (docs/policy.md, rule 2);
  transactional messages are shown, not switchable;
- **cadence** of marketing: ``normal``, ``fewer`` (at most ``FEWER_LIMIT``
  marketing message per ``FEWER_DAYS`` days, whatever the campaign's cap) or
  ``paused`` until a date (nothing of marketing until then). Kept in the
  ``preferences`` table (migration 0015) and applied by the policy table's
  cadence rule (careflow/policy/__init__.py ``CadenceRule``);
- **stop all marketing**: every marketing choice off at once.

**Links.** A token names one customer and when it was issued, and is signed
with the unsubscribe key (careflow/unsubscribe.py ``UnsubscribeTokens.sign``,
under its own purpose label, so an unsubscribe MAC never checks as a
preference one and back) and accepted for the same lifetime
(``CAREFLOW_UNSUBSCRIBE_TOKEN_MAX_AGE_DAYS``). It is short enough for an SMS:
23 bytes, 31 characters of base64url (a version byte, the customer id in 8
bytes, the issue minute in 4, and 80 bits of HMAC-SHA256). A token is logged
and recorded only as its :func:`token_id`, never whole.

**The one write.** :func:`apply_change` is the only function that writes a
preference change: it reads the state before, in the same transaction, writes
what changed, and returns a :class:`PreferenceChange` holding everything a
proof of the change needs (customer, before and after, locale, token id,
time). A consent-proof record belongs in that transaction, right after the
writes, made from that value.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, and_, or_, select

from careflow import registry
from careflow.consent_proof import Proof, record_many
from careflow.db.models import Consent, ContactHistory, Customer, Preference, Suppression
from careflow.errors import CareflowError, DataError
from careflow.messages import State as Ledger
from careflow.policy import normalize_address, opt_in_channels
from careflow.policy.cadence import CADENCE_CATEGORY, FEWER_DAYS, Cadence
from careflow.policy.config import PolicyConfig
from careflow.policy.countries import load_countries
from careflow.unsubscribe import CLOCK_SKEW, UnsubscribeTokens

CADENCES = ("normal", "fewer", "paused")
#: the categories a customer can switch on the page; transactional is shown read only
CATEGORIES = ("care", "marketing")
#: the longest pause the page offers; a longer wish is "off"
MAX_PAUSE_DAYS = 366
#: the consents the page writes carry this source
SOURCE = "preference_centre"

_PURPOSE = b"careflow-preferences."
_VERSION = 1
_ID_BYTES, _ISSUED_BYTES, _MAC_BYTES = 8, 4, 10
_TOKEN_BYTES = 1 + _ID_BYTES + _ISSUED_BYTES + _MAC_BYTES
#: a real token is 31 characters; anything much longer is refused before any work
MAX_TOKEN_CHARS = 64


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def token_id(token: str) -> str:
    """What logs and records say instead of a token: 16 hex digits of its SHA-256."""
    return hashlib.sha256(str(token).encode("utf-8", "replace")).hexdigest()[:16]


@dataclass(frozen=True)
class Grant:
    """What a verified preference token allows: one customer's page, issued then."""

    customer_id: int
    issued_at: datetime  # aware UTC
    token_id: str


class PreferenceTokens:
    """Makes and verifies preference-centre tokens under the unsubscribe key."""

    def __init__(self, keyed: UnsubscribeTokens):
        self._keyed = keyed
        self.max_age: timedelta = getattr(keyed, "max_age", timedelta(0))
        self.source: str = getattr(keyed, "source", "")

    def __repr__(self) -> str:  # never show the key
        return f"PreferenceTokens(max_age={self.max_age})"

    def _mac(self, signed: bytes) -> bytes:
        return self._keyed.sign(_PURPOSE, signed)[:_MAC_BYTES]

    def make(self, customer_id: int, *, now: datetime | None = None) -> str:
        """A 31-character URL-safe token for ``customer_id``'s page, issued ``now``."""
        issued = int((now or datetime.now(UTC)).timestamp()) // 60
        signed = (
            bytes([_VERSION])
            + int(customer_id).to_bytes(_ID_BYTES, "big")
            + issued.to_bytes(_ISSUED_BYTES, "big")
        )
        return _b64(signed + self._mac(signed))

    def verify(self, token: str, *, now: datetime | None = None) -> Grant:
        """Whose page ``token`` opens; DataError (a short reason a page can show) when it is
        malformed, forged, expired or issued in the future."""
        if not isinstance(token, str) or not token.isascii() or len(token) > MAX_TOKEN_CHARS:
            raise DataError("malformed link")
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            raise DataError("malformed link") from None
        if len(raw) != _TOKEN_BYTES or raw[0] != _VERSION:
            raise DataError("malformed link")
        signed, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
        if not hmac.compare_digest(mac, self._mac(signed)):
            raise DataError("the link's signature does not match")
        customer_id = int.from_bytes(signed[1 : 1 + _ID_BYTES], "big")
        minutes = int.from_bytes(signed[1 + _ID_BYTES :], "big")
        issued_at = datetime.fromtimestamp(minutes * 60, UTC)
        age = (now or datetime.now(UTC)) - issued_at
        if not 0 < customer_id < 2**63:
            raise DataError("malformed link")
        if age < -CLOCK_SKEW:
            raise DataError("the link was issued in the future")
        if age > self.max_age:
            raise DataError(
                f"the link expired: issued {issued_at:%Y-%m-%d}, valid for {self.max_age.days} days"
            )
        return Grant(customer_id, issued_at, token_id(token))


def preferences_url(base: str, token: str) -> str:
    """The page's address: ``base`` (the service's public URL and ``/p``) and the token."""
    return f"{base.rstrip('/')}/{token}"


# --- state ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class State:
    """A customer's choices as the policy applies them: the cadence of marketing (a pause
    that has ended reads ``normal``) and, per (category, channel), whether careflow may
    send. ``allowed`` covers the categories in :data:`CATEGORIES` on the channels shown."""

    cadence: str = "normal"
    paused_until: datetime | None = None  # naive UTC, only when paused
    allowed: Mapping[tuple[str, str], bool] = field(default_factory=dict)

    def lines(self) -> list[str]:
        """One line per choice, for a log or a proof: ``marketing/email: on``."""
        out = [f"cadence: {self.describe_cadence()}"]
        out += [f"{cat}/{ch}: {_onoff(on)}" for (cat, ch), on in sorted(self.allowed.items())]
        return out

    def describe_cadence(self) -> str:
        if self.cadence == "paused" and self.paused_until is not None:
            return f"paused until {self.paused_until:%Y-%m-%d %H:%M} UTC"
        return self.cadence


@dataclass(frozen=True)
class Operator:
    """A person at the shop making a change a customer asked for (by phone, at the
    counter, in a letter): who, and what the customer asked, in their words. Both go into
    the consent proof."""

    name: str
    reason: str

    def __post_init__(self):
        if not self.name.strip() or not self.reason.strip():
            raise DataError("an operator's change needs who made it and why (--by, --reason)")


@dataclass(frozen=True)
class PreferenceChange:
    """One change made on the page: who, what before and after, in which language, by
    which token (its id), when. :func:`apply_change` returns it."""

    customer_id: int
    before: State
    after: State
    locale: str
    token_id: str  # empty for an operator's change
    at: datetime  # naive UTC
    operator: Operator | None = None

    @property
    def source(self) -> str:
        """The consents' ``source``: the page's, or ``operator``."""
        return SOURCE if self.operator is None else "operator"

    @property
    def changed(self) -> list[str]:
        """``what: before -> after`` for each choice that changed."""
        out = []
        if (self.before.cadence, self.before.paused_until) != (
            self.after.cadence,
            self.after.paused_until,
        ):
            out.append(
                f"cadence: {self.before.describe_cadence()} -> {self.after.describe_cadence()}"
            )
        for key in sorted(self.after.allowed):
            was, now = self.before.allowed.get(key), self.after.allowed[key]
            if was != now:
                out.append(f"{key[0]}/{key[1]}: {_onoff(was)} -> {_onoff(now)}")
        return out


def _onoff(value: bool | None) -> str:
    return "unknown" if value is None else ("on" if value else "off")


@dataclass(frozen=True)
class View:
    """What the page shows a customer: their state, the channels they can be reached on
    (with the address masked by the page), and what blocks an address whatever the
    choices (a bounce, an unsubscribe, a spam report), by channel."""

    customer_id: int
    locale: str | None
    time_zone: str | None
    addresses: Mapping[str, str]  # channel -> address on file, normalised
    state: State
    blocked: Mapping[str, str]  # channel -> suppression reason


def reachable(customer: Mapping, settings) -> dict[str, str]:
    """channel -> the customer's address on it, for each content channel they have a
    usable address on (the order of the registry)."""
    out = {}
    for channel in registry.content_names():
        raw = customer.get(registry.get(channel).contact_field or "")
        if raw is None or not str(raw).strip():
            continue
        try:
            out[channel] = normalize_address(
                channel,
                str(raw),
                country=customer.get("country"),
                default_region=settings.sms_default_region,
            )
        except CareflowError:  # an address the channel cannot use: not offered
            continue
    return out


def defaults(settings, country: str | None, channels: Sequence[str]) -> dict[tuple[str, str], bool]:
    """(category, channel) -> what no recorded decision means, under the consent regime."""
    regime = settings.consent_regime
    if regime == "opt_out" and settings.consent_required:
        regime = "opt_in"
    countries = load_countries(settings.country_rules_file) if regime == "by_country" else None
    out = {}
    for category in CATEGORIES:
        config = PolicyConfig(category=category, consent_regime=regime)
        if countries is not None:
            config = PolicyConfig(category=category, consent_regime=regime, countries=countries)
        needs = opt_in_channels(config, country, channels)
        out.update({(category, ch): ch not in needs for ch in channels})
    return out


def _read_state(conn, customer_id: int, channels, default, now: datetime) -> State:
    """The state as the policy would apply it at ``now`` (naive UTC)."""
    latest: dict[tuple[str, str], tuple] = {}
    for r in conn.execute(
        select(Consent.channel, Consent.category, Consent.granted, Consent.updated_at).where(
            Consent.customer_id == customer_id,
            Consent.channel.in_(list(channels)),
            Consent.category.in_(["all", *CATEGORIES]),
        )
    ):
        cats = CATEGORIES if r.category == "all" else (r.category,)
        rank = (r.updated_at, r.category != "all")  # as the policy: later wins, ties the category
        for cat in cats:
            key = (cat, r.channel)
            if key not in latest or rank > latest[key][0]:
                latest[key] = (rank, bool(r.granted))
    allowed = {
        (cat, ch): latest[(cat, ch)][1] if (cat, ch) in latest else default[(cat, ch)]
        for cat in CATEGORIES
        for ch in channels
    }
    row = conn.execute(
        select(Preference.cadence, Preference.paused_until).where(
            Preference.customer_id == customer_id
        )
    ).first()
    cadence, until = (row.cadence, row.paused_until) if row else ("normal", None)
    if cadence == "paused" and (until is None or until <= now):
        cadence, until = "normal", None
    return State(cadence, until if cadence == "paused" else None, allowed)


def _customer(conn, customer_id: int) -> dict | None:
    table = Customer.__table__
    row = conn.execute(select(table).where(table.c.id == customer_id)).mappings().first()
    return None if row is None else dict(row)


def view(engine: Engine, customer_id: int, settings, now: datetime) -> View | None:
    """What the page shows ``customer_id`` at ``now`` (naive UTC); None: no such customer."""
    with engine.connect() as conn:
        customer = _customer(conn, customer_id)
        if customer is None:
            return None
        addresses = reachable(customer, settings)
        default = defaults(settings, customer.get("country"), list(addresses))
        state = _read_state(conn, customer_id, list(addresses), default, now)
        blocked = {}
        for channel, address in addresses.items():
            reason = conn.execute(
                select(Suppression.reason).where(
                    Suppression.channel == channel, Suppression.address == address
                )
            ).scalar()
            if reason:
                blocked[channel] = reason
    return View(
        customer_id, customer.get("locale"), customer.get("time_zone"), addresses, state, blocked
    )


def _upsert(conn, table, keys: dict, values: dict) -> None:
    """Insert the row with ``keys``, or update it with ``values`` if it is there: one
    statement, so two posts for one customer never collide on the key."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    statement = insert(table).values(**keys, **values)
    conn.execute(statement.on_conflict_do_update(index_elements=list(keys), set_=values))


def apply_change(
    engine: Engine,
    customer_id: int,
    wanted: State,
    *,
    locale: str,
    token_id: str,
    at: datetime,
    settings,
    operator: Operator | None = None,
) -> PreferenceChange:
    """Write one change a customer made on the page, or asked the shop for (``operator``:
    the person at the shop who made it, and why; `careflow consent set`); the only
    writer of preferences.

    ``wanted`` is the state the page posted (cadence, pause end, and a choice for each
    category on each channel shown; a choice left out keeps its value). In one
    transaction (the customer's row locked on PostgreSQL, the write lock taken at once
    on SQLite, so two posts for one customer take turns and each sees the other's
    result): the state before is read, each (category, channel) whose effective answer
    changes gets a consent row (source ``preference_centre``, at ``at``), and the
    cadence row is written when the cadence or the pause changed. A post that changes
    nothing writes nothing. ``at`` is naive UTC. Returns the change: customer, before
    and after, ``locale`` the page was shown in, ``token_id``, ``at``; a proof of
    consent is made from it inside this transaction, after the writes."""
    if wanted.cadence not in CADENCES:
        raise DataError(f"unknown cadence {wanted.cadence!r}")
    if (wanted.cadence == "paused") != (wanted.paused_until is not None):
        raise DataError("a pause needs its end, and only a pause has one")
    with engine.begin() as conn:
        lock = select(Customer.id).where(Customer.id == customer_id)
        if conn.dialect.name == "postgresql":
            lock = lock.with_for_update()
        else:  # the write lock from the first statement: "before" is what this write changes
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        if conn.execute(lock).first() is None:
            raise DataError(f"no customer {customer_id}")
        customer = _customer(conn, customer_id)
        channels = list(reachable(customer, settings))
        default = defaults(settings, customer.get("country"), channels)
        before = _read_state(conn, customer_id, channels, default, at)
        allowed = {k: bool(wanted.allowed.get(k, before.allowed[k])) for k in before.allowed}
        after = State(wanted.cadence, wanted.paused_until, allowed)
        change = PreferenceChange(customer_id, before, after, locale, token_id, at, operator)
        proofs = []
        for (category, channel), on in allowed.items():
            was = before.allowed[(category, channel)]
            if on != was:
                _upsert(
                    conn,
                    Consent.__table__,
                    {"customer_id": customer_id, "channel": channel, "category": category},
                    {"granted": on, "source": change.source, "updated_at": at},
                )
                proofs.append(_proof(change, category, channel, was, on))
        if (after.cadence, after.paused_until) != (before.cadence, before.paused_until):
            proofs.append(_proof(change, CADENCE_CATEGORY, "all", cadence=True))
            _upsert(
                conn,
                Preference.__table__,
                {"customer_id": customer_id},
                {
                    "cadence": after.cadence,
                    "paused_until": after.paused_until,
                    "locale": locale[:16],
                    "token_id": token_id or None,
                    "updated_at": at,
                },
            )
        record_many(conn, proofs, now=at)  # in this transaction: no change without its proof
    return change


def _proof(
    change: PreferenceChange, category: str, channel: str, was=None, on=None, cadence=False
) -> Proof:
    """The consent proof of one choice changed on the page (careflow/consent_proof.py), or
    of its cadence: what the page offered, in the language it was shown in, and the
    link's token id."""
    if cadence:
        what = (change.before.describe_cadence(), change.after.describe_cadence())
        shown = f"how often: {what[0]} -> {what[1]}"
    else:
        what = (was, on)
        shown = f"{category} by {channel}, {_onoff(was)} -> {_onoff(on)}"
    by = change.operator
    if by is None:
        source, key, evidence = "page", f"page:{change.token_id}", {"token_id": change.token_id}
        shown = f"the preference centre ({change.locale}): {shown}"
    else:
        source, key, evidence = "operator", f"operator:{by.name}", {"operator": by.name}
        shown = f"changed by {by.name} at the shop, as the customer asked ({by.reason}): {shown}"
    return Proof(
        change.customer_id,
        source=source,
        channel=channel,
        category=category,
        consent=None if cadence else what,
        cadence=what if cadence else None,
        evidence_key=f"{key}:{change.at.isoformat()}:{category}:{channel}",
        shown=shown,
        locale=change.locale,
        evidence=evidence,
        occurred_at=change.at,
    )


# --- what the policy reads -----------------------------------------------------------------
def load_cadences(
    engine: Engine, customer_ids: Iterable[int], now: datetime
) -> dict[int, Cadence]:
    """customer -> their cadence in force at ``now`` (naive or aware UTC), for those of
    ``customer_ids`` who paused (until after ``now``) or asked for fewer; two queries."""
    now = now.astimezone(UTC).replace(tzinfo=None) if now.tzinfo else now
    ids = sorted(set(customer_ids))
    out: dict[int, Cadence] = {}
    fewer: list[int] = []
    P = Preference.__table__
    CH = ContactHistory.__table__
    with engine.connect() as conn:
        for start in range(0, len(ids), 2000):
            part = ids[start : start + 2000]
            for r in conn.execute(
                select(P.c.customer_id, P.c.cadence, P.c.paused_until).where(
                    P.c.customer_id.in_(part),
                    or_(
                        P.c.cadence == "fewer",
                        and_(P.c.cadence == "paused", P.c.paused_until > now),
                    ),
                )
            ):
                if r.cadence == "paused":
                    out[r.customer_id] = Cadence("paused", r.paused_until)
                else:
                    fewer.append(r.customer_id)
        since = now - timedelta(days=FEWER_DAYS)
        counted: dict[int, list] = {cid: [] for cid in fewer}
        for start in range(0, len(fewer), 2000):
            part = fewer[start : start + 2000]
            for r in conn.execute(
                select(CH.c.customer_id, CH.c.campaign, CH.c.channel, CH.c.state, CH.c.sent_at)
                .where(
                    CH.c.customer_id.in_(part),
                    CH.c.category == CADENCE_CATEGORY,
                    or_(
                        and_(CH.c.state == Ledger.SENT, CH.c.sent_at >= since),
                        and_(
                            CH.c.state.in_([Ledger.RESERVED, Ledger.SENDING]),
                            CH.c.recipient.is_not(None),
                        ),
                    ),
                )
                .order_by(CH.c.sent_at)
            ):
                at = r.sent_at if r.state == Ledger.SENT else None
                counted[r.customer_id].append((r.campaign, r.channel, at))
        for cid in fewer:
            out[cid] = Cadence("fewer", None, tuple(counted[cid]))
    return out
