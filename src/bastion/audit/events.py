"""The closed set of audit event types and who caused an event."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class EventTag(StrEnum):
    LOGIN_SUCCESS = "auth.login.success"
    LOGIN_FAILURE = "auth.login.failure"
    # A "keep me signed in" token restored a session (success), or a validly signed one
    # was no longer stored (failure: revoked, expired, or a rotated copy replayed).
    LOGIN_REMEMBER = "auth.login.remember"
    LOGOUT = "auth.logout"
    REAUTH = "auth.reauth"
    INVITE = "account.invite"
    REGISTER = "account.register"
    CONFIRM = "account.confirm"
    PASSWORD_CHANGE = "account.password.change"  # noqa: S105 - an event name
    USER_CREATED = "account.created"
    ADMIN_SETUP = "admin.setup"
    CSRF_FAILURE = "security.csrf.failure"
    AUTHZ_DENIED = "security.authz.denied"
    RATE_LIMITED = "security.rate_limited"
    # Lockout and device cookies (security/lockout.py, security/devices.py).
    ACCOUNT_LOCKED = "security.account.locked"
    ACCOUNT_UNLOCK = "account.unlock"
    LOGIN_NEW_DEVICE = "auth.login.new_device"
    # Written by `bastion audit prune`: stands in for the rows it removed (bastion.audit.chain).
    AUDIT_CHECKPOINT = "audit.checkpoint"
    ADMIN_ROLE_CHANGE = "admin.user.role"
    ADMIN_USER_DISABLE = "admin.user.disable"
    ADMIN_USER_ENABLE = "admin.user.enable"
    ADMIN_SESSIONS_REVOKE = "admin.user.sessions.revoke"
    ADMIN_SESSION_REVOKE = "admin.session.revoke"
    SESSIONS_REVOKE_ALL = "admin.sessions.revoke_all"  # `bastion sessions revoke-all`
    ADMIN_AUDIT_EXPORT = "admin.audit.export"
    # Recovery, account changes, 2FA and session control (accounts/recovery.py, mfa_views.py,
    # my_sessions.py).
    PASSWORD_RESET_REQUEST = "account.password.reset_request"  # noqa: S105 - an event name
    PASSWORD_RESET = "account.password.reset"  # noqa: S105 - an event name
    EMAIL_CHANGE_REQUEST = "account.email.change_request"
    EMAIL_CHANGE = "account.email.change"
    MFA_ENABLE = "account.mfa.enable"
    MFA_DISABLE = "account.mfa.disable"
    MFA_RECOVERY_CODES = "account.mfa.recovery_codes"
    MFA_VERIFY = "auth.mfa.verify"
    MFA_RECOVERY_USED = "auth.mfa.recovery_used"
    SESSION_REVOKE = "account.session.revoke"
    SESSIONS_REVOKE_OTHERS = "account.sessions.revoke_others"
    # The document vault (documents/service.py).
    DOCUMENT_UPLOAD = "document.upload"
    DOCUMENT_UPLOAD_REFUSED = "document.upload.refused"
    DOCUMENT_DOWNLOAD = "document.download"
    DOCUMENT_SHARE = "document.share"
    DOCUMENT_SHARE_REVOKE = "document.share.revoke"
    DOCUMENT_DELETE = "document.delete"
    DOCUMENT_PURGE = "document.purge"
    # Admin console: lockout, 2FA and password recovery (admin/service.py); suspicious
    # activity alerts and their acknowledgement (security/alerts.py).
    ADMIN_USER_UNLOCK = "admin.user.unlock"
    ADMIN_MFA_RESET = "admin.user.mfa.reset"
    ADMIN_PASSWORD_RESET = "admin.user.password.reset"  # noqa: S105 - an event name
    ADMIN_ALERT_ACK = "admin.alert.ack"
    ALERT = "security.alert"


class Outcome(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    DENIED = "denied"


@dataclass(frozen=True)
class Actor:
    """Who did it and from where; user fields are None for anonymous callers."""

    user_id: int | None = None
    email: str | None = None
    ip: str | None = None
    request_id: str | None = None

    @classmethod
    def system(cls) -> Actor:
        return cls(email="system")
