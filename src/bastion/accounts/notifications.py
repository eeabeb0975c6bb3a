"""Security notifications: tell the account's owner when something about it changed.

OWASP Forgot Password / Authentication CS: notify after a password reset or change, an
email change (to the old address) and 2FA changes; never include a password or a token.
A notice that cannot be delivered is logged, not raised: the change it reports has
already happened and the user must still get their answer.
"""

from __future__ import annotations

from enum import StrEnum

import structlog
from flask import after_this_request
from werkzeug.wrappers import Response

from bastion.core.mail import Mailer, MailMessage

log = structlog.get_logger("bastion.notifications")


class Notice(StrEnum):
    PASSWORD_CHANGED = "password_changed"  # noqa: S105 - a notice name
    PASSWORD_RESET = "password_reset"  # noqa: S105 - a notice name
    MFA_ENABLED = "mfa_enabled"
    MFA_DISABLED = "mfa_disabled"
    RECOVERY_CODES = "recovery_codes"
    EMAIL_CHANGED = "email_changed"
    TOTP_CODES_OFF = "totp_codes_off"


_TEXT: dict[Notice, tuple[str, str]] = {
    Notice.PASSWORD_CHANGED: (
        "Your Bastion password was changed",
        "The password of your Bastion account was changed. Your other sessions were signed out.",
    ),
    Notice.PASSWORD_RESET: (
        "Your Bastion password was reset",
        "The password of your Bastion account was reset through a link sent to this address. "
        "Every session and every 'keep me signed in' device was signed out.",
    ),
    Notice.MFA_ENABLED: (
        "Two-factor authentication is on",
        "Two-factor authentication was turned on for your Bastion account.",
    ),
    Notice.MFA_DISABLED: (
        "Two-factor authentication is off",
        "Two-factor authentication was turned off for your Bastion account. "
        "Signing in now needs only your password.",
    ),
    Notice.RECOVERY_CODES: (
        "New recovery codes for Bastion",
        "New recovery codes were created for your Bastion account; the old ones no longer work.",
    ),
    Notice.TOTP_CODES_OFF: (
        "Codes from your authenticator app no longer work",
        "After too many wrong two-factor codes in a row, codes from your authenticator app "
        "no longer work for your Bastion account. Sign in with one of your recovery codes "
        "to turn them back on, or ask your administrator to reset two-factor "
        "authentication. Whoever entered those codes knows your password or can read "
        "this mailbox.",
    ),
    Notice.EMAIL_CHANGED: (
        "Your Bastion email address was changed",
        "The email address of your Bastion account was changed to {new_email}. "
        "This address will no longer receive mail about the account.",
    ),
}


def notify(
    mailer: Mailer, *, to: str, notice: Notice, public_url: str, new_email: str = ""
) -> None:
    """Send one security notice to `to`; a delivery failure is logged, never raised."""
    subject, text = _TEXT[notice]
    reset = public_url.rstrip("/") + "/auth/reset"
    body = (
        f"Hello,\n\n{text.format(new_email=new_email)}\n\n"
        "If this was you, there is nothing to do.\n\n"
        f"If it wasn't, reset your password now at {reset} and tell your administrator.\n"
    )
    try:
        mailer.send(MailMessage(to=to, subject=subject, body=body))
    except Exception as exc:  # any mail failure: the change stands, the notice is logged
        log.error("security notice not sent", notice=notice.value, error_type=type(exc).__name__)


def _send_quietly(mailer: Mailer, message: MailMessage) -> None:
    try:
        mailer.send(message)
    except Exception as exc:  # the user already has their answer; the failure is logged
        log.error("mail not sent", subject=message.subject, error_type=type(exc).__name__)


def send_after_response(mailer: Mailer, message: MailMessage | None) -> None:
    """Send `message` once the response has been handed to the client (WSGI close).

    For answers that must not reveal whether a mail went out: an SMTP round trip would
    otherwise make "account exists" measurably slower (OWASP Forgot Password CS: uniform
    response time). None sends nothing, on the same path.
    """

    @after_this_request
    def _defer(response: Response) -> Response:
        if message is not None:
            response.call_on_close(lambda: _send_quietly(mailer, message))
        return response
