"""Security headers on every response: pages, errors, redirects and static files.

Hand-written because flask-talisman is unmaintained since 2023 and lacks COOP/CORP/COEP; the
policy is the strict nonce CSP verified with both Mozilla Observatory scanners
(standards-notes B8). The nonce reaches templates through Jinja (``csp_nonce()``), never by
rewriting HTML, so an injected script cannot pick it up.
"""

from __future__ import annotations

import base64
import secrets

from flask import Flask, g, request
from werkzeug.wrappers import Response

from bastion.core.request_log import SPARE_BYTES, spare_random_bytes

NONCE_BYTES = SPARE_BYTES  # 144 bits
PERMISSIONS_POLICY = ", ".join(
    f"{feature}=()"
    for feature in (
        "accelerometer",
        "autoplay",
        "camera",
        "display-capture",
        "geolocation",
        "gyroscope",
        "magnetometer",
        "microphone",
        "midi",
        "payment",
        "publickey-credentials-get",
        "usb",
        "browsing-topics",
    )
)


def csp_nonce() -> str:
    """Return this response's CSP nonce (144 bits of OS CSPRNG output, ASVS 11.5.1)."""
    nonce: str | None = g.get("csp_nonce")
    if nonce is None:
        # The request's spare bytes from its one draw (core/request_log.py), else a draw.
        drawn = spare_random_bytes() or secrets.token_bytes(NONCE_BYTES)
        nonce = base64.urlsafe_b64encode(drawn).decode("ascii")
        g.csp_nonce = nonce
    return nonce


# Where browsers report violations (web/csp_reports.py): `report-to` names the endpoint of
# the Reporting-Endpoints header; `report-uri` is for browsers without the Reporting API.
CSP_REPORT_PATH = "/csp-report"


def content_security_policy(nonce: str) -> str:
    return (
        "default-src 'none'; "
        f"script-src 'nonce-{nonce}' 'strict-dynamic'; "
        "style-src 'self'; img-src 'self'; connect-src 'self'; font-src 'self'; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; "
        f"report-uri {CSP_REPORT_PATH}; report-to csp"
    )


class SecurityHeaders:
    def __init__(self, hsts_preload: bool) -> None:
        hsts = "max-age=63072000; includeSubDomains" + ("; preload" if hsts_preload else "")
        # The same on every response, whatever a view set.
        self.fixed = {
            "Strict-Transport-Security": hsts,
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
            "Permissions-Policy": PERMISSIONS_POLICY,
            "Cross-Origin-Opener-Policy": "same-origin",
            "Cross-Origin-Resource-Policy": "same-origin",
            # Every subresource we use is our own, so nothing is lost; with COOP this makes
            # the page cross-origin isolated: no other site's resource shares its process.
            "Cross-Origin-Embedder-Policy": "require-corp",
            # The XSS auditor is gone and `1; mode=block` could create leaks: OWASP says 0.
            "X-XSS-Protection": "0",
            "Reporting-Endpoints": f'csp="{CSP_REPORT_PATH}"',
        }

    def apply(self, response: Response) -> Response:
        headers = response.headers
        # A view may set a stricter policy of its own (downloads: `sandbox`); keep it.
        headers.setdefault("Content-Security-Policy", content_security_policy(csp_nonce()))
        headers.setdefault("Referrer-Policy", "strict-origin-when-cross-origin")
        headers.update(self.fixed)  # one pass: replaces any value a view set
        if request.endpoint == "static" and response.status_code < 400:
            headers.setdefault("Cache-Control", "public, max-age=3600")
        else:
            # Dynamic pages may carry personal data or CSRF tokens: never stored (ASVS 14.3.2).
            headers["Cache-Control"] = "no-store"
        headers.pop("Server", None)
        return response


def init_app(app: Flask, hsts_preload: bool) -> None:
    app.jinja_env.globals["csp_nonce"] = csp_nonce
    app.after_request(SecurityHeaders(hsts_preload).apply)
