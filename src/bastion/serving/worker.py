"""gunicorn's threaded worker with a front lane and a back lane for requests.

gunicorn's ``gthread`` worker hands every ready connection to one first-come thread pool.
During a login flood each of the attacker's connections always has a request in that
queue, and each costs a password hash or a wait for one: a signed-in page queued behind
them (measured with `make bench`: p99 9 ms idle, 815 ms during a flood from 48 addresses,
the app's own time for the page ~10 ms in both).

`LaneThreadWorker` keeps gthread as it is and replaces only its pool, through gthread's
documented `get_thread_pool` hook, with a `TwoLanePool`:

- a connection whose last request asked for a password hash without proving it, or was
  refused by a rate limit (the app marks it, `bastion.core.lanes`), has its next request
  queued in the back lane; every other request, the next one after a successful sign-in
  included, in the front lane;
- so does a new connection's first request from that client address, for
  `ADDRESS_MARK_SECONDS` after such a request (IPv6: the same /64): an attacker can't get
  back in front by opening a new connection for each attempt (measured before this:
  77-80x the idle p99). Only when clients connect directly (BASTION_TRUSTED_PROXIES=0):
  behind a proxy every connection comes from the proxy;
- a free thread takes the front lane first; the back lane may hold at most
  `back_lane_threads` threads at once: half the hashing slots (BASTION_HASH_CONCURRENCY,
  default the CPU count), at least one. A flood's connections are then served a few
  requests at a time, the pages find threads and cores free, and a sign-in from the front
  lane still finds a hashing slot. Measured on 2 cores (one back-lane thread): p99 of the
  signed-in page 9 -> 15 ms during the flood; with two, 21 ms; with four, 55 ms;
- a back-lane request that has waited `BACK_LANE_PATIENCE` seconds goes before the front
  lane, so a steady page load can't starve sign-ins for good;
- one client address (IPv6: its /64) runs on at most half the threads at once
  (`client_threads`); its other requests wait, in their lane, behind other clients'. A
  client that trickles its request body or never reads its answer holds its thread for
  as long as it likes; with the cap, one address can't hold them all. Only when clients
  connect directly, as for the address marks.

Nothing is refused here: the back lane only waits. Refusing is the rate limits' and the
hashing guard's work (security/rate_limit.py, security/hash_guard.py).

Hand-written because no maintained server offers it: gunicorn's pools are first-come, and a
per-route bulkhead needs the request parsed, which happens in the pool thread.

The worker also bounds how long a thread waits on a slow client: for a request's head
(`HeadDeadlines`), and for its body and the answer's bytes (`ClientPace`).
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from gunicorn.workers.gthread import ThreadWorker

from bastion.core import lanes
from bastion.settings import Settings

BACK_LANE_PATIENCE = 1.0  # seconds a back-lane request waits at most while pages queue
BACK_LANE_ATTRIBUTE = "bastion_back_lane"  # set on gunicorn's connection object
ADDRESS_MARK_SECONDS = 60.0  # an address stays in the back lane this long after a mark
MARKED_ADDRESSES_MAX = 4096  # the oldest marks go first beyond this (bounded memory)
HEAD_SECONDS = 10.0  # a request thread waits this long at most for the TLS handshake + head
CHECK_SECONDS = 1.0  # how often the watchdog looks
# A client that sends its body or takes its answer slower than this, measured over each
# BASTION_SLOW_CLIENT_SECONDS, is cut off (Apache mod_reqtimeout's MinRate default).
CLIENT_MIN_BYTES_PER_SECOND = 500
# Linux `struct tcp_info` (linux/tcp.h, append-only ABI): tcpi_bytes_acked and
# tcpi_bytes_received, two u64 at this offset since Linux 4.1.
_TCP_INFO_BYTES_AT = 120
_TCP_INFO_LENGTH = _TCP_INFO_BYTES_AT + 16


class MarkedAddresses:
    """Client addresses whose new connections start in the back lane, for a while."""

    def __init__(self, max_entries: int = MARKED_ADDRESSES_MAX) -> None:
        self.max_entries = max_entries
        self._until: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def mark(self, address: str) -> None:
        key = _address_key(address)
        with self._lock:
            self._until[key] = time.monotonic() + ADDRESS_MARK_SECONDS
            self._until.move_to_end(key)
            while len(self._until) > self.max_entries:
                self._until.popitem(last=False)

    def marked(self, address: str) -> bool:
        key = _address_key(address)
        with self._lock:
            until = self._until.get(key)
        return until is not None and until > time.monotonic()


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


def bytes_moved(sock: Any) -> int | None:
    """The bytes a TCP connection's client has acknowledged plus those received from it.

    Read from the kernel's TCP_INFO (Linux), so it counts what really crossed the network:
    data the app wrote into socket buffers that the client never reads is not counted.
    None where the socket can't tell (another OS, a Unix socket, a closed descriptor).
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
    return int(acked + received)


@dataclass(eq=False)
class _Wait:
    conn: Any
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

    def waiting(self, conn: Any) -> None:
        with self._lock:
            self._waiting[id(conn)] = _Wait(conn)

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
                moved = bytes_moved(wait.conn.sock)
                if moved is None:
                    continue  # nothing to measure by: no limit (see docs/security.md)
                if wait.since is None or now - wait.since < self.window:
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


class _PacedInput:
    """`wsgi.input` whose reads mark the connection as waiting on its client."""

    def __init__(self, body: Any, pace: ClientPace, conn: Any) -> None:
        self._body = body
        self._pace = pace
        self._conn = conn

    def _wait(self, call: Callable[..., Any], *args: Any) -> Any:
        self._pace.waiting(self._conn)
        try:
            return call(*args)
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
            self._pace.waiting(self._conn)
            yield chunk  # gunicorn writes it before asking for the next
            self._pace.done(self._conn)

    def close(self) -> None:
        self._pace.done(self._conn)
        close = getattr(self._body, "close", None)
        if close is not None:
            close()


class PacedApp:
    """WSGI middleware: the request's body reads and answer writes are paced (`ClientPace`).

    The connection comes from the worker's thread-local `serving.conn`; without one (a
    request not served by `LaneThreadWorker`) the app is called as it is.
    """

    def __init__(self, app: Any, pace: ClientPace, serving: threading.local) -> None:
        self.app = app
        self.pace = pace
        self.serving = serving

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        conn = getattr(self.serving, "conn", None)
        if conn is None:
            return self.app(environ, start_response)  # type: ignore[no-any-return]
        environ["wsgi.input"] = _PacedInput(environ["wsgi.input"], self.pace, conn)
        return _PacedBody(self.app(environ, start_response), self.pace, conn)


def watch(*watched: HeadDeadlines | ClientPace) -> None:
    """The watchdog thread: every CHECK_SECONDS, cut off the clients past their limits."""
    while True:
        time.sleep(CHECK_SECONDS)
        now = time.monotonic()
        for each in watched:
            each.expire(now)


def _address_key(address: str) -> str:
    """IPv4: the address. IPv6: its /64, which one subscriber usually holds whole.

    An IPv4 client of a dual-stack socket arrives as ``::ffff:a.b.c.d``: its key is the
    IPv4 address, or one /64 would hold every IPv4 client.
    """
    if ":" not in address:
        return address
    try:
        ip = ipaddress.IPv6Address(address)
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    except ValueError:
        return address


def _peer(conn: Any) -> str | None:
    """The client's IP address of a gunicorn connection (None on a Unix socket)."""
    client = getattr(conn, "client", None)
    if isinstance(client, tuple) and client and isinstance(client[0], str):
        return client[0]
    return None


@dataclass(eq=False)  # a job is itself: taken out of its lane by identity
class _Job:
    future: Future[Any]
    call: Callable[[], Any]
    back: bool
    address: str | None = None  # the client's address key, when addresses are capped
    queued: float = field(default_factory=time.monotonic)


class TwoLanePool:
    """The part of `concurrent.futures.ThreadPoolExecutor` gthread uses, with two queues.

    `submit(fn, conn)` puts the call in the back lane when ``conn`` carries the back-lane
    mark, or is new and comes from a marked address. With `per_address`, a free thread
    passes over the jobs of a client address that already runs that many. All `threads`
    start at once (gthread runs in the worker, after the fork).
    """

    def __init__(
        self,
        threads: int,
        back_limit: int,
        addresses: MarkedAddresses | None = None,
        per_address: int | None = None,
    ) -> None:
        self.back_limit = max(1, back_limit)
        self.addresses = addresses
        self.per_address = per_address
        self._running_by_address: dict[str, int] = {}
        self._front: deque[_Job] = deque()
        self._back: deque[_Job] = deque()
        self._ready = threading.Condition()
        self._back_running = 0
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._serve, name=f"request-{n}", daemon=True)
            for n in range(max(1, threads))
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        back = bool(args) and self._goes_back(args[0])
        peer = _peer(args[0]) if args and self.per_address is not None else None
        address = None if peer is None else _address_key(peer)
        job = _Job(Future(), lambda: fn(*args, **kwargs), back, address)
        with self._ready:
            if self._stopping:
                raise RuntimeError("cannot schedule new work after shutdown")
            (self._back if back else self._front).append(job)
            self._ready.notify()
        return job.future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking work; queued jobs still run (or are cancelled), then threads end."""
        with self._ready:
            self._stopping = True
            if cancel_futures:
                for job in (*self._front, *self._back):
                    job.future.cancel()
                self._front.clear()
                self._back.clear()
            self._ready.notify_all()
        if wait:
            for thread in self._threads:
                thread.join()

    def _goes_back(self, conn: Any) -> bool:
        """A served connection: its last request decides. A new one: its address does."""
        last_request_marked = getattr(conn, BACK_LANE_ATTRIBUTE, None)
        if last_request_marked is not None:
            return bool(last_request_marked)
        peer = _peer(conn)
        return peer is not None and self.addresses is not None and self.addresses.marked(peer)

    def queued(self) -> tuple[int, int]:
        """Jobs waiting in the front and the back lane."""
        with self._ready:
            return len(self._front), len(self._back)

    def _first_allowed(self, lane: deque[_Job]) -> _Job | None:
        """The first job in `lane` whose client address is under its thread cap."""
        cap = self.per_address
        for job in lane:
            if job.address is None or cap is None:
                return job
            if self._running_by_address.get(job.address, 0) < cap:
                return job
        return None

    def _take(self) -> _Job | None:
        """The next job for a free thread (called with the condition held)."""
        while True:
            front = self._first_allowed(self._front)
            back = None
            if self._back_running < self.back_limit:
                back = self._first_allowed(self._back)
            overdue = back is not None and time.monotonic() - back.queued > BACK_LANE_PATIENCE
            if front is not None and not overdue:
                self._front.remove(front)
                return self._started(front)
            if back is not None:
                self._back.remove(back)
                self._back_running += 1
                return self._started(back)
            if self._stopping and not self._front:
                return None
            self._ready.wait()

    def _started(self, job: _Job) -> _Job:
        if job.address is not None:
            self._running_by_address[job.address] = self._running_by_address.get(job.address, 0) + 1
        return job

    def _finished(self, job: _Job) -> None:
        """Give back the job's back-lane slot and address share (condition held)."""
        if job.back:
            self._back_running -= 1
        if job.address is not None:
            left = self._running_by_address[job.address] - 1
            if left:
                self._running_by_address[job.address] = left
            else:
                del self._running_by_address[job.address]
        if self._front or self._back:
            self._ready.notify()  # a job may have waited for this slot or share

    def _serve(self) -> None:
        while True:
            with self._ready:
                job = self._take()
            if job is None:
                return
            if job.future.set_running_or_notify_cancel():
                try:
                    job.future.set_result(job.call())
                except BaseException as exc:  # handed to gthread, which closes the connection
                    job.future.set_exception(exc)
            with self._ready:
                self._finished(job)


def back_lane_threads(hash_slots: int) -> int:
    """Threads the back lane may hold at once: half the hashing slots, at least one."""
    return max(1, hash_slots // 2)


def client_threads(threads: int) -> int:
    """Threads one client address may hold at once: half of them, at least one."""
    return max(1, threads // 2)


class LaneThreadWorker(ThreadWorker):  # type: ignore[misc]  # gunicorn has no type hints
    """gthread with a `TwoLanePool`; the app's lane mark is carried on the connection, a
    thread waits `HEAD_SECONDS` at most for a request's head (`HeadDeadlines`), and a
    client must keep up a minimum rate while its body is read or its answer written
    (`ClientPace`, `PacedApp`)."""

    addresses: MarkedAddresses | None = None
    heads: HeadDeadlines
    pace: ClientPace
    serving: threading.local
    wsgi: Any  # the app gunicorn calls (gunicorn.workers.base.Worker.load_wsgi)

    def get_thread_pool(self) -> TwoLanePool:
        settings = Settings.from_env()
        # Behind a proxy every connection comes from the proxy: marking or capping it would
        # mark or cap all.
        direct = settings.trusted_proxies == 0
        self.addresses = MarkedAddresses() if direct else None
        self.heads = HeadDeadlines()
        self.pace = ClientPace(settings.slow_client_seconds)
        self.serving = threading.local()
        threading.Thread(
            target=watch, args=(self.heads, self.pace), name="slow-clients", daemon=True
        ).start()
        return TwoLanePool(
            self.cfg.threads,
            back_lane_threads(settings.hash_slots),
            self.addresses,
            per_address=client_threads(self.cfg.threads) if direct else None,
        )

    def handle(self, conn: Any) -> Any:
        lanes.begin()
        self.heads.start(conn)
        try:
            return super().handle(conn)
        finally:
            self.heads.done(conn)
            back = lanes.end()
            setattr(conn, BACK_LANE_ATTRIBUTE, back)
            if back and self.addresses is not None and (peer := _peer(conn)) is not None:
                self.addresses.mark(peer)

    def load_wsgi(self) -> None:
        super().load_wsgi()
        self.wsgi = PacedApp(self.wsgi, self.pace, self.serving)

    def handle_request(self, req: Any, conn: Any) -> Any:
        """The head is in: from here the app and the client's pace take over."""
        self.heads.done(conn)
        self.serving.conn = conn
        try:
            return super().handle_request(req, conn)
        finally:
            self.serving.conn = None
            self.pace.done(conn)
