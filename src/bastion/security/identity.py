"""Who is calling: the audit actor for the current request."""

from __future__ import annotations

from flask import g
from flask_login import current_user

from bastion.audit import Actor
from bastion.security.client import client_ip


def current_actor() -> Actor:
    if current_user.is_authenticated:
        return Actor(
            user_id=int(current_user.id),
            email=current_user.email,
            ip=client_ip(),
            request_id=g.get("request_id"),
        )
    return Actor(ip=client_ip(), request_id=g.get("request_id"))
