"""The Flask extension objects, created unbound; `create_app` binds them in a fixed order."""

from __future__ import annotations

from flask import current_app
from flask_limiter import Limiter
from flask_wtf.csrf import CSRFProtect

from bastion.core.db import db
from bastion.security.client import client_ip
from bastion.security.login import BastionLoginManager

csrf = CSRFProtect()
login_manager = BastionLoginManager()


def _application_limit() -> str:
    """The per-IP default, read from the current app's settings on each request.

    Flask-Limiter keeps the first app's RATELIMIT_APPLICATION forever on a shared Limiter
    object; a provider evaluated per request keeps every app (one per test) honest.
    """
    limit: str = current_app.extensions["bastion.settings"].ratelimit_default
    return limit


limiter = Limiter(key_func=client_ip, application_limits=[_application_limit])

__all__ = ["csrf", "db", "limiter", "login_manager"]
