"""The Flask extension objects, created unbound; `create_app` binds them in a fixed order."""

from __future__ import annotations

from flask_limiter import Limiter
from flask_wtf.csrf import CSRFProtect

from bastion.core.db import db
from bastion.security.client import client_ip
from bastion.security.login import BastionLoginManager

csrf = CSRFProtect()
login_manager = BastionLoginManager()
# Storage and strategy only: every limit, the per-IP default included, is a named limit
# spent by security/rate_limit.py (which says why).
limiter = Limiter(key_func=client_ip)

__all__ = ["csrf", "db", "limiter", "login_manager"]
