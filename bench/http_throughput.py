"""Live SMS and email channels against a loopback fake provider, and the client ceiling.

    .venv/bin/python -m bench.http_throughput [--quick] [--n N] [--concurrency C]
        [--latency 0 0.05] [--fault-rate R] [--chunk N]

The fake provider is tests/providers/fault_server.py (it speaks enough of
Twilio's Messages API and SendGrid's Mail Send for the real SDKs) in its own
process, answering after ``latency`` seconds, failing ``fault-rate`` of the
requests with 429/5xx. For each latency it measures, in the same run:

- the ceiling: a bare aiohttp client posting a ready-made Twilio form / Mail
  Send JSON, as large as the channels' own, with the same number in flight
  (no SDK, no careflow);
- ``TwilioSMS`` and ``SendGridEmail`` ``send_batch`` on personalised
  messages (each email has its own unsubscribe link, so nothing is merged);
- ``SendGridEmail`` on identical service mail (merged into shared requests);
- the same channels called in chunks of ``--chunk`` messages one after the
  other, as one route batch calls them (``send_chunk_size``).

msg/s counts every message handed to the channel; the ratio is channel /
ceiling. Every message must come back ``sent`` and be accepted exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import multiprocessing
import time
from collections.abc import Callable
from urllib.parse import urlencode

from careflow.channels.email import SendGridEmail
from careflow.channels.sms import TwilioSMS
from careflow.flows.runners import settle_heap
from careflow.messages import Message, State
from tests.providers.kit import (
    SENDGRID_KEY,
    TWILIO_SID,
    TWILIO_TOKEN,
    live_settings,
    make_message,
    recipient_of,
)

#: the bare client's recipients (every ceiling request goes to them)
CEILING_PHONE, CEILING_EMAIL = "+8613900000000", "ceiling@example.com"
CEILING = {CEILING_PHONE, CEILING_EMAIL}


def _serve(latency: float, fault_rate: float, ports, stop, report) -> None:
    from tests.providers.fault_server import FaultServer, SlowFaultServer

    server = (
        SlowFaultServer(delay=latency, fault_rate=fault_rate, seed=5)
        if latency
        else (FaultServer(fault_rate=fault_rate, seed=5))
    )
    with server:
        ports.put(server.port)
        while not stop.wait(0.2):
            if not report.empty():
                continue
        server.wait_idle()
        counts = [v for k, v in server.accepted.items() if k not in CEILING]
        report.put(max(counts, default=0))


class Provider:
    """The fake provider in its own process."""

    def __init__(self, latency: float, fault_rate: float):
        ctx = multiprocessing.get_context("spawn")
        self._ports, self._report, self._stop = ctx.Queue(), ctx.Queue(), ctx.Event()
        self._process = ctx.Process(
            target=_serve,
            args=(latency, fault_rate, self._ports, self._stop, self._report),
            daemon=True,
        )

    def __enter__(self) -> Provider:
        self._process.start()
        self.base_url = f"http://127.0.0.1:{self._ports.get(timeout=60)}"
        return self

    def most_accepted(self) -> int:
        """Stop the server; the most requests it accepted for one recipient."""
        self._stop.set()
        most = self._report.get(timeout=60)
        self._process.join(10)
        return most

    def __exit__(self, *exc: object) -> None:
        if self._process.is_alive():
            self._process.kill()


async def _bare(
    url: str, n: int, concurrency: int, body: bytes, headers: dict
) -> tuple[float, float]:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        gate = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with gate, session.post(url, data=body, headers=headers) as answer:
                await answer.read()

        await asyncio.gather(*(one() for _ in range(concurrency)))  # open the connections
        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(one() for _ in range(n)))
        return n / (time.perf_counter() - started), (time.process_time() - cpu) / n * 1e6


def ceiling(base_url: str, n: int, concurrency: int) -> dict[str, tuple[float, float]]:
    """Requests/s of a bare aiohttp client sending bodies as large as the channels' own."""
    auth = base64.b64encode(f"{TWILIO_SID}:{TWILIO_TOKEN}".encode()).decode()
    settings = live_settings(base_url)
    sms = TwilioSMS(settings)._prepare(make_message(0, "sms", CEILING_PHONE))
    form = urlencode({"To": sms["to"], "From": sms["from_"], "Body": sms["body"]}).encode()
    email = SendGridEmail(settings)._request_body(make_message(0, "email", CEILING_EMAIL))
    mail = json.dumps(email).encode()
    return {
        "sms": asyncio.run(
            _bare(
                f"{base_url}/2010-04-01/Accounts/{TWILIO_SID}/Messages.json",
                n,
                concurrency,
                form,
                {
                    "Authorization": f"Basic {auth}",
                    "Content-Type": "application/x-www-form-urlencoded",
                },
            )
        ),
        "email": asyncio.run(
            _bare(
                f"{base_url}/v3/mail/send",
                n,
                concurrency,
                mail,
                {"Authorization": f"Bearer {SENDGRID_KEY}", "Content-Type": "application/json"},
            )
        ),
    }


def messages_for(kind: str, n: int, start: int) -> list[Message]:
    if kind == "email-shared":  # a holiday notice: one text for everyone
        return [
            make_message(
                i,
                "email",
                recipient_of("email", i),
                marketing=False,
                body="Our shops close at 3 pm on New Year's Eve.",
                subject="Notice",
                html="<p>Our shops close at 3 pm on New Year's Eve.</p>",
            )
            for i in range(start, start + n)
        ]
    contact = "email" if kind == "email" else "sms"
    return [make_message(i, kind, recipient_of(contact, i)) for i in range(start, start + n)]


def channel_rate(
    kind: str, base_url: str, n: int, concurrency: int, chunk: int | None, start: int
) -> tuple[float, float]:
    settings = live_settings(
        base_url,
        sms_concurrency=concurrency,
        email_concurrency=concurrency,
        sms_rate_per_second=1e6,
        email_rate_per_second=1e6,
        delivery_max_attempts=10,
    )
    cls: Callable = TwilioSMS if kind == "sms" else SendGridEmail
    warm = messages_for(kind, concurrency, start)
    messages = messages_for(kind, n, start + concurrency)
    with cls(settings) as channel:
        channel.send_batch(warm)  # connections, imports
        started, cpu = time.perf_counter(), time.process_time()
        size = chunk or len(messages)
        outcomes = []
        for at in range(0, len(messages), size):
            outcomes += channel.send_batch(messages[at : at + size])
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    bad = [o for o in outcomes if o.state != State.SENT]
    if bad:
        raise SystemExit(f"{kind}: {len(bad)} not sent, e.g. {bad[0]}")
    return n / elapsed, cpu / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, to check it works")
    parser.add_argument("--n", type=int, default=6000, help="messages per measurement")
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--latency", type=float, nargs="+", default=[0.0, 0.05])
    parser.add_argument("--fault-rate", type=float, default=0.0)
    parser.add_argument("--chunk", type=int, default=500, help="chunked run: messages per call")
    args = parser.parse_args()
    if args.quick:
        args.n, args.concurrency = 400, 50
    logging.basicConfig(level=logging.WARNING)
    # the collector set as in a process running batches (careflow/flows/campaign.py, run_batch),
    # for the channels and the bare client alike
    settle_heap()
    print(
        f"{args.n} messages per figure, {args.concurrency} in flight, "
        f"fault rate {args.fault_rate}; each cell: msg/s (client CPU µs per message)\n"
    )
    print("| latency | what | SMS | email | identical email | SMS / ceiling | email / ceiling |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: |")

    def cell(figure: tuple[float, float]) -> str:
        return f"{figure[0]:,.0f} ({figure[1]:,.0f})"

    for latency in args.latency:
        with Provider(latency, args.fault_rate) as provider:
            top = ceiling(provider.base_url, args.n, args.concurrency)
            start = 0
            rows = {}
            modes = (("send_batch(all)", None), (f"chunks of {args.chunk}", args.chunk))
            for label, chunk in modes:
                rates = {}
                for kind in ("sms", "email", "email-shared"):
                    rates[kind] = channel_rate(
                        kind, provider.base_url, args.n, args.concurrency, chunk, start
                    )
                    start += args.n + args.concurrency
                rows[label] = rates
            most = provider.most_accepted()
        ms = f"{latency * 1000:.0f} ms"
        print(f"| {ms} | bare aiohttp ceiling | {cell(top['sms'])} | {cell(top['email'])} | | | |")
        for label, r in rows.items():
            print(
                f"| {ms} | {label} | {cell(r['sms'])} | {cell(r['email'])} | "
                f"{cell(r['email-shared'])} | {r['sms'][0] / top['sms'][0]:.2f} "
                f"| {r['email'][0] / top['email'][0]:.2f} |"
            )
        if most != 1:
            raise SystemExit(f"a recipient was accepted {most} times")
    print("\nevery message sent, each recipient accepted exactly once")


if __name__ == "__main__":
    main()
