"""The ASGI app behind ``careflow serve`` (Starlette; uvicorn runs it).

Routes (docs/responses.md says which URL to set where):

    POST <each registered webhook provider's routes>   (careflow/webhooks/registry.py), today:
    POST /webhooks/twilio/status        Twilio status callbacks (StatusCallback)
    POST /webhooks/twilio/inbound       incoming SMS (the number's Messaging webhook)
    POST /webhooks/sendgrid             SendGrid Event Webhook (signed)
    POST /webhooks/sinch/{token}        Sinch fax callbacks, JSON or multipart (secret path token)
    POST /events                        the shop's own events, signed per source (docs/events.md)
    GET  /unsubscribe?token=...         the unsubscribe page (asks to confirm)
    POST /unsubscribe?token=...         confirm, or the RFC 8058 one-click POST
    GET  /p/<token>                     the preference centre (shows, never changes)
    POST /p/<token>                     the preference centre's form: change, then confirm
    GET  /healthz                       liveness and database reachability

Each provider's facts (routes, settings, pre-check, body bound, content
types, signature, parsing, answer) are in its careflow/webhooks/<provider>.py entry;
this module knows no provider. A receiver is on when its key is configured
and answers 404 otherwise; the service logs which are on, and why the
others are off, when it starts.

Answers: a request without its signature (or path token, or unsubscribe
token) is refused with 403 before a byte of its body is read; a forged one
403 and changes nothing; a malformed one 400, whatever a parser raised on
it; a content type the provider does not post 415; an oversized one 413
(never a 500). Signature checks and parsing of the large bodies (bounds
above THREAD_ABOVE: SendGrid, Sinch) run on worker threads, so the event loop
keeps answering (/healthz) while they work. When the database cannot be
written the answer is 503, which makes SendGrid and Sinch retry (Twilio
does not retry status callbacks; the reconciliation flow catches up).

The shop's events (POST /events) answer in JSON, event by event
(careflow/shop_events.py reads a post, careflow/shop_record.py writes it): 401 for a
post not signed by a configured source or signed outside the tolerance, 413
past CAREFLOW_EVENT_MAX_BODY_BYTES, 415 for a body that is not JSON, 400 for one
that is not the documented envelope, 200 with each event's answer when any
was taken (accepted or duplicate), 422 when every event was refused.

Access logs name method, route, status and time only: the route's pattern,
never the Sinch token in the path, no query strings (tokens), no bodies
(numbers, addresses, texts), control characters escaped. Every answer
carries headers that keep it out of caches and frames and its URL (with
its token) out of Referer headers.
"""

from __future__ import annotations

import functools
import gc
import itertools
import logging
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import ClassVar

import anyio
from sqlalchemy import Engine, text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from careflow.consent_proof import token_id
from careflow.db.models import ContactEvent
from careflow.errors import ConfigError, DataError
from careflow.events import EventKind, InboundEvent
from careflow.preferences import PreferenceTokens, apply_change
from careflow.preferences import view as preference_view
from careflow.responses import Ingested, record_events
from careflow.service import pages, prefect_events, preference_pages
from careflow.service.writer import EventWriter
from careflow.settings import Settings, event_secrets
from careflow.shop_events import (
    RECEIPTS_PER_POST,
    SIGNATURE_HEADER,
    SOURCE_HEADER,
    Parsed,
    Refused,
    ShopEvent,
)
from careflow.shop_events import parse as parse_shop_post
from careflow.shop_events import verify as verify_shop_post
from careflow.shop_record import ShopRecorded, record_shop_events
from careflow.unsubscribe import UnsubscribeTokens
from careflow.webhooks import bodies
from careflow.webhooks import registry as webhook_registry
from careflow.webhooks.bodies import Malformed, Unsupported
from careflow.webhooks.registry import Configured, Hook, Posted, WebhookProvider

log = logging.getLogger("careflow.serve")

#: Largest unsubscribe POST accepted: a one-click form is one field, the page's form two.
UNSUBSCRIBE_MAX_BODY = 16 * 1024
#: Bodies a provider may post larger than this are verified and parsed on a worker thread
#: (SendGrid's batches, Sinch's faxes); smaller ones (Twilio's forms) on the event loop.
THREAD_ABOVE = 64 * 1024
#: RFC 8058: the one-click POST carries this form field.
ONE_CLICK = ("List-Unsubscribe", "One-Click")
#: The same line percent-encoded as one name (List-Unsubscribe%3DOne-Click), as a sender of
#: the header's text as an opaque form body produces it: honoured too.
ONE_CLICK_AS_NAME = ("List-Unsubscribe=One-Click", "")
#: what a one-click unsubscriber was shown, for the consent proof: their mail client's
#: own Unsubscribe button, which posts the email's List-Unsubscribe-Post header
ONE_CLICK_SHOWN = "the mail client's Unsubscribe button (RFC 8058 List-Unsubscribe=One-Click)"
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


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Receiver:
    """One provider's (or the unsubscribe page's) routes: on, or off and why."""

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
    """The service for ``settings`` writing to ``engine``: every registered webhook
    provider's routes (careflow/webhooks/registry.py), the unsubscribe page and /healthz.

    ``unsubscribe``: the tokens senders sign with (made by the caller, the
    CLI, from CAREFLOW_UNSUBSCRIBE_*), None to leave the page off. ``local``:
    testing on this machine, where a signed URL may be rebuilt from the
    request's Host header when CAREFLOW_PUBLIC_BASE_URL is not set (without
    it, a provider that signs URLs refuses to start). ``clock`` and
    ``emitter`` (where Prefect events go) are for tests."""
    providers = webhook_registry.providers()
    configured = [provider.configure(settings, local) for provider in providers]
    receivers = [
        Receiver(p.name, on is not None, p.off if on is None else on.detail)
        for p, on in zip(providers, configured, strict=True)
    ] + [_unsubscribe_receiver(unsubscribe), _events_receiver(settings)]
    if not any(r.on for r in receivers):
        raise ConfigError(
            "careflow serve has nothing to receive: "
            + "; ".join(f"{r.name}: {r.detail}" for r in receivers)
        )
    service = _Service(settings, engine, unsubscribe, clock, emitter)

    @asynccontextmanager
    async def lifespan(app):
        for receiver in receivers:
            log.info("receiver %s", receiver)
        # what was built to start (modules, the app, the engine) lives as long as the
        # service: kept out of the cyclic collector's full passes, which a burst of
        # events (each a handful of dicts) otherwise triggers over all of it
        gc.freeze()
        await service.writer.start()
        yield
        await service.writer.stop()

    inbound = [
        Route(hook.path, service.webhook(provider, on, hook), methods=["POST"])
        for provider, on in zip(providers, configured, strict=True)
        for hook in provider.hooks
    ] + [Route("/events", service.shop_events, methods=["POST"])]
    routes = inbound + [
        Route("/unsubscribe", service.unsubscribe_page, methods=["GET", "POST"]),
        Route("/p/{token}", service.preference_centre, methods=["GET", "POST"]),
        Route("/healthz", service.healthz, methods=["GET"]),
    ]
    app = _Inbound(routes=routes, lifespan=lifespan)
    app.state.receivers = receivers
    app.add_middleware(_GuardAndLog, routes=routes)
    # the providers' and the shop's POSTs (thousands a second in a campaign's burst) go
    # straight to their endpoint, guarded and logged the same, past Starlette's router
    # and its two exception middlewares (a fifth of a Twilio callback's CPU)
    app.direct = {
        route.path: (route.endpoint, _GuardAndLog(_endpoint_app(route.endpoint), routes))
        for route in inbound
        if "{" not in route.path  # Sinch's token in the path: Starlette's router reads it
    }
    return app


class _Inbound(Starlette):
    """Starlette, with the inbound POST routes (:attr:`direct`, by exact path) served
    without its routing."""

    direct: ClassVar[dict[str, tuple[Callable, Callable]]] = {}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            direct = self.direct.get(scope["path"])
            if direct is not None:
                scope["app"], scope["endpoint"] = self, direct[0]
                return await direct[1](scope, receive, send)
        await super().__call__(scope, receive, send)


def _endpoint_app(endpoint: Callable) -> Callable:
    """``endpoint`` (a request in, a response out) as an ASGI app."""

    async def app(scope, receive, send) -> None:
        response = await endpoint(Request(scope, receive, send))
        await response(scope, receive, send)

    return app


def _unsubscribe_receiver(unsubscribe: UnsubscribeTokens | None) -> Receiver:
    if unsubscribe is None:
        why = "neither CAREFLOW_UNSUBSCRIBE_BASE_URL nor CAREFLOW_UNSUBSCRIBE_SECRET is set"
        return Receiver("unsubscribe", False, why)
    return Receiver(
        "unsubscribe",
        True,
        f"/unsubscribe, key from {unsubscribe.source}; the preference centre at /p/",
    )


def _events_receiver(settings: Settings) -> Receiver:
    if settings.event_sources is None:
        return Receiver("events", False, "CAREFLOW_EVENT_SOURCES is not set")
    sources = ", ".join(sorted(event_secrets(settings.event_sources)))
    return Receiver("events", True, f"/events, sources {sources}")


@dataclass
class Written:
    """What one batch of the writer did: the providers' events and the shop's."""

    ingested: Ingested
    shop: ShopRecorded

    @property
    def rejected(self) -> int:
        return self.ingested.rejected


class _Service:
    """The endpoints, over what they share: settings, the database, the writer, the clock."""

    def __init__(self, settings, engine, unsubscribe, clock, emitter):
        self.settings, self.engine, self.unsubscribe = settings, engine, unsubscribe
        self.preferences = PreferenceTokens(unsubscribe) if unsubscribe is not None else None
        self.clock, self.emitter = clock, emitter
        self.sources = event_secrets(settings.event_sources) if settings.event_sources else {}
        self.posts = itertools.count()  # each shop post's receipts start at its number's
        self.writer = EventWriter(self._write)
        # signature checks and parsing of large bodies on threads, so the event loop stays
        # free; /healthz has a thread of its own, so busy workers never hold it up either
        self.work, self.health = anyio.CapacityLimiter(4), anyio.CapacityLimiter(1)

    def _write(self, items) -> Written:
        inbound = [e for e in items if isinstance(e, InboundEvent)]
        shop = [e for e in items if isinstance(e, ShopEvent)]
        ingested = record_events(self.engine, inbound) if inbound else Ingested()
        prefect_events.emit(ingested.recorded, self.emitter)
        recorded = ShopRecorded()
        if shop:
            recorded = record_shop_events(
                self.engine,
                shop,
                shop_zone=self.settings.time_zone,
                window_days=self.settings.attribution_window_days,
            )
            prefect_events.emit(recorded.recorded, self.emitter)
        return Written(ingested, recorded)

    async def _store(self, events: list[InboundEvent]) -> Response | None:
        try:
            await self.writer.submit(events)
        except Exception as exc:  # the database: the provider should try again later
            log.error("could not store %d event(s): %s", len(events), type(exc).__name__)
            return PlainTextResponse("temporarily unavailable", status_code=503)
        return None

    def _public_url(self, request: Request) -> str:
        """The URL the provider called, as it signed it (behind a proxy: the public one)."""
        base = (self.settings.public_base_url or str(request.base_url)).rstrip("/")
        query = f"?{request.url.query}" if request.url.query else ""
        return f"{base}{request.url.path}{query}"

    def webhook(self, provider: WebhookProvider, on: Configured | None, hook: Hook):
        """``hook``'s endpoint: pre-checked, read within its bound, verified, parsed, stored;
        404 while ``provider`` is not configured (``on`` None)."""
        limit = provider.max_body or self.settings.serve_max_body_bytes
        answer = hook.answer

        def events(posted: Posted) -> list[InboundEvent]:
            if not provider.verify(on.key, posted, self.clock()):
                raise Forbidden
            return list(_parsed(hook.parse, posted, self.clock().replace(tzinfo=None)))

        async def handle(request: Request) -> Response:
            if on is None:
                return PlainTextResponse(f"{provider.name} is not configured", status_code=404)
            posted = Posted(self._public_url(request), request.path_params, request.headers)
            if not provider.ready(on.key, posted):  # refused before reading the body
                raise Forbidden
            if provider.media_types and (
                bodies.media_type(posted.content_type) not in provider.media_types
            ):
                raise Unsupported
            posted = replace(posted, body=await _body(request, limit))
            if limit > THREAD_ABOVE:
                found = await anyio.to_thread.run_sync(events, posted, limiter=self.work)
            else:
                found = events(posted)
            return await self._store(found) or Response(
                answer.body, status_code=answer.status, media_type=answer.media_type
            )

        return handle

    def _read_post(self, source: str | None, signature: str | None, body: bytes) -> Parsed:
        settings, now = self.settings, self.clock()
        verify_shop_post(
            self.sources, source, signature, body, now, settings.event_tolerance_seconds
        )
        return parse_shop_post(
            body,
            source,
            now,
            max_age_hours=settings.event_max_age_hours,
            max_batch=settings.event_max_batch,
            first_receipt=next(self.posts) * RECEIPTS_PER_POST,
        )

    async def shop_events(self, request: Request) -> Response:
        """POST /events: a source's signed batch of events, answered event by event."""
        if not self.sources:
            return _refusal(Refused(404, "not_configured", "CAREFLOW_EVENT_SOURCES is not set"))
        source = request.headers.get(SOURCE_HEADER)
        signature = request.headers.get(SIGNATURE_HEADER)
        if source not in self.sources or not signature:  # refused before reading the body
            return _refusal(Refused(401, "bad_signature", "unknown source, or no signature"))
        if bodies.media_type(request.headers.get("content-type")) != "application/json":
            return _refusal(Refused(415, "unsupported_media_type", "post application/json"))
        limit = self.settings.event_max_body_bytes
        try:
            body = await _body(request, limit)
        except TooLarge:
            return _refusal(Refused(413, "too_large", f"a post may carry {limit} bytes"))
        try:
            if len(body) > THREAD_ABOVE:
                parsed = await anyio.to_thread.run_sync(
                    self._read_post, source, signature, body, limiter=self.work
                )
            else:
                parsed = self._read_post(source, signature, body)
        except Refused as refused:
            return _refusal(refused)
        answers: dict[int, dict] = dict(parsed.refused)
        if parsed.events:
            try:
                written = await self.writer.submit(parsed.events)
            except Exception as exc:  # the database: the shop should post again later
                log.error(
                    "could not store %d shop event(s): %s", len(parsed.events), type(exc).__name__
                )
                return _refusal(Refused(503, "unavailable", "try again later"))
            for event in parsed.events:
                answers[parsed.positions[event.receipt]] = written.shop.answers[event.receipt]
        results = [{"id": parsed.ids[i], **answers[i]} for i in sorted(answers)]
        counts = {
            status: sum(r["status"] == status for r in results)
            for status in ("accepted", "duplicate", "refused")
        }
        taken = counts["accepted"] + counts["duplicate"]
        return JSONResponse(
            {**counts, "backfill": parsed.backfill, "events": results},
            status_code=200 if taken else 422,
        )

    async def unsubscribe_page(self, request: Request) -> Response:
        settings, clock = self.settings, self.clock
        if self.unsubscribe is None:
            return PlainTextResponse("unsubscribe is not configured", status_code=404)
        token = request.query_params.get("token", "")
        try:
            asked = self.unsubscribe.verify(token, now=clock())
        except DataError as exc:
            return HTMLResponse(pages.invalid(settings, str(exc)), status_code=400)
        try:
            customer = await anyio.to_thread.run_sync(
                pages.customer, self.engine, asked.customer_id
            )
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
        if one_click:  # what the customer pressed: their mail client's button, not our page
            lang, shown = customer.locale, ONE_CLICK_SHOWN
        else:
            lang, shown = pages.shown(settings, customer)
        event = InboundEvent(
            provider="careflow",
            kind=EventKind.UNSUBSCRIBED,
            event_id=event_id[: ContactEvent.event_id.type.length],
            occurred_at=clock().replace(tzinfo=None),
            channel="email",
            recipient=customer.email,
            customer_id=asked.customer_id,
            reason="one-click" if one_click else "page",
            raw={
                "campaign": asked.campaign,
                "occasion": asked.occasion,
                "token_id": token_id(token),  # the consent proof's evidence, never the token
                "shown": shown,
                "locale": lang,
            },
        )
        failed = await self._store([event])
        if failed is not None:
            return failed
        if one_click:
            return PlainTextResponse("unsubscribed")
        return HTMLResponse(pages.done(settings, customer))

    async def preference_centre(self, request: Request) -> Response:
        """GET /p/<token>: the customer's page, changing nothing (link scanners fetch it);
        POST: the page's form, written by careflow/preferences.py ``apply_change``, then a
        confirmation. Tokens are logged only as their id."""
        settings, pages_ = self.settings, preference_pages
        accept = request.headers.get("accept-language")
        if self.preferences is None:
            return PlainTextResponse("preferences are not configured", status_code=404)
        days = self.preferences.max_age.days
        try:
            grant = self.preferences.verify(request.path_params["token"], now=self.clock())
        except DataError as exc:
            return HTMLResponse(
                pages_.invalid(pages_.locale_for(accept), str(exc), days), status_code=400
            )
        now = self.clock().astimezone(UTC).replace(tzinfo=None)
        try:
            shown = await anyio.to_thread.run_sync(
                preference_view, self.engine, grant.customer_id, settings, now
            )
        except Exception as exc:  # the database
            log.error("could not read preferences: %s", type(exc).__name__)
            return PlainTextResponse("temporarily unavailable", status_code=503)
        if shown is None:
            return HTMLResponse(
                pages_.invalid(pages_.locale_for(accept), "unknown customer", days),
                status_code=400,
            )
        locale = pages_.locale_for(shown.locale, accept)
        zone = pages_.zone_for(shown.time_zone, settings.time_zone)
        if request.method == "GET":
            return HTMLResponse(pages_.centre(settings, shown, locale, now, zone))
        body = await _body(request, UNSUBSCRIBE_MAX_BODY)
        try:
            fields = bodies.form_fields(request.headers.get("content-type"), body)
            wanted = pages_.read_form(fields, shown, now, zone)
        except (Malformed, Unsupported) as exc:
            status = 415 if isinstance(exc, Unsupported) else 400
            page = pages_.centre(settings, shown, locale, now, zone)
            return HTMLResponse(page, status_code=status)
        except DataError as exc:
            page = pages_.bad_input(settings, shown, locale, now, zone, str(exc))
            return HTMLResponse(page, status_code=400)
        try:
            change = await anyio.to_thread.run_sync(
                functools.partial(
                    apply_change,
                    self.engine,
                    grant.customer_id,
                    wanted,
                    locale=locale,
                    token_id=grant.token_id,
                    at=now,
                    settings=settings,
                )
            )
        except Exception as exc:  # the database
            log.error("could not store a preference change: %s", type(exc).__name__)
            return PlainTextResponse("temporarily unavailable", status_code=503)
        log.info(
            "preferences of customer %d changed (token %s): %s",
            grant.customer_id,
            grant.token_id,
            "; ".join(change.changed) or "nothing",
        )
        token = request.path_params["token"]
        return HTMLResponse(pages_.done(settings, change, shown, locale, token, zone))

    def _database_answers(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    async def healthz(self, request: Request) -> Response:
        try:
            await anyio.to_thread.run_sync(self._database_answers, limiter=self.health)
        except Exception as exc:
            return JSONResponse({"ok": False, "database": type(exc).__name__}, status_code=503)
        return JSONResponse({"ok": True})


def _refusal(refused: Refused) -> JSONResponse:
    return JSONResponse(
        {"error": refused.error, "detail": refused.detail}, status_code=refused.status
    )


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
    if value.isprintable():  # every route careflow serves: nothing to escape
        return value[:limit]
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in value[:limit]
    )
