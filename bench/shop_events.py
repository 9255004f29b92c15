"""The shop's events against `careflow serve`: events per second, latency, each stored once.

    python -m bench.shop_events            # 20,000 events in posts of 50
    python -m bench.shop_events --quick    # 1,000 events, to check it works

For each database: customers the shop knows (half of them with a delivered
message, so an order is attributed as it arrives), `careflow serve` started
as its own process (uvicorn, as in production) with one event source, then
an aiohttp load generator on loopback posting signed `POST /events` batches
(8 in flight): a quarter orders, the rest sign-ups, cart changes and a custom
event. Then every post is sent a second time (a shop retrying) and the
timeline and orders are counted: each event once, each order once.
Figures go to bench/results/shop-events.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, insert, select

from bench.fixtures import fresh_database, postgres_available
from bench.webhooks import _blast, _free_port, _p, _serve, _wait_healthy
from careflow import db
from careflow.clock import utcnow
from careflow.db.models import ContactEvent, ContactHistory, Customer, Order
from careflow.shop_events import sign

SECRET = "bench-shop-events-secret-0123456789"
TYPES = ("order", "signup", "cart", "custom")


def _seed(url: str, customers: int) -> None:
    engine = db.engine_for(url)
    sent = utcnow() - timedelta(days=1)
    with engine.begin() as conn:
        conn.execute(
            insert(Customer),
            [{"id": i, "external_ref": f"C{i}"} for i in range(1, customers + 1)],
        )
        conn.execute(
            insert(ContactHistory),
            [
                {
                    "campaign": "bench", "customer_id": i, "occasion": "2026", "channel": "sms",
                    "state": "sent", "retryable": False, "attempts": 1,
                    "recipient": f"+86138{i:08d}", "provider_id": f"SM{i:032d}",
                    "created_at": sent, "updated_at": sent, "sent_at": sent,
                    "delivery_state": "delivered", "delivery_rank": 3,
                }
                for i in range(1, customers + 1, 2)
            ],
        )  # fmt: skip


def _event(i: int, customers: int, when: str) -> dict:
    kind = TYPES[i % len(TYPES)]
    event = {"id": f"ev-{i}", "type": kind, "customer": f"C{1 + i % customers}",
             "occurred_at": when}  # fmt: skip
    if kind == "order":
        event["order"] = {"id": f"SO-{i}", "amount": "39.99", "currency": "GBP"}
    elif kind == "custom":
        event["name"] = "wishlist.added"
        event["data"] = {"sku": f"SKU{i % 500}"}
    else:
        event["data"] = {"items": i % 7}
    return event


def _posts(n: int, per_post: int, customers: int) -> list[tuple[bytes, dict]]:
    when = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    stamp = int(time.time())
    out = []
    for start in range(0, n, per_post):
        events = [_event(i, customers, when) for i in range(start, min(start + per_post, n))]
        body = json.dumps({"events": events}).encode()
        out.append((body, {"Content-Type": "application/json", "Careflow-Source": "shop",
                           "Careflow-Signature": sign(SECRET, stamp, body)}))  # fmt: skip
    return out


def run_dialect(dialect: str, n: int, per_post: int, customers: int) -> dict:
    url, cleanup = fresh_database(dialect)
    try:
        _seed(url, customers)
        port = _free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CAREFLOW_")},
            "CAREFLOW_DATABASE_URL": url,
            "CAREFLOW_EVENT_SOURCES": f"shop={SECRET}",
        }
        env.pop("PREFECT_API_URL", None)  # events go nowhere: the receiver is measured
        server = _serve(port, env)
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_healthy(base, server)
            posts = _posts(n, per_post, customers)
            secs, latencies, errors = asyncio.run(_blast(f"{base}/events", posts, 8))
            # the shop retries: everything again, nothing may be stored twice
            again, _, again_errors = asyncio.run(_blast(f"{base}/events", posts, 8))
        finally:
            server.terminate()
            server.wait(30)
        engine = db.engine_for(url)
        with engine.connect() as conn:
            stored = conn.execute(
                select(func.count()).where(ContactEvent.provider == "shop")
            ).scalar_one()
            orders = conn.execute(select(func.count()).select_from(Order)).scalar_one()
            converted = conn.execute(
                select(func.count()).where(ContactEvent.kind == "converted")
            ).scalar_one()
        return {
            "dialect": dialect,
            "events": n,
            "posts": len(posts),
            "events_per_s": round(n / secs),
            "retry_events_per_s": round(n / again),
            "p50_ms": round(_p(latencies, 0.5), 1),
            "p99_ms": round(_p(latencies, 0.99), 1),
            "errors": errors + again_errors,
            "stored": stored,
            "orders": orders,
            "expected_orders": len(range(0, n, len(TYPES))),
            "converted": converted,
        }
    finally:
        cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n, customers = (1_000, 200) if args.quick else (20_000, 5_000)
    dialects = ["sqlite"] + (["postgresql"] if postgres_available() else [])
    rows = [run_dialect(d, n, 50, customers) for d in dialects]
    result = {
        "when": datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "rows": rows,
    }
    name = "shop-events-quick.json" if args.quick else "shop-events.json"
    (Path(__file__).parent / "results" / name).write_text(json.dumps(result, indent=2))
    print(
        "| database | events/s (posts of 50) | p50 / p99 ms per post | retried posts, events/s "
        "| stored once | orders once | attributed at once |"
    )
    print("| --- | ---: | ---: | ---: | --- | --- | ---: |")
    for r in rows:
        once = "yes" if r["stored"] == r["events"] and not r["errors"] else (
            f"NO: {r['stored']}/{r['events']}, {r['errors']} errors")
        orders = "yes" if r["orders"] == r["expected_orders"] else f"NO: {r['orders']}"
        print(
            f"| {r['dialect']} | {r['events_per_s']:,} | {r['p50_ms']} / {r['p99_ms']} | "
            f"{r['retry_events_per_s']:,} | {once} | {orders} | {r['converted']:,} |"
        )


if __name__ == "__main__":
    main()
