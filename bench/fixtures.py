"""Synthetic shops for benchmarks: many customers, many orders, inserted fast."""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import uuid
from datetime import date, datetime, time, timedelta
from pathlib import Path

from sqlalchemy import create_engine, insert, text

from careflow import db
from careflow.db.models import Customer, Order

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def send_times_off() -> None:
    """A real run judges quiet hours and country windows at the real clock, not at its
    as-of date (docs/policy.md): benchmarks that run real flows turn send times off, so
    a figure does not depend on the hour it was measured. Environment variables, so
    Dask workers and subprocesses see it too."""
    os.environ.update(CAREFLOW_QUIET_HOURS="off", CAREFLOW_SENDING_WINDOWS="false")


def fresh_database(dialect: str) -> tuple[str, callable]:
    """(url, cleanup) of an empty, migrated database."""
    if dialect == "sqlite":
        folder = Path(tempfile.mkdtemp(prefix="careflow-bench-"))
        url = f"sqlite:///{folder / 'bench.db'}"
        db.upgrade(url)

        def remove():
            db.engine_for(url).dispose()
            shutil.rmtree(folder, ignore_errors=True)

        return url, remove
    name = f"careflow_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN.rsplit("/", 1)[0] + "/" + name

    def cleanup():
        db.engine_for(url).dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    db.upgrade(url)
    return url, cleanup


def postgres_available() -> bool:
    try:
        with create_engine(PG_ADMIN, connect_args={"connect_timeout": 3}).connect():
            return True
    except Exception:
        return False


def populate(
    url: str,
    customers: int,
    orders_per_customer: int,
    as_of: date,
    seed: int = 7,
    birthday_today: bool = False,
) -> int:
    """Customers with valid contacts and ~orders_per_customer orders over two years."""
    rnd = random.Random(seed)
    engine = db.engine_for(url)
    cust, orders = [], []
    oid = 0
    for cid in range(1, customers + 1):
        bday = (
            date(1990, as_of.month, as_of.day)
            if birthday_today
            else date(1950 + cid % 50, 1, 1) + timedelta(days=rnd.randrange(365))
        )
        cust.append(
            {
                "id": cid,
                "full_name": f"Customer {cid}",
                "given_name": f"C{cid}",
                "locale": "en",
                "time_zone": "UTC",
                "country": "GB",
                "birthday": bday,
                "mobile": f"+4479{cid % 100_000_000:08d}",
                "email": f"c{cid}@example.com",
            }
        )
        rhythm = rnd.randint(10, 90)
        # a third of the customers stopped buying a while ago: dormant material
        day = as_of - timedelta(days=rnd.randint(0, 120) + (rnd.random() < 0.33) * 200)
        for _ in range(max(0, int(rnd.gauss(orders_per_customer, orders_per_customer / 3)))):
            oid += 1
            orders.append(
                {
                    "id": oid,
                    "customer_id": cid,
                    "ordered_at": datetime.combine(day, time(12)),
                    "ordered_on": day,
                    "currency": "GBP",
                    "amount_minor": rnd.randint(5, 500) * 100,  # GBP pence
                }
            )
            day -= timedelta(days=max(1, int(rnd.gauss(rhythm, rhythm / 4))))
        if len(orders) > 50_000:
            _flush(engine, cust, orders)
            cust, orders = [], []
    _flush(engine, cust, orders)
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))
    return oid


def _flush(engine, cust, orders):
    with engine.begin() as conn:
        if cust:
            conn.execute(insert(Customer.__table__), cust)
        if orders:
            conn.execute(insert(Order.__table__), orders)
