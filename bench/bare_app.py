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
from werkzeug.routing import Rule
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
    can=lambda permission: False,  # a plain user: no admin link
)
ANONYMOUS = SimpleNamespace(is_authenticated=False, can=lambda permission: False)


class _Names:
    """Stands in for Bastion's `permission` template global: any attribute is its name."""

    def __getattr__(self, name: str) -> str:
        return name


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


# Bastion's URLs for the endpoints its pages link to; others get /<blueprint>/<view>.
KNOWN_PATHS = {
    "accounts.account": "/account/",
    "accounts.logout": "/auth/logout",
    "accounts.register": "/auth/register",
    "accounts.reset_request": "/auth/reset",
    "documents.index": "/documents/",
    "documents.upload": "/documents/upload",
    "documents.shared": "/documents/shared",
    "admin.dashboard_page": "/admin/",
}


def _link_path(endpoint: str) -> str:
    return KNOWN_PATHS.get(endpoint) or "/" + endpoint.replace(".", "/")


def _unused() -> str:
    return ""


def _add_linked_endpoints(app: Flask) -> list[str]:
    """Give every endpoint the two pages link to (Account, Documents, ...) a URL rule.

    Rendered once at start-up with a url_for fallback that records what is missing; each
    gets a rule at /<blueprint>/<view>, so no request ever pays for a BuildError. If
    Bastion's real URL differs, the bench's byte-for-byte page comparison says so.
    """
    missing: set[str] = set()

    def record(error: Exception, endpoint: str, values: dict[str, object]) -> str:
        missing.add(endpoint)
        return _link_path(endpoint)

    app.url_build_error_handlers.append(record)
    with app.test_request_context("/"):
        home()
        login()
    app.url_build_error_handlers.remove(record)
    for endpoint in sorted(missing):
        app.url_map.add(Rule(_link_path(endpoint), endpoint=endpoint, methods=["GET", "POST"]))
        app.view_functions[endpoint] = _unused
    return sorted(missing)


def create_app() -> Flask:
    app = Flask(__name__, static_folder=str(BASTION / "static"), static_url_path="/static")
    app.jinja_loader = FileSystemLoader([str(path) for path in TEMPLATE_DIRS])
    app.config.update(TEMPLATES_AUTO_RELOAD=False, SECRET_KEY=os.urandom(32))
    app.jinja_env.globals.update(
        csrf_token=lambda: CSRF_TOKEN, csp_nonce=lambda: "", permission=_Names()
    )
    app.register_blueprint(web)
    app.register_blueprint(accounts)
    _add_linked_endpoints(app)
    return app


app = create_app()
