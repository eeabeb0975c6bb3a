"""Random bytes from the OS CSPRNG, fetched 4 KiB at a time for the per-request values.

os.urandom lets the GIL go, and under load each hand-off to another request thread costs
real CPU: one draw per request for its id and nonce instead of two measured -6 to -9 % CPU
per signed-in page under wrk, and one draw per ~150 requests took the page's `os.urandom`
context switches from 1.5 to 0 (bench/switches.py). The bytes are the OS's CSPRNG output
(`secrets.token_bytes`), only fetched ahead, and each is handed out once. A forked child
starts with none of its parent's (`os.register_at_fork`), so two workers never hand out
the same bytes.

For values made on every request (request ids, CSP nonces, session ids); long-lived keys
and one-time tokens keep calling `secrets` directly.
"""

from __future__ import annotations

import base64
import os
import secrets
import threading


class RandomBytes:
    """Bytes from `secrets.token_bytes` in DRAW_BYTES draws, each byte handed out once."""

    DRAW_BYTES = 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._left = b""
        os.register_at_fork(after_in_child=self._forget)

    def take(self, count: int) -> bytes:
        with self._lock:
            if len(self._left) < count:
                self._left = secrets.token_bytes(max(count, self.DRAW_BYTES))
            taken, self._left = self._left[:count], self._left[count:]
        return taken

    def _forget(self) -> None:
        self._lock = threading.Lock()  # a lock held at the fork stays held in the child
        self._left = b""


_source = RandomBytes()


def take(count: int) -> bytes:
    """`count` bytes no one else is given."""
    return _source.take(count)


def token_urlsafe(count: int) -> str:
    """As `secrets.token_urlsafe(count)`: `count` random bytes, URL-safe base64, unpadded."""
    return base64.urlsafe_b64encode(take(count)).rstrip(b"=").decode("ascii")
