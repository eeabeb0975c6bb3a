"""The Flask extension objects, created unbound; `create_app` binds them in a fixed order."""

from __future__ import annotations

from flask_limiter import Limiter
from flask_migrate import Migrate
from flask_wtf.csrf import CSRFProtect

from bastion.core.db import db
from bastion.security.client import client_ip
from bastion.security.login import BastionLoginManager

migrate = Migrate()
csrf = CSRFProtect()
login_manager = BastionLoginManager()
limiter = Limiter(key_func=client_ip)

__all__ = ["csrf", "db", "limiter", "login_manager", "migrate"]
