"""Limits on how long a request thread waits on a slow client (used by serving/worker.py).

gunicorn's gthread worker reads a request's head and body, and writes its answer, on a
blocking socket with no time limit; a client that sends or reads slowly holds its thread
for as long as it likes. Two limits, enforced by one watchdog thread (`watch`) that shuts
down the socket of a connection past its limit, so the blocked read or write ends as if
the client had gone and gthread closes the connection:

- `HeadDeadlines`: the TLS handshake and the request head within HEAD_SECONDS;
- `ClientPace`: while the body is read or the answer written (`PacedApp`), at least
  CLIENT_MIN_BYTES_PER_SECOND over each BASTION_SLOW_CLIENT_SECONDS window.

Hand-written because gunicorn has no such limits (its `timeout` is the worker's heartbeat)
and a socket option can't provide them: Python's ssl module retries a read that
SO_RCVTIMEO interrupts.

The same wrapper of `wsgi.input` turns a body that breaks its framing into a 400 that
closes the connection (`MalformedBody`).
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from gunicorn.http.errors import ParseException
from werkzeug.exceptions import BadRequest

HEAD_SECONDS = 10.0  # a request thread waits this long at most for the TLS handshake + head
CHECK_SECONDS = 1.0  # how often the watchdog looks
# A client that sends its body or takes its answer slower than this, measured over each
# BASTION_SLOW_CLIENT_SECONDS, is cut off (Apache mod_reqtimeout's MinRate default).
CLIENT_MIN_BYTES_PER_SECOND = 500
# Linux `struct tcp_info` (linux/tcp.h, append-only ABI): tcpi_bytes_acked and
# tcpi_bytes_received, two u64 at this offset since Linux 4.1.
_TCP_INFO_BYTES_AT = 120
_TCP_INFO_LENGTH = _TCP_INFO_BYTES_AT + 16


class HeadDeadlines:
    """Connections whose thread still waits for the request head, and until when.

    gunicorn's gthread hands a connection to a pool thread once its first bytes arrive; the
    thread then does the TLS handshake and reads the rest of the head on a blocking socket
    with no time limit. Eight connections that each sent half a request line held all eight
    threads of the embedded worker, for as long as they stayed open (slowloris; measured
    through gunicorn + TLS: a probe got no answer for 35 s, until the test gave up). A
    socket option can't bound that read: Python's ssl module retries a read that
    SO_RCVTIMEO interrupts. So a watchdog thread shuts the socket of a connection that is
    past its deadline: the blocked read ends as if the client had gone, and gthread closes
    the connection. Once the head is in, the app and its own limits take over
    (`LaneThreadWorker.handle_request`).
    """

    def __init__(self, seconds: float = HEAD_SECONDS) -> None:
        self.seconds = seconds
        self._waiting: dict[int, tuple[Any, float]] = {}
        self._lock = threading.Lock()

    def start(self, conn: Any) -> None:
        with self._lock:
            self._waiting[id(conn)] = (conn, time.monotonic() + self.seconds)

    def done(self, conn: Any) -> None:
        with self._lock:
            self._waiting.pop(id(conn), None)

    def expire(self, now: float) -> int:
        """Shut down the connections past their deadline; how many there were.

        Under the lock that `done` takes: the connection is then still open (gthread closes
        it only after the thread's `handle` has returned), so its descriptor can't have
        been reused by another connection.
        """
        with self._lock:
            late = [key for key, (_, deadline) in self._waiting.items() if deadline <= now]
            for key in late:
                conn, _ = self._waiting.pop(key)
                with suppress(OSError):  # closed or reset already: nothing left to end
                    conn.sock.shutdown(socket.SHUT_RDWR)
        return len(late)


def bytes_moved(sock: Any, sending: bool) -> int | None:
    """The bytes a TCP connection's client has acknowledged (`sending`), or sent us.

    Read from the kernel's TCP_INFO (Linux), so it counts what really crossed the network:
    data the app wrote into socket buffers that the client never reads is not counted.
    One direction only: a client that takes no answer must not stay alive by sending
    bytes the kernel buffers for a request it will never get to. None where the socket
    can't tell (another OS, a Unix socket, a closed descriptor).
    """
    option = getattr(socket, "TCP_INFO", None)
    if option is None:
        return None
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, option, _TCP_INFO_LENGTH)
    except OSError:
        return None
    if len(raw) < _TCP_INFO_LENGTH:
        return None
    acked, received = struct.unpack_from("=QQ", raw, _TCP_INFO_BYTES_AT)
    return int(acked if sending else received)


@dataclass(eq=False)
class _Wait:
    conn: Any
    sending: bool  # writing the answer (else reading the body)
    since: float | None = None  # when the current window began (the watchdog's first look)
    moved: int = 0  # `bytes_moved` then


class ClientPace:
    """Connections whose request thread waits on its client, and whether the client keeps up.

    Once the head is in, a thread reads the request's body and writes the answer on a
    blocking socket with no time limit: a client that trickles its body (a Content-Length
    of 1 MB sent a few bytes at a time) or never reads a large download held the thread
    for as long as it liked, and with two addresses (the address cap is per address) all
    of them. The request thread marks its connection as waiting (`waiting`/`done`) only
    while it reads the body or hands an answer's chunk to gunicorn (`PacedApp`), never
    while the app itself works. Every `window` seconds of such waiting the client must
    have moved `min_rate` bytes a second, counted by the kernel (`bytes_moved`); else the
    watchdog shuts the socket down, the blocked read or write ends as if the client had
    gone, and gthread closes the connection (as `HeadDeadlines` does).
    """

    def __init__(self, window: float, min_rate: int = CLIENT_MIN_BYTES_PER_SECOND) -> None:
        self.window = window
        self.min_rate = min_rate
        self._waiting: dict[int, _Wait] = {}
        self._lock = threading.Lock()

    def waiting(self, conn: Any, sending: bool) -> None:
        with self._lock:
            self._waiting[id(conn)] = _Wait(conn, sending)

    def done(self, conn: Any) -> None:
        with self._lock:
            self._waiting.pop(id(conn), None)

    def expire(self, now: float) -> int:
        """Shut down the connections whose client fell below the rate; how many there were.

        Under the lock that `done` takes, for the reason `HeadDeadlines.expire` gives.
        """
        cut = 0
        with self._lock:
            for key, wait in list(self._waiting.items()):
                if wait.since is not None and now - wait.since < self.window:
                    continue
                moved = bytes_moved(wait.conn.sock, wait.sending)
                if moved is None:
                    continue  # nothing to measure by: no limit (see docs/security.md)
                if wait.since is None:
                    wait.since, wait.moved = now, moved
                    continue
                if moved - wait.moved >= self.min_rate * self.window:
                    wait.since, wait.moved = now, moved  # kept up: a new window
                    continue
                del self._waiting[key]
                with suppress(OSError):
                    wait.conn.sock.shutdown(socket.SHUT_RDWR)
                cut += 1
        return cut


class MalformedBody(BadRequest):
    """The request body broke its HTTP/1.1 framing while the app read it.

    gunicorn checks a chunked body only as it is read: a bad chunk size or chunk
    terminator, or a bad trailer, raises its own parse error from `wsgi.input`, which the
    app knew nothing of. It became a 500, logged as an unhandled exception, answered with
    `Connection: keep-alive`; gunicorn then failed on the same bytes and wrote a second,
    unasked-for 400 on the connection. A 400 that closes the connection instead.
    """


class _PacedInput:
    """`wsgi.input` whose reads mark the connection as waiting on its client, and whose
    framing errors are a `MalformedBody`."""

    def __init__(self, body: Any, pace: ClientPace, conn: Any, req: Any) -> None:
        self._body = body
        self._pace = pace
        self._conn = conn
        self._req = req  # gunicorn's request: its connection ends after a framing error

    def _wait(self, call: Callable[..., Any], *args: Any) -> Any:
        self._pace.waiting(self._conn, sending=False)
        try:
            return call(*args)
        except ParseException as exc:
            # Nothing after this point on the connection can be framed: no keep-alive.
            self._req.force_close()
            raise MalformedBody from exc
        finally:
            self._pace.done(self._conn)

    def read(self, size: int | None = None) -> bytes:
        return bytes(self._wait(self._body.read, size))

    def readline(self, size: int | None = None) -> bytes:
        return bytes(self._wait(self._body.readline, size))

    def readlines(self, size: int | None = None) -> list[bytes]:
        return list(self._wait(self._body.readlines, size))

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.readline, b"")


class _PacedBody:
    """An answer's chunks; the connection waits on its client while gunicorn writes one."""

    def __init__(self, body: Iterable[bytes], pace: ClientPace, conn: Any) -> None:
        self._body = body
        self._pace = pace
        self._conn = conn

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._body:
            self._pace.waiting(self._conn, sending=True)
            yield chunk  # gunicorn writes it before asking for the next
            self._pace.done(self._conn)

    def close(self) -> None:
        self._pace.done(self._conn)
        close = getattr(self._body, "close", None)
        if close is not None:
            close()


class PacedApp:
    """WSGI middleware: the request's body reads and answer writes are paced (`ClientPace`).

    The connection and gunicorn's request come from the worker's thread-local
    `serving.conn` and `serving.req`; without a connection (a request not served by
    `LaneThreadWorker`) the app is called as it is.
    """

    def __init__(self, app: Any, pace: ClientPace, serving: threading.local) -> None:
        self.app = app
        self.pace = pace
        self.serving = serving

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        conn = getattr(self.serving, "conn", None)
        if conn is None:
            return self.app(environ, start_response)  # type: ignore[no-any-return]
        environ["wsgi.input"] = _PacedInput(
            environ["wsgi.input"], self.pace, conn, self.serving.req
        )
        return _PacedBody(self.app(environ, start_response), self.pace, conn)


def watch(*watched: HeadDeadlines | ClientPace) -> None:
    """The watchdog thread: every CHECK_SECONDS, cut off the clients past their limits."""
    while True:
        time.sleep(CHECK_SECONDS)
        now = time.monotonic()
        for each in watched:
            each.expire(now)
