"""quiet orders: orders the shop posted too late to act on

The shop posts its orders to ``careflow serve`` (POST /events). An order
that happened longer ago than CAREFLOW_EVENT_MAX_AGE_HOURS, in a post that
is not a backfill, is kept like any order (purchase history, segments) but
must trigger nothing: attribution and journeys pass it by. ``orders.quiet``
says so; imported orders leave it empty.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("orders", sa.Column("quiet", sa.Boolean(), nullable=True))


def downgrade() -> None:
    # ALTER TABLE, not a batch: SQLite's batch copies the table and would drop the
    # purchase-facts triggers on orders (0005); SQLite drops a column itself since 3.35
    op.execute("ALTER TABLE orders DROP COLUMN quiet")
