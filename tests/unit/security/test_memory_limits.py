"""The embedded rate-limit store counts exactly and starts no thread per hit."""

from __future__ import annotations

import threading
import time

import pytest
from limits import RateLimitItemPerSecond, parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from bastion.security import memory_limits
from bastion.security.memory_limits import SweepingMemoryStorage


def test_the_scheme_builds_our_store() -> None:
    assert isinstance(storage_from_string("bastion-memory://"), SweepingMemoryStorage)


def test_hits_start_no_timer_threads() -> None:
    limiter = MovingWindowRateLimiter(SweepingMemoryStorage())
    item = parse("1000 per minute")
    time.sleep(0.05)  # let the one timer MemoryStorage starts at construction finish
    before = threading.active_count()

    for n in range(200):
        limiter.hit(item, "k", str(n % 7))
        time.sleep(0.0005)

    assert threading.active_count() <= before


def test_moving_window_counts_exactly() -> None:
    limiter = MovingWindowRateLimiter(SweepingMemoryStorage())
    item = parse("5 per minute")

    admitted = [limiter.hit(item, "login", "alice") for _ in range(8)]

    assert admitted == [True] * 5 + [False] * 3
    assert limiter.hit(item, "login", "bob")  # another key has its own window


def test_expired_entries_are_swept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory_limits, "SWEEP_SECONDS", 0.0)
    storage = SweepingMemoryStorage()
    limiter = MovingWindowRateLimiter(storage)
    short = RateLimitItemPerSecond(3, 1)
    for _ in range(3):
        limiter.hit(short, "x")
    time.sleep(1.05)

    assert limiter.hit(short, "y")  # any hit sweeps

    assert all(not key.endswith("/x") for key in storage.events if storage.events[key])
