"""The user account."""

from __future__ import annotations

from datetime import datetime

from flask_login import UserMixin
from sqlalchemy import BigInteger, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from bastion.core.clock import utcnow
from bastion.core.db import Base
from bastion.security.permissions import Permission, Role, permissions_for


class User(UserMixin, Base):  # type: ignore[misc]
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Stored normalised and lower-cased, so uniqueness is case-insensitive on every backend.
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(32), default=Role.USER.value)
    active: Mapped[bool] = mapped_column(default=True)
    confirmed_at: Mapped[datetime | None]
    password_changed_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    @property
    def is_active(self) -> bool:  # Flask-Login refuses inactive users
        return self.active and self.confirmed_at is not None

    @property
    def permissions(self) -> frozenset[Permission]:
        return permissions_for(self.role)

    def can(self, permission: Permission) -> bool:
        return permission in self.permissions


class TotpCredential(Base):
    """A user's confirmed TOTP authenticator; the row exists only while 2FA is on.

    The seed is encrypted with the data key (security/crypto.py), bound to the user id.
    `last_step` is the newest accepted time step: a code is accepted only for a later step,
    so no code works twice (pyotp leaves replay protection to the application).
    `failed_codes` is the streak of wrong codes since the last right one, wherever they were
    entered (accounts/mfa.py `verify_second_factor`); only a right code or an admin's
    "reset 2FA" (which deletes the row) ends it.
    """

    __tablename__ = "totp_credentials"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    secret: Mapped[str] = mapped_column(Text)
    last_step: Mapped[int] = mapped_column(BigInteger)
    failed_codes: Mapped[int] = mapped_column(default=0, server_default="0")
    enabled_at: Mapped[datetime] = mapped_column(default=utcnow)


class RecoveryCode(Base):
    """A single-use recovery code, stored as the SHA-256 of its normalised text.

    Each code carries 125 random bits, so a fast hash is enough (ASVS 6.5.2 allows an
    approved hash for secrets of at least 112 bits); `used_at` marks it spent.
    """

    __tablename__ = "recovery_codes"
    __table_args__ = (UniqueConstraint("user_id", "code_hash"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    used_at: Mapped[datetime | None]
