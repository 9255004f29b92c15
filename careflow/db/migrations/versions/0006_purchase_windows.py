"""purchase windows: each buyer's purchases in a trailing window, kept for the pyramid

- ``purchase_window_state``: one row per kept window (its length in days,
  its currency, the as-of day its rows are exact for, when a run last used it);
- ``purchase_windows``: one row per kept window and buyer (money, currency,
  distinct purchase days and last purchase day in the window, and the tie
  key that orders equal values), with an index per pyramid measure so the
  buyer at a rank is an index walk.

Nothing is kept until a run asks for a window (careflow/purchase_windows.py).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_MEASURES = {"money": "monetary_minor", "frequency": "frequency", "recency": "last_day"}


def upgrade() -> None:
    op.create_table(
        "purchase_window_state",
        sa.Column("window_key", sa.String(16), nullable=False),
        sa.Column("window_days", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=True),
        sa.Column("as_of_day", sa.Integer(), nullable=True),
        sa.Column("used_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("window_key", name=op.f("pk_purchase_window_state")),
    )
    op.create_table(
        "purchase_windows",
        sa.Column("window_key", sa.String(16), nullable=False),
        sa.Column("customer_id", _ID, nullable=False),
        sa.Column("monetary_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=True),
        sa.Column("frequency", sa.Integer(), nullable=False),
        sa.Column("last_day", sa.Integer(), nullable=False),
        sa.Column("tie_key", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["window_key"], ["purchase_window_state.window_key"],
            name=op.f("fk_purchase_windows_window_key_purchase_window_state"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"],
            name=op.f("fk_purchase_windows_customer_id_customers"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("window_key", "customer_id", name=op.f("pk_purchase_windows")),
    )
    for name, column in _MEASURES.items():
        op.create_index(
            f"ix_purchase_windows_{name}",
            "purchase_windows",
            ["window_key", sa.desc(sa.column(column)), "tie_key", "customer_id"],
        )


def downgrade() -> None:
    for name in _MEASURES:
        op.drop_index(f"ix_purchase_windows_{name}", table_name="purchase_windows")
    op.drop_table("purchase_windows")
    op.drop_table("purchase_window_state")
