"""The ASGI app behind ``careflow serve`` (Starlette; uvicorn runs it).

Routes (docs/responses.md says which URL to set where):

    POST /webhooks/twilio/status        Twilio status callbacks (StatusCallback)
    POST /webhooks/twilio/inbound       incoming SMS (the number's Messaging webhook)
    POST /webhooks/sendgrid             SendGrid Event Webhook (signed)
    POST /webhooks/sinch/{token}        Sinch fax callbacks, JSON or multipart (secret path token)
    GET  /unsubscribe?token=...         the unsubscribe page (asks to confirm)
    POST /unsubscribe?token=...         confirm, or the RFC 8058 one-click POST
    GET  /healthz                       liveness and database reachability

A receiver is on when its key is configured and answers 404 otherwise; the
service logs which are on, and why the others are off, when it starts.

Answers: a request without its signature (or path token, or unsubscribe
token) is refused with 403 before a byte of its body is read; a forged one
403 and changes nothing; a malformed one 400, whatever a parser raised on
it; an oversized one 413 (never a 500). Signature checks and parsing of the
large bodies (SendGrid, Sinch) run on worker threads, so the event loop
keeps answering (/healthz) while they work. When the database cannot be
written the answer is 503, which makes SendGrid and Sinch retry (Twilio
does not retry status callbacks; the reconciliation flow catches up).

Access logs name method, route, status and time only: the route's pattern,
never the Sinch token in the path, no query strings (tokens), no bodies
(numbers, addresses, texts), control characters escaped. Every answer
carries headers that keep it out of caches and frames and its URL (with
its token) out of Referer headers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import anyio
from sqlalchemy import Engine, text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from careflow.db.models import ContactEvent
from careflow.errors import ConfigError, DataError
from careflow.events import EventKind, InboundEvent
from careflow.keys import check_secret
from careflow.responses import record_events
from careflow.settings import Settings
from careflow.unsubscribe import UnsubscribeTokens
from service import bodies, pages, prefect_events
from service.bodies import Malformed, Unsupported
from service.writer import EventWriter
from webhooks import sendgrid, sinch, twilio

log = logging.getLogger("careflow.serve")

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'

#: Largest Twilio form accepted. An inbound SMS is at most 1,600 characters, 19,200 bytes
#: percent-encoded if every one is a four-byte emoji; ten MMS media URLs and the forty-odd
#: other fields add a few KB more.
TWILIO_MAX_BODY = 64 * 1024
#: Largest unsubscribe POST accepted: a one-click form is one field, the page's form two.
UNSUBSCRIBE_MAX_BODY = 16 * 1024
#: The two encodings of a Sinch fax callback: multipart/form-data (Sinch's default: ``event``
#: and ``eventTime`` fields, ``fax`` a JSON part, ``file`` the fax document as a PDF part) and
#: application/json (asked for with ``callbackUrlContentType``: the document is in ``file``, in
#: base64). Sinch attaches the document in both and it cannot be switched off, so the body
#: bound (CAREFLOW_SERVE_MAX_BODY_BYTES, 5 MB) counts it: a careflow fax is a text letter of a
#: few pages, tens of KB each. The document is never decoded or kept.
SINCH_MEDIA_TYPES = ("application/json", "multipart/form-data")
#: Least length of CAREFLOW_SINCH_CALLBACK_TOKEN.
MIN_SINCH_TOKEN = 24
#: RFC 8058: the one-click POST carries this form field.
ONE_CLICK = ("List-Unsubscribe", "One-Click")
#: The same line percent-encoded as one name (List-Unsubscribe%3DOne-Click), as a sender of
#: the header's text as an opaque form body produces it: honoured too.
ONE_CLICK_AS_NAME = ("List-Unsubscribe=One-Click", "")
#: On every answer: pages are never cached or framed, and their URLs (tokens) never leak
#: through a Referer.
SAFE_HEADERS = [
    (b"cache-control", b"no-store"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (
        b"content-security-policy",
        b"default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        b"frame-ancestors 'none'; base-uri 'none'",
    ),
]


class TooLarge(Exception):
    """The body is longer than the route accepts (413)."""


class Forbidden(Exception):
    """Unsigned, or signed by someone else (403)."""


async def _body(request: Request, limit: int) -> bytes:
    """The request body, refused past ``limit`` bytes without reading the rest."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise TooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _parsed(parse: Callable, *args):
    """``parse(*args)`` on input a provider signed: whatever a parser raises on it is that
    input's fault, a 400 with the reason, never a 500."""
    try:
        return parse(*args)
    except Malformed:
        raise
    except Exception as exc:
        raise Malformed(f"{type(exc).__name__}: {exc}") from None


def _sinch_callback(content_type: str | None, body: bytes) -> dict:
    """A Sinch fax callback in its one shape (webhooks/sinch.py), whichever encoding it came
    in: a JSON body as it is; a multipart one's fields, its ``fax`` part decoded as JSON and
    its document part left out unread."""
    if bodies.media_type(content_type) == "application/json":
        return bodies.json_value(body)
    fields = dict(bodies.form_fields(content_type, body, skip=sinch.DOCUMENT_FIELDS))
    if "fax" in fields:
        fields["fax"] = bodies.json_value(fields["fax"].encode())
    return fields


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Receiver:
    """One provider's (or the unsubscribe page's) route: on, or off and why."""

    name: str
    on: bool
    detail: str

    def __str__(self) -> str:
        return f"{self.name}: {'on' if self.on else 'off'} ({self.detail})"


def create_app(
    settings: Settings,
    engine: Engine,
    *,
    unsubscribe: UnsubscribeTokens | None = None,
    local: bool = False,
    clock=_now,
    emitter=None,
) -> Starlette:
    """The service for ``settings`` writing to ``engine``.

    ``unsubscribe``: the tokens senders sign with (channels/credentials.py
    ``unsubscribe_tokens``), None to leave the page off. ``local``: testing
    on this machine, where Twilio's signed URL may be rebuilt from the
    request's Host header when CAREFLOW_PUBLIC_BASE_URL is not set; without
    it that is a ConfigError, since a URL taken from the request would
    accept a request signed for any host. ``clock`` and ``emitter`` (where
    Prefect events go) are for tests."""
    twilio_token = _secret(settings.twilio_auth_token)
    sinch_token = _secret(settings.sinch_callback_token)
    if sinch_token:
        check_secret(sinch_token, "CAREFLOW_SINCH_CALLBACK_TOKEN", min_bytes=MIN_SINCH_TOKEN)
    if twilio_token and not settings.public_base_url and not local:
        raise ConfigError(
            "CAREFLOW_PUBLIC_BASE_URL is missing: Twilio signs the URL it called, so careflow "
            "serve must know its public address (https://care.example.com); to try it on "
            "this machine only: careflow serve --local"
        )
    receivers = _receivers(settings, twilio_token, sinch_token, unsubscribe, local)
    if not any(r.on for r in receivers):
        raise ConfigError(
            "careflow serve has nothing to receive: "
            + "; ".join(f"{r.name}: {r.detail}" for r in receivers)
        )
    writer = EventWriter(lambda events: write(events))
    json_limit = settings.serve_max_body_bytes
    # parsing and signature checks of large bodies on threads, so the event loop stays
    # free; /healthz has a thread of its own, so busy workers never hold it up either
    work, health = anyio.CapacityLimiter(4), anyio.CapacityLimiter(1)

    def public_url(request: Request) -> str:
        """The URL the provider called, as it signed it (behind a proxy: the public one)."""
        base = (settings.public_base_url or str(request.base_url)).rstrip("/")
        query = f"?{request.url.query}" if request.url.query else ""
        return f"{base}{request.url.path}{query}"

    async def store(events: list[InboundEvent]) -> Response | None:
        try:
            await writer.submit(events)
        except Exception as exc:  # the database: the provider should try again later
            log.error("could not store %d event(s): %s", len(events), type(exc).__name__)
            return PlainTextResponse("temporarily unavailable", status_code=503)
        return None

    def write(events):
        result = record_events(engine, events)
        prefect_events.emit(result.recorded, emitter)
        return result

    async def twilio_form(request: Request) -> dict[str, str] | Response:
        if not twilio_token:
            return PlainTextResponse("twilio is not configured", status_code=404)
        signature = request.headers.get("x-twilio-signature")
        if not signature:  # refused before reading the body
            raise Forbidden
        limit = TWILIO_MAX_BODY  # small, so reading and checking it here is bounded
        params = twilio.form(await _body(request, limit))
        if not twilio.verify(twilio_token, public_url(request), params, signature):
            raise Forbidden
        return params

    def twilio_route(parse, answer: Callable[[], Response]):
        """A Twilio webhook: verified form in, one event stored, ``answer()`` out."""

        async def handle(request: Request) -> Response:
            params = await twilio_form(request)
            if isinstance(params, Response):
                return params
            event = _parsed(parse, params, clock().replace(tzinfo=None))
            return await store([event]) or answer()

        return handle

    twilio_status = twilio_route(twilio.parse_status, lambda: Response(status_code=204))
    # Twilio answers STOP/START/HELP itself; careflow only records the reply
    twilio_inbound = twilio_route(
        twilio.parse_inbound, lambda: Response(EMPTY_TWIML, media_type="text/xml")
    )

    async def sendgrid_events(request: Request) -> Response:
        key = settings.sendgrid_webhook_public_key
        if not key:
            return PlainTextResponse("sendgrid is not configured", status_code=404)
        signature = request.headers.get(sendgrid.SIGNATURE_HEADER)
        timestamp = request.headers.get(sendgrid.TIMESTAMP_HEADER)
        if not (signature and timestamp):  # refused before reading the body
            raise Forbidden
        body = await _body(request, json_limit)

        def verified_events() -> list[InboundEvent]:
            ok = sendgrid.verify(
                key,
                body,
                signature,
                timestamp,
                now=clock(),
                tolerance_seconds=settings.webhook_tolerance_seconds,
            )
            if not ok:
                raise Forbidden
            return _parsed(sendgrid.parse, bodies.json_value(body))

        events = await anyio.to_thread.run_sync(verified_events, limiter=work)
        return await store(events) or Response(status_code=204)

    async def sinch_fax(request: Request) -> Response:
        if not sinch_token:
            return PlainTextResponse("sinch is not configured", status_code=404)
        if not sinch.verify(sinch_token, request.path_params["token"]):
            raise Forbidden
        content_type = request.headers.get("content-type")
        if bodies.media_type(content_type) not in SINCH_MEDIA_TYPES:
            raise Unsupported  # refused before reading the body
        body = await _body(request, json_limit)  # the fax document included: see SINCH_MEDIA_TYPES
        received = clock().replace(tzinfo=None)
        event = await anyio.to_thread.run_sync(
            lambda: _parsed(sinch.parse, _sinch_callback(content_type, body), received),
            limiter=work,
        )
        return await store([event]) or Response(status_code=204)

    async def unsubscribe_page(request: Request) -> Response:
        if unsubscribe is None:
            return PlainTextResponse("unsubscribe is not configured", status_code=404)
        token = request.query_params.get("token", "")
        try:
            asked = unsubscribe.verify(token, now=clock())
        except DataError as exc:
            return HTMLResponse(pages.invalid(settings, str(exc)), status_code=400)
        try:
            customer = await anyio.to_thread.run_sync(pages.customer, engine, asked.customer_id)
        except Exception as exc:  # the database
            log.error("could not look up a customer: %s", type(exc).__name__)
            return PlainTextResponse("temporarily unavailable", status_code=503)
        if customer is None:
            return HTMLResponse(pages.invalid(settings, "unknown customer"), status_code=400)
        if request.method == "GET":
            return HTMLResponse(pages.confirm(settings, customer, token))
        body = await _body(request, UNSUBSCRIBE_MAX_BODY)
        try:
            fields = bodies.form_fields(request.headers.get("content-type"), body)
        except (Malformed, Unsupported) as exc:
            status = 415 if isinstance(exc, Unsupported) else 400
            return HTMLResponse(pages.confirm(settings, customer, token), status_code=status)
        one_click = ONE_CLICK in fields or ONE_CLICK_AS_NAME in fields
        if not one_click and ("confirm", "yes") not in fields:
            # neither RFC 8058's one-click nor the page's button: not a success for a
            # machine (never 200 for nothing recorded), the page again for a person
            return HTMLResponse(pages.confirm(settings, customer, token), status_code=400)
        event_id = f"unsubscribe:{asked.customer_id}:{asked.campaign}:{asked.occasion}"
        event = InboundEvent(
            provider="careflow",
            kind=EventKind.UNSUBSCRIBED,
            event_id=event_id[: ContactEvent.event_id.type.length],
            occurred_at=clock().replace(tzinfo=None),
            channel="email",
            recipient=customer.email,
            customer_id=asked.customer_id,
            reason="one-click" if one_click else "page",
            raw={"campaign": asked.campaign, "occasion": asked.occasion},
        )
        failed = await store([event])
        if failed is not None:
            return failed
        if one_click:
            return PlainTextResponse("unsubscribed")
        return HTMLResponse(pages.done(settings, customer))

    def database_answers() -> None:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    async def healthz(request: Request) -> Response:
        try:
            await anyio.to_thread.run_sync(database_answers, limiter=health)
        except Exception as exc:
            return JSONResponse({"ok": False, "database": type(exc).__name__}, status_code=503)
        return JSONResponse({"ok": True})

    @asynccontextmanager
    async def lifespan(app):
        for receiver in receivers:
            log.info("receiver %s", receiver)
        await writer.start()
        yield
        await writer.stop()

    routes = [
        Route("/webhooks/twilio/status", twilio_status, methods=["POST"]),
        Route("/webhooks/twilio/inbound", twilio_inbound, methods=["POST"]),
        Route("/webhooks/sendgrid", sendgrid_events, methods=["POST"]),
        Route("/webhooks/sinch/{token}", sinch_fax, methods=["POST"]),
        Route("/unsubscribe", unsubscribe_page, methods=["GET", "POST"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.receivers = receivers
    app.add_middleware(_GuardAndLog, routes=routes)
    return app


def _receivers(
    settings: Settings,
    twilio_token: str | None,
    sinch_token: str | None,
    unsubscribe: UnsubscribeTokens | None,
    local: bool,
) -> list[Receiver]:
    signed_on = settings.public_base_url or "the request's Host header (--local)"
    return [
        Receiver(
            "twilio",
            bool(twilio_token),
            f"/webhooks/twilio/status and /inbound, signed URLs on {signed_on}"
            if twilio_token
            else "CAREFLOW_TWILIO_AUTH_TOKEN is not set",
        ),
        Receiver(
            "sendgrid",
            bool(settings.sendgrid_webhook_public_key),
            "/webhooks/sendgrid"
            if settings.sendgrid_webhook_public_key
            else "CAREFLOW_SENDGRID_WEBHOOK_PUBLIC_KEY is not set",
        ),
        Receiver(
            "sinch",
            bool(sinch_token),
            "/webhooks/sinch/<CAREFLOW_SINCH_CALLBACK_TOKEN>"
            if sinch_token
            else "CAREFLOW_SINCH_CALLBACK_TOKEN is not set",
        ),
        Receiver(
            "unsubscribe",
            unsubscribe is not None,
            f"/unsubscribe, key from {unsubscribe.source}"
            if unsubscribe is not None
            else "neither CAREFLOW_UNSUBSCRIBE_BASE_URL nor CAREFLOW_UNSUBSCRIBE_SECRET is set",
        ),
    ]


#: what a refused request is answered with
_REFUSALS = {
    TooLarge: (413, "request too large"),
    Forbidden: (403, "forbidden"),
    Unsupported: (415, "unsupported media type"),
}


class _GuardAndLog:
    """Refusals become their 4xx, any slip a bare 500; safe headers on every answer; one
    log line per request, its route masked and escaped."""

    def __init__(self, app, routes: list[Route]):
        self.app = app
        self.patterns = {route.endpoint: route.path for route in routes}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), {"code": 500, "sent": False, "logged": False}

        def log_request() -> None:
            # the route's pattern: query strings carry tokens, the Sinch path one, bodies
            # numbers and texts; whatever is left is escaped so no line can be forged
            status["logged"] = True
            log.info(
                "%s %s %d %.1fms",
                loggable(scope.get("method", "")),
                loggable(self._route(scope)),
                status["code"],
                1000 * (time.perf_counter() - started),
            )

        async def send_safely(message):
            if message["type"] == "http.response.start":
                status["code"], status["sent"] = message["status"], True
                message = {**message, "headers": [*message.get("headers", []), *SAFE_HEADERS]}
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                log_request()  # before the answer is complete: its line is in the log first
            await send(message)

        try:
            await self.app(scope, receive, send_safely)
        except Exception as exc:
            if isinstance(exc, Malformed):
                code, reason = 400, f"malformed: {str(exc)[:200]}"
            else:
                code, reason = _REFUSALS.get(type(exc), (500, "internal error"))
            if code == 500:
                where = exc.__traceback__
                while where.tb_next is not None:
                    where = where.tb_next
                log.error(
                    "unexpected %s at %s:%d",
                    type(exc).__name__,
                    where.tb_frame.f_code.co_filename,
                    where.tb_lineno,
                )
            if not status["sent"]:
                await PlainTextResponse(reason, status_code=code)(scope, receive, send_safely)
        finally:
            if not status["logged"]:  # the answer never finished (the client went away)
                log_request()

    def _route(self, scope) -> str:
        pattern = self.patterns.get(scope.get("endpoint"))
        if pattern is not None:
            return pattern
        # no route: the first two segments, the rest masked (it may hold a mistyped token)
        segments = scope.get("path", "").split("/")
        return "/".join(segments[:3] + ["…"] * len(segments[3:]))


def loggable(value: str, limit: int = 200) -> str:
    """``value`` for a log line: control and other unprintable characters escaped, cut."""
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in value[:limit]
    )


def _secret(value) -> str | None:
    return value.get_secret_value() if value is not None else None
