"""preferences: each customer's cadence (normal, fewer, paused until a date)

The preference centre (careflow serve, /p/<token>) keeps one row per
customer who has made a choice there: the cadence, the instant a pause ends
(naive UTC), the locale the page was shown in, the id of the token that
made the change (never the token) and when. The per-category and
per-channel choices the page also offers are consents (the ``consents``
table, source ``preference_centre``), not columns here: one concept, one
place. careflow/preferences.py ``apply_change`` is the only writer.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "preferences",
        sa.Column(
            "customer_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            sa.ForeignKey("customers.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("cadence", sa.String(8), nullable=False, server_default="normal"),
        sa.Column("paused_until", sa.DateTime(), nullable=True),
        sa.Column("locale", sa.String(16), nullable=True),
        sa.Column("token_id", sa.String(24), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint(
            "cadence IN ('normal', 'fewer', 'paused')", name=op.f("ck_preferences_cadence")
        ),
        sa.CheckConstraint(
            "(cadence = 'paused') = (paused_until IS NOT NULL)", name=op.f("ck_preferences_pause")
        ),
    )


def downgrade() -> None:
    op.drop_table("preferences")
