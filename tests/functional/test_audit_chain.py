"""The tamper-evident audit log end to end: real flows, SQL tampering, the CLI, and
parallel writers in several processes."""

from __future__ import annotations

import multiprocessing
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from bastion.audit import Actor, EventTag, record, record_failure
from bastion.audit.chain import last_verification, verify_chain
from bastion.audit.cli import audit
from bastion.audit.models import AuditEvent
from bastion.audit.service import build_event
from bastion.core.db import db
from tests.conftest import Backend

WORKERS = 4
EVENTS_PER_WORKER = 25


def events(app: Flask) -> list[AuditEvent]:
    with app.app_context(), Session(db.engine) as fresh:
        return list(fresh.scalars(select(AuditEvent).order_by(AuditEvent.seq)))


def sql(app: Flask, statement: str, **params: Any) -> None:
    with app.app_context(), db.engine.begin() as conn:
        conn.execute(text(statement), params)


def cli(app: Flask, *args: str) -> Any:
    return app.test_cli_runner().invoke(audit, list(args))


@pytest.fixture
def flows(app: Flask, auth: Any) -> list[AuditEvent]:
    """A chain written by the real account flows: create, sign in, fail to sign in."""
    auth.create_user()
    assert auth.login().status_code == HTTPStatus.SEE_OTHER
    auth.logout()
    for _ in range(2):
        assert auth.login(password="wrong password entirely").status_code == (
            HTTPStatus.UNAUTHORIZED
        )
    assert auth.login(email="nobody@example.com").status_code == HTTPStatus.UNAUTHORIZED
    return events(app)


def test_real_flows_build_a_chain_that_verifies(app: Flask, flows: list[AuditEvent]) -> None:
    kinds = [e.event for e in flows]
    assert kinds[0] == EventTag.USER_CREATED
    assert EventTag.LOGIN_SUCCESS in kinds
    assert kinds.count(EventTag.LOGIN_FAILURE) == 3
    assert [e.seq for e in flows] == list(range(1, len(flows) + 1))
    with app.app_context():
        result = verify_chain()
    assert result.ok, result.detail
    assert result.events == len(flows)
    assert result.head_hash == flows[-1].row_hash


def test_cli_verify_prints_ok_and_stores_the_result(app: Flask, flows: list[AuditEvent]) -> None:
    result = cli(app, "verify")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"ok: {len(flows)} events, head {flows[-1].row_hash}"
    with app.app_context():
        last = last_verification()
    assert last is not None
    assert (last.ok, last.events) == (True, len(flows))


def test_cli_verify_reports_a_row_updated_in_sql(app: Flask, flows: list[AuditEvent]) -> None:
    victim = flows[2]
    sql(app, "UPDATE audit_events SET details = :d WHERE id = :i", d='{"x": 1}', i=victim.id)
    result = cli(app, "verify")
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"FAILED altered: event seq {victim.seq} (id {victim.id}) does not match its hash"
    )
    with app.app_context():
        last = last_verification()
    assert last is not None
    assert not last.ok
    assert last.detail.startswith(f"altered: event seq {victim.seq} ")


def test_cli_verify_reports_a_row_deleted_in_sql(app: Flask, flows: list[AuditEvent]) -> None:
    victim = flows[len(flows) // 2]
    sql(app, "DELETE FROM audit_events WHERE id = :i", i=victim.id)
    result = cli(app, "verify")
    assert result.exit_code == 1
    assert f"FAILED deleted: events seq {victim.seq}..{victim.seq} are missing" in result.output


def test_cli_verify_reports_a_row_inserted_in_sql(app: Flask, flows: list[AuditEvent]) -> None:
    last = flows[-1]
    sql(
        app,
        "INSERT INTO audit_events (created_at, actor_email, event, outcome, details,"
        " seq, prev_hash, row_hash)"
        " VALUES (:at, 'mallory@example.com', 'auth.login.success', 'success', '{}',"
        " :seq, :prev, :forged)",
        at=datetime.now(UTC),
        seq=last.seq + 1,
        prev=last.row_hash,
        forged="ab" * 32,
    )
    sql(app, "UPDATE audit_chain_head SET seq = :s, row_hash = :h", s=last.seq + 1, h="ab" * 32)
    result = cli(app, "verify")
    assert result.exit_code == 1
    assert f"FAILED altered: event seq {last.seq + 1} " in result.output


def test_cli_verify_checks_an_anchor(app: Flask, flows: list[AuditEvent]) -> None:
    good = f"{flows[1].seq}:{flows[1].row_hash}"
    assert cli(app, "verify", "--anchor", good).exit_code == 0
    wrong = f"{flows[1].seq}:{'0' * 64}"
    refused = cli(app, "verify", "--anchor", wrong)
    assert refused.exit_code == 1
    assert "recorded by --anchor" in refused.output
    assert cli(app, "verify", "--anchor", "not-an-anchor").exit_code == 2


def test_prune_keeps_the_rest_verifiable_and_is_itself_audited(app: Flask) -> None:
    old = datetime.now(UTC) - timedelta(days=400)
    with app.app_context():
        for n in range(3):
            event = build_event(EventTag.LOGIN_FAILURE, Actor(ip="192.0.2.9"), target=f"old{n}")
            event.created_at = old
            db.session.add(event)
            db.session.commit()
        record(EventTag.LOGIN_SUCCESS, Actor(user_id=1, email="a@example.com"), target="new")
        db.session.commit()
    cutoff = (datetime.now(UTC) - timedelta(days=365)).date().isoformat()

    pruned = cli(app, "prune", "--before", cutoff)

    assert pruned.exit_code == 0, pruned.output
    lines = pruned.output.strip().splitlines()
    assert lines[0] == "pruned 3 events (through seq 3); checkpoint seq 5"
    assert lines[1].startswith("ok: 2 events, head ")
    left = events(app)
    assert [(e.seq, e.event) for e in left] == [(4, "auth.login.success"), (5, "audit.checkpoint")]
    assert cli(app, "verify").exit_code == 0

    # Tampering after the prune is still caught, the checkpoint included.
    sql(app, "UPDATE audit_events SET actor_email = 'root' WHERE seq = 5")
    broken = cli(app, "verify")
    assert broken.exit_code == 1
    assert "altered: event seq 5 " in broken.output
    refused = cli(app, "prune", "--before", cutoff)
    assert refused.exit_code == 1
    assert "refusing to prune" in refused.output


def test_prune_refuses_a_future_date_and_reports_nothing_to_do(app: Flask) -> None:
    tomorrow = (datetime.now(UTC) + timedelta(days=2)).date().isoformat()
    assert cli(app, "prune", "--before", tomorrow).exit_code == 2
    assert cli(app, "prune").exit_code == 2
    nothing = cli(app, "prune", "--before", "2000-01-01")
    assert nothing.exit_code == 0
    assert nothing.output.startswith("nothing recorded before 2000-01-01")


def test_the_audit_group_is_registered_on_the_bastion_command() -> None:
    from bastion.cli import main

    assert main.get_command(None, "audit") is audit  # type: ignore[arg-type]


# ------------------------------------------------------------------ parallel writers
def _writer(settings: dict[str, Any], worker: int, start: Any) -> None:
    """One process: its own app on the shared database, appending as fast as it can."""
    from bastion import create_app
    from bastion.settings import Settings

    app = create_app(Settings.for_tests(**settings))
    with app.app_context():
        start.wait(timeout=120)  # all writers begin together, for the most contention
        for n in range(EVENTS_PER_WORKER):
            actor = Actor(email=f"worker{worker}@example.com", ip="192.0.2.1")
            if n % 2:
                record_failure(EventTag.LOGIN_FAILURE, actor, target=f"w{worker}-{n}")
            else:
                # A request transaction: the event, other work, then the commit.
                record(EventTag.LOGIN_SUCCESS, actor, target=f"w{worker}-{n}")
                db.session.flush()
                db.session.execute(select(func.count()).select_from(AuditEvent))
                db.session.commit()
        db.session.remove()
        db.engine.dispose()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_parallel_writers_in_several_processes_never_fork_the_chain(
    app: Flask, backend: Backend
) -> None:
    with app.app_context():
        record(EventTag.ADMIN_SETUP, Actor.system(), target="before")
        db.session.commit()
    settings: dict[str, Any] = {
        "database_url": backend.database_url,
        "redis_url": backend.redis_url,
        "redis_prefix": backend.redis_prefix,
        "instance_path": Path(backend.instance_path),
    }
    spawn = multiprocessing.get_context("spawn")
    start = spawn.Barrier(WORKERS)
    workers = [spawn.Process(target=_writer, args=(settings, w, start)) for w in range(WORKERS)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=240)
    assert [p.exitcode for p in workers] == [0] * WORKERS

    written = events(app)
    assert len(written) == 1 + WORKERS * EVENTS_PER_WORKER
    assert [e.seq for e in written] == list(range(1, len(written) + 1))
    with app.app_context():
        distinct = db.session.scalar(select(func.count(func.distinct(AuditEvent.seq))))
        result = verify_chain()
    assert distinct == len(written)
    assert result.ok, result.detail
    assert result.events == len(written)
    # Each worker's own events appear in the order it wrote them.
    for w in range(WORKERS):
        mine = [e.target for e in written if e.actor_email == f"worker{w}@example.com"]
        assert mine == sorted(mine, key=lambda t: int(t.rsplit("-", 1)[1]))
