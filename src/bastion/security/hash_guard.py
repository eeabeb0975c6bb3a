"""Cap concurrent password hashing per process, so the hashing CPU is no DoS lever.

One argon2id computation at the OWASP parameters takes ~19 MiB and tens of milliseconds of
one core. A login flood from many addresses (each under its own IP limit) could otherwise
queue every worker thread behind argon2 and starve the signed-in pages. So every hash and
verify made on behalf of a request goes through ``hash_password``/``verify_password`` here:

- a process-wide ``threading.BoundedSemaphore`` with ``BASTION_HASH_CONCURRENCY`` slots
  (default: the CPU count - more would only time-slice the same cores);
- a request waits at most ``BASTION_HASH_WAIT_SECONDS`` (default 0.1 s) for a slot, then is
  refused at once with **503 + Retry-After: 1** (``HashBusy``): the server is briefly busy,
  which is not the client's fault, so not 429. Nothing queues without bound, and threads
  serving other pages stay free.
- the computation itself runs on the guard's own threads, one per slot, at nice 10, so
  under load the pages' threads get the cores first;
- asking for a slot marks the request's connection for the back lane of Bastion's gunicorn
  worker (bastion.core.lanes, bastion.serving.worker): its next request waits behind the
  pages.

Decision: the guard wraps the *callers*, not bastion.security.passwords, which stays a
pure library usable from the CLI without an app. Every request-time hash and verify goes
through ``hash_password``/``verify_password`` here: login, registration, re-authentication,
password change, reset, email change and 2FA disable. The guard runs after the rate
limits, so a refused request has already been counted: the refusal is no cheaper way to
probe. A path that also spends something (a reset's second-factor code) hashes first, so a
refusal leaves nothing spent.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from http import HTTPStatus
from typing import Any, TypeVar

import structlog
from werkzeug.exceptions import ServiceUnavailable
from werkzeug.wrappers import Response

from bastion.core import lanes
from bastion.security import passwords

log = structlog.get_logger("bastion.hash_guard")

RETRY_AFTER_SECONDS = 1
HASHING_NICENESS = 10  # CFS weight 110 against a request thread's 1024
T = TypeVar("T")


class HashBusy(ServiceUnavailable):
    """Every hashing slot of this process is taken; answered 503 with Retry-After."""

    description = "The service is busy. Please try again in a moment."


class HashGuard:
    """A bounded number of concurrent argon2 computations; the excess is refused, not queued.

    The computations run on the guard's own threads (one per slot), each at a lower CPU
    priority (`HASHING_NICENESS`): during a login flood the hashing takes what the pages
    leave, instead of half of every core. Idle cores still hash at full speed.
    """

    def __init__(self, slots: int, wait_seconds: float) -> None:
        self.slots = max(1, slots)
        self.wait_seconds = wait_seconds
        self._semaphore = threading.BoundedSemaphore(self.slots)
        self._threads = ThreadPoolExecutor(
            max_workers=self.slots, thread_name_prefix="hashing", initializer=_lower_priority
        )

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one hashing slot for the block; raise HashBusy if none frees up in time.

        Asking is enough to send the connection's next request to the back lane
        (bastion.core.lanes): a flood's connections then queue behind everyone's pages.
        """
        lanes.send_to_back()
        if not self._semaphore.acquire(timeout=self.wait_seconds):
            log.warning("hash slots exhausted", slots=self.slots)
            raise HashBusy
        try:
            yield
        finally:
            self._semaphore.release()

    def run(self, compute: Callable[..., T], *args: Any) -> T:
        """`compute(*args)` on a hashing thread, within a slot (raises HashBusy as `slot`)."""
        with self.slot():
            return self._threads.submit(compute, *args).result()

    def close(self) -> None:
        """Let the hashing threads end once their work is done (a replaced guard)."""
        self._threads.shutdown(wait=False)


def _lower_priority() -> None:
    """Lower the calling thread's CPU priority (Linux: nice applies per thread); best effort."""
    with suppress(AttributeError, OSError):  # not Linux, or not allowed: normal priority
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASHING_NICENESS)


_guard = HashGuard(os.cpu_count() or 1, 0.1)


def configure(slots: int, wait_seconds: float) -> HashGuard:
    """Replace the process-wide guard (create_app calls this with the settings)."""
    global _guard
    # Tests and tools build many apps in one process: each replaced guard's threads end.
    _guard.close()
    _guard = HashGuard(slots, wait_seconds)
    return _guard


def current() -> HashGuard:
    return _guard


def hash_password(password: str) -> str:
    """Hash `password` within a slot; raise HashBusy when the process is saturated."""
    return _guard.run(passwords.hash_password, password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """Verify (exactly one argon2 verify) within a slot; raise HashBusy when saturated."""
    return _guard.run(passwords.verify_password, stored_hash, password)


def handle_busy(error: HashBusy) -> Response:
    from bastion.core.errors import error_response

    response = error_response(HTTPStatus.SERVICE_UNAVAILABLE, HashBusy.description)
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response
