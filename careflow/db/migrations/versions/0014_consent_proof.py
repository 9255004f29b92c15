"""consent proof: every change of consent or suppression, kept append-only

``consent_proof`` holds one row per change of a customer's consent, an
address's suppression or a customer's cadence (the preference centre's pause and
"fewer"), from whichever source made it (a STOP reply, an RFC
8058 one-click POST, the unsubscribe page, a bounce, a spam report, a
provider's opt-out code, an import, an operator): what changed, what the
customer was shown or sent, the locale, when, and the request's evidence
(careflow/consent_proof.py writes and reads it).

Append-only for real: triggers on both databases refuse any UPDATE of a row,
and a DELETE of a row recorded less than LEGAL_MINIMUM_DAYS ago (PostgreSQL also
refuses TRUNCATE). Pruning older rows (``careflow consent prune``) is the only
delete the database lets through. ``customer_id`` has no foreign key on purpose:
a cascade from a deleted customer would be a delete of young proof.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

#: careflow.consent_proof.LEGAL_MINIMUM_DAYS, written out: a migration keeps what it
#: created even when the code changes later (tests/test_consent_proof.py checks they agree)
LEGAL_MINIMUM_DAYS = 180

_NO_UPDATE = "consent proof is append-only: a record is never updated"
_TOO_YOUNG = f"consent proof is kept at least {LEGAL_MINIMUM_DAYS} days: this record is younger"


def upgrade() -> None:
    op.create_table(
        "consent_proof",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("customer_id", sa.BigInteger(), nullable=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("category", sa.String(16), nullable=False),
        sa.Column("address", sa.String(254), nullable=True),
        sa.Column("consent_before", sa.String(16), nullable=True),
        sa.Column("consent_after", sa.String(16), nullable=True),
        sa.Column("suppression_before", sa.String(32), nullable=True),
        sa.Column("suppression_after", sa.String(32), nullable=True),
        sa.Column("cadence_before", sa.String(64), nullable=True),
        sa.Column("cadence_after", sa.String(64), nullable=True),
        sa.Column("shown", sa.Text(), nullable=True),
        sa.Column("locale", sa.String(16), nullable=True),
        sa.Column("occurred_at", sa.DateTime(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(), nullable=False),
        sa.Column("evidence_key", sa.String(240), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consent_proof")),
        sa.UniqueConstraint("evidence_key", name="uq_consent_proof_evidence"),
    )
    op.create_index("ix_consent_proof_customer", "consent_proof", ["customer_id", "occurred_at"])
    op.create_index("ix_consent_proof_address", "consent_proof", ["channel", "address"])
    op.create_index("ix_consent_proof_recorded", "consent_proof", ["recorded_at"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"""
            CREATE FUNCTION consent_proof_guard() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF TG_OP = 'UPDATE' THEN
                    RAISE EXCEPTION '{_NO_UPDATE}';
                ELSIF TG_OP = 'TRUNCATE' THEN
                    RAISE EXCEPTION 'consent proof is append-only: never truncated';
                ELSIF OLD.recorded_at > timezone('utc', now())
                        - interval '{LEGAL_MINIMUM_DAYS} days' THEN
                    RAISE EXCEPTION '{_TOO_YOUNG}';
                END IF;
                RETURN OLD;
            END $$
            """
        )
        op.execute(
            "CREATE TRIGGER consent_proof_guard BEFORE UPDATE OR DELETE ON consent_proof "
            "FOR EACH ROW EXECUTE FUNCTION consent_proof_guard()"
        )
        op.execute(
            "CREATE TRIGGER consent_proof_no_truncate BEFORE TRUNCATE ON consent_proof "
            "FOR EACH STATEMENT EXECUTE FUNCTION consent_proof_guard()"
        )
    else:
        op.execute(
            "CREATE TRIGGER consent_proof_no_update BEFORE UPDATE ON consent_proof "
            f"BEGIN SELECT RAISE(ABORT, '{_NO_UPDATE}'); END"
        )
        # SQLite keeps the instants as 'YYYY-MM-DD HH:MM:SS[.ffffff]': compared as text
        op.execute(
            "CREATE TRIGGER consent_proof_keep BEFORE DELETE ON consent_proof "
            f"WHEN OLD.recorded_at > datetime('now', '-{LEGAL_MINIMUM_DAYS} days') "
            f"BEGIN SELECT RAISE(ABORT, '{_TOO_YOUNG}'); END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS consent_proof_no_truncate ON consent_proof")
        op.execute("DROP TRIGGER IF EXISTS consent_proof_guard ON consent_proof")
        op.execute("DROP FUNCTION IF EXISTS consent_proof_guard()")
    else:
        op.execute("DROP TRIGGER IF EXISTS consent_proof_keep")
        op.execute("DROP TRIGGER IF EXISTS consent_proof_no_update")
    op.drop_index("ix_consent_proof_recorded", table_name="consent_proof")
    op.drop_index("ix_consent_proof_address", table_name="consent_proof")
    op.drop_index("ix_consent_proof_customer", table_name="consent_proof")
    op.drop_table("consent_proof")
