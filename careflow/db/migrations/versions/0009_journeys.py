"""journeys: where each customer stands in each journey, and every step they took

- ``journeys``: one row per journey that has run (its version last advanced,
  and for event entries the last contact event read);
- ``journey_positions``: one row per (journey, customer, entry key): the step,
  its state and when it is next due, and the advancer's lease on it;
- ``journey_steps``: append-only, one row per executed step visit, unique per
  (journey, customer, entry key, step, visit) so each happens once.

careflow/journeys/ reads and writes them; docs/journeys.md explains them.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-14
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "journeys",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("version", sa.String(16), nullable=True),
        sa.Column("entry_source", sa.String(32), nullable=True),
        sa.Column("entry_read_from", sa.BigInteger(), nullable=True),
        sa.Column("entry_seen", sa.BigInteger(), nullable=True),
        sa.Column("entry_seen_at", sa.DateTime(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_journeys")),
    )
    op.create_table(
        "journey_positions",
        sa.Column("id", _ID, nullable=False),
        sa.Column("journey", sa.String(64), nullable=False),
        sa.Column("customer_id", _ID, nullable=False),
        sa.Column("entry_key", sa.String(64), nullable=False),
        sa.Column("entered_on", sa.Date(), nullable=False),
        sa.Column("version", sa.String(16), nullable=False),
        sa.Column("step", sa.String(64), nullable=False),
        sa.Column("visit", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("due_at", sa.DateTime(), nullable=True),
        sa.Column("waiting_for", sa.String(64), nullable=True),
        sa.Column("waiting_since", sa.DateTime(), nullable=True),
        sa.Column("arrived_at", sa.DateTime(), nullable=False),
        sa.Column("entered_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("exit_reason", sa.String(64), nullable=True),
        sa.Column("claimed_by", sa.String(64), nullable=True),
        sa.Column("claim_until", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"],
            name=op.f("fk_journey_positions_customer_id_customers"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_journey_positions")),
        sa.UniqueConstraint(
            "journey", "customer_id", "entry_key", name="uq_journey_positions_key"
        ),
    )
    op.create_index("ix_journey_positions_due", "journey_positions", ["state", "due_at"])
    op.create_index(
        "ix_journey_positions_step", "journey_positions", ["journey", "step", "state"]
    )
    op.create_index(
        "ix_journey_positions_customer", "journey_positions", ["customer_id", "entered_at"]
    )
    op.create_table(
        "journey_steps",
        sa.Column("id", _ID, nullable=False),
        sa.Column("journey", sa.String(64), nullable=False),
        sa.Column("customer_id", _ID, nullable=False),
        sa.Column("entry_key", sa.String(64), nullable=False),
        sa.Column("step", sa.String(64), nullable=False),
        sa.Column("visit", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(16), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(64), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("next_step", sa.String(64), nullable=True),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"],
            name=op.f("fk_journey_steps_customer_id_customers"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_journey_steps")),
        sa.UniqueConstraint(
            "journey", "customer_id", "entry_key", "step", "visit",
            name="uq_journey_steps_visit",
        ),
    )
    op.create_index("ix_journey_steps_customer", "journey_steps", ["customer_id", "at"])
    op.create_index("ix_journey_steps_journey", "journey_steps", ["journey", "step", "outcome"])


def downgrade() -> None:
    op.drop_index("ix_journey_steps_journey", table_name="journey_steps")
    op.drop_index("ix_journey_steps_customer", table_name="journey_steps")
    op.drop_table("journey_steps")
    op.drop_index("ix_journey_positions_customer", table_name="journey_positions")
    op.drop_index("ix_journey_positions_step", table_name="journey_positions")
    op.drop_index("ix_journey_positions_due", table_name="journey_positions")
    op.drop_table("journey_positions")
    op.drop_table("journeys")
