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

The worker also bounds how long a thread waits on a slow client: for a request's head,
its body and the answer's bytes (serving/slow_clients.py).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from gunicorn.workers.gthread import ThreadWorker

from bastion.core import lanes
from bastion.core.addresses import address_key
from bastion.serving.slow_clients import ClientPace, HeadDeadlines, PacedApp, watch
from bastion.settings import Settings

BACK_LANE_PATIENCE = 1.0  # seconds a back-lane request waits at most while pages queue
BACK_LANE_ATTRIBUTE = "bastion_back_lane"  # set on gunicorn's connection object
ADDRESS_MARK_SECONDS = 60.0  # an address stays in the back lane this long after a mark
MARKED_ADDRESSES_MAX = 4096  # the oldest marks go first beyond this (bounded memory)


class MarkedAddresses:
    """Client addresses whose new connections start in the back lane, for a while."""

    def __init__(self, max_entries: int = MARKED_ADDRESSES_MAX) -> None:
        self.max_entries = max_entries
        self._until: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def mark(self, address: str) -> None:
        key = address_key(address)
        with self._lock:
            self._until[key] = time.monotonic() + ADDRESS_MARK_SECONDS
            self._until.move_to_end(key)
            while len(self._until) > self.max_entries:
                self._until.popitem(last=False)

    def marked(self, address: str) -> bool:
        key = address_key(address)
        with self._lock:
            until = self._until.get(key)
        return until is not None and until > time.monotonic()


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
        address = None if peer is None else address_key(peer)
        job = _Job(Future(), lambda: fn(*args, **kwargs), back, address)
        with self._ready:
            if self._stopping:
                raise RuntimeError("cannot schedule new work after shutdown")
            (self._back if back else self._front).append(job)
            if self._runnable():
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

    def _runnable(self) -> bool:
        """Whether a free thread would find a job it may start (condition held).

        Waking a thread for a job held back by its address cap or the back-lane limit only
        puts it to sleep again, and each such wake-up is a GIL hand-off under load; the
        thread that frees the share or slot starts the job itself (`_serve`).
        """
        if self._first_allowed(self._front) is not None:
            return True
        return self._back_running < self.back_limit and self._first_allowed(self._back) is not None

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

    def _serve(self) -> None:
        job: _Job | None = None
        while True:
            with self._ready:
                # A finished job's thread takes the next one itself, in one hold of the
                # condition, so the slot or share it gave back can't be missed; another
                # thread is woken only for a job that may start beside it.
                if job is not None:
                    self._finished(job)
                job = self._take()
                if job is not None and self._runnable():
                    self._ready.notify()
            if job is None:
                return
            if job.future.set_running_or_notify_cancel():
                try:
                    job.future.set_result(job.call())
                except BaseException as exc:  # handed to gthread, which closes the connection
                    job.future.set_exception(exc)


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
        self.serving.req = req
        try:
            return super().handle_request(req, conn)
        finally:
            self.serving.conn = None
            self.serving.req = None
            self.pace.done(conn)
