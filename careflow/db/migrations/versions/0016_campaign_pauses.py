"""campaign pauses: a campaign stops itself when its domain's spam-report rate is too high

Gmail and Yahoo reject bulk mail from a domain whose users report it as spam
too often (0.3%). careflow counts SendGrid's spam reports against delivered
messages per sending domain and day (careflow/compliance.py); when a day
passes CAREFLOW_SPAM_RATE_LIMIT, the campaigns sending from that domain pause
themselves. ``campaign_pauses`` keeps each pause with the numbers that caused
it and who resumed it; at most one unresumed pause per campaign
(careflow/pauses.py). ``ix_contact_events_kind_day`` counts a day's events of a
kind and provider from the index alone, before every email run, instead of reading
every event ever recorded.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "campaign_pauses",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("campaign", sa.String(64), nullable=False),
        sa.Column("domain", sa.String(254), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("delivered", sa.Integer(), nullable=False),
        sa.Column("spam_reports", sa.Integer(), nullable=False),
        sa.Column("rate_limit", sa.Float(), nullable=False),
        sa.Column("min_delivered", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=True),
        sa.Column("paused_at", sa.DateTime(), nullable=False),
        sa.Column("resumed_at", sa.DateTime(), nullable=True),
        sa.Column("resumed_by", sa.String(64), nullable=True),
        sa.Column("resume_note", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign_pauses")),
    )
    op.create_index(
        "uq_campaign_pauses_active",
        "campaign_pauses",
        ["campaign"],
        unique=True,
        sqlite_where=sa.text("resumed_at IS NULL"),
        postgresql_where=sa.text("resumed_at IS NULL"),
    )
    op.create_index("ix_campaign_pauses_campaign", "campaign_pauses", ["campaign", "day"])
    op.create_index(
        "ix_contact_events_kind_day", "contact_events", ["kind", "occurred_at", "provider"]
    )


def downgrade() -> None:
    op.drop_index("ix_contact_events_kind_day", table_name="contact_events")
    op.drop_index("ix_campaign_pauses_campaign", table_name="campaign_pauses")
    op.drop_index("uq_campaign_pauses_active", table_name="campaign_pauses")
    op.drop_table("campaign_pauses")
