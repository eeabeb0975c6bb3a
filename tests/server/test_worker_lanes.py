"""The two-lane request pool of Bastion's gunicorn worker (bastion/serving/worker.py).

Control proven: a connection the app sent to the back lane (its last request asked for a
password hash, or was refused by a rate limit) waits behind everyone else's requests and
holds at most the back lane's threads, so a login flood can't queue the pages behind it;
a back-lane request that has waited too long goes first, so sign-ins can't starve. The
effect on a real flood is measured by `make bench` (signed-in p99 during the flood).
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable, Iterator
from http import HTTPStatus
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlencode

import pytest
from gunicorn.workers.gthread import ThreadWorker

from bastion.core import lanes
from bastion.serving import worker
from bastion.serving.slow_clients import HeadDeadlines
from bastion.serving.worker import (
    BACK_LANE_ATTRIBUTE,
    LaneThreadWorker,
    MarkedAddresses,
    TwoLanePool,
)
from tests.conftest import csrf_token_from
from tests.server.conftest import LOOPBACK, client_context, log_lines, start_serve

pytestmark = pytest.mark.server

WAIT = 10.0  # seconds: only reached when the pool is broken


def connection(back: bool) -> SimpleNamespace:
    """What gthread submits: its connection object, with or without the back-lane mark."""
    conn = SimpleNamespace()
    setattr(conn, BACK_LANE_ATTRIBUTE, back)
    return conn


@pytest.fixture
def pool() -> Iterator[Callable[[int, int], TwoLanePool]]:
    made: list[TwoLanePool] = []

    def make(threads: int, back_limit: int) -> TwoLanePool:
        made.append(TwoLanePool(threads, back_limit))
        return made[-1]

    yield make
    for each in made:
        each.shutdown(wait=True)


class Order:
    """Records the order jobs ran in; a job may hold its thread until released."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        self.started = {name: threading.Event() for name in ("hold", "b1", "b2", "f1")}
        self.release = threading.Event()

    def job(self, name: str, hold: bool = False) -> Callable[[Any], str]:
        def run(_conn: Any) -> str:
            self.ran.append(name)
            self.started.setdefault(name, threading.Event()).set()
            if hold:
                assert self.release.wait(WAIT)
            return name

        return run


def back_then_front_behind_a_held_thread(lanes_pool: TwoLanePool, order: Order) -> list[Any]:
    """The pool's only thread held; then a back-lane job queued, then a front-lane one."""
    holding = lanes_pool.submit(order.job("hold", hold=True), connection(back=False))
    assert order.started["hold"].wait(WAIT)
    back = lanes_pool.submit(order.job("b1"), connection(back=True))
    front = lanes_pool.submit(order.job("f1"), connection(back=False))
    assert lanes_pool.queued() == (1, 1)
    order.release.set()
    return [f.result(WAIT) for f in (holding, back, front)]


def test_a_page_goes_before_the_back_lane_queued_ahead_of_it(
    pool: Callable[[int, int], TwoLanePool],
) -> None:
    order = Order()
    assert back_then_front_behind_a_held_thread(pool(1, 1), order) == ["hold", "b1", "f1"]
    assert order.ran == ["hold", "f1", "b1"]  # first come would have run b1 first


def test_the_back_lane_holds_at_most_its_threads(
    pool: Callable[[int, int], TwoLanePool],
) -> None:
    lanes_pool = pool(3, 1)
    order = Order()
    first = lanes_pool.submit(order.job("b1", hold=True), connection(back=True))
    assert order.started["b1"].wait(WAIT)
    second = lanes_pool.submit(order.job("b2"), connection(back=True))
    page = lanes_pool.submit(order.job("f1"), connection(back=False))

    assert page.result(WAIT) == "f1"  # a free thread serves the page at once...
    assert not order.started["b2"].wait(0.2)  # ...but not a second back-lane request
    assert lanes_pool.queued() == (0, 1)

    order.release.set()
    assert (first.result(WAIT), second.result(WAIT)) == ("b1", "b2")


def test_a_back_lane_request_that_waited_too_long_goes_first(
    pool: Callable[[int, int], TwoLanePool], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker, "BACK_LANE_PATIENCE", 0.0)
    order = Order()
    back_then_front_behind_a_held_thread(pool(1, 1), order)
    assert order.ran == ["hold", "b1", "f1"]


def test_errors_reach_gthread_and_shutdown_finishes_queued_work(
    pool: Callable[[int, int], TwoLanePool],
) -> None:
    lanes_pool = pool(1, 1)

    def fail(_conn: Any) -> None:
        raise ConnectionResetError("client went away")

    failed = lanes_pool.submit(fail, connection(back=True))
    assert isinstance(failed.exception(WAIT), ConnectionResetError)
    done = lanes_pool.submit(lambda _conn: "done", connection(back=False))
    lanes_pool.shutdown(wait=True)
    assert done.result(0) == "done"
    with pytest.raises(RuntimeError):
        lanes_pool.submit(lambda _conn: None, connection(back=False))


def test_a_back_lane_thread_goes_back_to_work_when_the_lane_frees(
    pool: Callable[[int, int], TwoLanePool],
) -> None:
    """Many back-lane jobs, one back-lane thread of two: each runs, none is left waiting."""
    lanes_pool = pool(2, 1)
    futures = [lanes_pool.submit(lambda _conn, n=n: n, connection(back=True)) for n in range(20)]
    assert [f.result(WAIT) for f in futures] == list(range(20))


@pytest.mark.parametrize("marked", [True, False])
def test_the_worker_carries_the_apps_mark_to_the_connection(
    monkeypatch: pytest.MonkeyPatch, marked: bool
) -> None:
    def gthread_handle(self: Any, conn: Any) -> bool:  # stands in for serving one request
        if marked:
            lanes.send_to_back()
        return True

    monkeypatch.setattr(ThreadWorker, "handle", gthread_handle)
    lane_worker = LaneThreadWorker.__new__(LaneThreadWorker)  # no arbiter needed here
    lane_worker.addresses = MarkedAddresses()
    lane_worker.heads = HeadDeadlines()
    conn = connection(back=not marked)  # the previous request's mark is replaced
    conn.client = ("198.51.100.9", 51000)

    assert lane_worker.handle(conn) is True
    assert getattr(conn, BACK_LANE_ATTRIBUTE) is marked
    assert lane_worker.addresses.marked("198.51.100.9") is marked
    assert lanes.end() is False  # nothing left over for the thread's next request


def test_a_marked_address_holds_by_address_v6_prefix_and_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    addresses = MarkedAddresses()
    addresses.mark("203.0.113.7")
    addresses.mark("2001:db8:1:2::10")
    assert addresses.marked("203.0.113.7")
    assert not addresses.marked("203.0.113.8")
    assert addresses.marked("2001:db8:1:2:ffff::1")  # the same /64
    assert not addresses.marked("2001:db8:1:3::10")
    addresses.mark("::ffff:192.0.2.10")  # an IPv4 client of a dual-stack socket
    assert addresses.marked("192.0.2.10")
    assert not addresses.marked("::ffff:192.0.2.11")  # not every IPv4 client

    monkeypatch.setattr(worker, "ADDRESS_MARK_SECONDS", -1.0)
    addresses.mark("198.51.100.1")
    assert not addresses.marked("198.51.100.1")  # expired


def test_marked_addresses_stay_bounded() -> None:
    addresses = MarkedAddresses(max_entries=2)
    for address in ("192.0.2.1", "192.0.2.2", "192.0.2.3"):
        addresses.mark(address)
    assert [addresses.marked(a) for a in ("192.0.2.1", "192.0.2.2", "192.0.2.3")] == [
        False,
        True,
        True,
    ]


def test_a_new_connection_from_a_marked_address_starts_in_the_back_lane(
    pool: Callable[[int, int], TwoLanePool],
) -> None:
    lanes_pool = pool(1, 1)
    lanes_pool.addresses = MarkedAddresses()
    lanes_pool.addresses.mark("192.0.2.66")
    order = Order()
    holding = lanes_pool.submit(order.job("hold", hold=True), connection(back=False))
    assert order.started["hold"].wait(WAIT)
    new_from_attacker = SimpleNamespace(client=("192.0.2.66", 40000))
    served_from_attacker = connection(back=False)  # its last request was fine
    served_from_attacker.client = ("192.0.2.66", 40001)
    new_from_elsewhere = SimpleNamespace(client=("192.0.2.1", 40002))
    futures = [
        holding,
        lanes_pool.submit(order.job("b1"), new_from_attacker),
        lanes_pool.submit(order.job("f1"), served_from_attacker),
        lanes_pool.submit(order.job("f2"), new_from_elsewhere),
    ]
    assert lanes_pool.queued() == (2, 1)
    order.release.set()
    for future in futures:
        future.result(WAIT)
    assert order.ran == ["hold", "f1", "f2", "b1"]


def test_a_free_thread_passes_over_an_address_at_its_cap(
    pool: Callable[[int, int], TwoLanePool],
) -> None:
    """Two threads, one per address: the second job of a busy address waits, and a later
    job from another address takes the free thread; the waiting job runs once its
    address's first job ends."""
    lanes_pool = pool(2, 1)
    lanes_pool.per_address = 1
    order = Order()
    busy = SimpleNamespace(client=("192.0.2.7", 40000))
    other = SimpleNamespace(client=("192.0.2.8", 40001))
    holding = lanes_pool.submit(order.job("hold", hold=True), busy)
    assert order.started["hold"].wait(WAIT)
    same_address = lanes_pool.submit(order.job("b1"), busy)
    time.sleep(0.2)  # the free thread could take it now, were it not for the cap
    other_address = lanes_pool.submit(order.job("f1"), other)

    assert other_address.result(WAIT) == "f1"
    assert not same_address.done()
    order.release.set()
    assert [f.result(WAIT) for f in (holding, same_address)] == ["hold", "b1"]
    assert order.ran == ["hold", "f1", "b1"]


def test_a_job_held_back_by_its_cap_wakes_no_thread_and_runs_when_its_share_frees(
    pool: Callable[[int, int], TwoLanePool],
) -> None:
    """Under load, waking a thread that can only go back to sleep is a GIL hand-off for
    nothing (bench/switches.py). Jobs over their address's cap wake no one; the thread
    whose job ends takes the next one itself."""
    lanes_pool = pool(3, 1)
    lanes_pool.per_address = 1
    wakeups = []
    notify = lanes_pool._ready.notify

    def counted(n: int = 1) -> None:
        wakeups.append(n)
        notify(n)

    lanes_pool._ready.notify = counted  # type: ignore[method-assign]
    order = Order()
    busy = SimpleNamespace(client=("192.0.2.7", 40000))
    holding = lanes_pool.submit(order.job("hold", hold=True), busy)
    assert order.started["hold"].wait(WAIT)
    woken_for_the_first = len(wakeups)
    waiting = [lanes_pool.submit(order.job(f"j{n}"), busy) for n in range(5)]
    time.sleep(0.2)

    assert len(wakeups) == woken_for_the_first  # five capped jobs: nobody woken
    assert not any(future.done() for future in waiting)
    order.release.set()
    assert [f.result(WAIT) for f in (holding, *waiting)] == ["hold", "j0", "j1", "j2", "j3", "j4"]
    assert len(wakeups) == woken_for_the_first  # each ending thread took the next itself


def test_the_back_lane_takes_half_the_hashing_slots() -> None:
    assert [worker.back_lane_threads(n) for n in (1, 2, 3, 8)] == [1, 1, 1, 4]


# ------------------------------------------------------------ through gunicorn and TLS
def _raw_request(conn: http.client.HTTPSConnection, path: str, cookie: str = "") -> None:
    extra = f"Cookie: {cookie}\r\n" if cookie else ""
    conn.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {LOOPBACK}\r\n{extra}\r\n".encode())


ATTACKER = "127.0.0.2"  # all of 127.0.0.0/8 is loopback on Linux


@pytest.mark.parametrize("reconnect", [False, True], ids=["same-connection", "new-connection"])
def test_gunicorn_serves_a_page_before_a_failed_sign_ins_next_request(
    tmp_path: Path, reconnect: bool
) -> None:
    """One request thread: the attacker's request is queued first, the page still goes first.

    A third connection holds the only thread (its request headers arrive in two parts).
    Meanwhile the attacker, who just failed a sign-in, queues a request - on the same
    connection, or on a new one from the same address - and then a page's connection
    queues one. Once the thread is free, the access log shows the page served first.
    """
    serve = start_serve(tmp_path, "lanes", BASTION_THREADS="1", BASTION_HASH_CONCURRENCY="2")
    context = client_context(serve.cafile)
    opened: list[http.client.HTTPSConnection] = []

    def connect(source: str = LOOPBACK, warm: bool = True) -> http.client.HTTPSConnection:
        conn = http.client.HTTPSConnection(
            LOOPBACK, serve.port, context=context, timeout=10, source_address=(source, 0)
        )
        opened.append(conn)
        if warm:
            conn.request("GET", "/healthz")  # the TLS handshake needs the thread: do it now
            conn.getresponse().read()
        return conn

    try:
        attacker, page, holder = connect(ATTACKER), connect(), connect()
        attacker.request("GET", "/auth/login")
        form = attacker.getresponse()
        cookie = form.headers["Set-Cookie"].split(";", 1)[0]
        token = csrf_token_from(form.read().decode())
        body = urlencode({"email": "nobody@example.com", "password": "wrong", "csrf_token": token})
        attacker.request(
            "POST",
            "/auth/login",
            body=body,
            headers={"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"},
        )
        failed = attacker.getresponse()
        failed.read()
        assert failed.status == HTTPStatus.UNAUTHORIZED

        holder.sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: {LOOPBACK}\r\n".encode())
        time.sleep(0.2)  # the holder's request now has the thread, waiting for its headers
        if reconnect:
            again = connect(ATTACKER, warm=False)
            # Its handshake waits for the thread too: send from another thread.
            sender = threading.Thread(target=again.request, args=("GET", "/auth/login"))
            sender.start()
        else:
            _raw_request(attacker, "/auth/login", cookie)
        time.sleep(0.2)  # queued, in the back lane
        _raw_request(page, "/favicon.ico")
        time.sleep(0.2)  # queued, in the front lane
        holder.sock.sendall(b"\r\n")
        for conn in (holder, page):
            conn.sock.settimeout(10)
            assert conn.sock.recv(1)  # each answered
        if reconnect:
            sender.join(10)
            assert again.getresponse().status == HTTPStatus.OK
        else:
            attacker.sock.settimeout(10)
            assert attacker.sock.recv(1)
    finally:
        for conn in opened:
            conn.close()
        serve.process.stop()

    served = [
        line["path"]
        for line in log_lines(serve.process.stderr())
        if line.get("event") == "request" and line["path"] in {"/auth/login", "/favicon.ico"}
    ]
    assert served[-2:] == ["/favicon.ico", "/auth/login"]  # first come: the reverse


@pytest.mark.parametrize(("proxies", "by_address"), [("0", True), ("1", False)])
def test_addresses_are_marked_only_when_clients_connect_directly(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, proxies: str, by_address: bool
) -> None:
    """Behind a proxy every connection comes from the proxy: marking or capping it would
    mark or cap all."""
    monkeypatch.setenv("BASTION_INSTANCE_PATH", str(tmp_path))
    monkeypatch.setenv("BASTION_TRUSTED_PROXIES", proxies)
    lane_worker = LaneThreadWorker.__new__(LaneThreadWorker)
    lane_worker.cfg = SimpleNamespace(threads=1)
    lanes_pool = lane_worker.get_thread_pool()
    try:
        assert (lanes_pool.addresses is not None) is by_address
        assert (lanes_pool.per_address is not None) is by_address
    finally:
        lanes_pool.shutdown(wait=True)
