"""The in-process rate-limit store for the embedded profile, without a thread per 10 ms.

limits' MemoryStorage prunes expired entries on a `threading.Timer(0.01)` that it starts
again on the next hit once the last one has fired: under load that is a new thread about
every 10 ms, measured at ~10% of a page's CPU (and ~27% of a flooded login's) in
`make bench`. Counting does not depend on that pruning (moving-window entries are compared
with the current time), so here pruning runs inline, at most once per SWEEP_SECONDS.
"""

from __future__ import annotations

import threading
import time

from limits.storage import MemoryStorage

SWEEP_SECONDS = 1.0


class SweepingMemoryStorage(MemoryStorage):
    """MemoryStorage whose expiry sweep runs inline and at most once a second."""

    STORAGE_SCHEME = ["bastion-memory"]

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, **options: str):
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        self._next_sweep = 0.0
        self._sweep_lock = threading.Lock()

    def _MemoryStorage__schedule_expiry(self) -> None:  # noqa: N802 - overrides the private hook
        now = time.monotonic()
        if now < self._next_sweep or not self._sweep_lock.acquire(blocking=False):
            return
        try:
            self._next_sweep = now + SWEEP_SECONDS
            self._MemoryStorage__expire_events()  # type: ignore[attr-defined]
        finally:
            self._sweep_lock.release()
