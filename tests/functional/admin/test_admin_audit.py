"""The audit log page: filters, pagination, and a CSV export that spreadsheets cannot run."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Any

import pytest
from flask import Flask

from bastion.admin.audit_log import neutralise
from bastion.audit import EventTag
from bastion.audit.models import AuditEvent
from bastion.core.db import db
from tests.functional.admin.conftest import ADMIN_EMAIL, Console, events

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def add_event(app: Flask, **fields: Any) -> None:
    values: dict[str, Any] = {
        "created_at": T0,
        "actor_email": "someone@example.com",
        "ip": "192.0.2.10",
        "event": EventTag.LOGIN_SUCCESS.value,
        "target": "target@example.com",
        "outcome": "success",
        "details": "{}",
    }
    values.update(fields)
    with app.app_context():
        db.session.add(AuditEvent(**values))
        db.session.commit()


@pytest.fixture
def sample(app: Flask) -> None:
    add_event(app, target="mark-a", actor_email="alice@example.com")
    add_event(
        app,
        target="mark-b",
        actor_email="bob@example.com",
        event=EventTag.LOGIN_FAILURE.value,
        outcome="failure",
        ip="2001:db8::7",
        created_at=T0 + timedelta(days=1),
    )
    add_event(
        app,
        target="mark-c",
        actor_email="a_l%ice@example.com",
        event=EventTag.AUTHZ_DENIED.value,
        outcome="denied",
        created_at=T0 + timedelta(days=2),
    )


@pytest.mark.usefixtures("sample")
@pytest.mark.parametrize(
    ("query", "shown"),
    [
        ({}, {"mark-a", "mark-b", "mark-c"}),
        ({"actor": "ALICE@"}, {"mark-a"}),
        ({"actor": "%"}, {"mark-c"}),  # a literal percent sign, not a wildcard
        ({"actor": "a_l"}, {"mark-c"}),
        ({"actor": "' OR '1'='1"}, set()),
        ({"event": "auth.login.failure"}, {"mark-b"}),
        ({"outcome": "denied"}, {"mark-c"}),
        ({"ip": "2001:db8::7"}, {"mark-b"}),
        ({"since": "2026-03-02T00:00"}, {"mark-b", "mark-c"}),
        ({"until": "2026-03-02T12:00"}, {"mark-a", "mark-b"}),
        ({"since": "2026-03-02T00:00", "until": "2026-03-02T23:59:59"}, {"mark-b"}),
    ],
)
def test_filters(admin: Console, query: dict[str, str], shown: set[str]) -> None:
    response = admin.get("/admin/audit", query_string=query)
    assert response.status_code == HTTPStatus.OK
    html = response.get_data(as_text=True)
    assert {m for m in ("mark-a", "mark-b", "mark-c") if m in html} == shown


@pytest.mark.parametrize(
    "query",
    [
        {"ip": "not-an-ip"},
        {"ip": "192.0.2.10%00"},
        {"event": "no.such.event"},
        {"outcome": "maybe"},
        {"since": "yesterday"},
        {"since": "2026-03-02T00:00", "until": "2026-03-01T00:00"},
        {"actor": "x" * 321},
        {"page": "0"},
    ],
)
def test_bad_filters_are_400(admin: Console, query: dict[str, str]) -> None:
    assert admin.get("/admin/audit", query_string=query).status_code == HTTPStatus.BAD_REQUEST
    assert admin.get("/admin/audit.csv", query_string=query).status_code in {
        HTTPStatus.BAD_REQUEST,
        HTTPStatus.OK,  # `page` means nothing to the export
    }


def test_filter_form_is_labelled(admin: Console) -> None:
    html = admin.get("/admin/audit").get_data(as_text=True)
    for name in ("actor", "event", "outcome", "ip", "since", "until"):
        assert f'<label for="{name}">' in html
    assert 'type="datetime-local"' in html
    assert 'method="get"' in html


def test_audit_log_is_paginated(app: Flask, admin: Console) -> None:
    with app.app_context():
        for i in range(60):
            db.session.add(
                AuditEvent(
                    created_at=T0,
                    event=EventTag.LOGOUT.value,
                    target=f"page-{i:02d}",
                    outcome="success",
                    details="{}",
                )
            )
        db.session.commit()
    query = {"event": "auth.logout"}
    first = admin.get("/admin/audit", query_string=query).get_data(as_text=True)
    assert "page-59" in first
    assert "page-09" not in first
    assert "Showing 1 to 50 of 60." in first
    assert 'href="/admin/audit?event=auth.logout&amp;page=2"' in first
    second = admin.get("/admin/audit", query_string={**query, "page": "2"}).get_data(as_text=True)
    assert "page-09" in second
    assert "page-10" not in second


# ------------------------------------------------------------------------------- CSV
FORMULAS = ["=1+1", "+1+1", "-1+1", "@SUM(A1)", "\tinjected", "\rinjected"]


@pytest.mark.parametrize("cell", FORMULAS, ids=["equals", "plus", "minus", "at", "tab", "cr"])
def test_neutralise_prefixes_a_quote(cell: str) -> None:
    assert neutralise(cell) == "'" + cell


@pytest.mark.parametrize("cell", ["", "alice@example.com", "1+1", "'=already", " =spaced", "{}"])
def test_neutralise_leaves_safe_cells(cell: str) -> None:
    assert neutralise(cell) == cell


def parse_csv(body: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(body, newline="")))


@pytest.mark.parametrize("cell", FORMULAS, ids=["equals", "plus", "minus", "at", "tab", "cr"])
def test_csv_export_neutralises_every_column(app: Flask, admin: Console, cell: str) -> None:
    add_event(
        app,
        event=EventTag.LOGOUT.value,
        target=cell,
        actor_email=cell,
        ip=cell,
        details=cell,
        request_id=cell,
    )

    response = admin.get("/admin/audit.csv", query_string={"event": "auth.logout"})

    assert response.status_code == HTTPStatus.OK
    assert response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"].startswith("attachment; filename=")
    [row] = parse_csv(response.get_data(as_text=True))
    for column in ("target", "actor_email", "ip", "details", "request_id"):
        assert row[column] == "'" + cell, column


def test_csv_export_honours_filters_and_is_audited(app: Flask, admin: Console) -> None:
    add_event(app, target="keep", outcome="failure", event=EventTag.LOGIN_FAILURE.value)
    add_event(app, target="drop")

    body = admin.get("/admin/audit.csv?outcome=failure&event=auth.login.failure").get_data(
        as_text=True
    )

    rows = parse_csv(body)
    assert [r["target"] for r in rows] == ["keep"]
    assert list(rows[0]) == [
        "id",
        "created_at",
        "actor_id",
        "actor_email",
        "ip",
        "event",
        "outcome",
        "target",
        "details",
        "request_id",
    ]
    assert body.startswith('"id","created_at"')  # every cell quoted
    [export] = events(app, EventTag.ADMIN_AUDIT_EXPORT)
    assert export["actor"] == ADMIN_EMAIL
    assert export["details"]["rows"] == 1
    assert export["details"]["filters"] == {"event": "auth.login.failure", "outcome": "failure"}


def test_auditor_reads_and_exports_the_audit_log(app: Flask, browser: Any) -> None:
    add_event(app, target="visible-to-auditor")
    auditor = browser("audra@example.com", role="auditor")
    assert "visible-to-auditor" in auditor.get("/admin/audit").get_data(as_text=True)
    export = auditor.get("/admin/audit.csv")
    assert export.status_code == HTTPStatus.OK
    assert "visible-to-auditor" in export.get_data(as_text=True)
