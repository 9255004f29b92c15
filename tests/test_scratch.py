"""careflow/db/scratch.py: a scratch copy behaves as the database it copies (keys,
unique constraints by name, ids, the purchase facts' triggers) and goes away, leaving the
original as it was. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

from sqlalchemy import func, insert, inspect, select, text

from careflow import db
from careflow.db.models import Order, PurchaseFactsDirty
from careflow.db.scratch import scratch_copy
from tests.factories import add_customer


def _order(cid: int) -> dict:
    return {"customer_id": cid, "ordered_at": datetime(2026, 6, 1, 10), "currency": "GBP",
            "ordered_on": date(2026, 6, 1), "amount_minor": 1000}  # fmt: skip


def test_the_copy_keeps_the_triggers_ids_and_keys_and_leaves_the_original(engine, db_url):
    add_customer(engine, 1)
    with engine.begin() as conn:
        conn.execute(insert(Order.__table__), [_order(1)])
        conn.execute(PurchaseFactsDirty.__table__.delete())
        first = conn.execute(select(func.max(Order.id))).scalar_one()
    with scratch_copy(db_url) as url:
        copy = db.engine_for(url)
        with copy.begin() as conn:
            new = conn.execute(insert(Order.__table__).returning(Order.id), [_order(1)])
            assert new.scalar_one() == first + 1  # ids go on from the copied rows
            # an order marks its customer's purchase facts for a refresh, in the copy
            dirty = conn.execute(select(PurchaseFactsDirty.customer_id)).scalars().all()
            assert dirty == [1]
        names = {u["name"] for u in inspect(copy).get_unique_constraints("contact_history")}
        assert "uq_contact_key" in names  # ON CONFLICT ON CONSTRAINT names it
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Order)).scalar_one() == 1
        assert conn.execute(select(func.count()).select_from(PurchaseFactsDirty)).scalar_one() == 0
        if conn.dialect.name == "postgresql":
            left = conn.execute(
                text("SELECT count(*) FROM pg_namespace WHERE nspname LIKE :p"),
                {"p": "careflow_sim_%"},
            ).scalar_one()
            assert left == 0
        else:
            folder = Path(db_url.removeprefix("sqlite:///")).parent
            assert not list(folder.glob("careflow-sim-*"))
    with engine.begin() as conn:  # and the original's ids were not drawn by the copy
        new = conn.execute(insert(Order.__table__).returning(Order.id), [_order(1)])
        assert new.scalar_one() == first + 1


def test_a_sqlite_copy_skips_the_fsyncs_and_the_original_keeps_them(engine, db_url):
    """The copy is thrown away: its connections run with synchronous=OFF (0), the
    original's as careflow sets them (NORMAL, 1)."""
    if not db_url.startswith("sqlite"):
        return
    with scratch_copy(db_url) as url, db.engine_for(url).connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 0
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1
