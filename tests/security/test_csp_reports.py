"""CSP violation reports (web/csp_reports.py): logged as short validated fields, never trusted.

Controls proven: the page policy names a report endpoint (report-uri and report-to); a
report in either browser format becomes one warning line with the directive, the blocked
origin and the page's route pattern, and nothing else from the report (no token from the
page URL, no query string, no script sample); the endpoint needs no CSRF token, creates no
session, and answers bad input with a 4xx.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.security.conftest import Captured

TOKEN = "reset-token-AbCdEf0123456789-must-not-be-logged"
SAMPLE = "alert('sample-must-not-be-logged')"
LEGACY = {
    "csp-report": {
        "document-uri": f"https://127.0.0.1:8443/auth/reset/{TOKEN}?next=/secret-query",
        "violated-directive": "script-src-elem 'nonce-abc' 'strict-dynamic'",
        "effective-directive": "script-src-elem",
        "blocked-uri": "https://evil.example:4443/x.js?stolen=secret-query-value",
        "script-sample": SAMPLE,
        "disposition": "enforce",
    }
}
REPORTING_API = [
    {
        "type": "csp-violation",
        "url": f"https://127.0.0.1:8443/auth/reset/{TOKEN}",
        "body": {
            "documentURL": f"https://127.0.0.1:8443/auth/reset/{TOKEN}",
            "effectiveDirective": "script-src-elem",
            "blockedURL": "inline",
            "sample": SAMPLE,
            "disposition": "enforce",
        },
    },
    {"type": "deprecation", "body": {"id": "x", "message": "ignored"}},
]


def report(client: FlaskClient, document: Any, content_type: str) -> Any:
    return client.post(
        "/csp-report",
        data=json.dumps(document),
        content_type=content_type,
        headers={"Sec-Fetch-Site": "same-origin"},
    )


def violations(logs: Captured) -> list[dict[str, object]]:
    return [r for r in logs.records() if r.get("event") == "csp violation"]


def test_the_page_policy_names_the_report_endpoint(client: FlaskClient) -> None:
    page = client.get("/auth/login")
    assert "report-uri /csp-report; report-to csp" in page.headers["Content-Security-Policy"]
    assert page.headers["Reporting-Endpoints"] == 'csp="/csp-report"'


@pytest.mark.parametrize(
    ("document", "content_type", "blocked"),
    [
        (LEGACY, "application/csp-report", "https://evil.example:4443"),
        (REPORTING_API, "application/reports+json", "inline"),
    ],
    ids=["report-uri", "reporting-api"],
)
def test_a_report_is_one_line_of_checked_fields_and_nothing_of_its_secrets(
    client: FlaskClient, logs: Captured, document: Any, content_type: str, blocked: str
) -> None:
    answer = report(client, document, content_type)

    assert answer.status_code == HTTPStatus.NO_CONTENT
    assert "Set-Cookie" not in answer.headers  # no session for an anonymous report
    [line] = violations(logs)
    assert line["level"] == "warning"
    assert {k: line[k] for k in ("directive", "blocked", "page", "disposition")} == {
        "directive": "script-src-elem",
        "blocked": blocked,
        "page": "/auth/reset/<token>",
        "disposition": "enforce",
    }
    for secret in (TOKEN, "secret-query", "sample-must-not-be-logged"):
        assert secret not in logs.text


def test_hostile_field_values_are_reduced_to_safe_words(
    client: FlaskClient, logs: Captured
) -> None:
    hostile = {
        "csp-report": {
            "document-uri": "javascript:alert(1)",
            "effective-directive": 'script-src\n{"forged": "line"}',
            "blocked-uri": "javascript:alert(document.cookie)",
            "disposition": "<script>",
        }
    }
    assert report(client, hostile, "application/csp-report").status_code == HTTPStatus.NO_CONTENT

    [line] = violations(logs)
    assert (line["directive"], line["blocked"], line["page"], line["disposition"]) == (
        "unknown",
        "other",
        "unknown",
        "enforce",
    )
    assert "forged" not in logs.text


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (json.dumps(LEGACY), "text/plain", HTTPStatus.UNSUPPORTED_MEDIA_TYPE),
        ("{not json", "application/csp-report", HTTPStatus.BAD_REQUEST),
        (b"\xff\xfe", "application/csp-report", HTTPStatus.BAD_REQUEST),
        (json.dumps({"something": "else"}), "application/json", HTTPStatus.BAD_REQUEST),
        (json.dumps([{"type": "deprecation"}]), "application/reports+json", HTTPStatus.BAD_REQUEST),
        ("[" + "1," * 20_000 + "1]", "application/json", HTTPStatus.REQUEST_ENTITY_TOO_LARGE),
    ],
    ids=["wrong-type", "not-json", "not-utf8", "no-report", "no-csp-report", "over-16-kib"],
)  # fmt: skip
def test_bad_reports_get_a_4xx_and_log_nothing(
    client: FlaskClient, logs: Captured, body: str | bytes, content_type: str, status: int
) -> None:
    answer = client.post("/csp-report", data=body, content_type=content_type)

    assert answer.status_code == status
    assert violations(logs) == []


@pytest.mark.settings(ratelimit_default="3 per minute")
def test_reports_are_limited_per_address_like_every_request(client: FlaskClient) -> None:
    statuses = [report(client, LEGACY, "application/csp-report").status_code for _ in range(4)]
    assert statuses == [HTTPStatus.NO_CONTENT] * 3 + [HTTPStatus.TOO_MANY_REQUESTS]
