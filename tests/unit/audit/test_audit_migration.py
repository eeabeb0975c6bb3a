"""Migrations of the audit table, on this run's backend: 0002 chains the events an
installation already has, 0009 gives them the address key the alerts group by."""

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

        upgrade()  # through 0002, which chains them, to the head the models describe

        result = verify_chain()
        assert result.ok, result.detail
        assert result.events == 4
        with db.engine.connect() as conn:
            seqs = conn.execute(text("SELECT seq FROM audit_events ORDER BY id")).scalars().all()
        assert seqs == [1, 2, 3, 4]

        downgrade(revision="0001")
        upgrade()
        assert verify_chain(store=False).ok
        db.session.remove()
        db.engine.dispose()


def test_existing_events_get_the_address_key_the_alerts_group_by(
    database_url: str, tmp_path: Path
) -> None:
    """Migration 0009 fills ip_key for the rows before it; the chain is left as it was."""
    app = create_app(Settings.for_tests(instance_path=tmp_path, database_url=database_url))
    enable_migrations(app)
    addresses = ["192.0.2.1", "2001:db8:7:8::1", "2001:db8:7:8:ffff::2", "::ffff:192.0.2.9", None]
    with app.app_context():
        upgrade(revision="0008")
        with db.engine.begin() as conn:
            for n, address in enumerate(addresses):
                conn.execute(
                    text(
                        "INSERT INTO audit_events (created_at, actor_id, actor_email, ip, event,"
                        " target, outcome, details, request_id, seq, prev_hash, row_hash)"
                        " VALUES (:at, NULL, NULL, :ip, 'auth.login.failure', NULL, 'failure',"
                        " '{}', NULL, :seq, :h, :h)"
                    ),
                    {
                        "at": datetime(2026, 1, 1, tzinfo=UTC),
                        "ip": address,
                        "seq": n + 1,
                        "h": "0" * 64,
                    },
                )

        upgrade(revision="0009")

        with db.engine.connect() as conn:
            keys = conn.execute(text("SELECT ip_key FROM audit_events ORDER BY id")).scalars().all()
        assert keys == ["192.0.2.1", "2001:db8:7:8::/64", "2001:db8:7:8::/64", "192.0.2.9", None]
        downgrade(revision="0008")
        upgrade(revision="0009")
        db.session.remove()
        db.engine.dispose()
