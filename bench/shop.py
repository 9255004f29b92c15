"""A deterministic synthetic shop at production size: 1M customers, 5M orders in minutes.

    python -m bench.shop --customers 1000000 --orders 5000000 --url sqlite:////tmp/shop.db

Same seed, same shop, on SQLite and PostgreSQL alike. The shape follows
what the segments look for:

- birthdays spread over the year (about 1/365 of customers each day, Feb 29
  included at its real rate), every customer with a valid mobile and email;
- each customer buys on their own rhythm (10-90 days between purchases, a
  little noise), their last purchase anywhere in the last 120 days, and a
  third of them stopped buying 200-500 days ago (win-back material);
- the number of orders per customer is geometric around the mean, so most
  buy a few times and some many times (the pyramid has a long tail);
- one order in five has a line of a product with a known replenishment
  period (rice, filters), so reorder_due uses both of its bases.

Rows go in through the database's fast path (SQLite executemany in large
transactions, PostgreSQL COPY) rather than the ORM: the point is the
segments and the route, not the loader.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Iterator
from datetime import date, datetime, timedelta

from careflow import db

AS_OF = date(2026, 11, 22)
PRODUCTS = [  # sku, name, replenish_days (None: not a consumable)
    ("RICE-5KG", "Rice 5 kg", 30),
    ("FILTER", "Water filter", 60),
    ("INK", "Printer ink", 45),
    ("MUG", "Mug", None),
    ("LAMP", "Lamp", None),
]
ZONES = [("UTC", "GB", "en"), ("Europe/London", "GB", "en"), ("Asia/Shanghai", "CN", "zh-CN")]
CHUNK = 100_000
GRADES = "ABBCCCCDDDEEEFG"  # fewer near the top, as prospects thin out


def customers(n: int, seed: int) -> Iterator[tuple]:
    rnd = random.Random(seed)
    created = datetime(2020, 1, 1)
    for cid in range(1, n + 1):
        zone, country, locale = ZONES[cid % len(ZONES)] if cid % 10 == 0 else ZONES[0]
        yield (
            cid,
            f"C{cid:07d}",
            f"Customer {cid}",
            f"C{cid}",
            f"+4479{cid % 100_000_000:08d}",
            f"c{cid}@example.com",
            locale,
            zone,
            # 1952 and 2000 are leap years: Feb 29 birthdays occur at their real rate
            date(1952 + 4 * rnd.randrange(13), 1, 1) + timedelta(days=rnd.randrange(366)),
            country,
            created,
            GRADES[cid % len(GRADES)],
            f"owner{cid % 50:02d}",
        )


def orders(n_customers: int, n_orders: int, seed: int, as_of: date = AS_OF):
    """(order rows, line rows) per customer, generated lazily; about n_orders in all."""
    rnd = random.Random(seed + 1)
    mean = n_orders / n_customers
    p = 1 / mean  # geometric: 1 + failures before success
    oid = lid = 0
    for cid in range(1, n_customers + 1):
        count = 1
        while rnd.random() > p and count < 200:
            count += 1
        rhythm = rnd.randint(10, 90)
        lapsed = rnd.random() < 0.33
        day = as_of - timedelta(days=rnd.randint(0, 120) + (rnd.randint(200, 500) if lapsed else 0))
        rows, lines = [], []
        for _ in range(count):
            oid += 1
            amount = rnd.randint(5, 500) * 100
            rows.append(
                (
                    oid,
                    cid,
                    datetime.combine(day, datetime.min.time()).replace(hour=12),
                    day,
                    "GBP",
                    amount,
                )
            )
            if rnd.random() < 0.2:
                lid += 1
                sku = PRODUCTS[rnd.randrange(len(PRODUCTS))][0]
                qty = rnd.randint(1, 3)
                lines.append((lid, oid, sku, qty, amount // qty, amount))
            day -= timedelta(days=max(1, int(rnd.gauss(rhythm, rhythm / 4))))
        yield rows, lines


ORDER_COLS = ("id", "customer_id", "ordered_at", "ordered_on", "currency", "amount_minor")
LINE_COLS = ("id", "order_id", "sku", "quantity", "unit_price_minor", "amount_minor")
CUSTOMER_COLS = (
    "id",
    "external_ref",
    "full_name",
    "given_name",
    "mobile",
    "email",
    "locale",
    "time_zone",
    "birthday",
    "country",
    "created_at",
    "grade",
    "owner",
)


def generate(url: str, n_customers: int, n_orders: int, seed: int = 7, quiet: bool = False) -> dict:
    """Fill the (migrated, empty) database at ``url``; returns counts and load timings."""
    engine = db.engine_for(url)
    db.ensure_schema(engine)
    raw = engine.raw_connection()
    writer = _Copy(raw) if engine.dialect.name == "postgresql" else _ExecMany(raw)
    t0 = time.perf_counter()
    writer.write("products", ("sku", "name", "replenish_days"), PRODUCTS)
    writer.write_chunks("customers", CUSTOMER_COLS, customers(n_customers, seed))
    n_o = n_l = 0
    o_buf, l_buf = [], []
    for rows, lines in orders(n_customers, n_orders, seed):
        o_buf += rows
        l_buf += lines
        if len(o_buf) >= CHUNK:
            writer.write("orders", ORDER_COLS, o_buf)
            writer.write("order_lines", LINE_COLS, l_buf)
            n_o, n_l = n_o + len(o_buf), n_l + len(l_buf)
            o_buf, l_buf = [], []
            if not quiet:
                print(f"\r{n_o:,} orders", end="", file=sys.stderr, flush=True)
    writer.write("orders", ORDER_COLS, o_buf)
    writer.write("order_lines", LINE_COLS, l_buf)
    n_o, n_l = n_o + len(o_buf), n_l + len(l_buf)
    writer.finish()
    raw.close()
    load_s = time.perf_counter() - t0
    if not quiet:
        print(file=sys.stderr)
    return {"customers": n_customers, "orders": n_o, "lines": n_l, "load_s": round(load_s, 1)}


class _ExecMany:
    def __init__(self, raw):
        self.raw = raw
        self.cur = raw.cursor()

    def write(self, table, cols, rows):
        if rows:
            marks = ",".join("?" * len(cols))
            self.cur.executemany(
                f"INSERT INTO {table} ({','.join(cols)}) VALUES ({marks})",
                [tuple(_sqlite_value(v) for v in r) for r in rows],
            )
            self.raw.commit()

    def write_chunks(self, table, cols, rows):
        buf = []
        for r in rows:
            buf.append(r)
            if len(buf) >= CHUNK:
                self.write(table, cols, buf)
                buf = []
        self.write(table, cols, buf)

    def finish(self):
        self.raw.commit()


def _sqlite_value(v):
    # SQLAlchemy stores DATE as 'YYYY-MM-DD' and DATETIME as 'YYYY-MM-DD HH:MM:SS.ffffff'
    if isinstance(v, datetime):
        return v.strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(v, date):
        return v.isoformat()
    return v


class _Copy(_ExecMany):
    def write(self, table, cols, rows):
        if not rows:
            return
        with self.cur.copy(f"COPY {table} ({','.join(cols)}) FROM STDIN") as copy:
            for r in rows:
                copy.write_row(r)
        self.raw.commit()

    def finish(self):
        self.raw.commit()
        self.cur.execute("ANALYZE")
        self.raw.commit()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="database URL (migrated or empty)")
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--orders", type=int, default=5_000_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    db.upgrade(args.url)
    print(generate(args.url, args.customers, args.orders, args.seed))


if __name__ == "__main__":
    main()
