"""SMS through Twilio's Messages API.

The text rules (segments, opt-out line, limits) live in careflow/channels/sms_text.py.

Transport. Messages go out through the twilio SDK's async support
(``messages.create_async`` on a client whose HTTP client is the SDK's
``AsyncTwilioHttpClient``, aiohttp underneath), many in flight on the shared
HTTP loop of careflow/channels/delivery.py; the SDK builds and validates every
request. Reconciliation (``messages_to``, ``status_of``) uses the SDK's sync
client. Both HTTP clients are subclassed to send to ``twilio_api_base_url``
(a proxy or a loopback test server), to use (connect, read) timeouts, and to
turn 429/5xx and transport errors into the delivery errors of
careflow/channels/delivery.py before the SDK sees them, because the SDK's exception
drops the Retry-After header.
"""

from __future__ import annotations

import base64
import logging
import re
from datetime import datetime
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import phonenumbers
import requests
from requests.adapters import HTTPAdapter
from twilio.base.exceptions import TwilioException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response as TwilioResponse
from twilio.rest import Client

from careflow.addresses import normalize_phone
from careflow.channels.credentials import SecretLoader, require
from careflow.channels.delivery import (
    ProviderChannel,
    RateLimiter,
    RetryPolicy,
    error_for_exception,
    error_for_status,
    http_session,
    parse_retry_after,
    run_on_http_loop,
)
from careflow.channels.sms_text import sms_preview
from careflow.errors import ConfigError, InvalidContact, PermanentError, Skip
from careflow.messages import Message
from careflow.settings import DeliverySettings, TwilioSettings

log = logging.getLogger(__name__)

# --- transport -------------------------------------------------------------------
TWILIO_API = "https://api.twilio.com"

# Twilio error codes that mean "this recipient", worth a precise reason.
_TWILIO_REASONS = {
    21211: "invalid_contact",  # invalid 'To' number
    21614: "invalid_contact",  # not a mobile number
    21612: "unreachable_destination",
    21408: "region_not_enabled",
    21610: "opted_out",  # recipient replied STOP
    21617: "sms_too_long",
}


def _to_base(base_url: str, url: str) -> str:
    """``url`` sent to ``base_url`` when it names a Twilio API host.

    Region/edge settings (TWILIO_REGION, TWILIO_EDGE) change the host the SDK
    builds, so any Twilio API host matches, not only api.twilio.com.
    """
    parts = urlsplit(url)
    if parts.hostname and parts.hostname.endswith(".twilio.com"):
        return base_url + urlunsplit(("", "", parts.path, parts.query, ""))
    return url


def _raise_for_retryable(status: int, text: str, headers) -> None:
    if status == 429 or status >= 500:
        raise error_for_status(
            status,
            f"twilio HTTP {status}: {text[:200]}",
            retry_after=parse_retry_after((headers or {}).get("Retry-After")),
        )


class AsyncTwilioTransport(AsyncTwilioHttpClient):
    """The SDK's aiohttp client, pointed at ``base_url``, with careflow's timeouts and
    errors. Its session is opened on the HTTP loop at the first request."""

    def __init__(self, base_url: str, settings: DeliverySettings, pool_size: int):
        super().__init__(pool_connections=False, logger=logging.getLogger(__name__ + ".http"))
        self.base_url = base_url.rstrip("/")
        self._settings, self._pool_size = settings, pool_size

    async def request(  # type: ignore[override]
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> TwilioResponse:
        """As the SDK's, except: the session's (connect, read) timeouts rather than one
        total (``timeout`` is ignored), basic auth as a header, and careflow's errors."""
        if self.session is None:
            self.session = http_session(self._settings, self._pool_size)
        headers = dict(headers or {})
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
            headers["Authorization"] = f"Basic {token}"
        kwargs = {
            "method": method.upper(),
            "url": _to_base(self.base_url, url),
            "params": params,
            "data": data,
            "headers": headers,
        }
        if self.logger.isEnabledFor(logging.INFO):  # it formats eagerly
            self.log_request(kwargs)  # leaves the Authorization header out
        try:
            async with self.session.request(**kwargs, allow_redirects=allow_redirects) as answer:
                response = TwilioResponse(answer.status, await answer.text(), answer.headers)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise error_for_exception(exc) from exc
        if self.logger.isEnabledFor(logging.INFO):
            self.log_response(response.status_code, response)
        _raise_for_retryable(response.status_code, response.text, response.headers)
        return response

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None


class TwilioTransport(TwilioHttpClient):
    """The SDK's requests-based client, pointed at ``base_url`` and strict about errors."""

    def __init__(self, base_url: str, timeout: tuple[float, float], pool_size: int):
        super().__init__(pool_connections=True, logger=logging.getLogger(__name__ + ".http"))
        # The base class accepts only a number; requests also takes (connect, read).
        self.timeout = timeout  # type: ignore[assignment]
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
        assert self.session is not None
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        self.base_url = base_url.rstrip("/")

    def request(  # type: ignore[override]
        self, method: str, url: str, *args: Any, **kwargs: Any
    ) -> TwilioResponse:
        try:
            response = super().request(method, _to_base(self.base_url, url), *args, **kwargs)
        except requests.RequestException as exc:
            raise error_for_exception(exc) from exc
        _raise_for_retryable(response.status_code, response.text, response.headers)
        return response


# --- the channel -------------------------------------------------------------------
_SID = re.compile(r"AC[0-9a-fA-F]{32}")
_MG_SID = re.compile(r"MG[0-9a-fA-F]{32}")
_TOKEN = re.compile(r"[0-9a-fA-F]{32}")
_E164 = re.compile(r"\+[1-9]\d{6,14}")
_ALPHA_SENDER = re.compile(r"(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}")


def check_url(value: str | None, setting: str) -> str | None:
    """Return ``value`` if it is an http(s) URL; ConfigError naming ``setting`` otherwise."""
    if value is None:
        return None
    if not re.match(r"https?://[^/\s]+", value):
        raise ConfigError(f"{setting} must be an http(s) URL")
    return value.rstrip("/")


class TwilioSMS(ProviderChannel):
    """SMS through Twilio. One Outcome per message; retries: careflow/channels/delivery.py."""

    name: ClassVar[str] = "sms"
    #: reconciliation finds a message in doubt in Twilio's log by its text
    #: (careflow/channels/base.py)
    matched_by_text: ClassVar[bool] = True

    def __init__(
        self,
        settings: TwilioSettings,
        *,
        http_client: TwilioHttpClient | None = None,
        limiter: RateLimiter | None = None,
        policy: RetryPolicy | None = None,
        secrets: SecretLoader | None = None,
    ):
        sid = require(settings, "twilio_account_sid", loader=secrets)
        if not _SID.fullmatch(sid):
            raise ConfigError(
                "CAREFLOW_TWILIO_ACCOUNT_SID must start with AC followed by 32 hex characters"
            )
        token = require(settings, "twilio_auth_token", loader=secrets)
        if not _TOKEN.fullmatch(token):
            raise ConfigError("CAREFLOW_TWILIO_AUTH_TOKEN is malformed: expected 32 hex characters")
        self.sender: dict[str, str] = {}
        if settings.twilio_messaging_service_sid:
            if not _MG_SID.fullmatch(settings.twilio_messaging_service_sid):
                raise ConfigError(
                    "CAREFLOW_TWILIO_MESSAGING_SERVICE_SID must start with MG followed by "
                    "32 hex characters"
                )
            self.sender["messaging_service_sid"] = settings.twilio_messaging_service_sid
        elif settings.twilio_from_number:
            sender = settings.twilio_from_number
            if not (_E164.fullmatch(sender) or _ALPHA_SENDER.fullmatch(sender)):
                raise ConfigError(
                    "CAREFLOW_TWILIO_FROM_NUMBER must be an E.164 number (+8613...) or an "
                    "alphanumeric sender ID of at most 11 characters"
                )
            self.sender["from_"] = sender
        else:
            raise ConfigError(
                "CAREFLOW_TWILIO_FROM_NUMBER or CAREFLOW_TWILIO_MESSAGING_SERVICE_SID is missing"
            )
        if settings.sms_default_region not in phonenumbers.SUPPORTED_REGIONS:
            raise ConfigError("CAREFLOW_SMS_DEFAULT_REGION must be a region code such as CN")
        self.status_callback = check_url(
            settings.twilio_status_callback_url, "CAREFLOW_TWILIO_STATUS_CALLBACK_URL"
        )
        base = check_url(settings.twilio_api_base_url, "CAREFLOW_TWILIO_API_BASE_URL")
        self.settings = settings
        transport = http_client or TwilioTransport(
            base or TWILIO_API,
            (settings.delivery_connect_timeout_seconds, settings.delivery_read_timeout_seconds),
            settings.sms_concurrency,
        )
        self._owned_transport = transport if http_client is None else None
        self.client = Client(sid, token, http_client=transport)
        # A handed-in (sync) client means a test drives the SDK itself: use threads.
        self._async_transport = (
            AsyncTwilioTransport(base or TWILIO_API, settings, settings.sms_concurrency)
            if http_client is None
            else None
        )
        self.async_client = (
            Client(sid, token, http_client=self._async_transport)
            if self._async_transport is not None
            else None
        )
        self._deliver_with(
            settings,
            prepare=self._prepare,
            send=self._send,
            limit_name=settings.sms_rate_limit_name,
            rate=settings.sms_rate_per_second,
            concurrency=settings.sms_concurrency,
            limiter=limiter,
            policy=policy,
            send_many=self._send_many if self.async_client is not None else None,
        )

    def __repr__(self) -> str:  # never show credentials
        return f"TwilioSMS(sender={self.sender!r})"

    def close(self) -> None:
        """Close the pooled connections this channel opened (not a handed-in client)."""
        if self._owned_transport is not None and self._owned_transport.session is not None:
            self._owned_transport.session.close()
        if self._async_transport is not None and self._async_transport.session is not None:
            run_on_http_loop(self._async_transport.close())

    def _prepare(self, message: Message) -> dict[str, str]:
        try:
            to = normalize_phone(message.to, self.settings.sms_default_region)
        except InvalidContact as exc:
            raise Skip("invalid_contact", str(exc)) from None
        preview = sms_preview(
            message.body, locale=message.locale, marketing=message.marketing, settings=self.settings
        )
        if not preview.within_limit:
            raise PermanentError("sms_too_long", preview.problem)
        params = {"to": to, "body": preview.text, **self.sender}
        if self.status_callback:
            params["status_callback"] = self.status_callback
        return params

    # --- asking Twilio what happened (careflow/flows/reconcile.py) -------------------------
    #: the most of a number's message log ``messages_to`` reads (one page of Twilio's)
    LOG_READ = 1000

    def messages_to(self, to: str, since: datetime) -> list[dict]:
        """Every message Twilio created for number ``to`` since ``since`` (its message log),
        whatever its status: one accepted and still queued, accepted or scheduled has no
        ``date_sent`` yet, so the log is read by recipient and kept by ``date_created``
        (the list's only date filter, DateSent, would leave those out). Raises a
        DeliveryError (TransientError, AmbiguousError: worth asking again)."""
        try:
            found = self.client.messages.list(to=to, limit=self.LOG_READ, page_size=self.LOG_READ)
        except TwilioException as exc:
            raise _twilio_error(exc) from exc
        messages = [_as_dict(m) for m in found]
        return [m for m in messages if m["date_created"] and m["date_created"] >= since]

    def status_of(self, sid: str) -> dict | None:
        """The message ``sid`` as Twilio knows it now; None when Twilio has no such message.
        Raises a DeliveryError as ``messages_to`` does."""
        try:
            return _as_dict(self.client.messages(sid).fetch())
        except TwilioException as exc:
            if int(getattr(exc, "status", 0) or 0) == 404:
                return None
            raise _twilio_error(exc) from exc

    def _send(self, params: dict[str, str]) -> str | None:
        try:
            created = self.client.messages.create(**params)  # type: ignore[arg-type]
        except TwilioException as exc:
            raise _twilio_error(exc) from exc
        return created.sid

    async def _send_many(self, payloads: list[dict[str, str]]) -> list[str | None]:
        """One Messages request (SMS are never grouped: one payload)."""
        assert self.async_client is not None
        [params] = payloads
        try:
            created = await self.async_client.messages.create_async(**params)  # type: ignore[arg-type]
        except TwilioException as exc:
            raise _twilio_error(exc) from exc
        return [created.sid]


def _twilio_error(exc: TwilioException) -> Exception:
    """The delivery error for an error answer the SDK raised (4xx; 429/5xx come earlier)."""
    status = int(getattr(exc, "status", 0) or 0)
    code = getattr(exc, "code", None)
    text = getattr(exc, "msg", None) or getattr(exc, "detail", None) or ""
    detail = f"twilio HTTP {status} code={code}: {text}"[:300]
    if not status:  # not an HTTP answer: the SDK failed on its own
        return PermanentError("unexpected_response", detail)
    return error_for_status(status, detail, reason=_TWILIO_REASONS.get(code or 0))


def _as_dict(message) -> dict:
    return {
        "sid": message.sid,
        "to": message.to,
        "body": message.body,
        "status": str(message.status),
        "error_code": message.error_code,
        "date_created": message.date_created,
        "date_sent": message.date_sent,
    }
