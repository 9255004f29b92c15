"""contact history: the one channel a message may go by (``only_channel``)

A run limited to one channel (``careflow run --channel sms``) keeps that
limit on the rows it claims, so a message it defers is sent later on that
channel and no other: the follow-up flow groups due messages by it
(careflow/flows/deferred.py). Empty: the campaign's own channel order, decided again.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("contact_history") as batch_op:
        batch_op.add_column(sa.Column("only_channel", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("contact_history") as batch_op:
        batch_op.drop_column("only_channel")
