"""Flask-Login with its weak remember-me path closed.

Flask-Login 0.6.3's remember cookie is a signed user id: not revocable, not aware of
SECRET_KEY_FALLBACKS, valid for a year by default. Bastion's remember-me lives server-side
(sessions.py), so the library's own cookie path is switched off here.
"""

from __future__ import annotations

from typing import Any

from flask_login import LoginManager


class BastionLoginManager(LoginManager):  # type: ignore[misc]
    def _load_user_from_remember_cookie(self, cookie: str) -> Any:
        return None

    def _load_user_from_header(self, header: str) -> Any:
        return None

    def _update_remember_cookie(self, response: Any) -> Any:
        # Flask-Login's after-request hook probes the session on every response (which
        # would load it, costing a store round trip even for static files) to manage a
        # cookie we never issue.
        return response
