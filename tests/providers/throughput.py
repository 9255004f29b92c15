"""Measure each live channel's throughput against the loopback fault server.

    .venv/bin/python -m tests.providers.throughput [--sms N] [--email N] [--fax N]
        [--workers W] [--fault-rate R]

The server answers at once, so the figures are the client side's ceiling on
this machine (SDK, HTTP stack, PDF rendering), not a provider's: real sends
are bounded by the account's rate limit long before. Fax renders each PDF
with the system CJK font, as in production. For the SMS and email channels
at 0 and 50 ms latency against the bare-client ceiling, see
bench/http_throughput.py.
"""

from __future__ import annotations

import argparse
import logging
import time

from careflow.channels.email import SendGridEmail
from careflow.channels.fax import SinchFax
from careflow.channels.sms import TwilioSMS
from tests.providers.fault_server import FaultServer
from tests.providers.kit import live_settings, make_message, recipient_of


def measure(kind: str, n: int, workers: int, fault_rate: float) -> tuple[float, int, int]:
    """(messages per second, sent, max accepted per recipient) for ``n`` messages."""
    classes = {"sms": TwilioSMS, "email": SendGridEmail, "fax": SinchFax}
    contact = "email" if kind == "email" else "sms"
    with FaultServer(fault_rate=fault_rate, seed=3) as server:
        settings = live_settings(
            server.base_url,
            fax_font_path=None,  # search the full system font, as production does
            sms_concurrency=workers, email_concurrency=workers, fax_concurrency=workers,
            delivery_max_attempts=10,
        )
        messages = [make_message(i, kind, recipient_of(contact, i)) for i in range(n)]
        with classes[kind](settings) as channel:
            channel.send_batch(messages[:workers])  # warm up: connections, font
            server.accepted.clear()
            started = time.perf_counter()
            outcomes = channel.send_batch(messages[workers:])
            elapsed = time.perf_counter() - started
        sent = sum(o.state == "sent" for o in outcomes)
        return (n - workers) / elapsed, sent, max(server.accepted.values(), default=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sms", type=int, default=2000)
    parser.add_argument("--email", type=int, default=2000)
    parser.add_argument("--fax", type=int, default=40)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--fault-rate", type=float, default=0.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    for kind in ("sms", "email", "fax"):
        n = getattr(args, kind)
        if n <= args.workers:
            continue
        rate, sent, most = measure(kind, n, args.workers, args.fault_rate)
        print(f"{kind:5} {n - args.workers:6d} messages  {rate:8.1f} msg/s  "
              f"sent={sent}  max accepted per recipient={most}")


if __name__ == "__main__":
    main()
