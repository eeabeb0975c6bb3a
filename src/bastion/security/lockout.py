"""Account lockout without lockout-DoS (work in progress: the model is final)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey
from sqlalchemy.orm import Mapped, mapped_column

from bastion.core.clock import utcnow
from bastion.core.db import Base


class AccountLockout(Base):
    """The failure streak of one account since its last successful sign-in."""

    __tablename__ = "account_lockouts"

    # A string reference: security/ never imports the accounts feature.
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    failures: Mapped[int] = mapped_column(default=0)
    locked_at: Mapped[datetime | None]
    locked_until: Mapped[datetime | None]
    disabled_at: Mapped[datetime | None]
    notified_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
