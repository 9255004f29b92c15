"""contact history: the address index starts with the recipient

``ix_contact_history_address`` was (campaign, recipient). It served "who else
has this campaign at this address" as well with the columns the other way
round, but as the only index besides ``uq_contact_key`` to start with the
campaign, it was the one a PostgreSQL planner with statistics from before a
run picked for a read of a batch's ledger keys by campaign and customer
range: it believed the campaign had no rows and walked all of them. Now
only the unique key starts with the campaign (careflow/ledger/plans.py, keys_query).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("contact_history") as batch_op:
        batch_op.drop_index("ix_contact_history_address")
        batch_op.create_index("ix_contact_history_address", ["recipient", "campaign"])


def downgrade() -> None:
    with op.batch_alter_table("contact_history") as batch_op:
        batch_op.drop_index("ix_contact_history_address")
        batch_op.create_index("ix_contact_history_address", ["campaign", "recipient"])
