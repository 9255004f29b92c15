"""dry run holds: what a dry run would take, kept while it runs

A dry run writes nothing to the ledger, yet it must count what its earlier
batches would take as a real run counts its reserved rows: an address (one
message per address per occasion) and a frequency-cap slot. It kept them in
the memory of the flow's process, so its batches could not run on Dask
workers. ``dry_run_holds`` keeps them per run, for batches in any process;
the run drops its rows when it ends (careflow/ledger/dry_run.py).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dry_run_holds",
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.BigInteger(), nullable=False),
        sa.Column("occasion", sa.String(64), nullable=False),
        sa.Column("campaign", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("recipient", sa.String(254), nullable=False),
        sa.Column("category", sa.String(16), nullable=True),
        sa.Column("decided_at", sa.DateTime(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint(
            "run_id", "customer_id", "occasion", name=op.f("pk_dry_run_holds")
        ),
    )
    op.create_index("ix_dry_run_holds_address", "dry_run_holds", ["run_id", "recipient"])


def downgrade() -> None:
    op.drop_index("ix_dry_run_holds_address", table_name="dry_run_holds")
    op.drop_table("dry_run_holds")
