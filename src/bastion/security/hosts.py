"""The Host header allow-list: a request for a host we don't serve gets a 400.

Links and redirects never come from the Host header (they use BASTION_PUBLIC_URL), but the
CSRF Origin check accepts this request's own origin, and a cache or a proxy in front may
key on the Host. An allow-list shuts every such path at once (OWASP WSTG-INPV-17, Django's
ALLOWED_HOSTS).

Flask 3.1's ``TRUSTED_HOSTS`` does the same check, but it raises while the request context
is built, before the URL adapter exists, so an error page that builds a URL (any page that
links its stylesheet) fails with a 500 instead of the 400. werkzeug's ``host_is_trusted``
also can't match an IPv6 literal (it cuts the name at the first ``:``). Hence this
first hook of our own; werkzeug still parses and validates the header's characters
(`request.host` is empty when they are invalid).
"""

from __future__ import annotations

from flask import Flask, request
from werkzeug.wrappers import Response

from bastion.core.errors import error_response


def hostname(host: str) -> str:
    """The name in a ``host[:port]`` value, lower-case, IPv6 without its brackets."""
    if host.startswith("["):
        return host[1 : host.find("]")].lower()
    return host.partition(":")[0].lower()


def is_allowed(name: str, allowed: tuple[str, ...]) -> bool:
    """`name` is listed; an entry with a leading dot also allows every subdomain of it."""
    for entry in allowed:
        if name == entry.removeprefix(".") or (entry.startswith(".") and name.endswith(entry)):
            return True
    return False


def init_app(app: Flask, allowed: tuple[str, ...]) -> None:
    def check_host() -> Response | None:
        # An HTTP/1.1 request must name its host (RFC 9112 §3.2: answer 400). Without one,
        # werkzeug falls back to the address the server listens on, which would pass.
        named = "HTTP_HOST" in request.environ or request.environ.get("SERVER_PROTOCOL") == (
            "HTTP/1.0"
        )
        if named and is_allowed(hostname(request.host), allowed):
            return None
        return error_response(400, "This server does not answer for that host name.")

    app.before_request(check_host)
