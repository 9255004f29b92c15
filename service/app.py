"""The ASGI app behind ``careflow serve`` (Starlette; uvicorn runs it).

Routes (docs/responses.md says which URL to set where):

    POST /webhooks/twilio/status        Twilio status callbacks (StatusCallback)
    POST /webhooks/twilio/inbound       incoming SMS (the number's Messaging webhook)
    POST /webhooks/sendgrid             SendGrid Event Webhook (signed)
    POST /webhooks/sinch/{token}        Sinch fax callbacks (secret path token)
    GET  /unsubscribe?token=...         the unsubscribe page (asks to confirm)
    POST /unsubscribe?token=...         confirm, or the RFC 8058 one-click POST
    GET  /healthz                       liveness and database reachability

Answers: an unsigned or forged request gets 403 and changes nothing; a
malformed one 400; an oversized one 413 (never a 500). When the database
cannot be written the answer is 503, which makes SendGrid and Sinch retry
(Twilio does not retry status callbacks; the reconciliation flow catches
up). Access logs name method, path and status only: no query strings
(tokens), no bodies (numbers, addresses, texts).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from sqlalchemy import Engine, text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from careflow.errors import ConfigError, DataError
from careflow.events import EventKind, InboundEvent
from careflow.responses import record_events
from careflow.settings import Settings
from careflow.unsubscribe import local_tokens
from service import pages, prefect_events
from service.writer import EventWriter
from webhooks import sendgrid, sinch, twilio

log = logging.getLogger("careflow.serve")

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


class TooLarge(Exception):
    pass


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


def _now() -> datetime:
    return datetime.now(UTC)


def create_app(settings: Settings, engine: Engine, *, clock=_now, emitter=None) -> Starlette:
    """The service for ``settings`` writing to ``engine``.

    ``clock`` and ``emitter`` (where Prefect events go) are for tests."""
    twilio_token = _secret(settings.twilio_auth_token)
    sinch_token = _secret(settings.sinch_callback_token)
    if sinch_token and len(sinch_token) < 24:
        raise ConfigError("CAREFLOW_SINCH_CALLBACK_TOKEN must be at least 24 characters")
    tokens = local_tokens(settings)
    writer = EventWriter(lambda events: write(events))
    limit = settings.serve_max_body_bytes

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
        params = twilio.form(await _body(request, limit))
        signature = request.headers.get("x-twilio-signature")
        if not twilio.verify(twilio_token, public_url(request), params, signature):
            return PlainTextResponse("forbidden", status_code=403)
        return params

    def twilio_route(parse, answer: Callable[[], Response]):
        """A Twilio webhook: verified form in, one event stored, ``answer()`` out."""

        async def handle(request: Request) -> Response:
            params = await twilio_form(request)
            if isinstance(params, Response):
                return params
            try:
                event = parse(params, clock().replace(tzinfo=None))
            except ValueError as exc:
                return PlainTextResponse(str(exc), status_code=400)
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
        body = await _body(request, limit)
        ok = sendgrid.verify(
            key,
            body,
            request.headers.get(sendgrid.SIGNATURE_HEADER),
            request.headers.get(sendgrid.TIMESTAMP_HEADER),
            now=clock(),
            tolerance_seconds=settings.webhook_tolerance_seconds,
        )
        if not ok:
            return PlainTextResponse("forbidden", status_code=403)
        try:
            events = sendgrid.parse(json.loads(body))
        except (ValueError, TypeError) as exc:
            return PlainTextResponse(f"malformed: {str(exc)[:200]}", status_code=400)
        return await store(events) or Response(status_code=204)

    async def sinch_fax(request: Request) -> Response:
        if not sinch.verify(sinch_token or "", request.path_params["token"]):
            return PlainTextResponse("forbidden", status_code=403)
        try:
            event = sinch.parse(
                json.loads(await _body(request, limit)), clock().replace(tzinfo=None)
            )
        except (ValueError, TypeError, AttributeError) as exc:
            return PlainTextResponse(f"malformed: {str(exc)[:200]}", status_code=400)
        return await store([event]) or Response(status_code=204)

    async def unsubscribe(request: Request) -> Response:
        token = request.query_params.get("token", "")
        try:
            asked = tokens.verify(token, now=clock())
        except DataError as exc:
            return HTMLResponse(pages.invalid(settings, str(exc)), status_code=400)
        customer = pages.customer(engine, asked.customer_id)
        if customer is None:
            return HTMLResponse(pages.invalid(settings, "unknown customer"), status_code=400)
        if request.method == "GET":
            return HTMLResponse(pages.confirm(settings, customer, token))
        body = await _body(request, 10_000)
        one_click = b"List-Unsubscribe=One-Click" in body
        if not one_click and b"confirm=yes" not in body:
            return HTMLResponse(pages.confirm(settings, customer, token))
        event = InboundEvent(
            provider="careflow",
            kind=EventKind.UNSUBSCRIBED,
            event_id=f"unsubscribe:{asked.customer_id}:{asked.campaign}:{asked.occasion}",
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

    async def healthz(request: Request) -> Response:
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:
            return JSONResponse({"ok": False, "database": type(exc).__name__}, status_code=503)
        return JSONResponse({"ok": True})

    @asynccontextmanager
    async def lifespan(app):
        await writer.start()
        yield
        await writer.stop()

    app = Starlette(
        routes=[
            Route("/webhooks/twilio/status", twilio_status, methods=["POST"]),
            Route("/webhooks/twilio/inbound", twilio_inbound, methods=["POST"]),
            Route("/webhooks/sendgrid", sendgrid_events, methods=["POST"]),
            Route("/webhooks/sinch/{token}", sinch_fax, methods=["POST"]),
            Route("/unsubscribe", unsubscribe, methods=["GET", "POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.add_middleware(_GuardAndLog)
    return app


class _GuardAndLog:
    """Oversized bodies become 413, any slip a 500 without details; one log line per request."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), {"code": 500}

        async def send_and_note(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except TooLarge:
            await PlainTextResponse("request too large", status_code=413)(scope, receive, send)
            status["code"] = 413
        except UnicodeDecodeError:
            await PlainTextResponse("malformed request", status_code=400)(scope, receive, send)
            status["code"] = 400
        finally:
            # path only: query strings carry tokens; bodies carry numbers and texts
            log.info(
                "%s %s %d %.1fms",
                scope.get("method"),
                scope.get("path"),
                status["code"],
                1000 * (time.perf_counter() - started),
            )


def _secret(value) -> str | None:
    return value.get_secret_value() if value is not None else None
