"""variants: which variant of an experiment each message was

A campaign with an experiment (campaign.yaml ``experiment:``) sends each
customer one of its variants. The variant is written on the message's
ledger row the first time it is rendered and never changed, so a retry, a
deferral or a re-run renders the same one, whatever the campaign file says
by then (careflow/variants.py).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("contact_history") as batch:
        batch.add_column(sa.Column("variant", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("contact_history") as batch:
        batch.drop_column("variant")
