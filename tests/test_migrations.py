"""Migrations convert the data already in a database, on SQLite and PostgreSQL."""

from __future__ import annotations

from decimal import Decimal

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Numeric, bindparam, text
from sqlalchemy.exc import IntegrityError

from careflow import db
from careflow.db.models import Base

ORDERS = [  # id, currency, amount as NUMERIC stored it
    (1, "GBP", "39.99"),
    (2, "JPY", "1200"),
    (3, "KWD", "1.25"),
    (4, "GBP", "8911407.90"),
]
LINES = [  # id, order id, quantity, unit price, amount
    (1, 1, 1, "10.00", "10.00"),
    (2, 1, 1, "29.99", "29.99"),
    (3, 2, 3, "400", "1200"),
    (4, 3, 5, "0.25", "1.25"),
]
#: how revision 0001's models bound amounts (a float on SQLite)
NUMERIC = Numeric(14, 2)


def _seed_0001(engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO customers (id, external_ref) VALUES (1, 'C1')"))
        conn.execute(text("INSERT INTO products (sku, name) VALUES ('A', 'A')"))
        for oid, currency, amount in ORDERS:
            conn.execute(
                text(
                    "INSERT INTO orders (id, customer_id, ordered_at, ordered_on, currency, amount)"
                    " VALUES (:id, 1, '2026-01-02 10:00:00', '2026-01-02', :c, :a)"
                ).bindparams(bindparam("a", type_=NUMERIC)),
                {"id": oid, "c": currency, "a": Decimal(amount)},
            )
        for lid, oid, qty, unit, amount in LINES:
            conn.execute(
                text(
                    "INSERT INTO order_lines (id, order_id, sku, quantity, unit_price, amount) "
                    "VALUES (:id, :o, 'A', :q, :u, :a)"
                ).bindparams(bindparam("u", type_=NUMERIC), bindparam("a", type_=NUMERIC)),
                {"id": lid, "o": oid, "q": qty, "u": Decimal(unit), "a": Decimal(amount)},
            )


def test_money_migration_converts_amounts_to_minor_units_and_back(db_url):
    cfg = db.alembic_config(db_url)
    engine = db.engine_for(db_url)
    command.downgrade(cfg, "0001")
    _seed_0001(engine)

    command.upgrade(cfg, "head")

    with engine.connect() as conn:
        orders = dict(conn.execute(text("SELECT id, amount_minor FROM orders")).all())
        lines = {
            r.id: (r.unit_price_minor, r.amount_minor)
            for r in conn.execute(text("SELECT * FROM order_lines"))
        }
        schema_diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    # pence, yen (no minor unit) and fils (three decimals), exactly
    assert orders == {1: 3999, 2: 1200, 3: 1250, 4: 891140790}
    # every line survived the table rebuild (SQLite) with its order's currency
    assert lines == {1: (1000, 1000), 2: (2999, 2999), 3: (400, 1200), 4: (250, 1250)}
    assert schema_diff == []

    command.downgrade(cfg, "0001")
    with engine.connect() as conn:
        back = dict(conn.execute(text("SELECT id, amount FROM orders")).all())
    assert {k: round(Decimal(v), 2) for k, v in back.items()} == {
        oid: Decimal(amount).quantize(Decimal("0.01")) for oid, _, amount in ORDERS
    }
    command.upgrade(cfg, "head")


def test_foreign_keys_are_enforced_again_after_migrating(db_url):
    """SQLite migrations switch foreign keys off to rebuild tables; not for good."""
    engine = db.engine_for(db_url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO products (sku) VALUES ('A')"))
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO order_lines (order_id, sku, quantity, unit_price_minor, amount_minor)"
                " VALUES (999, 'A', 1, 100, 100)"
            )
        )


def test_a_database_behind_this_careflow_is_one_line_before_any_run(db_url):
    """Regression: a database one migration behind (careflow upgraded, `careflow db
    upgrade` not run) passed the schema check, and a run failed in its batches on the
    missing column with a traceback."""
    from click.testing import CliRunner

    from careflow.cli.main import main
    from careflow.errors import ConfigError

    engine = db.engine_for(db_url)
    command.downgrade(db.alembic_config(db_url), "-1")
    with pytest.raises(ConfigError, match=r"this careflow needs \d+: run `careflow db upgrade`"):
        db.ensure_schema(engine)
    out = CliRunner().invoke(main, ["run", "winback", "--dry-run"])
    assert out.exit_code == 2 and "run `careflow db upgrade`" in out.output
    assert "Traceback" not in out.output
    db.upgrade(db_url)
    db.ensure_schema(engine)  # up to date: nothing to say


def test_a_database_a_newer_careflow_migrated_is_named_as_such(db_url):
    from careflow.errors import ConfigError

    engine = db.engine_for(db_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(ConfigError, match="at migration 9999, which this careflow does not have"):
        db.ensure_schema(engine)
