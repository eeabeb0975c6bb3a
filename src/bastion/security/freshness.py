"""Recent authentication for sensitive actions (ASVS 7.5.1 / 7.5.3).

A view marked ``@recent_auth_required`` runs only if this session proved the password
within the last `FRESH_WINDOW`; otherwise the user is sent to /auth/reauth and back. A
session restored from "remember me" never counts as fresh.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from functools import wraps
from http import HTTPStatus
from typing import Any, TypeVar, cast

from flask import redirect, request, url_for

from bastion.core.clock import utcnow
from bastion.security.sessions import authenticated_at

FRESH_WINDOW = timedelta(minutes=10)
F = TypeVar("F", bound=Callable[..., Any])


def is_fresh() -> bool:
    proved = authenticated_at()
    return proved is not None and utcnow() - proved <= FRESH_WINDOW


def recent_auth_required(view: F) -> F:
    """Send the user to re-authenticate unless they proved their password recently."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not is_fresh():
            target = request.full_path.rstrip("?") if request.method == "GET" else request.path
            return redirect(url_for("accounts.reauth", next=target), code=HTTPStatus.SEE_OTHER)
        return view(*args, **kwargs)

    return cast(F, wrapper)
