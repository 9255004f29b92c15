"""What the shop tells careflow as it happens: orders, sign-ups, cart changes, its own events.

The shop posts them to ``careflow serve``'s ``POST /events`` (docs/events.md),
signed per source; this module is everything about a post that needs no
database: how it is signed and checked (:func:`sign`, :func:`verify`), and how
its body is read into :class:`ShopEvent` values, one answer per event for the
events that cannot be taken (:func:`parse`). careflow/shop_record.py writes
what is taken; careflow/service/app.py serves the route.

Signing: ``Careflow-Signature: t=<unix seconds>,v1=<hex>`` where ``<hex>`` is
HMAC-SHA256 under the source's secret of ``<t>.`` followed by the body's
bytes, and ``Careflow-Source: <source>`` names the source. The timestamp is
signed with the body, so a post replayed after the tolerance is refused; a
replay within it stores nothing twice (each event's id is its key).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation

from careflow import customer_fields
from careflow.birthday_calendar import CALENDAR_WORDS
from careflow.money import is_known_currency, line_minor, to_minor

SOURCE_HEADER = "careflow-source"
SIGNATURE_HEADER = "careflow-signature"

#: the event types a shop posts, and the kind each is on the customer's timeline
#: (a custom event's kind is ``event:<name>``)
KINDS = {"order": "order_placed", "signup": "signed_up", "cart": "cart_updated"}
CUSTOM = "custom"
#: the timeline provider every shop event is kept under; its event id is ``<source>:<id>``
PROVIDER = "shop"
#: longest event id and customer or order reference a shop may send
MAX_ID, MAX_REF = 128, 64
#: a custom event's name: what follows ``careflow.event.`` in its Prefect event
CUSTOM_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,25}")
#: how far ahead of the service's clock an event may say it happened (clocks drift)
FUTURE_SLACK = timedelta(minutes=5)
#: receipts each post may number its events with (CAREFLOW_EVENT_MAX_BATCH's bound)
RECEIPTS_PER_POST = 5000
#: most bytes of an event's ``data`` kept on the timeline
MAX_DATA = 4000


#: a sign-up's ``profile``: the customer fields it may fill in, as the customers import
#: names them, each with what checks a value (text in, the value kept out; ValueError)
PROFILE_TEXT = ("full_name", "given_name", "family_name", "mobile", "email", "country")
#: the categories a sign-up may consent to (transactional messages need no consent)
SIGNUP_CATEGORIES = ("marketing", "care")
#: most characters of a sign-up's ``consent.shown`` (the wording the customer agreed to)
MAX_SHOWN = 4000
#: most lines an order may carry; longest SKU and product name (the products table's)
MAX_LINES, MAX_SKU, MAX_PRODUCT_NAME = 500, 64, 300
#: the largest quantity a line may have
MAX_QUANTITY = 10**6


class Refused(Exception):
    """The whole post is refused: ``status`` and a short ``error`` code with its detail."""

    def __init__(self, status: int, error: str, detail: str = ""):
        super().__init__(f"{error}: {detail}" if detail else error)
        self.status, self.error, self.detail = status, error, detail


@dataclass(frozen=True)
class LineFacts:
    """One line of a posted order, as an import writes ``order_lines``."""

    sku: str  # the product's code (products.sku, the import's stock code)
    quantity: int
    unit_price_minor: int
    amount_minor: int
    name: str | None = None  # the product's name, for a product careflow does not know


@dataclass(frozen=True)
class OrderFacts:
    ref: str  # the shop's order number (orders.external_ref, as an import keeps it)
    amount_minor: int
    currency: str
    lines: tuple[LineFacts, ...] = ()


@dataclass(frozen=True)
class SignupConsent:
    """What a customer agreed to on the shop's sign-up form: these channels, for this
    category, with the form's wording (the consent proof keeps it)."""

    channels: tuple[str, ...]
    category: str
    shown: str


@dataclass(frozen=True)
class ShopEvent:
    """One event a source posted, read and checked; ``receipt`` tells it apart from the
    same event in another post (the answer's per-event status is looked up by it)."""

    receipt: int
    source: str
    event_id: str  # the client's id, unique per source
    kind: str  # the timeline kind: order_placed, signed_up, cart_updated, event:<name>
    customer_ref: str
    occurred_at: datetime  # naive UTC
    #: False for an event older than CAREFLOW_EVENT_MAX_AGE_HOURS in a post that is not a
    #: backfill: recorded, and nothing acts on it
    triggers: bool
    backfill: bool = False
    order: OrderFacts | None = None
    data: dict = field(default_factory=dict, compare=False, hash=False)
    #: a sign-up's customer fields (column -> value), checked as the customers import
    #: checks them: a customer careflow does not know is created with them
    profile: dict = field(default_factory=dict, compare=False, hash=False)
    consent: SignupConsent | None = None  # a sign-up's consent, if the form asked for one

    @property
    def key(self) -> str:
        """The timeline's event id: per source, so two sources may use the same ids."""
        return f"{self.source}:{self.event_id}"


def signature(secret: bytes, timestamp: int | str, body: bytes) -> str:
    """HMAC-SHA256 of ``<timestamp>.<body>``, the timestamp as the header carries it."""
    return hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: bytes | str, timestamp: int, body: bytes) -> str:
    """The ``Careflow-Signature`` header's value for ``body`` sent at ``timestamp``."""
    key = secret.encode() if isinstance(secret, str) else secret
    return f"t={timestamp},v1={signature(key, timestamp, body)}"


def verify(
    secrets: dict[str, bytes],
    source: str | None,
    header: str | None,
    body: bytes,
    now: datetime,
    tolerance_seconds: int,
) -> str:
    """The source that signed ``body``; raises :class:`Refused` (401) otherwise: an
    unknown source, no or a forged signature, or a timestamp outside the tolerance."""
    secret = secrets.get(source or "")
    parts = dict(p.strip().partition("=")[::2] for p in (header or "").split(","))
    stamp, sent = parts.get("t", ""), parts.get("v1", "")
    # ASCII only: "²" is a digit to str.isdigit and not to int(), and compare_digest
    # refuses non-ASCII text; a header may carry any Latin-1 character
    well_formed = stamp.isascii() and stamp.isdigit() and len(stamp) <= 12 and sent.isascii()
    if secret is None or not well_formed or not sent:
        # an unknown source reads like a forged signature: nothing to learn from the answer
        raise Refused(401, "bad_signature", "unknown source, or no Careflow-Signature")
    if not hmac.compare_digest(signature(secret, stamp, body), sent):
        raise Refused(401, "bad_signature", "the signature does not match the body")
    if abs(now.timestamp() - int(stamp)) > tolerance_seconds:
        raise Refused(401, "expired_signature", f"signed more than {tolerance_seconds}s away")
    return source


@dataclass
class Parsed:
    """A post read: the events to store, and the answer for each event refused here, by
    its position in the post."""

    events: list[ShopEvent]
    refused: dict[int, dict]
    positions: dict[int, int]  # receipt -> position in the post
    backfill: bool = False
    ids: dict[int, str | None] = field(default_factory=dict)  # position -> client id


def parse(
    body: bytes,
    source: str,
    now: datetime,
    *,
    max_age_hours: int,
    max_batch: int,
    first_receipt: int,
) -> Parsed:
    """The events of a signed post. A body that is not the documented envelope raises
    :class:`Refused` (400); an event that is not the documented shape is refused alone,
    with its reason, and the others go on."""
    try:
        envelope = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Refused(400, "malformed", f"the body is not JSON: {str(exc)[:120]}") from None
    except RecursionError:
        raise Refused(400, "malformed", "the body nests too deep") from None
    if not isinstance(envelope, dict) or not isinstance(envelope.get("events"), list):
        raise Refused(400, "malformed", 'the body must be an object with an "events" list')
    backfill = envelope.get("backfill", False)
    if not isinstance(backfill, bool):
        raise Refused(400, "malformed", '"backfill" must be true or false')
    items = envelope["events"]
    if not items:
        raise Refused(400, "malformed", '"events" is empty')
    if len(items) > max_batch:
        raise Refused(400, "too_many_events", f"{len(items)} events, at most {max_batch} a post")
    now = now.astimezone(UTC).replace(tzinfo=None)
    oldest = now - timedelta(hours=max_age_hours)
    parsed = Parsed([], {}, {}, backfill)
    for position, item in enumerate(items):
        parsed.ids[position] = _client_id(item)
        try:
            event = _event(item, source, now, oldest, backfill, first_receipt + position)
        except ValueError as exc:
            parsed.refused[position] = {"status": "refused", "reason": str(exc)[:200]}
            continue
        parsed.events.append(event)
        parsed.positions[event.receipt] = position
    return parsed


def _client_id(item) -> str | None:
    value = item.get("id") if isinstance(item, dict) else None
    return value[:MAX_ID] if isinstance(value, str) else None


def _text(item: dict, name: str, limit: int, within: str = "") -> str:
    """``item[name]``, a non-empty string of at most ``limit`` characters that a database
    keeps; ``within``: the object it is in, for the reason (``profile.``)."""
    value, name = item.get(name), within + name
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"invalid: {name} must be a non-empty string")
    if len(value) > limit:
        raise ValueError(f"invalid: {name} is longer than {limit} characters")
    if not _storable(value):
        raise ValueError(f"invalid: {name} holds NUL or text that is not valid Unicode")
    return value


def _storable(text: str) -> bool:
    """Text a database keeps as it came: no NUL (PostgreSQL refuses it) and no lone
    surrogate (JSON may spell one, "\\ud800", UTF-8 cannot)."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _event(item, source, now, oldest, backfill, receipt) -> ShopEvent:
    if not isinstance(item, dict):
        raise ValueError("invalid: an event must be an object")
    event_id = _text(item, "id", MAX_ID)
    kind = _kind(item)
    customer = _text(item, "customer", MAX_REF)
    occurred_at = _instant(item.get("occurred_at"))
    if occurred_at > now + FUTURE_SLACK:
        raise ValueError("invalid: occurred_at is in the future")
    order = _order(item.get("order")) if kind == KINDS["order"] else None
    signup = kind == KINDS["signup"]
    for name in ("profile", "consent"):
        if item.get(name) is not None and not signup:
            raise ValueError(f"invalid: {name} is taken on a signup only")
    profile = _profile(item.get("profile"), now) if signup else {}
    consent = _consent(item.get("consent")) if signup else None
    data = item.get("data", {})
    if not isinstance(data, dict):
        raise ValueError("invalid: data must be an object")
    try:  # (json.loads made it, so it dumps again; NaN it took, a JSON column refuses)
        kept = json.dumps(data, ensure_ascii=False, allow_nan=False)
    except ValueError:
        raise ValueError("invalid: data holds NaN or Infinity") from None
    except RecursionError:
        raise ValueError("invalid: data nests too deep") from None
    if len(kept) > MAX_DATA:
        raise ValueError(f"invalid: data is longer than {MAX_DATA} characters")
    if not all(_storable(text) for text in _texts(data)):
        raise ValueError("invalid: data holds NUL or text that is not valid Unicode")
    return ShopEvent(
        receipt=receipt,
        source=source,
        event_id=event_id,
        kind=kind,
        customer_ref=customer,
        occurred_at=occurred_at,
        triggers=backfill or occurred_at >= oldest,
        backfill=backfill,
        order=order,
        data=data,
        profile=profile,
        consent=consent,
    )


def _texts(value):
    """Every string in a JSON value, keys included (a stack, not recursion: 4000
    characters of JSON may nest 2000 deep)."""
    stack = [value]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            yield from value
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)


def _kind(item: dict) -> str:
    kind = item.get("type")
    if kind in KINDS:
        return KINDS[kind]
    if kind == CUSTOM:
        name = item.get("name")
        if not isinstance(name, str) or not CUSTOM_NAME.fullmatch(name):
            raise ValueError(
                "invalid: a custom event needs a name of 1-26 lowercase letters, digits, "
                "dots, dashes or underscores"
            )
        return f"event:{name}"
    raise ValueError(f"invalid: type must be one of {', '.join([*KINDS, CUSTOM])}")


def _instant(value) -> datetime:
    """An ISO 8601 instant with its offset (``Z`` or ``+01:00``), as naive UTC."""
    if not isinstance(value, str):
        raise ValueError("invalid: occurred_at must be an ISO 8601 date-time with an offset")
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("invalid: occurred_at is not an ISO 8601 date-time") from None
    if at.tzinfo is None:
        raise ValueError("invalid: occurred_at needs its UTC offset (Z or +hh:mm)")
    return at.astimezone(UTC).replace(tzinfo=None)


def _order(value) -> OrderFacts:
    if not isinstance(value, dict):
        raise ValueError("invalid: an order event needs an order object")
    ref = _text(value, "id", MAX_REF)
    currency = value.get("currency")
    if not isinstance(currency, str) or not is_known_currency(currency.upper()):
        raise ValueError("invalid: order.currency must be an ISO 4217 code")
    currency = currency.upper()
    amount = value.get("amount")
    if not isinstance(amount, str):  # a float would round: the amount travels as text
        raise ValueError('invalid: order.amount must be a decimal string ("39.99")')
    try:
        minor = to_minor(Decimal(amount), currency, exact=True)
    except (InvalidOperation, ValueError):
        raise ValueError(f"invalid: order.amount is not an amount in {currency}") from None
    if minor < 0 or minor >= 10**15:
        raise ValueError("invalid: order.amount is out of range")
    return OrderFacts(ref, minor, currency, _lines(value.get("lines"), currency))


def _lines(value, currency: str) -> tuple[LineFacts, ...]:
    """An order's ``lines`` (optional): each a product, a whole quantity and a unit price
    as a decimal string, the line's amount worked out as an import works it out."""
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_LINES:
        raise ValueError(f"invalid: order.lines must be a list of at most {MAX_LINES} lines")
    lines = []
    for n, line in enumerate(value, 1):
        where = f"order.lines[{n}]."
        if not isinstance(line, dict):
            raise ValueError(f"invalid: order.lines[{n}] must be an object")
        sku = _text(line, "sku", MAX_SKU, where).strip()
        name = line.get("name")
        if name is not None:
            name = _text(line, "name", MAX_PRODUCT_NAME, where).strip()
        quantity = line.get("quantity")
        if type(quantity) is not int or not 0 < quantity <= MAX_QUANTITY:
            raise ValueError(f"invalid: {where}quantity must be a whole number from 1 to "
                             f"{MAX_QUANTITY:,}")  # fmt: skip
        price = line.get("unit_price")
        if not isinstance(price, str):
            raise ValueError(f'invalid: {where}unit_price must be a decimal string ("2.55")')
        try:
            exact = Decimal(price)
            if not exact.is_finite() or exact < 0:
                raise InvalidOperation
            unit, amount = line_minor(exact, quantity, currency)
        except (InvalidOperation, ValueError):
            raise ValueError(f"invalid: {where}unit_price is not a price in {currency}") from None
        if amount >= 10**15:
            raise ValueError(f"invalid: {where}unit_price is out of range")
        lines.append(LineFacts(sku, quantity, unit, amount, name))
    return tuple(lines)


def _profile(value, now: datetime) -> dict:
    """A sign-up's ``profile``: each field checked as the customers import checks its
    column (careflow/customer_fields.py); null or left out: not given."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError("invalid: profile must be an object")
    checks = _profile_checks(now)
    out = {}
    for name, given in value.items():
        if given is None:
            continue
        if name not in checks:
            raise ValueError(
                f"invalid: profile.{name} is not a customer field (one of {', '.join(checks)})"
            )
        if name == "personal_send_time":
            if not isinstance(given, bool):
                raise ValueError("invalid: profile.personal_send_time must be true or false")
            out[name] = given
            continue
        check, expect = checks[name]
        text = _text(value, name, customer_fields.length(name) or MAX_REF, "profile.")
        try:
            out[name] = check(text.strip())
        except ValueError:
            raise ValueError(f"invalid: profile.{name} must be {expect}") from None
    return out


def _profile_checks(now: datetime) -> dict:
    def word(choices):
        def check(text):
            try:
                return choices[text.lower()]
            except KeyError:
                raise ValueError(text) from None

        return check

    channels = customer_fields.channel_names()
    return {
        **{name: (str, "text") for name in PROFILE_TEXT},
        "locale": (customer_fields.locale, "a locale, e.g. en, zh-CN"),
        "time_zone": (customer_fields.zone, "an IANA zone, e.g. Asia/Shanghai"),
        "birthday": (
            lambda text: customer_fields.birthday(text, now.date()),
            "a date from 1900-01-01 to today, e.g. 1990-11-22",
        ),
        "birthday_calendar": (word(CALENDAR_WORDS), "solar or lunar"),
        "preferred_channel": (word(channels), " or ".join(channels)),
        "personal_send_time": (None, "true or false"),
    }


def _consent(value) -> SignupConsent | None:
    """A sign-up's ``consent``: the channels the customer ticked, for marketing (or
    care), and the wording of the form they agreed to."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError("invalid: consent must be an object")
    known = customer_fields.channel_names()
    channels = value.get("channels")
    if (
        not isinstance(channels, list)
        or not channels
        or not all(isinstance(c, str) and c in known for c in channels)
    ):
        raise ValueError(f"invalid: consent.channels must list channels of {', '.join(known)}")
    category = value.get("category", "marketing")
    if category not in SIGNUP_CATEGORIES:
        raise ValueError(f"invalid: consent.category must be {' or '.join(SIGNUP_CATEGORIES)}")
    shown = _text(value, "shown", MAX_SHOWN, "consent.")
    return SignupConsent(tuple(dict.fromkeys(channels)), category, shown)
