"""One inbound path under a sustained, mixed, open-loop load: `careflow serve` as a campaign's
answers reach it (issue 23).

    python -m bench.inbound                          # SQLite, 60 s at the issue's rates
    python -m bench.inbound --dialect postgresql
    python -m bench.inbound --sendgrid-rate 5000 --twilio-rate 1000 --shop-rate 1000
    python -m bench.inbound --opt-out                # opt-outs against a campaign in progress
    python -m bench.inbound --quick                  # seconds, to check it works (tests)

`careflow serve` runs in its own process (uvicorn, as in production; ``--workers
N`` passes its --workers). Load comes from one process per kind, **open loop**:
each request has a scheduled send time (rate R, evenly spaced) and is sent then
whatever the answers so far; its latency runs from that scheduled time to its
answer, so a slow server cannot hide its slowness by slowing the sender (no
coordinated omission). The generators share the machine with the server, so they
are made cheap: every request's bytes (request line, headers, the provider's
signature for its due time, body) are built before the clock starts, and sent
over at most ``--connections`` keep-alive HTTP/1.1 connections per kind (a
provider holds a bounded number; waiting for a free one is in the latency) by a
minimal asyncio protocol on uvloop that reads only each answer's status line and
length. Each generator's own CPU seconds (from /proc) are reported beside the
server's; ``--client aiohttp`` runs the earlier generator (each request built
when due and posted with aiohttp) to compare. Payloads are shaped as the
providers document them (tests/webhooks/payloads.py) and signed as they sign them:

- SendGrid Event Webhook posts of ``--sendgrid-batch`` events (SendGrid batches;
  processed/delivered/open mostly, clicks, deferrals, bounces, unsubscribes and
  spam reports sprinkled in), each carrying careflow's ``careflow_key``;
- Twilio status callbacks, two per message (sent, delivered), a tenth of the
  messages' callbacks posted out of order (delivered first), and one callback in
  ten an inbound reply (one reply in a hundred a STOP);
- the shop's ``POST /events`` in posts of 50 (orders, sign-ups, carts, custom).

A share of every kind (``--retry-share``) is posted again a second or two later,
as providers retry; any request not answered 2xx is posted again at the end until
it is (a provider retries what failed). Then the timeline is read back: every
event id expected must be there exactly once, and nothing else.

Phases, one database and one `careflow serve` each: all kinds together at the
stated rates for ``--seconds``; then each kind alone for ``--cpu-seconds``, to
read the serve process's CPU seconds per event of that kind (from /proc);
then the same per-kind runs against a **validation-only** receiver (the same
uvicorn and Starlette, the providers' own signature checks and body decoding,
nothing stored), for the baseline in the same run.

``--opt-out``: a campaign on the outbox (the ledger's claim, the mark_sending
re-check, the outbox channel, record: what a route does) sends to N customers
while opt-outs for customers it has not reached yet arrive by every route (a
Twilio STOP reply, a SendGrid unsubscribe event, RFC 8058 one-click, the
preference centre's stop button); every message marked sending after its
opt-out was acknowledged is counted (must be 0), with the worst time from
posting an opt-out to its acknowledgement (stored and applied: the receiver
answers after its commit).

Figures go to bench/results/inbound-<dialect>.json (``-quick`` for --quick).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import json
import os
import platform
import random
import subprocess
import sys
import threading
import time
import urllib.parse
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert, select

from bench.fixtures import fresh_database, postgres_available
from bench.webhooks import _free_port, _wait_healthy
from careflow import db
from careflow.clock import utcnow
from careflow.db.models import ContactEvent, ContactHistory, Customer

ROOT = Path(__file__).resolve().parents[1]
TWILIO_TOKEN = "bench-twilio-auth-token-0123456789"
SHOP_SECRET = "bench-shop-events-secret-0123456789"
UNSUB_SECRET = "bench-unsubscribe-secret-0123456789abcdef"
PUBLIC = "https://care.example.com"
KINDS = ("sendgrid", "twilio", "shop")
#: the opt-out run's customers start after this id (the background load's are below)
OPT_BASE = 50_000
#: customers the shop's events name (each has an SMS delivered, so orders attribute)
SHOP_CUSTOMERS = 2_000
SHOP_BATCH = 50
#: SendGrid's event mix, per 1,000 events
SENDGRID_MIX = (
    ("processed", 320), ("delivered", 320), ("open", 250), ("click", 60), ("deferred", 30),
    ("bounce", 10), ("unsubscribe", 5), ("spamreport", 5),
)  # fmt: skip
_MIX = [kind for kind, n in SENDGRID_MIX for _ in range(n)]


# --- what is sent: deterministic from (phase, index), so the checker can rebuild it ----------
def sendgrid_type(i: int) -> str:
    return _MIX[(i * 7919) % len(_MIX)]


def sendgrid_id(phase: int, i: int) -> str:
    return f"{sendgrid_type(i)[:4]}-{phase}-{i:09d}-ZjU2Y2M4NjQtYzA5"


def email_of(i: int) -> int:
    """The email message (ledger customer number) SendGrid event ``i`` is about: three events
    a message."""
    return i // 3


def twilio_callback(i: int) -> tuple[str, int, str]:
    """Callback ``i``: ("status", message, status) or ("reply", n, text). Two status
    callbacks per message; every tenth message's posted delivered first; every tenth
    callback a reply, one reply in a hundred a STOP."""
    if i % 10 == 9:
        return ("reply", i, "STOP" if i % 1000 == 999 else "Thanks, see you Saturday")
    k = i - (i + 1) // 10  # the status callbacks' own count
    message, second = divmod(k, 2)
    order = ("delivered", "sent") if message % 10 == 0 else ("sent", "delivered")
    return ("status", message, order[second])


def sms_sid(phase: int, message: int) -> str:
    return f"SM{phase:04x}{message:028x}"


def reply_sid(phase: int, n: int) -> str:
    return f"SM{0xFFFF - phase:04x}{n:028x}"


def twilio_id(phase: int, i: int) -> str:
    what, n, text = twilio_callback(i)
    if what == "reply":
        return reply_sid(phase, n)
    return f"{sms_sid(phase, n)}:{text}"


def shop_id(phase: int, i: int) -> str:
    return f"shop:ev-{phase}-{i}"


def expected_ids(kind: str, phase: int, count: int) -> set[str]:
    if kind == "sendgrid":
        return {sendgrid_id(phase, i) for i in range(count)}
    if kind == "twilio":
        return {twilio_id(phase, i) for i in range(count)}
    return {shop_id(phase, i) for i in range(count)}


def mobile(customer: int) -> str:
    return f"+86138{customer:08d}"


# --- the ledger the answers are about -------------------------------------------------------
#: ledger customers: a phase's email messages from 100,000 + phase x 1,000,000, its SMS
#: from SMS_BASE + phase x 1,000,000 (a phase of up to a million messages of each)
SMS_BASE = 100_000_000


def seed(url: str, phases: dict[int, dict[str, int]]) -> None:
    """Customers and sent messages for every event the phases will post to match: per
    phase, its email messages (careflow_key and X-Message-Id) and SMS (MessageSid); the
    shop's customers with a delivered SMS each."""
    engine = db.engine_for(url)
    now = utcnow()
    sent = now - timedelta(days=1)
    rows, customers = [], []

    def message(cid, channel, recipient, provider_id, campaign):
        customers.append({"id": cid, "external_ref": f"C{cid}", "email": f"c{cid}@example.com",
                          "mobile": mobile(cid), "locale": "en"})  # fmt: skip
        rows.append({
            "campaign": campaign, "customer_id": cid, "occasion": "2026", "channel": channel,
            "state": "sent", "retryable": False, "attempts": 1, "recipient": recipient,
            "provider_id": provider_id, "created_at": sent, "updated_at": sent, "sent_at": sent,
            "delivery_state": "delivered" if campaign == "shop" else None,
            "delivery_rank": 3 if campaign == "shop" else None,
        })  # fmt: skip

    for cid in range(1, SHOP_CUSTOMERS + 1):
        message(cid, "sms", mobile(cid), f"SMSHOP{cid}", "shop")
    for phase, counts in phases.items():
        for m in range(email_of(counts.get("sendgrid", 0)) + 1):
            cid = 100_000 + phase * 1_000_000 + m
            message(cid, "email", f"c{cid}@example.com", f"MSG{phase}x{m}", f"bench{phase}")
        for m in range(counts.get("twilio", 0) // 2 + 1):
            cid = SMS_BASE + phase * 1_000_000 + m
            message(cid, "sms", mobile(cid), sms_sid(phase, m), f"bench{phase}")
    with engine.begin() as conn:
        for start in range(0, len(customers), 20_000):
            conn.execute(insert(Customer), customers[start : start + 20_000])
        for start in range(0, len(rows), 20_000):
            conn.execute(insert(ContactHistory), rows[start : start + 20_000])
    engine.dispose()


# --- the load generator (a process per kind) ------------------------------------------------
class _Requests:
    """Request ``j`` of one kind in one phase: (path, body, headers, events it carries)."""

    def __init__(self, kind: str, phase: int, spec: dict):
        self.kind, self.phase, self.spec = kind, phase, spec
        self.stamp = int(time.time())
        if kind == "sendgrid":
            from cryptography.hazmat.primitives import serialization

            self.key = serialization.load_pem_private_key(spec["sendgrid_key"].encode(), None)
            self.batch = spec["sendgrid_batch"]
            self._templates = _sendgrid_templates(self.stamp)
        elif kind == "shop":
            self.batch = SHOP_BATCH
        else:
            self.batch = 1

    def __call__(self, j: int) -> tuple[str, bytes, dict]:
        """Request ``j`` signed now."""
        return self.signed(self.unsigned(j), int(time.time()))

    def unsigned(self, j: int) -> tuple[str, bytes, dict]:
        """Request ``j`` but for its time-stamped signature (Twilio's has no time: whole)."""
        return getattr(self, f"_{self.kind}")(j)

    def signed(self, request: tuple[str, bytes, dict], stamp: int) -> tuple[str, bytes, dict]:
        """The request signed at ``stamp`` (a provider signs when it sends)."""
        path, body, headers = request
        if self.kind == "sendgrid":
            from cryptography.hazmat.primitives import hashes
            from cryptography.hazmat.primitives.asymmetric import ec

            ts = str(stamp)
            signed = self.key.sign(ts.encode() + body, ec.ECDSA(hashes.SHA256()))
            headers = {**headers,
                       "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signed).decode(),
                       "X-Twilio-Email-Event-Webhook-Timestamp": ts}  # fmt: skip
        elif self.kind == "shop":
            from careflow.shop_events import sign

            headers = {**headers, "Careflow-Signature": sign(SHOP_SECRET, stamp, body)}
        return path, body, headers

    @staticmethod
    def raw(request: tuple[str, bytes, dict], host: str) -> bytes:
        """The request as the bytes on the wire: request line, headers, body."""
        path, body, headers = request
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        return (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n"
                f"{head}\r\n").encode("latin-1") + body

    def _sendgrid(self, j: int):
        parts = []
        for i in range(j * self.batch, (j + 1) * self.batch):
            m = email_of(i)
            cid = 100_000 + self.phase * 1_000_000 + m
            parts.append(self._templates[sendgrid_type(i)].format(
                email=f"c{cid}@example.com", id=sendgrid_id(self.phase, i),
                mid=f"MSG{self.phase}x{m}", key=f"bench{self.phase}:{cid}:2026"))  # fmt: skip
        body = ("[" + ",".join(parts) + "]").encode()
        return "/webhooks/sendgrid", body, {"Content-Type": "application/json"}

    def _twilio(self, i: int):
        from tests.webhooks.payloads import twilio_inbound, twilio_signed, twilio_status

        what, n, text = twilio_callback(i)
        if what == "reply":
            sender = mobile(SMS_BASE + self.phase * 1_000_000 + n // 20)
            params = twilio_inbound(text, sender, **{
                "MessageSid": reply_sid(self.phase, n), "SmsSid": reply_sid(self.phase, n),
                "SmsMessageSid": reply_sid(self.phase, n)})  # fmt: skip
            path = "/webhooks/twilio/inbound"
        else:
            to = mobile(SMS_BASE + self.phase * 1_000_000 + n)
            params = twilio_status(sms_sid(self.phase, n), text, to)
            path = "/webhooks/twilio/status"
        body, headers = twilio_signed(TWILIO_TOKEN, PUBLIC + path, params)
        return path, body, headers

    def _shop(self, j: int):
        from bench.shop_events import _event

        when = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
        events = []
        for i in range(j * SHOP_BATCH, (j + 1) * SHOP_BATCH):
            e = _event(i, SHOP_CUSTOMERS, when)
            e["id"] = f"ev-{self.phase}-{i}"
            if "order" in e:
                e["order"]["id"] = f"SO-{self.phase}-{i}"
            events.append(e)
        body = json.dumps({"events": events}).encode()
        return "/events", body, {"Content-Type": "application/json", "Careflow-Source": "shop"}


def _sendgrid_templates(stamp: int) -> dict[str, str]:
    """Each event type as SendGrid documents it, as a str.format template (building a
    post of 500 events must not cost the generator more than the receiver)."""
    from tests.webhooks.payloads import sendgrid_event

    out = {}
    for kind, _ in SENDGRID_MIX:
        e = sendgrid_event(kind, "@@email@@", 1, message_id="@@mid@@", at=stamp,
                           careflow_key="@@key@@", contact_id="1")  # fmt: skip
        e["sg_event_id"] = "@@id@@"
        e["sg_message_id"] = "@@mid@@.recvd-6d4f8b5f9-x2x7t-1-674044C1-3.0"
        if kind == "deferred":
            e["domain"] = "example.com"
        text = json.dumps(e).replace("{", "{{").replace("}", "}}")
        for field in ("email", "mid", "key", "id"):
            text = text.replace(f"@@{field}@@", "{" + field + "}")
        out[kind] = text
    return out


#: an idle keep-alive connection older than this is not reused (uvicorn closes them at 5 s)
KEEP_ALIVE_S = 4.0
#: the sender sleeps at least this long between sends (then sends all that is due)
TICK_S = 0.001
#: a request unanswered this long is given up (and posted again at the end)
CLIENT_TIMEOUT_S = 120.0


class _Connection(asyncio.Protocol):
    """One persistent HTTP/1.1 connection, one request at a time: writes a pre-built
    request's bytes and reads only the answer's status line and its length (Content-Length,
    or a chunked body's last chunk), nothing else of it."""

    __slots__ = ("body_at", "buf", "close_after", "closed", "done", "idle_at", "need", "pool",
                 "sent_at", "status", "transport")  # fmt: skip

    def __init__(self, pool: _Pool):
        self.pool, self.transport, self.buf, self.done = pool, None, bytearray(), None
        self.need, self.status, self.body_at, self.close_after = -1, 0, 0, False
        self.sent_at = self.idle_at = 0.0
        self.closed = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def send(self, data: bytes, done) -> None:
        self.done, self.need, self.sent_at = done, -1, time.perf_counter()
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if self.done is None:
            return
        if self.need == -1:  # the head not read yet
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).lower()
            self.status = int(head[9:12])
            self.close_after = b"\r\nconnection: close" in head
            at = head.find(b"\r\ncontent-length:")
            if at >= 0:
                stop = head.find(b"\r\n", at + 2)
                self.need = end + 4 + int(head[at + 17 : stop if stop > 0 else len(head)])
            elif b"\r\ntransfer-encoding: chunked" in head:
                self.need, self.body_at = -2, end + 2
            else:  # 204, 304: no body
                self.need = end + 4
        if self.need == -2:
            stop = buf.find(b"\r\n0\r\n\r\n", self.body_at)
            if stop < 0:
                return
            self.need = stop + 7
        if len(buf) < self.need:
            return
        del buf[: self.need]
        done, self.done = self.done, None
        self.pool.finished(self, done, self.status)

    def connection_lost(self, exc) -> None:
        self.closed = True
        if self.done is not None:
            done, self.done = self.done, None
            self.pool.lost(done)


class _Pool:
    """At most ``limit`` connections to one server, as a provider holds a bounded number: a
    request goes on the most recently freed connection, on a new one while under the limit,
    or waits its turn for one (the wait is in its latency, which runs from its due time)."""

    def __init__(self, host: str, port: int, limit: int):
        self.loop = asyncio.get_running_loop()
        self.host, self.port, self.limit = host, port, limit
        self.idle: list[_Connection] = []
        self.waiting: collections.deque = collections.deque()
        self.busy: set[_Connection] = set()
        self.opened = 0
        self.watch = self.loop.create_task(self._watch())

    def send(self, data: bytes, done) -> None:
        """Post ``data``; ``done(status)`` when answered, ``done(None)`` if it failed."""
        idle = self.idle
        while idle:
            c = idle.pop()
            if not c.closed and time.perf_counter() - c.idle_at < KEEP_ALIVE_S:
                self.busy.add(c)
                c.send(data, done)
                return
            self._drop(c)
        if self.opened < self.limit:
            self.opened += 1
            self.loop.create_task(self._connect(data, done))
        else:
            self.waiting.append((data, done))

    async def _connect(self, data: bytes, done) -> None:
        try:
            _, c = await self.loop.create_connection(lambda: _Connection(self), self.host,
                                                     self.port)  # fmt: skip
        except OSError:
            self.opened -= 1
            done(None)
            self._refill()
            return
        self.busy.add(c)
        c.send(data, done)

    def finished(self, c: _Connection, done, status: int) -> None:
        if c.close_after:
            self.busy.discard(c)
            self._drop(c)
            self._refill()
        elif self.waiting:
            c.send(*self.waiting.popleft())
        else:
            self.busy.discard(c)
            c.idle_at = time.perf_counter()
            self.idle.append(c)
        done(status)

    def lost(self, done) -> None:
        self.busy = {c for c in self.busy if not c.closed}
        self.opened -= 1
        self._refill()
        done(None)

    def _drop(self, c: _Connection) -> None:
        self.opened -= 1
        c.transport.close()

    def _refill(self) -> None:
        while self.waiting and self.opened < self.limit:
            self.opened += 1
            self.loop.create_task(self._connect(*self.waiting.popleft()))

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(1)
            late = time.perf_counter() - CLIENT_TIMEOUT_S
            for c in [c for c in self.busy if c.sent_at < late]:
                c.transport.abort()

    def close(self) -> None:
        self.watch.cancel()
        for c in self.idle:
            c.transport.close()


async def _aiohttp_post(session, base: str, request) -> int | None:
    import aiohttp

    path, body, headers = request
    try:
        async with session.post(base + path, data=body, headers=headers) as resp:
            await resp.read()
            return resp.status
    except (TimeoutError, aiohttp.ClientError):
        return None


async def _load(spec: dict, make: _Requests, built: list[bytes] | None, go: float) -> dict:
    """One kind's open-loop schedule: request j at go + j / rate, whatever came back.
    ``built``: every request's bytes, sent on a :class:`_Pool`; None: each built when due
    and posted with aiohttp (the generator as it was, to compare its cost)."""
    loop = asyncio.get_running_loop()
    kind, phase, base = spec["kind"], spec["phase"], spec["base"]
    url = urllib.parse.urlsplit(base)
    per_request = make.batch
    rate = spec["rate"] / per_request  # requests per second
    total = _requests(spec, per_request)
    retry_share = spec["retry_share"]
    rng = random.Random(phase * 100 + KINDS.index(kind))
    latencies: list[float] = []
    failed: list[int] = []
    answered = {"ok": 0, "error": 0, "retries": 0, "last": 0.0}
    statuses: dict[str, int] = {}  # answers by status ("none": no answer, as timed out)
    # the earlier generator slept only when ahead: sleeps under a ms return at once (spin)
    tick = TICK_S if built is not None else 0.0
    if built is not None:
        pool = _Pool(url.hostname, url.port, spec["connections"])
        send, request_for = pool.send, built.__getitem__

        def fresh(j):
            return make.raw(make(j), url.netloc)
    else:
        import aiohttp

        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=spec["connections"]),
            timeout=aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_S))  # fmt: skip

        def send(request, done):
            task = loop.create_task(_aiohttp_post(session, base, request))
            task.add_done_callback(lambda t: done(t.result()))

        request_for = fresh = make
    open_ = {"n": 0, "all_sent": False}
    settled = loop.create_future()

    def one_less():
        open_["n"] -= 1
        if not open_["n"] and open_["all_sent"] and not settled.done():
            settled.set_result(None)

    def answer(j: int, due: float | None):
        def done(status):
            ok = status is not None and 200 <= status < 300
            statuses[str(status).lower()] = statuses.get(str(status).lower(), 0) + 1
            if due is not None:
                now = time.perf_counter()
                latencies.append(now - due)
                if now > answered["last"]:
                    answered["last"] = now
            else:
                answered["retries"] += 1
            answered["ok" if ok else "error"] += 1
            if not ok:
                failed.append(j)
            one_less()

        return done

    def again(j: int, request) -> None:
        send(request, answer(j, None))

    start = time.perf_counter() + (go - time.time())
    behind, j = 0.0, 0
    while j < total:
        now = time.perf_counter()
        due = start + j / rate
        if due > now:  # at least a tick: uvloop's timers are in whole ms (no spinning)
            await asyncio.sleep(max(due - now, tick))
            continue
        behind = max(behind, now - due)
        while j < total and due <= now:  # everything due by now
            request = request_for(j)
            open_["n"] += 1
            send(request, answer(j, due))
            if rng.random() < retry_share:  # the provider posts it again
                open_["n"] += 1
                loop.call_later(1 + rng.random(), again, j, request)
            j += 1
            due = start + j / rate
    sent_for = time.perf_counter() - start
    open_["all_sent"] = True
    if open_["n"]:
        await settled
    drained = answered.pop("last") - start  # the last first post answered
    # what failed, a provider posts again until it is taken
    redone = 0
    for _ in range(10):
        if not failed:
            break
        todo, failed[:] = sorted(set(failed)), []
        redone += len(todo)
        await asyncio.sleep(1)
        settled = loop.create_future()
        open_["n"] += len(todo)
        for j in todo:
            send(fresh(j), answer(j, None))
        await settled
    if built is not None:
        pool.close()
    else:
        await session.close()
    return {
        "kind": kind, "requests": total, "events": total * per_request, "rate": spec["rate"],
        "sent_for_s": round(sent_for, 2), "drained_s": round(drained, 2),
        "generator_behind_ms": round(behind * 1000, 1), "latencies": latencies,
        "answered": answered, "statuses": statuses, "redone": redone,
        "still_failing": len(failed),
    }  # fmt: skip


def _requests(spec: dict, per_request: int) -> int:
    return max(1, int(spec["seconds"] * spec["rate"] / per_request))


def _generator(spec_path: str) -> None:
    """A load generator process: builds its requests (all of them, for the raw client),
    says ``ready`` on stdout, reads the common start time (epoch seconds) from stdin, runs
    the schedule and writes its result with its own CPU seconds from /proc."""
    spec = json.loads(Path(spec_path).read_text())
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    me = os.getpid()
    make = _Requests(spec["kind"], spec["phase"], spec)
    cpu0, wall0 = _cpu_seconds(me), time.perf_counter()
    built = None
    if spec["client"] == "raw":
        built = [make.unsigned(j) for j in range(_requests(spec, make.batch))]
    else:
        import aiohttp  # noqa: F401 (imported before the clock)
    print("built", flush=True)
    sys.stdin.readline()  # every generator has built: sign for due times from now on
    if built is not None:
        netloc = urllib.parse.urlsplit(spec["base"]).netloc
        every, t0 = make.batch / spec["rate"], time.time()
        for j, request in enumerate(built):
            built[j] = make.raw(make.signed(request, int(t0 + j * every)), netloc)
    build_cpu, build_wall = _cpu_seconds(me) - cpu0, time.perf_counter() - wall0
    print("ready", flush=True)
    go = float(sys.stdin.readline())
    cpu1 = _cpu_seconds(me)
    result = asyncio.run(_load(spec, make, built, go))
    cpu = _cpu_seconds(me) - cpu1
    posted = result["requests"] + result["answered"]["retries"]
    result["generator"] = {
        "client": spec["client"], "cpu_s": round(cpu, 2),
        "cpu_us_per_request": round(cpu / posted * 1e6, 1),
        "build_cpu_s": round(build_cpu, 2), "build_wall_s": round(build_wall, 2),
        "built_mb": round(sum(map(len, built)) / 1e6, 1) if built else 0,
        "peak_rss_mb": _peak_rss_mb(),
    }  # fmt: skip
    Path(spec["out"]).write_text(json.dumps(result))


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0

# --- the validation-only receiver -----------------------------------------------------------
def validation_only_app():
    """The same uvicorn and Starlette, the providers' signature checks and body decoding,
    nothing stored: what a receiver costs before careflow does anything with an event."""
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    from careflow.shop_events import verify as verify_shop
    from careflow.webhooks import bodies, sendgrid, twilio

    public_key = os.environ["CAREFLOW_SENDGRID_WEBHOOK_PUBLIC_KEY"]
    sources = {"shop": SHOP_SECRET.encode()}

    async def grid(request):
        body = await request.body()
        h = request.headers
        ok = await _in_thread(
            sendgrid.verify, public_key, body, h.get(sendgrid.SIGNATURE_HEADER),
            h.get(sendgrid.TIMESTAMP_HEADER), now=datetime.now(UTC),
        )  # fmt: skip
        if not ok:
            return Response(status_code=403)
        await _in_thread(bodies.json_value, body)
        return Response(status_code=204)

    async def tw(request):
        body = await request.body()
        url = PUBLIC + request.url.path
        if not twilio.verify(TWILIO_TOKEN, url, twilio.form(body),
                             request.headers.get(twilio.SIGNATURE_HEADER)):  # fmt: skip
            return Response(status_code=403)
        return Response(status_code=204)

    async def shop(request):
        body = await request.body()
        verify_shop(sources, request.headers.get("Careflow-Source"),
                    request.headers.get("Careflow-Signature"), body, datetime.now(UTC),
                    300)  # fmt: skip
        bodies.json_value(body)
        return Response(status_code=200)

    return Starlette(routes=[
        Route("/webhooks/sendgrid", grid, methods=["POST"]),
        Route("/webhooks/twilio/status", tw, methods=["POST"]),
        Route("/webhooks/twilio/inbound", tw, methods=["POST"]),
        Route("/events", shop, methods=["POST"]),
        Route("/healthz", lambda r: Response("ok"), methods=["GET"]),
    ])  # fmt: skip


async def _in_thread(fn, *args, **kwargs):
    import functools

    import anyio.to_thread

    return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))


def _baseline_main(port: int) -> None:
    import uvicorn

    uvicorn.run(validation_only_app(), host="127.0.0.1", port=port, access_log=False,
                log_level="warning")  # fmt: skip


# --- running it ----------------------------------------------------------------------------
def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` and all its threads so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of process ``pid`` and every process under it (``careflow serve
    --workers N`` runs its workers as child processes)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(stat.parent.name))
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            total += _cpu_seconds(p)
        except OSError:  # gone meanwhile
            continue
        todo += parents.get(p, [])
    return total


def _p(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)


def _start(
    argv: list[str], env: dict, port: int, log: Path, cwd: Path = ROOT
) -> subprocess.Popen:
    """A server process; its log (a line per request) to a file, as in production.
    ``cwd``: the tree whose careflow ``-m careflow`` runs (``-m`` puts the working
    directory first on the path, ahead of PYTHONPATH)."""
    with log.open("ab") as to:
        proc = subprocess.Popen([sys.executable, *argv], env=env, cwd=cwd,
                                stdout=to, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        _wait_healthy(f"http://127.0.0.1:{port}", proc)
    except RuntimeError:
        proc.kill()
        said = log.read_text()
        if "--workers" in argv and "no such option" in said.lower():
            raise SystemExit("bench.inbound: this careflow serve has no --workers option; "
                             "run without --workers") from None  # fmt: skip
        raise RuntimeError(said[-3000:]) from None
    return proc


def _workers(args) -> list[str]:
    """``careflow serve``'s --workers, passed only when more than one is asked."""
    return ["--workers", str(args.workers)] if args.workers > 1 else []


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_phase(
    base: str, pid: int, phase: int, rates: dict[str, float], seconds: float, args, key_pem,
    workdir: Path,
) -> dict:  # fmt: skip
    """All kinds in ``rates`` at once, a generator process each, started together once all
    have built their requests; the CPU seconds of the serve process (and its workers) and
    of each generator."""
    procs = []
    try:
        for kind, rate in rates.items():
            spec = {
                "kind": kind, "phase": phase, "base": base, "rate": rate, "seconds": seconds,
                "retry_share": args.retry_share, "sendgrid_batch": args.sendgrid_batch,
                "sendgrid_key": key_pem, "out": str(workdir / f"{phase}-{kind}.json"),
                "client": args.client, "connections": args.connections,
            }  # fmt: skip
            path = workdir / f"{phase}-{kind}.spec.json"
            path.write_text(json.dumps(spec))
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "bench.inbound", "--generate", str(path)],
                cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))  # fmt: skip
        for said in ("built", "ready"):  # all built, then all signed: then the clock
            for p in procs:
                if p.stdout.readline().strip() != said:
                    raise RuntimeError(f"a load generator failed before the start ({p.args})")
            if said == "built":  # signed together: the signatures' times are the due times
                for p in procs:
                    p.stdin.write("sign\n")
                    p.stdin.flush()
        cpu0, wall0 = _tree_cpu_seconds(pid), time.perf_counter()
        go = time.time() + 0.2
        for p in procs:
            p.stdin.write(f"{go!r}\n")
            p.stdin.close()
        for p in procs:
            if p.wait() != 0:
                raise RuntimeError(f"a load generator failed ({p.args})")
        cpu, wall = _tree_cpu_seconds(pid) - cpu0, time.perf_counter() - wall0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    out = {"phase": phase, "cpu_s": round(cpu, 2), "wall_s": round(wall, 2), "kinds": {}}
    for kind in rates:
        r = json.loads((workdir / f"{phase}-{kind}.json").read_text())
        lat = r.pop("latencies")
        r.update(p50_ms=_p(lat, 0.5), p95_ms=_p(lat, 0.95), p99_ms=_p(lat, 0.99),
                 max_ms=_p(lat, 1.0),
                 achieved_per_s=round(r["events"] / max(r["drained_s"], 1e-3)))  # fmt: skip
        out["kinds"][kind] = r
    events = sum(k["events"] for k in out["kinds"].values())
    out["cpu_us_per_event"] = round(cpu / events * 1e6, 1)
    generators = sum(k["generator"]["cpu_s"] for k in out["kinds"].values())
    out["generator_cpu_s"] = round(generators, 2)
    out["generator_cpu_us_per_event"] = round(generators / events * 1e6, 1)
    return out


def check_once(
    url: str, phases: dict[int, dict[str, int]], also: dict[str, set[str]] | None = None
) -> dict:
    """Every event posted is on the timeline exactly once, and nothing else is (``also``:
    ids posted besides the phases', by kind)."""
    provider = {"sendgrid": "sendgrid", "twilio": "twilio", "shop": "shop"}
    engine = db.engine_for(url)
    out = {}
    with engine.connect() as conn:
        for kind in KINDS:
            expected: set[str] = set((also or {}).get(kind, ()))
            for phase, counts in phases.items():
                if counts.get(kind):
                    expected |= expected_ids(kind, phase, counts[kind])
            got = conn.execute(
                select(ContactEvent.event_id).where(ContactEvent.provider == provider[kind])
            ).scalars().all()
            stored = set(got)
            out[kind] = {
                "expected": len(expected), "stored": len(got),
                "missing": len(expected - stored), "unexpected": len(stored - expected),
                "duplicated": len(got) - len(stored),
            }  # fmt: skip
    engine.dispose()
    return out


def _keys():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    public = base64.b64encode(key.public_key().public_bytes(
        serialization.Encoding.DER,
        serialization.PublicFormat.SubjectPublicKeyInfo)).decode()  # fmt: skip
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()  # fmt: skip
    return pem, public


def _env(url: str, public_key: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAREFLOW_", "PREFECT_API"))}
    return {
        **env, "CAREFLOW_DATABASE_URL": url, "CAREFLOW_TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
        "CAREFLOW_SENDGRID_WEBHOOK_PUBLIC_KEY": public_key, "CAREFLOW_PUBLIC_BASE_URL": PUBLIC,
        "CAREFLOW_EVENT_SOURCES": f"shop={SHOP_SECRET}",
        "CAREFLOW_UNSUBSCRIBE_SECRET": UNSUB_SECRET,
        "CAREFLOW_UNSUBSCRIBE_BASE_URL": f"{PUBLIC}/unsubscribe",
    }  # fmt: skip


def run_dialect(dialect: str, args) -> dict:
    """The phases against each receiver, all on one database and running side by side:
    careflow, the validation-only baseline and (``--before DIR``) careflow from another
    source tree, each kind alone taking turns, ``--rounds`` times."""
    import shutil
    import tempfile

    rates = {"sendgrid": args.sendgrid_rate, "twilio": args.twilio_rate, "shop": args.shop_rate}
    rates = {k: v for k, v in rates.items() if v > 0}
    receivers = ["careflow", "validation only"] + (["before"] if args.before else [])
    # (receiver, name, rates, seconds) by phase; a warm-up first for each receiver
    # (imports, connections, caches), its events checked like the rest
    plan = {}
    for who in receivers:
        plan[len(plan)] = (who, "warm-up", {k: r / 10 for k, r in rates.items()}, 2)
    plan[len(plan)] = ("careflow", "mixed", rates, args.seconds)
    for n in range(args.rounds):
        for kind in rates:
            # each round in another order: a phase inherits its predecessor's leftovers
            # (SQLite's write-ahead log to checkpoint, PostgreSQL's dead rows)
            for who in receivers[n % len(receivers) :] + receivers[: n % len(receivers)]:
                alone = {kind: rates[kind] * args.alone_share}
                plan[len(plan)] = (who, f"{kind} alone", alone, args.cpu_seconds)
    counts = {
        phase: {k: _count(k, r, s, args) for k, r in kinds.items()}
        for phase, (_, _, kinds, s) in plan.items()
    }
    url, cleanup = fresh_database(dialect)
    workdir = Path(tempfile.mkdtemp(prefix="careflow-inbound-"))
    servers: dict[str, tuple[subprocess.Popen, int]] = {}
    try:
        seed(url, counts)
        key_pem, public = _keys()
        env = _env(url, public)
        for who in receivers:
            port = _free_port()
            argv = ["-m", "careflow", "serve", "--port", str(port), *_workers(args)]
            there, tree = env, ROOT
            if who == "validation only":
                argv = ["-m", "bench.inbound", "--baseline-serve", str(port)]
            elif who == "before":  # that tree's careflow, run from that tree
                tree = Path(args.before).resolve()
                there = {**env, "PYTHONPATH": str(tree)}
            servers[who] = (_start(argv, there, port, workdir / f"{who}.log", tree), port)
        phases = []
        for phase, (who, name, kinds, seconds) in plan.items():
            server, port = servers[who]
            r = run_phase(f"http://127.0.0.1:{port}", server.pid, phase, kinds, seconds,
                          args, key_pem, workdir)  # fmt: skip
            r.update(receiver=who, name=name, uptime=_uptime())
            phases.append(r)
            print(_line(dialect, who, r), flush=True)
        for server, _ in servers.values():
            _stop(server)
        servers.clear()
        stored = {p: c for p, c in counts.items() if plan[p][0] != "validation only"}
        return {"dialect": dialect, "phases": phases, "once": check_once(url, stored)}
    finally:
        for server, _ in servers.values():
            _stop(server)
        shutil.rmtree(workdir, ignore_errors=True)
        cleanup()


def _count(kind: str, rate: float, seconds: float, args) -> int:
    per = args.sendgrid_batch if kind == "sendgrid" else SHOP_BATCH if kind == "shop" else 1
    return max(1, int(seconds * rate / per)) * per


def _uptime() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__()


def _line(dialect: str, who: str, r: dict) -> str:
    kinds = "; ".join(
        f"{k} {v['achieved_per_s']:,}/s of {v['rate']:,.0f} p50/p99/max "
        f"{v['p50_ms']}/{v['p99_ms']}/{v['max_ms']} ms, generator "
        f"{v['generator']['cpu_us_per_request']} µs/request"
        for k, v in r["kinds"].items()
    )
    return (f"{dialect} {who} [{r['name']}] {kinds}; serve CPU {r['cpu_s']} s = "
            f"{r['cpu_us_per_event']} µs/event, generators {r['generator_cpu_s']} s; "
            f"load {r['uptime']}")  # fmt: skip


# --- opt-outs against a campaign in progress ------------------------------------------------
def run_opt_out(dialect: str, args) -> dict:
    """A campaign sends to ``args.customers`` in id order while opt-outs by every route
    arrive for customers it has not reached; none of them may be sent to after the
    opt-out was answered."""
    import shutil
    import tempfile

    from careflow.channels.outbox import OutboxChannel
    from careflow.ledger.state import ContactLedger, SendRules
    from careflow.messages import Message
    from careflow.preferences import PreferenceTokens
    from careflow.unsubscribe import UnsubscribeTokens

    n = args.customers
    everyone = range(OPT_BASE + 1, OPT_BASE + n + 1)
    url, cleanup = fresh_database(dialect)
    folder = Path(tempfile.mkdtemp(prefix="careflow-optout-"))
    try:
        engine = db.engine_for(url)
        sent = utcnow() - timedelta(days=2)
        with engine.begin() as conn:
            conn.execute(insert(Customer), [
                {"id": c, "email": f"c{c}@example.com", "mobile": mobile(c), "locale": "en"}
                for c in everyone])  # fmt: skip
            # an earlier message on each channel: what a STOP reply and SendGrid's
            # unsubscribe event are matched by (the number texted, the message id)
            conn.execute(insert(ContactHistory), [
                {"campaign": f"earlier-{ch}", "customer_id": c, "occasion": "2026", "channel": ch,
                 "state": "sent", "retryable": False, "attempts": 1,
                 "recipient": mobile(c) if ch == "sms" else f"c{c}@example.com",
                 "provider_id": f"EARLIER-{ch}-{c}", "created_at": sent, "updated_at": sent,
                 "sent_at": sent}
                for c in everyone for ch in ("sms", "email")])  # fmt: skip
        rates = {"sendgrid": args.sendgrid_rate, "twilio": args.twilio_rate,
                 "shop": args.shop_rate}  # fmt: skip
        load = {k: r * args.opt_out_load for k, r in rates.items() if r * args.opt_out_load > 0}
        counts = {1: {k: _count(k, r, args.seconds, args) for k, r in load.items()}}
        if load:
            seed(url, counts)
        key_pem, public = _keys()
        env = _env(url, public)
        port = _free_port()
        server = _start(["-m", "careflow", "serve", "--port", str(port), *_workers(args)], env,
                        port, folder / "serve.log")  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        unsub = UnsubscribeTokens(UNSUB_SECRET)
        prefs = PreferenceTokens(unsub)
        routes = ("twilio_stop", "sendgrid_unsubscribe", "one_click", "preference_page")
        # channel of each campaign message: what its customer's opt-out route is about
        channel = {c: "sms" if c % 3 == 0 else "email" for c in everyone}
        progress = {"at": OPT_BASE, "done": False}
        marked: dict[int, float] = {}  # customer -> when its mark_sending began (epoch)
        acks: list[dict] = []
        also: dict[str, set[str]] = {"twilio": set(), "sendgrid": set()}  # the opt-outs' ids

        def campaign():
            ledger = ContactLedger(engine)
            outbox = OutboxChannel(folder)
            run_id = "bench-optout"
            for start in range(OPT_BASE + 1, OPT_BASE + n + 1, args.campaign_batch):
                batch = list(range(start, min(start + args.campaign_batch, OPT_BASE + n + 1)))
                claim = ledger.claim("optout", run_id, [(c, "2026") for c in batch],
                                     rules=SendRules(category="marketing"))  # fmt: skip
                by_channel: dict[str, dict[int, int]] = {}
                for (c, _), contact in claim.owned.items():
                    by_channel.setdefault(channel[c], {})[contact] = c
                for ch, contacts in by_channel.items():
                    began = time.time()
                    texts = {i: (mobile(c) if ch == "sms" else f"c{c}@example.com", "Hi", "Hi")
                             for i, c in contacts.items()}  # fmt: skip
                    moved = ledger.mark_sending(list(contacts), ch, run_id, texts)
                    for i in moved:
                        marked[contacts[i]] = began
                    msgs = [Message(i, "optout", contacts[i], "2026", ch, texts[i][0], "Hi",
                                    subject="Hi" if ch == "email" else None)
                            for i in moved]  # fmt: skip
                    outcomes = outbox.send_batch(msgs) if msgs else []
                    if outcomes:
                        ledger.record(outcomes, run_id)
                progress["at"] = batch[-1]
            progress["done"] = True

        async def opt_outs():
            import aiohttp
            from cryptography.hazmat.primitives import hashes, serialization
            from cryptography.hazmat.primitives.asymmetric import ec

            from tests.webhooks.payloads import sendgrid_event, twilio_inbound, twilio_signed

            key = serialization.load_pem_private_key(key_pem.encode(), None)
            taken: set[int] = set()
            rng = random.Random(7)
            async with aiohttp.ClientSession() as session:

                async def one(c: int, route: str):
                    if route == "twilio_stop":
                        params = twilio_inbound("STOP", mobile(c), n=10_000_000 + c)
                        path = "/webhooks/twilio/inbound"
                        body, headers = twilio_signed(TWILIO_TOKEN, PUBLIC + path, params)
                    elif route == "sendgrid_unsubscribe":
                        path = "/webhooks/sendgrid"
                        ts = str(int(time.time()))
                        body = json.dumps([sendgrid_event(
                            "unsubscribe", f"c{c}@example.com", c,
                            message_id=f"EARLIER-email-{c}", at=int(ts))]).encode()  # fmt: skip
                        sig = key.sign(ts.encode() + body, ec.ECDSA(hashes.SHA256()))
                        headers = {"Content-Type": "application/json",
                                   "X-Twilio-Email-Event-Webhook-Signature":
                                       base64.b64encode(sig).decode(),
                                   "X-Twilio-Email-Event-Webhook-Timestamp": ts}  # fmt: skip
                    elif route == "one_click":
                        token = unsub.make(c, "optout", "2026")
                        path = "/unsubscribe?" + urllib.parse.urlencode({"token": token})
                        body = b"List-Unsubscribe=One-Click"
                        headers = {"Content-Type": "application/x-www-form-urlencoded"}
                    else:
                        path = f"/p/{prefs.make(c)}"
                        body = b"action=stop_marketing"
                        headers = {"Content-Type": "application/x-www-form-urlencoded"}
                    posted = time.time()
                    async with session.post(base + path, data=body, headers=headers) as resp:
                        await resp.read()
                        status = resp.status
                    acks.append({"customer": c, "route": route, "posted": posted,
                                 "acked": time.time(), "status": status})  # fmt: skip
                    if route == "twilio_stop":
                        also["twilio"].add(params["MessageSid"])
                    elif route == "sendgrid_unsubscribe":
                        also["sendgrid"].add(json.loads(body)[0]["sg_event_id"])

                tasks = []
                i = 0
                while not progress["done"]:
                    step = args.campaign_batch
                    ahead = progress["at"] + rng.randint(step, 4 * step)
                    if ahead <= OPT_BASE + n and ahead not in taken:
                        taken.add(ahead)
                        # each route about the channel the customer's message goes on
                        route = routes[i % len(routes)]
                        if channel[ahead] == "sms" and route != "preference_page":
                            route = "twilio_stop"
                        elif channel[ahead] == "email" and route == "twilio_stop":
                            route = "sendgrid_unsubscribe"
                        tasks.append(asyncio.create_task(one(ahead, route)))
                        i += 1
                    await asyncio.sleep(1 / args.opt_out_rate)
                await asyncio.gather(*tasks)

        background: dict = {}
        if load:  # the service busy with a campaign's answers meanwhile
            loader = threading.Thread(target=lambda: background.update(run_phase(
                base, server.pid, 1, load, args.seconds, args, key_pem, folder)))  # fmt: skip
            loader.start()
        sender = threading.Thread(target=campaign)
        began = time.perf_counter()
        sender.start()
        try:
            asyncio.run(opt_outs())
            sender.join()
            if load:
                loader.join()
        finally:
            _stop(server)
        took = time.perf_counter() - began
        with engine.connect() as conn:
            states = dict(conn.execute(select(ContactHistory.customer_id, ContactHistory.state)
                                       .where(ContactHistory.campaign == "optout"))
                          .all())  # fmt: skip
        late, withheld, before = [], 0, 0
        for a in acks:
            if a["status"] >= 300:
                continue
            c = a["customer"]
            if states.get(c) == "sent" and marked.get(c, 0) > a["acked"]:
                late.append(a)
            elif states.get(c) == "skipped":
                withheld += 1
            else:
                before += 1
        by_route = {}
        for route in routes:
            mine = [a["acked"] - a["posted"] for a in acks if a["route"] == route]
            refused = sum(a["status"] >= 300 for a in acks if a["route"] == route)
            by_route[route] = {"posted": len(mine), "refused": refused,
                               "sent_after_ack": sum(a["route"] == route for a in late),
                               "p50_ms": _p(mine, 0.5), "max_ms": _p(mine, 1.0)}  # fmt: skip
        engine.dispose()
        return {
            "dialect": dialect, "customers": n, "campaign_s": round(took, 1),
            "sent": sum(s == "sent" for s in states.values()),
            "opt_outs": len(acks), "withheld": withheld, "sent_before_opt_out": before,
            "sent_after_opt_out_acknowledged": len(late), "routes": by_route,
            "uptime": _uptime(),
            "background": {k: {x: v[x] for x in ("rate", "achieved_per_s", "p99_ms")}
                           for k, v in background.get("kinds", {}).items()},
            "background_once": check_once(url, counts, also) if load else None,
        }  # fmt: skip
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dialect", choices=["sqlite", "postgresql", "both"], default="sqlite")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--cpu-seconds", type=float, default=10,
                        help="each kind alone, for its CPU per event")  # fmt: skip
    parser.add_argument("--sendgrid-rate", type=float, default=20_000)
    parser.add_argument("--twilio-rate", type=float, default=3_000)
    parser.add_argument("--shop-rate", type=float, default=3_000)
    parser.add_argument("--sendgrid-batch", type=int, default=500)
    parser.add_argument("--retry-share", type=float, default=0.05)
    parser.add_argument("--alone-share", type=float, default=1.0,
                        help="each kind alone at this share of its rate (CPU per event "
                        "needs the load held, not the issue's rate)")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=1,
                        help="each kind alone, per receiver, taking turns this many times")
    parser.add_argument("--before", metavar="DIR",
                        help="also run careflow from this source tree (a checkout's root), "
                        "for before/after CPU in one run")  # fmt: skip
    parser.add_argument("--workers", type=int, default=1,
                        help="careflow serve --workers N (passed only when N > 1)")
    parser.add_argument("--client", choices=["raw", "aiohttp"], default="raw",
                        help="raw: every request built before the clock, sent on keep-alive "
                        "connections by a minimal protocol; aiohttp: built when due and "
                        "posted with aiohttp (the earlier generator, to compare its cost)")
    parser.add_argument("--connections", type=int, default=512,
                        help="connections each kind's sender holds at most")
    parser.add_argument("--opt-out", action="store_true")
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--campaign-batch", type=int, default=200)
    parser.add_argument("--opt-out-rate", type=float, default=50)
    parser.add_argument("--opt-out-load", type=float, default=0.0,
                        help="with --opt-out: this share of the stated rates as background "
                        "load for --seconds meanwhile")  # fmt: skip
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--generate", help=argparse.SUPPRESS)
    parser.add_argument("--baseline-serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate:
        return _generator(args.generate)
    if args.baseline_serve:
        return _baseline_main(args.baseline_serve)
    if args.quick:
        args.seconds, args.cpu_seconds = 2, 1
        args.sendgrid_rate, args.twilio_rate, args.shop_rate = 1_000, 100, 100
        args.sendgrid_batch, args.customers, args.opt_out_rate = 100, 600, 40
        args.campaign_batch = 50
    dialects = ["sqlite", "postgresql"] if args.dialect == "both" else [args.dialect]
    if "postgresql" in dialects and not postgres_available():
        raise SystemExit("no PostgreSQL on 127.0.0.1:5432")
    rows = [(run_opt_out if args.opt_out else run_dialect)(d, args) for d in dialects]
    result = {
        "when": datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "argv": sys.argv[1:], "rows": rows,
    }  # fmt: skip
    name = "inbound-opt-out" if args.opt_out else "inbound"
    out = args.json or ROOT / "bench" / "results" / (
        f"{name}-{args.dialect}{'-quick' if args.quick else ''}.json")  # fmt: skip
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(rows, indent=1)[:6000] if args.opt_out else _summary(rows))


def _summary(rows: list[dict]) -> str:
    lines = ["| database | run | kind | events/s (asked) | p50 / p95 / p99 / max ms "
             "| stored once |",
             "| --- | --- | --- | ---: | ---: | --- |"]  # fmt: skip
    for r in rows:
        for ph in r["phases"]:
            if ph["name"] != "mixed":
                continue
            for kind, k in ph["kinds"].items():
                o = r["once"][kind]
                ok = "yes" if not (o["missing"] or o["unexpected"] or o["duplicated"]) else (
                    f"NO: {o['missing']} missing, {o['unexpected']} unexpected")
                lines.append(
                    f"| {r['dialect']} | mixed, {ph['cpu_us_per_event']} µs CPU/event | {kind} "
                    f"| {k['achieved_per_s']:,} ({k['rate']:,.0f}) | {k['p50_ms']} / "
                    f"{k['p95_ms']} / {k['p99_ms']} / {k['max_ms']} | {ok} |"
                )
    lines += ["", "| database | kind alone | receiver | serve CPU µs/event (each round) "
              "| p50 / p99 ms |", "| --- | --- | --- | ---: | ---: |"]  # fmt: skip
    for r in rows:
        seen: dict[tuple[str, str], list] = {}
        for ph in r["phases"]:
            if ph["name"].endswith("alone"):
                seen.setdefault((ph["name"], ph["receiver"]), []).append(ph)
        for (name, who), runs in seen.items():
            cpu = ", ".join(f"{p['cpu_us_per_event']:,}" for p in runs)
            k = next(iter(runs[-1]["kinds"].values()))
            lines.append(f"| {r['dialect']} | {name} | {who} | {cpu} | "
                         f"{k['p50_ms']} / {k['p99_ms']} |")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
