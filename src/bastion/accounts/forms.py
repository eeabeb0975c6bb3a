"""HTML forms for accounts: WTForms validation on the server, with field messages."""

from __future__ import annotations

from typing import Any

from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, HiddenField, PasswordField, StringField
from wtforms.validators import DataRequired, EqualTo, Length, Optional, ValidationError

MAX_PASSWORD = 1024


def printable(form: Any, field: Any) -> None:
    """Refuse control characters (and the U+FFFD that invalid UTF-8 decodes to)."""
    value = field.data or ""
    if any(ord(ch) < 32 or ch in "\x7f\ufffd" for ch in value):
        raise ValidationError("This field contains characters that are not allowed.")


class RegisterForm(FlaskForm):  # type: ignore[misc]
    email = EmailField("Email address", validators=[DataRequired(), Length(max=320), printable])
    name = StringField("Display name", validators=[DataRequired(), Length(max=100), printable])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=MAX_PASSWORD)])
    password_confirm = PasswordField(
        "Repeat password",
        validators=[DataRequired(), EqualTo("password", message="The passwords do not match.")],
    )


class LoginForm(FlaskForm):  # type: ignore[misc]
    email = EmailField("Email address", validators=[DataRequired(), Length(max=320)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=MAX_PASSWORD)])
    remember = BooleanField("Keep me signed in on this device", default=False)


class ConfirmForm(FlaskForm):  # type: ignore[misc]
    """A button: mail scanners that prefetch links must not consume one-time tokens."""


class ChangePasswordForm(FlaskForm):  # type: ignore[misc]
    current_password = PasswordField(
        "Current password", validators=[DataRequired(), Length(max=MAX_PASSWORD)]
    )
    new_password = PasswordField(
        "New password", validators=[DataRequired(), Length(max=MAX_PASSWORD)]
    )
    new_password_confirm = PasswordField(
        "Repeat new password",
        validators=[
            DataRequired(),
            EqualTo("new_password", message="The passwords do not match."),
        ],
    )


class SetupForm(RegisterForm):
    """The first admin's account."""


class LogoutForm(FlaskForm):  # type: ignore[misc]
    """Logout is a POST with a CSRF token; a GET never signs anyone out."""


class ReauthForm(FlaskForm):  # type: ignore[misc]
    password = PasswordField("Password", validators=[DataRequired(), Length(max=MAX_PASSWORD)])
    # Asked for (and then required) only when the account has 2FA on.
    code = StringField("Authentication code", validators=[Optional(), Length(max=64)])


# ------------------------------------------------------------ recovery and 2FA forms
class CodeField(StringField):  # type: ignore[misc]
    """A one-time code: 6 digits from the authenticator app, or a recovery code."""


def code_field(label: str = "Authentication code", required: bool = True) -> CodeField:
    first = DataRequired() if required else Optional()
    return CodeField(label, validators=[first, Length(max=64), printable])


class ResetRequestForm(FlaskForm):  # type: ignore[misc]
    email = EmailField("Email address", validators=[DataRequired(), Length(max=320), printable])


class ResetPasswordForm(FlaskForm):  # type: ignore[misc]
    password = PasswordField("New password", validators=[DataRequired(), Length(max=MAX_PASSWORD)])
    password_confirm = PasswordField(
        "Repeat new password",
        validators=[DataRequired(), EqualTo("password", message="The passwords do not match.")],
    )
    code = code_field(required=False)


class EmailChangeForm(FlaskForm):  # type: ignore[misc]
    password = PasswordField(
        "Current password", validators=[DataRequired(), Length(max=MAX_PASSWORD)]
    )
    new_email = EmailField(
        "New email address", validators=[DataRequired(), Length(max=320), printable]
    )


class ButtonForm(FlaskForm):  # type: ignore[misc]
    """A CSRF-protected button (confirm a link, revoke a session, regenerate codes)."""


class TotpEnrolForm(FlaskForm):  # type: ignore[misc]
    code = code_field("Code from your authenticator app")


class SecondFactorForm(FlaskForm):  # type: ignore[misc]
    code = code_field()
    nonce = HiddenField(validators=[DataRequired(), Length(max=64)])


class DisableMfaForm(FlaskForm):  # type: ignore[misc]
    password = PasswordField(
        "Current password", validators=[DataRequired(), Length(max=MAX_PASSWORD)]
    )
    code = code_field()
