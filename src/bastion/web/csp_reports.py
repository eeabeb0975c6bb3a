"""Where browsers report Content-Security-Policy violations (ASVS 3.4.7).

The page policy names this endpoint twice: ``report-to csp`` with a ``Reporting-Endpoints``
header (the Reporting API: Chromium, batched) and the older ``report-uri`` (Firefox, and
Chromium when report-to is absent). A violation on a live page means an injection attempt
or a bug of ours; the browser suite sees violations only in tests.

A report is anonymous and anyone can send one, so the endpoint trusts nothing in it: it
stores nothing, caps the body, and writes one warning line of short, validated fields per
violation. The page is logged as its route pattern (a reset page's token never reaches a
log), a blocked URL as its origin, and never the script sample or a query string. It spends
the per-IP default limit like every other request. No library parses CSP reports; this is
glue of about 100 lines.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

import structlog
from flask import abort, current_app, request
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from bastion.security.csrf import csrf_exempt
from bastion.security.headers import CSP_REPORT_PATH
from bastion.security.policy import public
from bastion.web.views import bp

log = structlog.get_logger("bastion.csp")

MAX_REPORT_BYTES = 16 * 1024
MAX_VIOLATIONS = 10  # per request: a batch is small; the rest is ignored
REPORT_TYPES = frozenset({"application/csp-report", "application/reports+json", "application/json"})
KEYWORDS = frozenset({"inline", "eval", "wasm-eval", "data", "blob", "self", "trusted-types-sink"})
_DIRECTIVE = re.compile(r"[a-z-]{1,40}")
_HOST = re.compile(r"[a-z0-9.-]{1,253}|\[[0-9a-f:.]{2,45}\]")


def _directive(value: object) -> str:
    """`script-src-elem`; a legacy `violated-directive` also carries its value: cut it."""
    word = str(value).split(" ", 1)[0].lower() if isinstance(value, str) else ""
    return word if _DIRECTIVE.fullmatch(word) else "unknown"


def _blocked(value: object) -> str:
    """A keyword (`inline`, `eval`, ...) as it is; a URL as its origin; anything else, `other`."""
    if not isinstance(value, str) or len(value) > 2048:
        return "other"
    if value in KEYWORDS:
        return value
    try:
        parts = urlsplit(value)
        host, port = parts.hostname or "", parts.port
    except ValueError:
        return "other"
    if parts.scheme not in {"http", "https"} or not _HOST.fullmatch(host):
        return parts.scheme if parts.scheme in KEYWORDS else "other"
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


def _page(value: object) -> str:
    """The route the violating page was served by, as its pattern (`/auth/reset/<token>`)."""
    if not isinstance(value, str) or len(value) > 2048:
        return "unknown"
    try:
        path = urlsplit(value).path
        adapter = current_app.url_map.bind("localhost")
        rule, _ = adapter.match(path, method="GET", return_rule=True)
    except (ValueError, HTTPException):
        return "unknown"
    return str(rule.rule)


def _fields(body: Mapping[str, Any], *, legacy: bool) -> dict[str, str]:
    if legacy:  # report-uri: {"csp-report": {"document-uri": ..., ...}}
        directive = body.get("effective-directive") or body.get("violated-directive")
        blocked, page = body.get("blocked-uri"), body.get("document-uri")
    else:  # Reporting API: [{"type": "csp-violation", "body": {"documentURL": ...}}]
        directive = body.get("effectiveDirective")
        blocked, page = body.get("blockedURL"), body.get("documentURL")
    disposition = body.get("disposition")
    return {
        "directive": _directive(directive),
        "blocked": _blocked(blocked),
        "page": _page(page),
        "disposition": disposition if disposition in {"enforce", "report"} else "enforce",
    }


def _violations(document: object) -> Iterator[dict[str, str]]:
    if isinstance(document, dict) and isinstance(document.get("csp-report"), dict):
        yield _fields(document["csp-report"], legacy=True)
    elif isinstance(document, list):
        for report in document[:MAX_VIOLATIONS]:
            if (
                isinstance(report, dict)
                and report.get("type") == "csp-violation"
                and isinstance(report.get("body"), dict)
            ):
                yield _fields(report["body"], legacy=False)


@bp.route(CSP_REPORT_PATH, methods=["POST"])
@public
@csrf_exempt("browsers send reports without a token; it changes nothing but a log line")
def csp_report() -> Response:
    request.max_content_length = MAX_REPORT_BYTES  # a larger body gets the 413 page
    if request.mimetype not in REPORT_TYPES:
        abort(HTTPStatus.UNSUPPORTED_MEDIA_TYPE)
    try:
        document = json.loads(request.get_data(cache=False))
    except ValueError:  # not JSON, or not UTF-8
        abort(HTTPStatus.BAD_REQUEST)
    violations = list(_violations(document))
    if not violations:
        abort(HTTPStatus.BAD_REQUEST)
    for violation in violations:
        log.warning("csp violation", **violation)
    return Response(status=HTTPStatus.NO_CONTENT)
