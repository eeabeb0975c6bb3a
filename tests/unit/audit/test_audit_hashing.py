"""The chain's hash: canonical, covering every stored field, and frozen in migration 0002."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from bastion.audit import hashing

MIGRATION = (
    Path(__file__).parents[3] / "src/bastion/migrations/versions/0002_audit_chain.py"
).resolve()


@dataclass(frozen=True)
class Row:
    seq: int = 7
    created_at: datetime = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    actor_id: int | None = 3
    actor_email: str | None = "alice@example.com"
    ip: str | None = "192.0.2.10"
    event: str = "auth.login.success"
    target: str | None = "alice@example.com"
    outcome: str = "success"
    details: str = '{"remember": false}'
    request_id: str | None = "abc123"
    prev_hash: str = "a" * 64


def test_hash_is_hex_sha256_and_deterministic() -> None:
    digest = hashing.row_hash(Row())
    assert len(digest) == 64
    assert int(digest, 16) >= 0
    assert hashing.row_hash(Row()) == digest


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("seq", 8),
        ("created_at", datetime(2026, 3, 1, 12, 0, 0, 123457, tzinfo=UTC)),
        ("actor_id", None),
        ("actor_email", "mallory@example.com"),
        ("ip", "192.0.2.11"),
        ("event", "auth.login.failure"),
        ("target", None),
        ("outcome", "failure"),
        ("details", '{"remember": true}'),
        ("request_id", "abc124"),
        ("prev_hash", "b" * 64),
    ],
)
def test_every_stored_field_is_covered(field: str, value: Any) -> None:
    assert hashing.row_hash(replace(Row(), **{field: value})) != hashing.row_hash(Row())


def test_null_and_empty_string_differ() -> None:
    assert hashing.row_hash(Row(target=None)) != hashing.row_hash(Row(target=""))


def test_the_same_instant_hashes_the_same_in_any_zone_and_precision() -> None:
    whole_second = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
    elsewhere = whole_second.astimezone(timezone(timedelta(hours=5, minutes=30)))
    assert hashing.iso(whole_second) == "2026-03-01T12:00:00.000000+00:00"
    assert hashing.row_hash(Row(created_at=whole_second)) == hashing.row_hash(
        Row(created_at=elsewhere)
    )


def test_non_ascii_content_hashes_without_error() -> None:
    assert hashing.row_hash(Row(target="zoë@exämple.com\u2028")) != hashing.row_hash(Row())


def _load_migration() -> ModuleType:
    spec = importlib.util.spec_from_file_location("migration_0002", MIGRATION)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_migration_backfill_hashes_exactly_like_the_application() -> None:
    migration = _load_migration()
    assert migration.revision == "0002"
    assert migration.down_revision == "0001"
    assert migration.GENESIS == hashing.GENESIS
    for row in (Row(), Row(actor_id=None, ip=None, target="zoë", details="{}")):
        assert migration.frozen_row_hash(vars(row)) == hashing.row_hash(row)
