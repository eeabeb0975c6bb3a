"""The bare Flask reference: Bastion's own templates, rendered with none of its controls.

No server-side session, CSRF, rate limits, security headers, access log, database or user
reload: only Flask rendering the very same Jinja templates (``base.html`` + ``web/home.html``
for ``/``, ``accounts/login.html`` with a plain WTForms form for ``/auth/login``), so the
ratio bastion/bare measures what the controls cost, not what the templates cost.

Served by ``bench.bare_gunicorn_conf`` under the same gunicorn layout (gthread, processes x
threads, TLS with the same certificate and policy) as the app it is compared with.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import SimpleNamespace

from flask import Blueprint, Flask, render_template
from jinja2 import FileSystemLoader
from wtforms import BooleanField, EmailField, Form, HiddenField, PasswordField
from wtforms.validators import DataRequired, Length


def _bastion_dir() -> Path:
    """Bastion's package folder, found without importing (and so running) any of it."""
    spec = importlib.util.find_spec("bastion")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the bastion package is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


BASTION = _bastion_dir()
TEMPLATE_DIRS = [
    BASTION / "templates",
    BASTION / "web" / "templates",
    BASTION / "accounts" / "templates",
]

# As long as a Flask-WTF token (a signed, timestamped value), so the pages weigh the same.
CSRF_TOKEN = (
    "IjBmYzM5ZTU4ZDc0YjQ1MjEwNGE5ZTk2NTY2MGNmNDkzYjcxMjQ5ZjUi.aAbCdE.0123456789abcdefghijklmnopq"
)
SIGNED_IN = SimpleNamespace(
    is_authenticated=True,
    name=os.environ.get("BENCH_USER_NAME", "Bench User"),
    email=os.environ.get("BENCH_USER_EMAIL", "bench@example.com"),
    role="user",
)
ANONYMOUS = SimpleNamespace(is_authenticated=False)


class LoginForm(Form):
    """The fields of Bastion's LoginForm, as plain WTForms (no Flask-WTF, no CSRF logic)."""

    csrf_token = HiddenField(default=CSRF_TOKEN)
    email = EmailField("Email address", validators=[DataRequired(), Length(max=320)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])
    remember = BooleanField("Keep me signed in on this device", default=False)


web = Blueprint("web", __name__)
accounts = Blueprint("accounts", __name__)


@web.route("/")
def home() -> str:
    return render_template("web/home.html", current_user=SIGNED_IN)


@accounts.route("/auth/login")
def login() -> str:
    return render_template("accounts/login.html", form=LoginForm(), current_user=ANONYMOUS)


# Endpoints the templates link to (url_for must resolve them); never requested by the bench.
@accounts.route("/account/")
def account() -> str:
    return ""


@accounts.route("/auth/logout", methods=["POST"])
def logout() -> str:
    return ""


@accounts.route("/auth/register")
def register() -> str:
    return ""


@accounts.route("/auth/reset")
def reset_request() -> str:
    return ""


def create_app() -> Flask:
    app = Flask(__name__, static_folder=str(BASTION / "static"), static_url_path="/static")
    app.jinja_loader = FileSystemLoader([str(path) for path in TEMPLATE_DIRS])
    app.config.update(TEMPLATES_AUTO_RELOAD=False, SECRET_KEY=os.urandom(32))
    app.jinja_env.globals.update(csrf_token=lambda: CSRF_TOKEN, csp_nonce=lambda: "")
    app.register_blueprint(web)
    app.register_blueprint(accounts)
    return app


app = create_app()
