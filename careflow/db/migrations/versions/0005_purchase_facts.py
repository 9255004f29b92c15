"""purchase facts: each customer's purchase history summed up, kept current by triggers

- ``purchase_facts``: one row per customer with orders (first and last
  purchase day, distinct purchase days, orders, the median gap between
  purchase days, the replenishment interval of the last purchase), so a
  segment reads one row per customer instead of aggregating every order.
- ``purchase_facts_dirty``: customers whose facts may be out of date.
  Triggers on ``orders``, ``order_lines`` and ``products`` add a customer
  whenever anything their facts depend on changes, whoever writes it (an
  import, the demo, a person with psql). Segments compute these customers
  from their orders, so a segment is exact even before the facts catch up;
  ``careflow.purchase_facts.refresh`` brings them up to date.

Every customer who already has orders starts dirty: the first refresh (the
next import, run or ``careflow db upgrade``) fills the table.

SQLite rebuilds a table for most ALTERs (``batch_alter_table``), which
drops its triggers: a later migration that alters orders, order_lines or
products must create these triggers again (``create_triggers`` below).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

#: the customers a changed row concerns: SQLite sees the row (NEW/OLD), PostgreSQL a table
#: of every changed row (a transition table)
_SQLITE_SOURCES = {
    "orders": "SELECT {row}.customer_id",
    "order_lines": "SELECT o.customer_id FROM orders o WHERE o.id = {row}.order_id",
    "products": (
        "SELECT DISTINCT o.customer_id FROM order_lines l JOIN orders o ON o.id = l.order_id "
        "WHERE l.sku = {row}.sku"
    ),
}
_POSTGRESQL_SOURCES = {
    "orders": "SELECT customer_id FROM {rows}",
    "order_lines": "SELECT o.customer_id FROM {rows} r JOIN orders o ON o.id = r.order_id",
    "products": (
        "SELECT o.customer_id FROM {rows} r JOIN order_lines l ON l.sku = r.sku "
        "JOIN orders o ON o.id = l.order_id"
    ),
}
TABLES = tuple(_SQLITE_SOURCES)


def create_triggers() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _postgresql_triggers()
    else:
        _sqlite_triggers()


def _sqlite_triggers() -> None:
    for table, source in _SQLITE_SOURCES.items():
        for event, rows in (("INSERT", ["NEW"]), ("UPDATE", ["OLD", "NEW"]), ("DELETE", ["OLD"])):
            body = " ".join(
                f"INSERT OR IGNORE INTO purchase_facts_dirty (customer_id) {source.format(row=r)};"
                for r in rows
            )
            op.execute(
                f"CREATE TRIGGER purchase_facts_{table}_{event.lower()} AFTER {event} ON {table} "
                f"FOR EACH ROW BEGIN {body} END"
            )


def _postgresql_triggers() -> None:
    # Statement-level triggers with transition tables: a COPY of 100,000 orders marks its
    # customers in one INSERT, not 100,000. ON CONFLICT ... DO UPDATE (not DO NOTHING)
    # locks an already dirty row, so a refresh that claims it waits for this transaction.
    mark = (
        "INSERT INTO purchase_facts_dirty (customer_id) SELECT DISTINCT customer_id FROM ({q}) "
        "AS changed WHERE customer_id IS NOT NULL ON CONFLICT (customer_id) DO UPDATE SET "
        "marked_at = EXCLUDED.marked_at;"
    )
    for table, source in _POSTGRESQL_SOURCES.items():
        new, old = source.format(rows="new_rows"), source.format(rows="old_rows")
        op.execute(
            f"""
            CREATE FUNCTION purchase_facts_mark_{table}() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
              IF TG_OP IN ('INSERT', 'UPDATE') THEN {mark.format(q=new)} END IF;
              IF TG_OP IN ('UPDATE', 'DELETE') THEN {mark.format(q=old)} END IF;
              RETURN NULL;
            END $$
            """
        )
        for event, refs in (
            ("INSERT", "NEW TABLE AS new_rows"),
            ("UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
            ("DELETE", "OLD TABLE AS old_rows"),
        ):
            op.execute(
                f"CREATE TRIGGER purchase_facts_{table}_{event.lower()} AFTER {event} ON {table} "
                f"REFERENCING {refs} FOR EACH STATEMENT "
                f"EXECUTE FUNCTION purchase_facts_mark_{table}()"
            )
    # TRUNCATE has no transition table: the facts of every customer are suspect
    op.execute(
        """
        CREATE FUNCTION purchase_facts_mark_all() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          INSERT INTO purchase_facts_dirty (customer_id) SELECT customer_id FROM purchase_facts
          ON CONFLICT (customer_id) DO UPDATE SET marked_at = EXCLUDED.marked_at;
          RETURN NULL;
        END $$
        """
    )
    for table in TABLES:
        op.execute(
            f"CREATE TRIGGER purchase_facts_{table}_truncate AFTER TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION purchase_facts_mark_all()"
        )


def drop_triggers() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for table in TABLES:
        for event in ("insert", "update", "delete") + (("truncate",) if postgresql else ()):
            on = f" ON {table}" if postgresql else ""
            op.execute(f"DROP TRIGGER IF EXISTS purchase_facts_{table}_{event}{on}")
        if postgresql:
            op.execute(f"DROP FUNCTION IF EXISTS purchase_facts_mark_{table}()")
    if postgresql:
        op.execute("DROP FUNCTION IF EXISTS purchase_facts_mark_all()")


def upgrade() -> None:
    op.create_table(
        "purchase_facts",
        sa.Column("customer_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  nullable=False),
        sa.Column("first_day", sa.Integer(), nullable=False),
        sa.Column("last_day", sa.Integer(), nullable=False),
        sa.Column("purchase_days", sa.Integer(), nullable=False),
        sa.Column("orders", sa.Integer(), nullable=False),
        sa.Column("median_gap", sa.Float(), nullable=True),
        sa.Column("product_days", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"],
            name=op.f("fk_purchase_facts_customer_id_customers"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("customer_id", name=op.f("pk_purchase_facts")),
    )
    op.create_index("ix_purchase_facts_last_day", "purchase_facts", ["last_day"])
    op.create_table(
        "purchase_facts_dirty",
        sa.Column("customer_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  nullable=False),
        sa.Column("marked_at", sa.DateTime(), server_default=sa.func.current_timestamp(),
                  nullable=True),
        sa.PrimaryKeyConstraint("customer_id", name=op.f("pk_purchase_facts_dirty")),
    )
    create_triggers()
    op.execute("INSERT INTO purchase_facts_dirty (customer_id) SELECT DISTINCT customer_id FROM orders")


def downgrade() -> None:
    drop_triggers()
    op.drop_table("purchase_facts_dirty")
    op.drop_index("ix_purchase_facts_last_day", table_name="purchase_facts")
    op.drop_table("purchase_facts")
