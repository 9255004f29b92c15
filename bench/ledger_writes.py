"""Ledger throughput: ContactLedger (Core executemany) against the ORM doing the same rows."""

from __future__ import annotations

import time
from datetime import date

from sqlalchemy import delete
from sqlalchemy.orm import Session

from bench.fixtures import fresh_database, populate
from careflow import db
from careflow.clock import utcnow
from careflow.db.models import ContactHistory
from careflow.ledger import ContactLedger
from careflow.messages import Outcome


def run(dialect: str, rows: int = 20_000) -> dict:
    url, cleanup = fresh_database(dialect)
    try:
        populate(url, rows, 0, date(2026, 11, 22))
        engine = db.engine_for(url)
        ledger = ContactLedger(engine)
        keys = [(cid, "2026") for cid in range(1, rows + 1)]

        t0 = time.perf_counter()
        claim = ledger.claim("bench", "run-1", keys)
        t_claim = time.perf_counter() - t0
        t0 = time.perf_counter()
        ledger.record([Outcome.sent(i, f"P{i}") for i in claim.owned.values()], "run-1")
        t_record = time.perf_counter() - t0

        with engine.begin() as conn:
            conn.execute(delete(ContactHistory))
        now = utcnow()
        t0 = time.perf_counter()
        with Session(engine) as session:
            session.add_all(
                ContactHistory(
                    campaign="bench",
                    customer_id=c,
                    occasion=o,
                    state="reserved",
                    run_id="orm",
                    attempts=0,
                    retryable=False,
                    created_at=now,
                    updated_at=now,
                )
                for c, o in keys
            )
            session.commit()
        t_orm = time.perf_counter() - t0
        return {
            "dialect": dialect,
            "rows": rows,
            "claim_rows_per_s": round(rows / t_claim),
            "record_rows_per_s": round(rows / t_record),
            "orm_add_all_rows_per_s": round(rows / t_orm),
            "claim_vs_orm": round(t_orm / t_claim, 1),
        }
    finally:
        cleanup()
