"""audit events: ip_key, the address or IPv6 /64 the alert rules group by

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23 09:00:00.000000

The rate limits count an IPv6 client by its /64 (bastion.core.addresses); the alert rules
counted by the full address, so a client rotating through its /64 never reached the
credential-stuffing threshold. Existing rows are filled in: IPv4 rows in one statement,
IPv6 rows once per distinct address.
"""

import sqlalchemy as sa
from alembic import op

from bastion.core.addresses import address_key

# revision identifiers, used by Alembic.
revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_events = sa.table("audit_events", sa.column("ip", sa.String), sa.column("ip_key", sa.String))


def upgrade() -> None:
    op.add_column("audit_events", sa.Column("ip_key", sa.String(length=64), nullable=True))
    op.create_index(op.f("ix_audit_events_ip_key"), "audit_events", ["ip_key"], unique=False)
    bind = op.get_bind()
    has_colon = _events.c.ip.contains(":", autoescape=True)
    bind.execute(
        sa.update(_events)
        .where(_events.c.ip.is_not(None), sa.not_(has_colon))
        .values(ip_key=_events.c.ip)
    )
    addresses = bind.scalars(sa.select(_events.c.ip).where(has_colon).distinct()).all()
    for address in addresses:
        bind.execute(
            sa.update(_events).where(_events.c.ip == address).values(ip_key=address_key(address))
        )


def downgrade() -> None:
    op.drop_index(op.f("ix_audit_events_ip_key"), table_name="audit_events")
    op.drop_column("audit_events", "ip_key")
