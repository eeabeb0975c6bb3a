"""The chain's stored format: which fields of an audit row are hashed, and how.

A row's hash is SHA-256 over a canonical JSON document (sorted keys, no whitespace,
ASCII-only) of every column that describes the event plus `seq` and `prev_hash`; so
changing any of them, reordering rows or removing one breaks the chain. The encoding is
a stored format: migration 0002 keeps a frozen copy, and changing it needs a migration
that rehashes (a unit test compares the two).

The hash is not keyed. Someone who can write to the database can recompute every hash
from a changed row onwards; `bastion audit verify` catches that only against a head
recorded outside the rewrite (the last verification, the structured log, `--anchor`).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any, Protocol

# The prev_hash of the first row ever written.
GENESIS = "0" * 64


def iso(value: datetime) -> str:
    """Render a timestamp the same way before and after a database round trip."""
    return value.astimezone(UTC).isoformat(timespec="microseconds")


class Hashed(Protocol):
    """The columns of an audit row that its hash covers."""

    seq: int
    created_at: datetime
    actor_id: int | None
    actor_email: str | None
    ip: str | None
    event: str
    target: str | None
    outcome: str
    details: str
    request_id: str | None
    prev_hash: str


def canonical(row: Hashed) -> bytes:
    """Encode one row's content canonically; `details` is hashed as the stored text."""
    document: dict[str, Any] = {
        "seq": row.seq,
        "created_at": iso(row.created_at),
        "actor_id": row.actor_id,
        "actor_email": row.actor_email,
        "ip": row.ip,
        "event": row.event,
        "target": row.target,
        "outcome": row.outcome,
        "details": row.details,
        "request_id": row.request_id,
        "prev_hash": row.prev_hash,
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def row_hash(row: Hashed) -> str:
    """Return the hex SHA-256 of a row's canonical encoding."""
    return hashlib.sha256(canonical(row)).hexdigest()
