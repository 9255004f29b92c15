"""Segment query times on a large synthetic shop, whole population and batched."""

from __future__ import annotations

import time
from datetime import date

from sqlalchemy import func, select

from bench.fixtures import fresh_database, populate
from careflow import db, segments
from careflow.db.models import Customer

AS_OF = date(2026, 11, 22)


def run(
    dialect: str, customers: int = 50_000, orders_per_customer: int = 20, batch_size: int = 5_000
) -> dict:
    url, cleanup = fresh_database(dialect)
    try:
        t0 = time.perf_counter()
        n_orders = populate(url, customers, orders_per_customer, AS_OF)
        t_load = time.perf_counter() - t0
        engine = db.engine_for(url)
        out = {
            "dialect": dialect,
            "customers": customers,
            "orders": n_orders,
            "load_orders_per_s": round(n_orders / t_load),
            "segments": {},
        }
        with engine.connect() as conn:
            hi = conn.execute(select(func.max(Customer.id))).scalar_one()
            for name in ("birthday", "dormant", "reorder_due", "vip"):
                t0 = time.perf_counter()
                count = segments.count(conn, segments.build(name, AS_OF))
                whole = time.perf_counter() - t0
                t0 = time.perf_counter()
                # as a run does it: prepare once, then one query per batch
                params = segments.prepare(name, conn, AS_OF)
                batched = sum(
                    segments.count(
                        conn,
                        segments.build(name, AS_OF, params, id_range=(lo, lo + batch_size - 1)),
                    )
                    for lo in range(1, hi + 1, batch_size)
                )
                in_batches = time.perf_counter() - t0
                assert batched == count, (name, batched, count)
                out["segments"][name] = {
                    "selected": count,
                    "whole_s": round(whole, 3),
                    "in_batches_s": round(in_batches, 3),
                }
        return out
    finally:
        cleanup()
