"""account lockout state

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 09:00:00.000000

Hand-written (other model changes were in flight): one row per account that has failed
to sign in since its last success, see bastion.security.lockout.
"""

import sqlalchemy as sa
from alembic import op

import bastion.core.db

# revision identifiers, used by Alembic.
revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "account_lockouts",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("locked_at", bastion.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("locked_until", bastion.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("disabled_at", bastion.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("notified_at", bastion.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", bastion.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_account_lockouts_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_account_lockouts")),
    )


def downgrade() -> None:
    op.drop_table("account_lockouts")
