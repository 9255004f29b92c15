"""responses: idempotent events, delivery state, suppressions

- ``contact_events`` gains ``provider``, ``event_id`` (unique together: the
  same provider event is recorded once), ``channel``, ``detail`` and
  ``received_at``; ``customer_id`` may be empty for an event whose message
  is not (yet) known.
- ``contact_history`` gains the provider's latest delivery state and its
  rank (a late "sent" never overwrites "delivered").
- ``suppressions``: addresses that must receive nothing.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("contact_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("provider", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("event_id", sa.String(length=160), nullable=True))
        batch_op.add_column(sa.Column("channel", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("detail", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("received_at", sa.DateTime(), nullable=True))
        batch_op.alter_column(
            "customer_id",
            existing_type=sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=True,
        )
        batch_op.create_unique_constraint(
            "uq_contact_events_provider_event", ["provider", "event_id"]
        )
        # orphan events are matched to their send by provider id
        batch_op.create_index("ix_contact_events_provider_id", ["provider_id"], unique=False)
    with op.batch_alter_table("contact_history", schema=None) as batch_op:
        batch_op.add_column(sa.Column("delivery_state", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("delivery_rank", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("delivery_updated_at", sa.DateTime(), nullable=True))
    op.create_table(
        "suppressions",
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("address", sa.String(length=254), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("channel", "address", name=op.f("pk_suppressions")),
    )


def downgrade() -> None:
    op.drop_table("suppressions")
    with op.batch_alter_table("contact_history", schema=None) as batch_op:
        batch_op.drop_column("delivery_updated_at")
        batch_op.drop_column("delivery_rank")
        batch_op.drop_column("delivery_state")
    with op.batch_alter_table("contact_events", schema=None) as batch_op:
        batch_op.drop_index("ix_contact_events_provider_id")
        batch_op.drop_constraint("uq_contact_events_provider_event", type_="unique")
        batch_op.drop_column("received_at")
        batch_op.drop_column("detail")
        batch_op.drop_column("channel")
        batch_op.drop_column("event_id")
        batch_op.drop_column("provider")
