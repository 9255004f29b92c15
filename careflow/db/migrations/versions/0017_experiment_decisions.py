"""experiment_decisions: the winner of a campaign's experiment, decided once

A campaign's experiment (campaign.yaml ``experiment:``) is decided by its
pre-registered rule; the decision is kept as a fact, with the counts and the
interval it was taken on, once per campaign and never changed. Later
occasions send the winner (careflow/experiment_decisions.py).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "experiment_decisions",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
        ),
        sa.Column("campaign", sa.String(64), nullable=False, unique=True),
        sa.Column("winner", sa.String(32), nullable=False),
        sa.Column("control", sa.String(32), nullable=False),
        sa.Column("rule", sa.Text(), nullable=False),
        sa.Column("counts", sa.Text(), nullable=False),
        sa.Column("points", sa.Float(), nullable=False),
        sa.Column("lower", sa.Float(), nullable=False),
        sa.Column("upper", sa.Float(), nullable=False),
        sa.Column("decided_by", sa.String(128), nullable=False),
        sa.Column("decided_at", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("experiment_decisions")
