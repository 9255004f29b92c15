"""birthday calendar: the calendar a customer keeps their birthday on

Customers whose locale is zh were greeted on their lunar birthday, and
nothing let a shop say otherwise for one customer. ``birthday_calendar``
holds ``solar`` or ``lunar`` when the shop knows it (``careflow import
customers``, column ``birthday_calendar``); empty, the locale decides as
before (careflow/birthday_calendar.py). No row changes.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("customers", sa.Column("birthday_calendar", sa.String(8), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("customers") as batch:
        batch.drop_column("birthday_calendar")
