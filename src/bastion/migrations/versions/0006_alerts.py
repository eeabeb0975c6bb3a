"""suspicious-activity alerts: acknowledgements and an index for the detection queries

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 09:00:00.000000

Hand-written (other model changes were in flight). Alerts themselves are audit events
(`security.alert`); audit rows are insert-only, so an acknowledgement is a row of its own.
See bastion.security.alerts.
"""

import sqlalchemy as sa
from alembic import op

import bastion.core.db

# revision identifiers, used by Alembic.
revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alert_acknowledgements",
        sa.Column("event_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("acknowledged_at", bastion.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("actor_id", sa.Integer(), nullable=True),
        sa.Column("actor_email", sa.String(length=320), nullable=True),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_alert_acknowledgements")),
    )
    op.create_index(
        "ix_audit_events_event_target_created_at",
        "audit_events",
        ["event", "target", "created_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_audit_events_event_target_created_at", table_name="audit_events")
    op.drop_table("alert_acknowledgements")
