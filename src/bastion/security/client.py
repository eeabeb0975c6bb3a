"""The client's address, as far as the configured trusted proxies vouch for it."""

from __future__ import annotations

from flask import request


def client_ip() -> str:
    """Return the client IP that ProxyFix trusts (ASVS 15.3.4); never a raw X-Forwarded-For."""
    return request.remote_addr or "unknown"
