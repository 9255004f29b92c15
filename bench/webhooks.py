"""Provider bursts against `careflow serve`: events per second, latency, nothing lost or doubled.

    python -m bench.webhooks            # 10,000 Twilio callbacks, 20,000 SendGrid events
    python -m bench.webhooks --quick    # a few hundred, to check it works

For each database: a ledger of sent messages, `careflow serve` started as
its own process (uvicorn, as in production), then an aiohttp load generator
on loopback posting requests signed exactly as the providers sign them:
Twilio status callbacks one per request (64 in flight), SendGrid Event
Webhook posts of 100 events (8 in flight). Then every event is posted a
second time (providers retry) and the events table is counted: it must
hold each event exactly once. Figures go to bench/results/webhooks.json.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import socket
import subprocess
import sys
import time
import urllib.parse
from datetime import datetime
from pathlib import Path

import aiohttp
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, insert, select
from twilio.request_validator import RequestValidator

from bench.fixtures import fresh_database, postgres_available
from careflow import db
from careflow.clock import utcnow
from careflow.db.models import ContactEvent, ContactHistory, Customer

TOKEN = "bench-twilio-auth-token-0123456789"
PUBLIC = "https://care.example.com"


def _seed(url: str, sms: int, email: int) -> None:
    engine = db.engine_for(url)
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(
            insert(Customer), [{"id": i, "full_name": f"C{i}"} for i in range(1, sms + email + 1)]
        )
        conn.execute(
            insert(ContactHistory),
            [
                {
                    "campaign": "bench",
                    "customer_id": i,
                    "occasion": "2026",
                    "channel": "sms" if i <= sms else "email",
                    "state": "sent",
                    "retryable": False,
                    "attempts": 1,
                    "recipient": f"+86138{i:08d}" if i <= sms else f"c{i}@example.com",
                    "provider_id": f"SM{i:032d}" if i <= sms else f"MSG{i}",
                    "created_at": now,
                    "updated_at": now,
                    "sent_at": now,
                }
                for i in range(1, sms + email + 1)
            ],
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _twilio_requests(n: int) -> list[tuple[bytes, dict]]:
    validator = RequestValidator(TOKEN)
    out = []
    for i in range(1, n + 1):
        params = {
            "MessageSid": f"SM{i:032d}",
            "MessageStatus": "delivered",
            "To": f"+86138{i:08d}",
            "AccountSid": "AC" + "0" * 32,
        }
        signature = validator.compute_signature(f"{PUBLIC}/webhooks/twilio/status", params)
        out.append(
            (
                urllib.parse.urlencode(params).encode(),
                {
                    "X-Twilio-Signature": signature,
                    "Content-Type": "application/x-www-form-urlencoded",
                },
            )
        )
    return out


def _sendgrid_requests(key, first: int, n: int, per_post: int) -> list[tuple[bytes, dict]]:
    out = []
    ts = str(int(time.time()))
    for start in range(first, first + n, per_post):
        events = [
            {
                "email": f"c{i}@example.com",
                "timestamp": int(ts),
                "event": "delivered",
                "sg_event_id": f"ev-{i}",
                "sg_message_id": f"MSG{i}.filter0",
            }
            for i in range(start, min(start + per_post, first + n))
        ]
        body = json.dumps(events).encode()
        sig = base64.b64encode(key.sign(ts.encode() + body, ec.ECDSA(hashes.SHA256()))).decode()
        out.append(
            (
                body,
                {
                    "Content-Type": "application/json",
                    "X-Twilio-Email-Event-Webhook-Signature": sig,
                    "X-Twilio-Email-Event-Webhook-Timestamp": ts,
                },
            )
        )
    return out


async def _blast(url: str, requests: list, in_flight: int) -> tuple[float, list[float], int]:
    """Post every request with ``in_flight`` at once; (seconds, latencies, non-2xx answers)."""
    latencies: list[float] = []
    errors = 0
    queue: asyncio.Queue = asyncio.Queue()
    for r in requests:
        queue.put_nowait(r)

    async def worker(session):
        nonlocal errors
        while not queue.empty():
            body, headers = queue.get_nowait()
            started = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()
                errors += resp.status >= 300
            latencies.append(time.perf_counter() - started)

    connector = aiohttp.TCPConnector(limit=in_flight)
    async with aiohttp.ClientSession(connector=connector) as session:
        began = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(in_flight)))
        return time.perf_counter() - began, latencies, errors


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def run_dialect(dialect: str, sms: int, email: int) -> dict:
    url, cleanup = fresh_database(dialect)
    try:
        db.upgrade(url)
        _seed(url, sms, email)
        key = ec.generate_private_key(ec.SECP256R1())
        public = base64.b64encode(
            key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        ).decode()
        port = _free_port()
        env = {
            **os.environ,
            "CAREFLOW_DATABASE_URL": url,
            "CAREFLOW_TWILIO_AUTH_TOKEN": TOKEN,
            "CAREFLOW_SENDGRID_WEBHOOK_PUBLIC_KEY": public,
            "CAREFLOW_PUBLIC_BASE_URL": PUBLIC,
        }
        server = _serve(port, env)
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_healthy(base, server)
            twilio_reqs = _twilio_requests(sms)
            grid_reqs = _sendgrid_requests(key, sms + 1, email, 100)
            t_secs, t_lat, t_err = asyncio.run(
                _blast(f"{base}/webhooks/twilio/status", twilio_reqs, 64)
            )
            g_secs, g_lat, g_err = asyncio.run(_blast(f"{base}/webhooks/sendgrid", grid_reqs, 8))
            # providers retry: everything again, nothing may be recorded twice
            asyncio.run(_blast(f"{base}/webhooks/twilio/status", twilio_reqs, 64))
            asyncio.run(_blast(f"{base}/webhooks/sendgrid", grid_reqs, 8))
        finally:
            server.terminate()
            server.wait(30)
        engine = db.engine_for(url)
        with engine.connect() as conn:
            stored = conn.execute(select(func.count()).select_from(ContactEvent)).scalar_one()
            distinct = conn.execute(
                select(func.count(func.distinct(ContactEvent.event_id)))
            ).scalar_one()
            delivered = conn.execute(
                select(func.count()).where(ContactHistory.delivery_state == "delivered")
            ).scalar_one()
        return {
            "dialect": dialect,
            "twilio": {
                "callbacks": sms,
                "per_s": round(sms / t_secs),
                "p50_ms": round(_p(t_lat, 0.5), 1),
                "p99_ms": round(_p(t_lat, 0.99), 1),
                "errors": t_err,
            },
            "sendgrid": {
                "events": email,
                "posts": len(grid_reqs),
                "events_per_s": round(email / g_secs),
                "p50_ms": round(_p(g_lat, 0.5), 1),
                "p99_ms": round(_p(g_lat, 0.99), 1),
                "errors": g_err,
            },
            "stored": stored,
            "distinct": distinct,
            "expected": sms + email,
            "messages_delivered": delivered,
        }
    finally:
        cleanup()


def _serve(port: int, env: dict) -> subprocess.Popen:
    """`careflow serve` in a process of its own on ``port``, with ``env``, output dropped."""
    return subprocess.Popen(
        [sys.executable, "-m", "careflow", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait_healthy(base: str, server: subprocess.Popen) -> None:
    import urllib.request

    for _ in range(600):
        if server.poll() is not None:
            raise RuntimeError("careflow serve exited")
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("careflow serve did not become healthy")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    sms, email = (300, 600) if args.quick else (10_000, 20_000)
    dialects = ["sqlite"] + (["postgresql"] if postgres_available() else [])
    rows = [run_dialect(d, sms, email) for d in dialects]
    result = {
        "when": datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "rows": rows,
    }
    out = (
        Path(__file__).parent
        / "results"
        / ("webhooks-quick.json" if args.quick else "careflow.webhooks.json")
    )
    out.write_text(json.dumps(result, indent=2))
    print(
        "| database | Twilio callbacks/s | p50 / p99 ms | SendGrid events/s "
        "| p50 / p99 ms (per post of 100) | stored once |"
    )
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        t, g = r["twilio"], r["sendgrid"]
        once = (
            "yes"
            if r["stored"] == r["distinct"] == r["expected"]
            else f"NO: {r['stored']}/{r['expected']}"
        )
        print(
            f"| {r['dialect']} | {t['per_s']:,} | {t['p50_ms']} / {t['p99_ms']} | "
            f"{g['events_per_s']:,} | {g['p50_ms']} / {g['p99_ms']} | {once} |"
        )


if __name__ == "__main__":
    main()
