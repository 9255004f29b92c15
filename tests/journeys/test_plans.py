"""Advancing reads what it needs through the rows it is about, however big the journey and
the shop: waking finds each waiting customer's events through that customer, a claim reads
its rows through its batch's id range (bench/README.md, journeys at 1M customers)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from sqlalchemy import event, insert, text

from careflow.db.models import ContactEvent, Customer, JourneyPosition
from careflow.journeys.advance import claim
from careflow.journeys.events import wake_waiting

NOW = datetime(2026, 6, 10, 12)


def _explain_rows(conn, statement, parameters, table: str) -> int:
    plan = conn.exec_driver_sql(f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}", parameters).scalar()
    return _rows_read((json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"], table)


def _rows_read(node, table: str) -> int:
    """Rows of ``table`` an EXPLAIN ANALYZE plan (JSON) read, over all its loops."""
    own = 0
    if node.get("Relation Name") == table:
        own = (node["Actual Rows"] + node.get("Rows Removed by Filter", 0)) * node["Actual Loops"]
    return own + sum(_rows_read(child, table) for child in node.get("Plans", []))


def test_waking_reads_each_waiting_customers_own_events(engine):
    """Regression: SQLite found a waiting position's replies through the index on the
    events' kind and time, so it read every reply since the wait began for each waiting
    position: a simulated 90 days of the demo journey on a 100,000-customer shop spent
    29% of its time waking (34 s an advance on a loaded machine), and 2,000 waiting
    customers against 20,000 replies took 45 s against 2.4 s for 40,000 once each
    customer's events were read through the customer."""
    waiting = range(1, 401)
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":  # statistics from before the replies came
            conn.execute(text("ALTER TABLE contact_events SET (autovacuum_enabled = false)"))
        conn.execute(insert(Customer.__table__), [{"id": i} for i in range(1, 2001)])
        conn.execute(insert(JourneyPosition.__table__), [{
            "journey": "nudge", "customer_id": i, "entry_key": "once",
            "entered_on": NOW.date(), "version": "v1", "step": "answer", "visit": 1,
            "state": "waiting", "due_at": NOW + timedelta(days=3),
            "waiting_for": "ordered,replied", "waiting_since": NOW - timedelta(days=1),
            "arrived_at": NOW - timedelta(days=1), "entered_at": NOW - timedelta(days=1),
            "updated_at": NOW,
        } for i in waiting])  # fmt: skip
        if conn.dialect.name == "postgresql":
            conn.execute(text("ANALYZE"))
        conn.execute(insert(ContactEvent.__table__), [{
            "customer_id": 1 + i % 2000, "kind": "replied", "channel": "sms",
            "occurred_at": NOW - timedelta(minutes=i % 1440),
        } for i in range(6000)])  # fmt: skip
    seen = []

    def keep(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().startswith("UPDATE journey_positions"):
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", keep)
    try:
        woken = wake_waiting(engine, "nudge", NOW, "UTC")
    finally:
        event.remove(engine, "before_cursor_execute", keep)
    assert woken == len(waiting)  # each has replies since the wait began
    ((statement, parameters),) = seen
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            plan = conn.exec_driver_sql(
                f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}", parameters
            ).scalar()
            plan = (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]
            # each waiting customer has 3 replies: about that many read per position
            assert _rows_read(plan, "contact_events") <= 10 * len(waiting)
            conn.rollback()
        else:
            lines = [r[-1] for r in conn.exec_driver_sql(
                f"EXPLAIN QUERY PLAN {statement}", parameters
            )]  # fmt: skip
            searched = [line for line in lines if "contact_events" in line]
            assert searched and all("ix_contact_events_customer" in line for line in searched), (
                lines
            )


def test_a_claim_reads_back_its_rows_through_its_range(engine):
    """Regression: after claiming a batch's due positions, a claim read the rows it holds
    by its token and the journey alone, which SQLite served from the unique index's
    journey prefix: every position of the journey, for each claim. With 1M customers in
    a journey and 100,000 due, claiming took 222.8 of an advance's 553 s on SQLite
    (62.9 of 415 on PostgreSQL); through the batch's id range, 25.1 s."""
    with engine.begin() as conn:
        conn.execute(insert(Customer.__table__), [{"id": i} for i in range(1, 3001)])
        conn.execute(insert(JourneyPosition.__table__), [{
            "journey": "nudge", "customer_id": i, "entry_key": "once",
            "entered_on": NOW.date(), "version": "v1", "step": "answer", "visit": 1,
            "state": "waiting", "waiting_for": "time", "arrived_at": NOW, "entered_at": NOW,
            "updated_at": NOW,
            # one in ten due now, the others days ahead
            "due_at": NOW if i % 10 == 0 else NOW + timedelta(days=3),
        } for i in range(1, 3001)])  # fmt: skip
        if conn.dialect.name == "postgresql":
            conn.execute(text("ANALYZE"))
    seen = []

    def keep(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().startswith("SELECT") and "claimed_by" in statement:
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", keep)
    try:
        got = claim(engine, "nudge", (1001, 1200), NOW, "t1", timedelta(minutes=5), 100)
    finally:
        event.remove(engine, "before_cursor_execute", keep)
    assert sorted(p.customer_id for p in got) == list(range(1010, 1201, 10))
    ((statement, parameters),) = seen
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
            # the range holds 200 positions; the journey 3,000
            assert _explain_rows(conn, statement, parameters, "journey_positions") <= 400
            conn.rollback()
        else:
            lines = [r[-1] for r in conn.exec_driver_sql(
                f"EXPLAIN QUERY PLAN {statement}", parameters
            )]  # fmt: skip
            assert any("customer_id>" in line for line in lines), lines
