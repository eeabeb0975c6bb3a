"""Admin forms: CSRF-protected action forms (POST) and labelled filter forms (GET).

Filter forms read the query string and change nothing, so they are plain WTForms forms
without a CSRF token; every action form is a FlaskForm and carries one.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from flask_wtf import FlaskForm
from wtforms import DateTimeLocalField, EmailField, Form, SelectChoice, SelectField, StringField
from wtforms.validators import DataRequired, Length, Optional, ValidationError

from bastion.accounts.forms import printable
from bastion.audit import EventTag, Outcome
from bastion.security.permissions import Role

DATETIME_FORMATS = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]  # what <input type=datetime-local> sends


def _ip_address(form: Any, field: Any) -> None:
    if field.data:
        try:
            ipaddress.ip_address(field.data)
        except ValueError:
            raise ValidationError("Enter an IPv4 or IPv6 address.") from None


def _choices(*pairs: tuple[str, str]) -> list[SelectChoice]:
    return [SelectChoice(value, label) for value, label in pairs]


ANY = ("", "Any")


# --------------------------------------------------------------------- GET filters
class UserSearchForm(Form):  # type: ignore[misc]
    q = StringField("Email or name contains", validators=[Optional(), Length(max=100), printable])
    status = SelectField(
        "Status",
        choices=_choices(ANY, ("active", "Enabled"), ("disabled", "Disabled")),
        default="",
    )
    security = SelectField(
        "Security",
        choices=_choices(ANY, ("locked", "Locked now"), ("no2fa", "Without 2FA")),
        default="",
    )


class SessionFilterForm(Form):  # type: ignore[misc]
    email = StringField("User's email address", validators=[Optional(), Length(max=320), printable])


class AuditFilterForm(Form):  # type: ignore[misc]
    actor = StringField("Actor email contains", validators=[Optional(), Length(max=320), printable])
    event = SelectField(
        "Event type", choices=_choices(ANY, *((t.value, t.value) for t in EventTag)), default=""
    )
    outcome = SelectField(
        "Outcome", choices=_choices(ANY, *((o.value, o.value) for o in Outcome)), default=""
    )
    ip = StringField("IP address", validators=[Optional(), Length(max=64), _ip_address])
    since = DateTimeLocalField("From (UTC)", format=DATETIME_FORMATS, validators=[Optional()])
    until = DateTimeLocalField("Until (UTC)", format=DATETIME_FORMATS, validators=[Optional()])

    def validate_until(self, field: Any) -> None:
        if field.data and self.since.data and field.data < self.since.data:
            raise ValidationError("'Until' must not be before 'From'.")


# ---------------------------------------------------------------------- POST actions
class RoleForm(FlaskForm):  # type: ignore[misc]
    role = SelectField(
        "Role",
        choices=_choices(*((role.value, role.value.capitalize()) for role in Role)),
        validators=[DataRequired()],
    )


class ActionForm(FlaskForm):  # type: ignore[misc]
    """A button with a CSRF token: disable, enable, revoke."""


class InviteForm(FlaskForm):  # type: ignore[misc]
    email = EmailField("Email address", validators=[DataRequired(), Length(max=320), printable])
