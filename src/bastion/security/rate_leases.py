"""Hits of the per-IP default limit reserved from the shared store a few at a time.

Every request spends ``ip.default``; on scale-out that was one Redis round trip (a Lua
script) per page, about a sixth of a signed-in page's CPU (bench/run.py profile). So a
process reserves `size` hits at once for an address (the same `limits` moving-window
call, with ``cost=size``) and admits that address's next requests from the reservation,
for at most LEASE_SECONDS. Hand-written glue: `limits` has no batching of its own.

What it costs the limit, and why that is acceptable for this one:
- never more is admitted than was counted in the store, and a reservation is counted
  when it is made, so the store's count only runs ahead of the requests;
- a reservation made just before a window starts may be used inside it: at most `size`
  hits per process (one reservation per address at a time), so across P processes a
  window can admit the limit plus P x `size`. `size` is at most a fiftieth of the limit
  (and at most LEASE_MAX), so 2 % per process for the generous default (300 a minute:
  6 hits);
- near the limit a reservation of `size` fails and the request falls back to one exact
  hit, so a single process refuses at exactly the limit;
- unused reserved hits simply expire in the store with the window (the count was high,
  never low).
The named limits (login, reset, ...) stay exact, one store call per check. Without Redis
the in-process store needs no leases and none are made.
"""

from __future__ import annotations

import threading

LEASE_SECONDS = 1.0
LEASE_MAX = 16
LEASE_SHARE = 50  # a reservation is at most 1/LEASE_SHARE of the limit
MAX_ADDRESSES = 10_000  # beyond this the table starts again empty (bounded memory)


def lease_size(limit: int) -> int:
    """How many hits one reservation takes for a limit of `limit` (1: no leasing)."""
    return max(1, min(LEASE_MAX, limit // LEASE_SHARE))


class Leases:
    """Reserved hits per address key: (hits left, when the reservation lapses)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._held: dict[str, tuple[int, float]] = {}

    def take(self, key: str, now: float) -> bool:
        """Spend one reserved hit of `key`; False when none is left or it has lapsed."""
        with self._lock:
            held = self._held.get(key)
            if held is None or held[0] <= 0 or held[1] <= now:
                return False
            self._held[key] = (held[0] - 1, held[1])
            return True

    def grant(self, key: str, hits: int, now: float) -> None:
        """`hits` more for `key`, reserved at `now` (the one being served not included)."""
        with self._lock:
            if len(self._held) >= MAX_ADDRESSES:
                self._held.clear()
            self._held[key] = (hits, now + LEASE_SECONDS)
