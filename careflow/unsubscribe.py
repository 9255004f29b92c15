"""Signed unsubscribe tokens: made when marketing mail goes out, checked when it comes back.

Every marketing email carries a token in its unsubscribe link and in its
RFC 8058 one-click header (careflow/channels/email.py). The endpoint that receives
it (the responses service) needs no lookup table: the token names the
customer, the campaign and the occasion, says when it was issued, and is
signed with HMAC-SHA256 under ``CAREFLOW_UNSUBSCRIBE_SECRET``, so nobody can
make one for somebody else.

Format: ``v2.<payload>.<mac>``. The payload is base64url JSON
``[customer_id, campaign, occasion, issued_at]`` (Unix seconds); the MAC is
the first 16 bytes (128 bits) of HMAC-SHA256 over a purpose label, the
version and the payload, base64url, compared in constant time. Tokens made
before the issue time was added (``v1.``) never expired and are refused.

**Lifetime.** A token is accepted for ``CAREFLOW_UNSUBSCRIBE_TOKEN_MAX_AGE_DAYS``
(default 60, at least 30) after it was issued, which must cover every moment
the link can be used: SendGrid retries a deferred delivery for up to 72
hours; the mailbox provider sends the one-click POST whenever the reader
presses its Unsubscribe button, often weeks after delivery, and may repeat
it if the endpoint did not answer; and the US CAN-SPAM Act wants an opt-out
link to work for at least 30 days after the mail was sent. Sixty days
covers all three with room to spare. Past that the endpoint should answer
with a page that offers another way to opt out, not ignore the request.

**Key.** One key, looked up in one place by every sender and by
``careflow serve`` (careflow/channels/credentials.py ``unsubscribe_tokens``): the
setting, else careflow's SendGrid block or the Prefect Secret block, else,
only for the outbox and ``careflow serve --local``, a key this machine keeps
in ``CAREFLOW_HOME/unsubscribe.key`` (:func:`local_tokens`). At least 32
bytes (HMAC-SHA256's output size) and not guessable (careflow/keys.py: no
32 spaces, no ``abcabc...``); anything else is a one-line ConfigError naming
the setting when the channel or service starts. Make one with ``python -c
"import secrets; print(secrets.token_urlsafe(32))"``. Changing the key
invalidates every link already sent.

**Decoded values.** A payload whose signature matches was still checked
field by field (a leaked key must not turn into a crash): the customer id
is a positive 64-bit integer, campaign and occasion fit the ledger's
columns and hold no control characters, and the issue time is a real
instant. Anything else is the same DataError as a forged token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from careflow.errors import ConfigError, DataError
from careflow.keys import check_secret
from careflow.settings import Settings

MIN_SECRET_BYTES = 32
MIN_MAX_AGE = timedelta(days=30)
#: How far in the future an issue time may be (clocks of two hosts disagree).
CLOCK_SKEW = timedelta(minutes=5)
#: Longer tokens are refused before any work (a real one is about 100 characters).
MAX_TOKEN_CHARS = 1024
#: Largest customer id (the ledger's BIGINT) and campaign or occasion name (its columns).
MAX_ID = 2**63 - 1
MAX_NAME_CHARS = 64

_VERSION = "v2"
_PURPOSE = b"careflow-unsubscribe."

#: what a template writes where the unsubscribe link goes; careflow/channels/email_content.py puts
#: each customer's own link there, or appends a footer when the template has none
PLACEHOLDER = "%unsubscribe_url%"
#: what a template (an SMS above all) writes where the preference centre's short link goes;
#: the route puts each customer's own link there (careflow/flows/route.py) for marketing and
#: care messages, nothing for transactional ones
PREFERENCES_PLACEHOLDER = "%preferences_url%"


def inert_placeholder(value):
    """A value a template prints (``{{ ... }}``) with any placeholder in it broken (a word
    joiner after its first ``%``, which shows as nothing).

    Rendering passes every printed value through here, so only the placeholder the
    template itself wrote gets the link: a customer named ``%unsubscribe_url%`` would
    otherwise take the link into their name and push the footer out of the message.
    """
    if isinstance(value, str):
        for placeholder in (PLACEHOLDER, PREFERENCES_PLACEHOLDER):
            if placeholder in value:
                value = value.replace(placeholder, "%\u2060" + placeholder[1:])
    return value


@dataclass(frozen=True)
class UnsubscribeRequest:
    """Who asked to unsubscribe from what, as a verified token says."""

    customer_id: int
    campaign: str
    occasion: str | None
    issued_at: datetime


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _now(now: datetime | None) -> datetime:
    return datetime.now(UTC) if now is None else now


class UnsubscribeTokens:
    """Makes and verifies unsubscribe tokens under one key.

    Construct it at start-up: a missing, short or guessable key is a
    ConfigError then, before any mail is sent. ``now`` arguments exist for tests.
    """

    def __init__(
        self,
        secret: str | bytes,
        *,
        max_age: timedelta = timedelta(days=60),
        source: str = "CAREFLOW_UNSUBSCRIBE_SECRET",
    ):
        key = check_secret(secret, source, min_bytes=MIN_SECRET_BYTES)
        if max_age < MIN_MAX_AGE:
            raise ConfigError(
                "CAREFLOW_UNSUBSCRIBE_TOKEN_MAX_AGE_DAYS must be at least 30: an opt-out "
                "link has to keep working for 30 days after the mail was sent"
            )
        self._key, self.max_age, self.source = key, max_age, source

    @classmethod
    def from_settings(
        cls, settings: Settings, secret: str | None = None, *, source: str | None = None
    ) -> UnsubscribeTokens:
        """Tokens under ``secret`` (default: the setting) with the configured lifetime."""
        if secret is None and settings.unsubscribe_secret is not None:
            secret = settings.unsubscribe_secret.get_secret_value()
        if not secret:
            raise ConfigError("CAREFLOW_UNSUBSCRIBE_SECRET is missing")
        return cls(
            secret,
            max_age=timedelta(days=settings.unsubscribe_token_max_age_days),
            source=source or "CAREFLOW_UNSUBSCRIBE_SECRET",
        )

    def __repr__(self) -> str:  # never show the key
        return f"UnsubscribeTokens(max_age={self.max_age})"

    def sign(self, purpose: bytes, message: bytes) -> bytes:
        """HMAC-SHA256 of ``message`` under this key, bound to ``purpose`` (a label ending
        in a dot), so a MAC made for one kind of link never checks for another. The
        preference centre's links (careflow/preferences.py) sign with it too: one key,
        one lifetime, checked in one place."""
        return hmac.new(self._key, purpose + message, hashlib.sha256).digest()

    def _mac(self, signed: str) -> str:
        return _b64(self.sign(_PURPOSE, signed.encode("ascii"))[:16])

    def make(
        self,
        customer_id: int,
        campaign: str,
        occasion: str | None = None,
        *,
        now: datetime | None = None,
    ) -> str:
        """A URL-safe token naming the customer, campaign and occasion, issued ``now``."""
        issued = int(_now(now).timestamp())
        fields = [int(customer_id), str(campaign), occasion, issued]
        payload = _b64(json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode())
        signed = f"{_VERSION}.{payload}"
        return f"{signed}.{self._mac(signed)}"

    def verify(self, token: str, *, now: datetime | None = None) -> UnsubscribeRequest:
        """What a token asks for; DataError if it is malformed, forged or expired."""
        if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS or token.count(".") != 2:
            raise DataError("malformed unsubscribe token")
        version, payload, mac = token.split(".")
        if version != _VERSION:
            raise DataError(f"unsupported unsubscribe token version {version[:8]!r}")
        expected = self._mac(f"{version}.{payload}") if payload.isascii() else ""
        # bytes: compare_digest refuses non-ASCII str, and anything may arrive in a URL
        if not hmac.compare_digest(mac.encode("utf-8"), expected.encode("ascii")):
            raise DataError("unsubscribe token signature does not match")
        request = _parse(payload)
        age = _now(now) - request.issued_at
        if age < -CLOCK_SKEW:
            raise DataError("unsubscribe token issued in the future")
        if age > self.max_age:
            raise DataError(
                f"unsubscribe link expired: issued {request.issued_at:%Y-%m-%d}, "
                f"valid for {self.max_age.days} days"
            )
        return request


def _parse(payload: str) -> UnsubscribeRequest:
    """The fields of a payload whose signature was checked, each checked against what a
    sender can put there (the ledger's columns): DataError for anything else."""
    try:
        customer_id, campaign, occasion, issued = json.loads(_unb64(payload))
        issued_at = datetime.fromtimestamp(issued, UTC)
    except (binascii.Error, ValueError, TypeError, OverflowError, OSError):
        raise DataError("malformed unsubscribe token") from None
    if not (
        type(customer_id) is int
        and 0 < customer_id <= MAX_ID
        and _fits(campaign)
        and (occasion is None or _fits(occasion))
        and type(issued) is int
    ):
        raise DataError("malformed unsubscribe token")
    return UnsubscribeRequest(customer_id, campaign, occasion, issued_at)


def _fits(value) -> bool:
    """A campaign or occasion name as the ledger keeps them."""
    return isinstance(value, str) and len(value) <= MAX_NAME_CHARS and value.isprintable()


def local_tokens(settings: Settings) -> UnsubscribeTokens:
    """Tokens under the key this machine keeps in CAREFLOW_HOME, made on first use.

    Only for mail that stays on this machine and the service that hears it
    there: the outbox and ``careflow serve --local`` use it when no key is
    configured (careflow/channels/credentials.py ``unsubscribe_tokens``).
    """
    import secrets

    path = settings.home / "unsubscribe.key"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return UnsubscribeTokens.from_settings(settings, path.read_text().strip(), source=str(path))
