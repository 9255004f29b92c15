"""money in integer minor units

Order and order-line amounts move from NUMERIC (a binary float on SQLite)
to BigInteger counts of the currency's minor unit, see careflow/money.py:
``orders.amount`` -> ``amount_minor``, ``order_lines.unit_price`` and
``amount`` -> ``unit_price_minor`` and ``amount_minor``. Lines take the
currency of their order.

Existing amounts are converted in SQL, one UPDATE per currency, rounding to
the minor unit (half away from zero, as both databases' ROUND does): on
SQLite 39.99 was stored as 39.98999999999999914735; x 100 and rounded it is
3999 again. Only a currency without a minor unit (JPY, KRW) could lose
something: a fractional yen amount, which no real price has.

Downgrade converts back to NUMERIC(14, 2) / (12, 2); amounts with three
decimals (KWD, BHD) lose the third there.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

from careflow.money import exponent

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _currencies() -> list[str]:
    rows = op.get_bind().execute(sa.text("SELECT DISTINCT currency FROM orders"))
    return [r[0] for r in rows]


def _check_foreign_keys() -> None:
    """SQLite rebuilds tables here; make sure every line still has its order."""
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        broken = bind.execute(sa.text("PRAGMA foreign_key_check")).all()
        if broken:
            raise RuntimeError(f"foreign keys broken after the money migration: {broken[:5]}")


def upgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("amount_minor", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("order_lines", schema=None) as batch_op:
        batch_op.add_column(sa.Column("unit_price_minor", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("amount_minor", sa.BigInteger(), nullable=True))

    for currency in _currencies():
        factor = 10 ** exponent(currency)
        op.execute(
            sa.text(
                "UPDATE orders SET amount_minor = CAST(ROUND(amount * :f) AS BIGINT) "
                "WHERE currency = :c"
            ).bindparams(f=factor, c=currency)
        )
        op.execute(
            sa.text(
                "UPDATE order_lines SET "
                "unit_price_minor = CAST(ROUND(unit_price * :f) AS BIGINT), "
                "amount_minor = CAST(ROUND(amount * :f) AS BIGINT) "
                "WHERE order_id IN (SELECT id FROM orders WHERE currency = :c)"
            ).bindparams(f=factor, c=currency)
        )

    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.alter_column("amount_minor", existing_type=sa.BigInteger(), nullable=False)
        batch_op.drop_column("amount")
    with op.batch_alter_table("order_lines", schema=None) as batch_op:
        batch_op.alter_column("unit_price_minor", existing_type=sa.BigInteger(), nullable=False)
        batch_op.alter_column("amount_minor", existing_type=sa.BigInteger(), nullable=False)
        batch_op.drop_column("amount")
        batch_op.drop_column("unit_price")
    _check_foreign_keys()


def downgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("amount", sa.Numeric(precision=14, scale=2), nullable=True))
    with op.batch_alter_table("order_lines", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("unit_price", sa.Numeric(precision=12, scale=2), nullable=True)
        )
        batch_op.add_column(sa.Column("amount", sa.Numeric(precision=14, scale=2), nullable=True))

    # SQLite divides integers as integers (3999 / 100 is 39) unless one is REAL.
    real = "REAL" if op.get_bind().dialect.name == "sqlite" else "NUMERIC"
    for currency in _currencies():
        factor = 10 ** exponent(currency)
        op.execute(
            sa.text(
                f"UPDATE orders SET amount = CAST(amount_minor AS {real}) / :f WHERE currency = :c"
            ).bindparams(f=factor, c=currency)
        )
        op.execute(
            sa.text(
                "UPDATE order_lines SET "
                f"unit_price = CAST(unit_price_minor AS {real}) / :f, "
                f"amount = CAST(amount_minor AS {real}) / :f "
                "WHERE order_id IN (SELECT id FROM orders WHERE currency = :c)"
            ).bindparams(f=factor, c=currency)
        )

    with op.batch_alter_table("order_lines", schema=None) as batch_op:
        batch_op.alter_column("amount", existing_type=sa.Numeric(14, 2), nullable=False)
        batch_op.alter_column("unit_price", existing_type=sa.Numeric(12, 2), nullable=False)
        batch_op.drop_column("amount_minor")
        batch_op.drop_column("unit_price_minor")
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.alter_column("amount", existing_type=sa.Numeric(14, 2), nullable=False)
        batch_op.drop_column("amount_minor")
    _check_foreign_keys()
