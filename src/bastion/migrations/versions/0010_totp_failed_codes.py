"""totp credentials: failed_codes, the streak of wrong second-factor codes

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-23 10:00:00.000000

Wrong codes at the password reset form were never counted, and the unlock link restarted
the account's whole streak, so a mailbox holder could guess TOTP codes without bound
(known gap 40). The streak lives on the authenticator itself; see
bastion.accounts.mfa `verify_second_factor`. Existing credentials start at 0.
"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("totp_credentials") as batch:
        batch.add_column(
            sa.Column("failed_codes", sa.Integer(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("totp_credentials") as batch:
        batch.drop_column("failed_codes")
