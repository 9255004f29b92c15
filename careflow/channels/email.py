"""Email through SendGrid's v3 Mail Send API, with one-click unsubscribe.

Each message becomes one Mail Send request with a plain-text part (the
message body) and, when rendered, an HTML part. The ledger key travels in
the personalization's ``custom_args`` (``careflow_key``, ``contact_id``), so
SendGrid's Event Webhook posts can be matched back to the ledger row; the
campaign is also the mail's category for SendGrid's own statistics.

Marketing mail carries an unsubscribe link in the body and RFC 8058 one-click
headers (``List-Unsubscribe: <https://...>`` and ``List-Unsubscribe-Post:
List-Unsubscribe=One-Click``). The link holds a signed, expiring token
naming the customer, campaign and occasion (careflow/unsubscribe.py, where
the endpoint that receives it verifies it too). Templates may place the
link themselves with the literal ``%unsubscribe_url%``; otherwise a short
footer is appended.

Headers and custom_args go into the personalization rather than the mail
body's top level: SendGrid's OpenAPI spec types the top-level
``custom_args`` as a string, and per-recipient values belong there anyway.

Transport. The sendgrid SDK has no async client: its helpers build and
validate each Mail (``build_mail``), and the JSON it produces goes out with
the SDK client's own headers on a shared aiohttp session, many requests in
flight on the HTTP loop of careflow/channels/delivery.py. Messages whose rendered
content is identical (everything but the personalization) share one request
with a personalization each, up to SendGrid's 1,000; every recipient keeps
its own Outcome and its own ``careflow_key`` in ``custom_args``, and all
carry the request's ``X-Message-Id``. A 400 that names one personalization
fails that recipient only; the rest are sent again without it (SendGrid
accepted nothing). ``post`` is the synchronous path (the email-to-fax gateway).
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import re
import time
import urllib.error
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import aiohttp
from email_validator import EmailNotValidError, validate_email
from python_http_client.exceptions import HTTPError as SendGridHTTPError
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import (
    Attachment,
    Category,
    CustomArg,
    Disposition,
    FileContent,
    FileName,
    FileType,
    From,
    Header,
    Mail,
    ReplyTo,
    To,
)

from careflow.addresses import normalize_email
from careflow.channels.credentials import SecretLoader, require, unsubscribe_tokens
from careflow.channels.delivery import (
    GroupKey,
    MembersRejected,
    ProviderChannel,
    RateLimiter,
    RetryPolicy,
    error_for_exception,
    error_for_status,
    http_session,
    parse_retry_after,
    run_on_http_loop,
)
from careflow.channels.email_content import email_content
from careflow.channels.sms import check_url
from careflow.errors import ConfigError, InvalidContact, PermanentError, Skip
from careflow.messages import Message
from careflow.safe_text import for_header
from careflow.settings import SendGridSettings

log = logging.getLogger(__name__)

#: SendGrid's most personalizations in one Mail Send request
MAX_PERSONALIZATIONS = 1000


class _NoSecretsInLogs(logging.Filter):
    """python_http_client logs request headers (the API key) and payloads (PII) at DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(("HEADERS", "PAYLOAD"))


logging.getLogger("python_http_client.client").addFilter(_NoSecretsInLogs())


# --- the channel -------------------------------------------------------------------
@dataclass(frozen=True)
class PdfAttachment:
    """A file attached to an email (used by the email-to-fax gateway)."""

    filename: str
    content: bytes
    mime_type: str = "application/pdf"


def _checked_address(value: str | None, setting: str, *, required: bool) -> str | None:
    if not value:
        if required:
            raise ConfigError(f"{setting} is missing")
        return None
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ConfigError(f"{setting} is not a valid email address: {exc}") from None


class SendGridEmail(ProviderChannel):
    """Email through SendGrid. One Outcome per message; retries in careflow/channels/delivery.py."""

    name: ClassVar[str] = "email"

    def __init__(
        self,
        settings: SendGridSettings,
        *,
        client: SendGridAPIClient | None = None,
        limiter: RateLimiter | None = None,
        policy: RetryPolicy | None = None,
        secrets: SecretLoader | None = None,
    ):
        key = require(settings, "sendgrid_api_key", loader=secrets)
        if not key.startswith("SG."):
            raise ConfigError("CAREFLOW_SENDGRID_API_KEY must start with SG.")
        self.from_email = _checked_address(
            settings.sendgrid_from_email, "CAREFLOW_SENDGRID_FROM_EMAIL", required=True
        )
        self.from_name = for_header(settings.sendgrid_from_name or "") or None
        self.reply_to = _checked_address(
            settings.sendgrid_reply_to, "CAREFLOW_SENDGRID_REPLY_TO", required=False
        )
        base = check_url(settings.sendgrid_api_base_url, "CAREFLOW_SENDGRID_API_BASE_URL")
        unsub = check_url(settings.unsubscribe_base_url, "CAREFLOW_UNSUBSCRIBE_BASE_URL")
        if not unsub:
            raise ConfigError(
                "CAREFLOW_UNSUBSCRIBE_BASE_URL is missing: marketing mail needs a one-click "
                "unsubscribe endpoint"
            )
        self.unsubscribe_base = unsub
        # A missing, short or guessable key is a ConfigError here, before anything is sent.
        self._unsubscribe = unsubscribe_tokens(settings, loader=secrets)
        self.sg = client or SendGridAPIClient(key, host=base)
        # python_http_client passes this to urlopen: per socket operation.
        self.sg.client.timeout = settings.delivery_read_timeout_seconds
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None
        # A handed-in client means a test drives the SDK itself: use threads.
        self._deliver_with(
            settings,
            prepare=self.build_mail if client else self._request_body,
            send=self.post,
            limit_name=settings.email_rate_limit_name,
            rate=settings.email_rate_per_second,
            concurrency=settings.email_concurrency,
            limiter=limiter,
            policy=policy,
            send_many=None if client else self._send_many,
            group_key=self._group_key,
            max_group=MAX_PERSONALIZATIONS,
        )

    def __repr__(self) -> str:  # never show credentials
        return f"SendGridEmail(from={self.from_email!r})"

    def close(self) -> None:
        """Close the aiohttp session (python_http_client opens a connection per request)."""
        if self._session is not None:
            run_on_http_loop(self._session.close())
            self._session = None

    def build_mail(
        self,
        message: Message,
        *,
        attachments: Sequence[PdfAttachment] = (),
        to: str | None = None,
    ) -> Mail:
        """The Mail Send request for ``message`` (``to`` overrides the recipient)."""
        try:
            address = normalize_email(to or message.to)
        except InvalidContact as exc:
            raise Skip("invalid_contact", str(exc)) from None
        subject = for_header(message.subject or "")
        if not subject:
            raise PermanentError("missing_subject", "email needs a subject")
        content = email_content(message, self._unsubscribe, self.unsubscribe_base)
        text, markup = content.text, content.html
        # Content goes through the constructor: it orders text/plain before
        # text/html as the API requires (attribute assignment would be ignored).
        mail = Mail(
            from_email=From(self.from_email, self.from_name),
            to_emails=To(address),
            subject=subject,
            plain_text_content=text,
            html_content=markup or None,
        )
        for name, value in content.headers.items():
            mail.header = Header(name, value, p=0)
        if self.reply_to:
            mail.reply_to = ReplyTo(self.reply_to)
        # custom_args values must be strings (the API rejects numbers).
        mail.custom_arg = CustomArg("careflow_key", message.key, p=0)
        mail.custom_arg = CustomArg("contact_id", str(message.contact_id), p=0)
        mail.category = Category(message.campaign[:255])
        for item in attachments:
            mail.attachment = Attachment(
                FileContent(base64.b64encode(item.content).decode("ascii")),
                FileName(item.filename),
                FileType(item.mime_type),
                Disposition("attachment"),
            )
        return mail

    def post(self, mail: Mail) -> str | None:
        """One Mail Send call; the provider id is SendGrid's X-Message-Id."""
        try:
            response = self.sg.send(mail)
        except SendGridHTTPError as exc:
            raise self._error(exc) from exc
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise error_for_exception(exc) from exc
        return response.headers.get("X-Message-Id") if response.headers else None

    # --- the async path: SDK-built JSON on a shared session ---------------------------
    def _request_body(self, message: Message) -> dict:
        """The Mail Send JSON the SDK builds for ``message`` (one personalization)."""
        return self.build_mail(message).get()

    @staticmethod
    def _group_key(body: dict) -> GroupKey:
        """Requests may merge when all but the personalization is identical."""
        shared = {k: v for k, v in body.items() if k != "personalizations"}
        [person] = body["personalizations"]
        content = json.dumps(shared, sort_keys=True, ensure_ascii=False)
        return content, person["to"][0]["email"].lower()

    async def _send_many(self, bodies: list[dict]) -> list[str | None]:
        """One Mail Send call for ``bodies`` (identical but for the personalization)."""
        body = bodies[0]
        if len(bodies) > 1:
            body = {**body, "personalizations": [b["personalizations"][0] for b in bodies]}
        if self._session is None:
            self._session = http_session(self.settings, self.settings.email_concurrency)
        # The SDK client's headers: its API key, user agent and Accept.
        headers = {**self.sg.client.request_headers, "Content-Type": "application/json"}
        try:
            async with self._session.post(
                f"{self.sg.host}/v3/mail/send", data=json.dumps(body).encode(), headers=headers
            ) as answer:
                status, text = answer.status, await answer.read()
                answer_headers = dict(answer.headers)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise error_for_exception(exc) from exc
        if status >= 400:
            error = SendGridHTTPError(status, answer.reason, text, answer_headers)
            if len(bodies) > 1 and status == 400:
                raise self._members_rejected(error, len(bodies)) from None
            raise self._error(error) from None
        return [answer_headers.get("X-Message-Id")] * len(bodies)

    @classmethod
    def _members_rejected(cls, exc: SendGridHTTPError, members: int) -> Exception:
        """A 400 naming personalizations: those recipients fail, the others may go again."""
        body = exc.body.decode("utf-8", "replace") if isinstance(exc.body, bytes) else str(exc.body)
        try:
            fields = [str(e.get("field") or "") for e in json.loads(body).get("errors", [])]
        except (ValueError, AttributeError):
            fields = []
        refused = {}
        for name in fields:
            found = re.match(r"personalizations\.(\d+)\.(\w+)", name)
            if found and int(found.group(1)) < members:
                reason = "invalid_contact" if found.group(2) == "to" else "provider_rejected"
                detail = f"sendgrid HTTP 400 ({name}): {body[:200]}"
                refused[int(found.group(1))] = PermanentError(reason, detail)
        return MembersRejected(refused) if refused else cls._error(exc)

    @staticmethod
    def _error(exc: SendGridHTTPError) -> Exception:
        status = int(exc.status_code)
        headers = exc.headers or {}
        retry_after = parse_retry_after(headers.get("Retry-After"))
        if retry_after is None and status == 429 and headers.get("X-RateLimit-Reset"):
            # SendGrid announces the end of the window as a Unix time stamp.
            try:
                retry_after = max(0.0, float(headers["X-RateLimit-Reset"]) - time.time())
            except ValueError:
                retry_after = None
        body = exc.body.decode("utf-8", "replace") if isinstance(exc.body, bytes) else str(exc.body)
        reason = None
        if status == 400 and "personalizations.0.to" in body:
            reason = "invalid_contact"
        return error_for_status(
            status, f"sendgrid HTTP {status}: {body[:250]}", retry_after=retry_after, reason=reason
        )
