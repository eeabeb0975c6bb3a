"""Migration 0002 chains the events an installation already has, on this run's backend."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from flask_migrate import downgrade, upgrade
from sqlalchemy import text

from bastion import create_app
from bastion.app import enable_migrations
from bastion.audit.chain import verify_chain
from bastion.core.db import db
from bastion.settings import Settings
from tests.conftest import PG_URL, PROFILE


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    """A database of its own: the shared one is already at the newest revision."""
    if PROFILE != "scaleout":
        yield ""
        return
    schema = f"bastion_m_{secrets.token_hex(4)}"
    with psycopg.connect(PG_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    with psycopg.connect(PG_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def test_existing_events_are_chained_in_id_order(database_url: str, tmp_path: Path) -> None:
    app = create_app(Settings.for_tests(instance_path=tmp_path, database_url=database_url))
    enable_migrations(app)
    with app.app_context():
        upgrade(revision="0001")
        start = datetime(2026, 1, 1, tzinfo=UTC)
        with db.engine.begin() as conn:
            for n in range(4):
                conn.execute(
                    text(
                        "INSERT INTO audit_events (created_at, actor_id, actor_email, ip, event,"
                        " target, outcome, details, request_id) VALUES (:at, :uid, :email,"
                        " '192.0.2.1', 'auth.login.success', :target, 'success', :d, NULL)"
                    ),
                    {
                        "at": start + timedelta(minutes=n, microseconds=n * 7),
                        "uid": n or None,
                        "email": f"user{n}@example.com",
                        "target": f"zoë{n}",
                        "d": f'{{"n": {n}}}',
                    },
                )

        upgrade(revision="0002")

        result = verify_chain()
        assert result.ok, result.detail
        assert result.events == 4
        with db.engine.connect() as conn:
            seqs = conn.execute(text("SELECT seq FROM audit_events ORDER BY id")).scalars().all()
        assert seqs == [1, 2, 3, 4]

        downgrade(revision="0001")
        upgrade(revision="0002")
        assert verify_chain(store=False).ok
        db.session.remove()
        db.engine.dispose()
