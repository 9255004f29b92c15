"""send time: the send-time optimisation's arm per message, and each customer's switch

A campaign that optimises send times (campaign.yaml ``policy: {send_time:
{optimise: true}}``) writes on each message's ledger row whether it went at the
customer's best hour or, as the comparison group, at the campaign's own time
(``contact_history.send_time_arm``). ``customers.personal_send_time`` false turns
it off for that customer (careflow/policy/send_time.py).

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("contact_history") as batch:
        batch.add_column(sa.Column("send_time_arm", sa.String(8), nullable=True))
    with op.batch_alter_table("customers") as batch:
        batch.add_column(sa.Column("personal_send_time", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("customers") as batch:
        batch.drop_column("personal_send_time")
    with op.batch_alter_table("contact_history") as batch:
        batch.drop_column("send_time_arm")
