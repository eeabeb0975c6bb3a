"""The plain-HTTP listener: every request is answered 301 to the same path on HTTPS.

The target is always ``BASTION_PUBLIC_URL`` + the request path (+ query), never built from
the Host header, so a forged Host can't turn this into an open redirect or poison a cache
(host-header injection). Only the path and query are carried over, re-encoded so no byte
of them can end the header or change the authority. HSTS is not sent here — browsers
ignore it over plain HTTP; the HTTPS app sends it on the first secure response.

gunicorn's TLS applies to all of its listeners, so this runs as a second small gunicorn
(`redirect_conf`) that `bastion serve` starts next to the main one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote, urlsplit

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

# RFC 3986 path / query characters that are kept as they are; everything else (space,
# CR/LF, backslash, non-ASCII, "%" of an already-decoded path) is percent-encoded.
PATH_SAFE = "/:@!$&'()*+,;=~"
QUERY_SAFE = PATH_SAFE + "?%"
MAX_LOCATION = 8192


def redirect_target(public_url: str, path: str, query: str) -> str:
    """The HTTPS URL for a request's (WSGI-decoded) `path` and raw `query`."""
    base = public_url.rstrip("/")
    # Absolute-form targets ("GET http://evil/ HTTP/1.1") and "*" have no path of ours.
    if not path.startswith("/"):
        path = "/"
    location = base + quote(path.encode("latin-1", "replace"), safe=PATH_SAFE)
    if query:
        location += "?" + quote(query.encode("latin-1", "replace"), safe=QUERY_SAFE)
    return location if len(location) <= MAX_LOCATION else base + "/"


def create_app(public_url: str | None = None) -> WSGIApp:
    """The redirect WSGI app for `public_url` (default: the settings' BASTION_PUBLIC_URL)."""
    if public_url is None:
        from bastion.settings import Settings

        public_url = Settings.from_env().public_url
    parts = urlsplit(public_url)
    if parts.scheme != "https" or not parts.netloc:
        raise ValueError(f"BASTION_PUBLIC_URL must be an https:// URL, not {public_url!r}")

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        location = redirect_target(
            public_url, environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", "")
        )
        start_response(
            "301 Moved Permanently",
            [
                ("Location", location),
                ("Content-Type", "text/plain; charset=utf-8"),
                ("Content-Length", "0"),
                # A cached 301 outlives a change of BASTION_PUBLIC_URL in browsers for good.
                ("Cache-Control", "no-store"),
                ("X-Content-Type-Options", "nosniff"),
                ("Referrer-Policy", "no-referrer"),
            ],
        )
        return [b""]

    return app


__all__ = ["create_app", "redirect_target"]
