"""contact policy: consent by category, deferred messages, cap counting

- ``consents`` gains ``category`` (part of the key): ``all`` for a decision
  about the whole channel, which every existing row is, or a campaign
  category (care, marketing, transactional).
- ``contact_history`` gains ``category`` (frequency caps count messages by
  it), ``not_before`` (a deferred message is due then) and ``selected_at``
  (the instant the run that selected the customer ran as of: the follow-up
  flow selects again at it), with indexes for finding due messages and the
  other customers of a campaign at one address.

Existing ledger rows get no category: caps count only messages sent from
this version on, which errs towards sending one more, never towards
silently dropping a message.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("consents", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("category", sa.String(length=16), nullable=False, server_default="all")
        )
        batch_op.drop_constraint("pk_consents", type_="primary")
        batch_op.create_primary_key("pk_consents", ["customer_id", "channel", "category"])
    with op.batch_alter_table("contact_history", schema=None) as batch_op:
        batch_op.add_column(sa.Column("category", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("not_before", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("selected_at", sa.DateTime(), nullable=True))
        batch_op.create_index("ix_contact_history_due", ["state", "not_before"], unique=False)
        batch_op.create_index("ix_contact_history_address", ["campaign", "recipient"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("contact_history", schema=None) as batch_op:
        batch_op.drop_index("ix_contact_history_address")
        batch_op.drop_index("ix_contact_history_due")
        batch_op.drop_column("selected_at")
        batch_op.drop_column("not_before")
        batch_op.drop_column("category")
    # category decisions have no place in a per-channel table: keep the channel-wide ones
    op.execute("DELETE FROM consents WHERE category <> 'all'")
    with op.batch_alter_table("consents", schema=None) as batch_op:
        batch_op.drop_constraint("pk_consents", type_="primary")
        batch_op.create_primary_key("pk_consents", ["customer_id", "channel"])
        batch_op.drop_column("category")
