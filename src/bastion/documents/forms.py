"""HTML forms for the vault: WTForms validation on the server, with field messages."""

from __future__ import annotations

from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import EmailField, StringField
from wtforms.validators import DataRequired, Length, Optional

from bastion.documents.names import MAX_TITLE_CHARS


class UploadForm(FlaskForm):  # type: ignore[misc]
    file = FileField("File", validators=[FileRequired("Choose a file to upload.")])
    title = StringField("Title (optional)", validators=[Optional(), Length(max=MAX_TITLE_CHARS)])


class ShareForm(FlaskForm):  # type: ignore[misc]
    email = EmailField("Email address", validators=[DataRequired(), Length(max=320)])


class ConfirmForm(FlaskForm):  # type: ignore[misc]
    """A button with a CSRF token: delete, revoke."""
