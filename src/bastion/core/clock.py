"""One source of "now", so tests can freeze time and every timestamp is UTC-aware."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)
