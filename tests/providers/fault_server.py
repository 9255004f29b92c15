"""A loopback stand-in for Twilio, SendGrid and Sinch Fax that misbehaves on demand.

It speaks just enough of each API for the real SDKs (Messages.json, Mail
Send, Sinch faxes) and counts, per recipient, how many requests it saw and
how many it *accepted* (answered as a success, or accepted and then hung up
on). "Sent exactly once" in the tests means ``accepted[recipient] == 1``.

What happens to a request is an *action*:

==================  =========================================================
``ok``              accept, answer success
``http:S[:CODE]``   answer HTTP S (provider error CODE in the body), not accepted
``429:SECONDS``     answer 429 with Retry-After: SECONDS, not accepted
``reset``           drop the connection before answering, not accepted
``accept_hang:S``   accept, then stall S seconds (the client times out)
``accept_reset``    accept, then drop the connection without an answer
``slow:S``          wait S seconds, then accept and answer success
==================  =========================================================

Per recipient, ``script(recipient, [actions...])`` decides successive
attempts; otherwise a seeded random draw picks a fault with probability
``fault_rate`` from ``faults``. Runs aiohttp on its own thread and loop.

Twilio's message log. Every accepted SMS becomes a Message resource, listed
(GET Messages.json, newest first, filtered by To, From and DateSent as
Twilio filters) and fetched by sid. ``twilio_status`` is the status a new
one gets: ``delivered`` (the default) or, as Twilio does, ``queued``, then
moved along queued -> sending -> sent -> delivered by ``twilio_advance``;
``date_sent`` stays null until it is sent, so a DateSent filter leaves
messages still queued out. ``add_twilio_message`` puts someone else's
message (another campaign's, another system's) in the log, and
``log_script`` holds actions (``reset``, ``http:S``) for the next reads of
the log.

``SlowFaultServer`` takes a moment over every request it accepts, so a
client killed or stopped mid-run is caught with requests in flight;
``wait_idle`` waits until no request is being handled (a killed client's
requests are counted or dropped), so what was accepted can be read.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import threading
import uuid
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Self

from aiohttp import web

TRANSIENT = ("http:500", "http:502", "http:503", "429:0.05")
#: a Twilio message's statuses in the order they come (Message resource, status)
TWILIO_LIFECYCLE = ("accepted", "scheduled", "queued", "sending", "sent", "delivered")


def _public(message: dict) -> dict:
    """A logged message as Twilio's API shows it (without the server's own fields)."""
    return {k: v for k, v in message.items() if not k.startswith("_")}


def _twilio_date(value: str) -> datetime:
    """A DateSent bound as the SDK sends it (``2026-11-22T12:00:00Z``) or a bare day."""
    if len(value) == 10:
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class FaultServer:
    """One loopback HTTP server playing all three providers; see the module docstring."""

    def __init__(
        self,
        *,
        fault_rate: float = 0.0,
        faults: Iterable[str] = TRANSIENT,
        seed: int = 1,
        require_auth: bool = True,
        twilio_status: str = "delivered",
    ):
        self.twilio_status = twilio_status  # what the message log says of accepted SMS
        self.fault_rate, self.faults = fault_rate, tuple(faults)
        self.require_auth = require_auth
        self._rng = random.Random(seed)
        self._scripts: dict[str, list[str]] = {}
        self.attempts: Counter[str] = Counter()
        self.accepted: Counter[str] = Counter()
        self.actions: Counter[str] = Counter()
        self.bodies: list[dict] = []  # what accepted requests carried, for assertions
        #: accepted SMS by sid, as Twilio's message list and fetch report them
        self.twilio_messages: dict[str, dict] = {}
        self.log_script: list[str] = []  # actions for the next reads of the message log
        self.log_reads = 0
        self.headers: list[dict[str, str]] = []  # and their headers
        self.in_flight = 0  # requests being handled right now
        self._in_flight_changed = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._open = asyncio.Event()  # cleared while holding (set on the server's loop)
        self._open.set()
        self._holding = False
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self.port = 0

    # --- control from the test thread -------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, recipient: str, actions: Iterable[str]) -> None:
        """Fix the actions for ``recipient``'s next attempts (then: random/default)."""
        self._scripts[recipient] = list(actions)

    @property
    def holding(self) -> bool:
        """While True, requests wait before anything happens to them (not accepted):
        a test holds the door to keep a client's requests in flight."""
        return self._holding

    @holding.setter
    def holding(self, value: bool) -> None:
        self._holding = value
        door = self._open.clear if value else self._open.set
        if self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(door)
        else:
            door()

    def wait_in_flight(self, n: int, timeout: float = 30.0) -> None:
        """Wait until ``n`` requests are being handled at once (``timeout`` only guards
        a hang): woken by the server as each request arrives, no polling."""
        self._wait(lambda: self.in_flight == n, f"{n} request(s) in flight", timeout)

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait until no request is being handled (``timeout`` only guards a hang)."""
        self._wait(lambda: self.in_flight == 0, "no request in flight", timeout)

    def _wait(self, done, what: str, timeout: float) -> None:
        with self._in_flight_changed:
            if not self._in_flight_changed.wait_for(done, timeout):
                raise TimeoutError(f"gave up waiting for {what} ({self.in_flight} in flight)")

    def _count_in_flight(self, step: int) -> None:
        with self._in_flight_changed:
            self.in_flight += step
            self._in_flight_changed.notify_all()

    def start(self) -> FaultServer:
        self._thread = threading.Thread(target=self._run, name="fault-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fault server did not start")
        return self

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the server ---------------------------------------------------------------
    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        app = web.Application()
        app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", self._twilio)
        app.router.add_get("/2010-04-01/Accounts/{sid}/Messages.json", self._twilio_list)
        app.router.add_get("/2010-04-01/Accounts/{sid}/Messages/{msid}.json", self._twilio_fetch)
        app.router.add_post("/v3/mail/send", self._sendgrid)
        app.router.add_post("/v3/projects/{project}/faxes", self._sinch)
        runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0
        )
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=512)
        await site.start()
        self.port = runner.addresses[0][1]
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def _choose(self, recipient: str) -> str:
        queue = self._scripts.get(recipient)
        if queue:
            return queue.pop(0)
        if self.fault_rate and self._rng.random() < self.fault_rate:
            return self._rng.choice(self.faults)
        return "ok"

    def _choose_for(self, recipients: list[str]) -> tuple[str, int]:
        """One action for a request: the first scripted recipient's, else the draw;
        and the position of the recipient it concerns."""
        for position, recipient in enumerate(recipients):
            if self._scripts.get(recipient):
                return self._choose(recipient), position
        return self._choose(recipients[0]), 0

    async def _handle(
        self, request: web.Request, recipient: str | list[str], body: dict,
        success: web.Response, error,
    ) -> web.StreamResponse:
        """Apply the chosen action; ``error(status, code[, position])`` builds the
        provider's error body. A request may carry several recipients (SendGrid
        personalizations): each is counted, the action applies to all."""
        if self.require_auth and "Authorization" not in request.headers:
            return error(401, 20003)
        self._count_in_flight(+1)
        try:
            recipients = [recipient] if isinstance(recipient, str) else recipient
            return await self._act(request, recipients, body, success, error)
        finally:
            self._count_in_flight(-1)

    async def _act(
        self, request: web.Request, recipients: list[str], body: dict,
        success: web.Response, error,
    ) -> web.StreamResponse:
        await self._open.wait()
        for recipient in recipients:
            self.attempts[recipient] += 1
        action, position = self._choose_for(recipients)
        kind, _, arg = action.partition(":")
        self.actions[kind] += 1
        if kind == "reset":
            assert request.transport is not None
            request.transport.abort()
            return success  # never written: the connection is gone
        if kind == "http":
            status, _, code = arg.partition(":")
            if len(recipients) > 1:
                return error(int(status), int(code) if code else int(status), position)
            return error(int(status), int(code) if code else int(status))
        if kind == "429":
            response = error(429, 20429)
            response.headers["Retry-After"] = arg
            return response
        if kind == "slow":
            await asyncio.sleep(float(arg))
        for recipient in recipients:
            self.accepted[recipient] += 1
        self.bodies.append(body)
        if "_sid" in body:
            self._log_message(body["_sid"], body.get("To"), body.get("From"), body.get("Body"),
                              self.twilio_status)
        self.headers.append(dict(request.headers))
        if kind == "accept_hang":
            await asyncio.sleep(float(arg))
        elif kind == "accept_reset":
            assert request.transport is not None
            request.transport.abort()
        return success

    async def _twilio(self, request: web.Request) -> web.StreamResponse:
        form = dict(await request.post())
        sid = "SM" + uuid.uuid4().hex
        ok = web.json_response(
            {"sid": sid, "status": "queued", "to": form.get("To"), "body": form.get("Body")},
            status=201,
        )
        form["_sid"] = sid  # _handle keeps accepted bodies: the message log below reads them

        def error(status: int, code: int) -> web.Response:
            return web.json_response(
                {"code": code, "message": f"simulated error {code}", "status": status,
                 "more_info": f"https://www.twilio.com/docs/errors/{code}"},
                status=status,
            )

        return await self._handle(request, str(form.get("To")), form, ok, error)

    # --- Twilio's message log -------------------------------------------------------
    def _log_message(self, sid: str, to, sender, text, status: str) -> dict:
        now = datetime.now(UTC)
        message = self.twilio_messages[sid] = {
            "sid": sid,
            "to": to,
            "from": sender,
            "body": text,
            "status": status,
            "direction": "outbound-api",
            "error_code": None,
            "date_created": email.utils.format_datetime(now),
            "date_updated": email.utils.format_datetime(now),
            "date_sent": None,
            "_created": now,
            "_sent": None,
        }
        if TWILIO_LIFECYCLE.index(status) >= TWILIO_LIFECYCLE.index("sent"):
            self._sent(message, now)
        return message

    @staticmethod
    def _sent(message: dict, when: datetime) -> None:
        message["_sent"] = when
        message["date_sent"] = email.utils.format_datetime(when)

    def add_twilio_message(
        self, to: str, text: str, sender: str = "+15005559999", status: str = "delivered"
    ) -> str:
        """Someone else's message to ``to`` in the log (not counted as accepted): its sid."""
        sid = "SM" + uuid.uuid4().hex
        self._log_message(sid, to, sender, text, status)
        return sid

    def twilio_advance(self, status: str, sids: Iterable[str] | None = None) -> int:
        """Move logged messages (all, or ``sids``) along Twilio's lifecycle up to
        ``status``; one reaching ``sent`` gets its ``date_sent``. Returns how many moved."""
        rank = TWILIO_LIFECYCLE.index(status)
        moved = 0
        for sid in list(sids) if sids is not None else list(self.twilio_messages):
            message = self.twilio_messages[sid]
            if TWILIO_LIFECYCLE.index(message["status"]) >= rank:
                continue
            message["status"] = status
            message["date_updated"] = email.utils.format_datetime(datetime.now(UTC))
            if message["_sent"] is None and rank >= TWILIO_LIFECYCLE.index("sent"):
                self._sent(message, datetime.now(UTC))
            moved += 1
        return moved

    def _log_fault(self, request: web.Request) -> web.StreamResponse | None:
        self.log_reads += 1
        if not self.log_script:
            return None
        kind, _, arg = self.log_script.pop(0).partition(":")
        if kind == "reset":
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=500)  # never written: the connection is gone
        return web.json_response({"code": int(arg), "message": "simulated", "status": int(arg)},
                                 status=int(arg))

    async def _twilio_list(self, request: web.Request) -> web.StreamResponse:
        """GET Messages.json: the log, newest first, filtered as Twilio filters it (To, From;
        DateSent, DateSent<, DateSent> on ``date_sent``, which a message still queued lacks)."""
        fault = self._log_fault(request)
        if fault is not None:
            return fault
        q = request.query
        found = [
            m
            for m in self.twilio_messages.values()
            if q.get("To") in (None, m["to"]) and q.get("From") in (None, m["from"])
        ]
        for name, keep in (("DateSent", lambda d, x: d.date() == x.date()),
                           ("DateSent<", lambda d, x: d <= x), ("DateSent>", lambda d, x: d >= x)):
            if q.get(name):
                bound = _twilio_date(q[name])
                found = [m for m in found if m["_sent"] is not None and keep(m["_sent"], bound)]
        found.sort(key=lambda m: m["_created"], reverse=True)
        size = int(q.get("PageSize", 50))
        return web.json_response(
            {"messages": [_public(m) for m in found[:size]], "next_page_uri": None, "page": 0,
             "page_size": size, "uri": request.path_qs, "first_page_uri": request.path_qs,
             "previous_page_uri": None}
        )

    async def _twilio_fetch(self, request: web.Request) -> web.StreamResponse:
        fault = self._log_fault(request)
        if fault is not None:
            return fault
        message = self.twilio_messages.get(request.match_info["msid"])
        if message is None:
            return web.json_response({"code": 20404, "message": "not found", "status": 404},
                                     status=404)
        return web.json_response(_public(message))

    async def _sendgrid(self, request: web.Request) -> web.StreamResponse:
        payload = await request.json()
        recipients = [p["to"][0]["email"] for p in payload["personalizations"]]
        ok = web.Response(status=202, headers={"X-Message-Id": uuid.uuid4().hex[:22]})

        def error(status: int, code: int, position: int = 0) -> web.Response:
            field = f"personalizations.{position}.to.0.email" if code == 4001 else None
            return web.json_response(
                {"errors": [{"message": f"simulated error {code}", "field": field}]},
                status=status,
            )

        return await self._handle(request, recipients, payload, ok, error)

    async def _sinch(self, request: web.Request) -> web.StreamResponse:
        fields: dict[str, str | int] = {}
        reader = await request.multipart()
        async for part in reader:
            data = await part.read()  # type: ignore[union-attr]
            name = part.name or ""
            fields[name] = len(data) if name == "file" else data.decode()
        ok = web.json_response({"id": uuid.uuid4().hex, "status": "QUEUED"})

        def error(status: int, code: int) -> web.Response:
            return web.json_response(
                {"code": code, "status": "ERROR", "message": f"simulated error {code}"},
                status=status,
            )

        return await self._handle(request, str(fields.get("to")), fields, ok, error)


class SlowFaultServer(FaultServer):
    """The fault server, taking ``delay`` seconds before accepting each request.

    The delay comes before the request counts as accepted, so a client killed
    while waiting leaves nothing accepted (aiohttp cancels the handler).
    """

    def __init__(self, *, delay: float, **kwargs: object):
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.delay = delay

    def _choose(self, recipient: str) -> str:
        action = super()._choose(recipient)
        return f"slow:{self.delay}" if action == "ok" else action

    def accepted_by_campaign(self, campaign_of_sender: dict[str, str]) -> tuple[Counter, Counter]:
        """Accepted requests per (campaign, recipient), and per ledger key (email only).

        SMS tell their campaign by the sender number (``campaign_of_sender``);
        email carries the ledger key ``campaign:customer:occasion``.
        """
        by_recipient: Counter = Counter()
        by_key: Counter = Counter()
        for body in list(self.bodies):
            if "personalizations" in body:  # SendGrid
                for person in body["personalizations"]:
                    key = person["custom_args"]["careflow_key"]
                    by_recipient[key.split(":", 1)[0], person["to"][0]["email"]] += 1
                    by_key[key] += 1
            else:  # Twilio form
                by_recipient[campaign_of_sender[body["From"]], body["To"]] += 1
        return by_recipient, by_key
