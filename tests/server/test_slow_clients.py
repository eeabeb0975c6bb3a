"""Slow clients can't hold the worker's threads (serving/worker.py).

Controls proven: a connection whose request head has not arrived within HEAD_SECONDS of a
thread taking it up is shut down (`HeadDeadlines`), so connections that send half a
request and stop (slowloris) free their threads instead of holding them for as long as
they stay open; one client address runs on at most half the threads (`client_threads`),
so a client that trickles its request bodies can't hold them all; and a client that sends
its body or reads its answer slower than CLIENT_MIN_BYTES_PER_SECOND over a window of
BASTION_SLOW_CLIENT_SECONDS is cut off (`ClientPace`), so a client with several addresses
can't hold them all either. Before these, as many such connections as the worker has
threads stopped the server from answering anyone.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from bastion.serving import worker
from bastion.serving.slow_clients import (
    CLIENT_MIN_BYTES_PER_SECOND,
    HEAD_SECONDS,
    ClientPace,
    HeadDeadlines,
    bytes_moved,
)
from tests.conftest import csrf_token_from
from tests.server.conftest import BIN, LOOPBACK, Serve, client_context, start_serve

pytestmark = pytest.mark.server

THREADS = 2


def blocked_reader(sock: socket.socket) -> tuple[threading.Thread, list[bytes]]:
    """A thread blocked reading `sock`, as a request thread waiting for a head is."""
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(sock.recv(100)), daemon=True)
    reader.start()
    return reader, got


def test_a_connection_past_its_deadline_is_shut_and_its_read_ends() -> None:
    heads = HeadDeadlines(seconds=0.0)
    server_side, client_side = socket.socketpair()
    with server_side, client_side:
        conn = SimpleNamespace(sock=server_side)
        reader, got = blocked_reader(server_side)
        heads.start(conn)

        assert heads.expire(time.monotonic()) == 1
        reader.join(5)
        assert not reader.is_alive()
        assert got == [b""]  # as if the client had gone: gthread closes the connection


def test_a_connection_whose_head_arrived_is_left_alone() -> None:
    heads = HeadDeadlines(seconds=0.0)
    server_side, client_side = socket.socketpair()
    with server_side, client_side:
        conn = SimpleNamespace(sock=server_side)
        heads.start(conn)
        heads.done(conn)

        assert heads.expire(time.monotonic()) == 0
        client_side.sendall(b"still open")
        assert server_side.recv(100) == b"still open"


def test_a_connection_within_its_deadline_is_left_alone() -> None:
    heads = HeadDeadlines(seconds=60.0)
    server_side, client_side = socket.socketpair()
    with server_side, client_side:
        heads.start(SimpleNamespace(sock=server_side))
        assert heads.expire(time.monotonic()) == 0


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    """A server with few threads: as many stalled connections take all of them."""
    running = start_serve(tmp_path_factory.mktemp("slow"), BASTION_THREADS=str(THREADS))
    try:
        yield running
    finally:
        running.process.stop()


def tls_connection(port: int, cafile: Path, source: str, wait: float = 5) -> ssl.SSLSocket:
    raw = socket.create_connection((LOOPBACK, port), timeout=wait, source_address=(source, 0))
    try:
        return client_context(cafile).wrap_socket(raw, server_hostname=LOOPBACK)
    except BaseException:
        raw.close()
        raise


def half_a_request(port: int, cafile: Path, source: str) -> ssl.SSLSocket:
    """A TLS connection that sends the start of a request's head, then nothing."""
    conn = tls_connection(port, cafile, source)
    conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    return conn


def trickled_body(port: int, cafile: Path, source: str) -> ssl.SSLSocket:
    """A TLS connection that sends a whole head, then the first bytes of a long body."""
    conn = tls_connection(port, cafile, source)
    conn.sendall(
        b"POST /auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100000\r\n\r\n"
        b"email=a"
    )
    return conn


def probe(port: int, cafile: Path, wait: float) -> bytes:
    """The status line of GET /healthz from 127.0.0.1, or b'' after `wait` seconds."""
    try:
        with tls_connection(port, cafile, LOOPBACK, wait) as conn:
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            return conn.recv(100).split(b"\r\n")[0]
    except (TimeoutError, ssl.SSLError):
        return b""


def test_half_sent_requests_on_every_thread_do_not_stop_the_server(
    small_server: Serve,
) -> None:
    # From as many addresses as there are threads, so the address cap lets each in.
    stalled = [
        half_a_request(small_server.port, small_server.cafile, f"127.0.0.{10 + n}")
        for n in range(THREADS)
    ]
    try:
        time.sleep(0.5)  # each has a thread now, waiting for the rest of its head
        started = time.monotonic()

        answer = probe(small_server.port, small_server.cafile, wait=HEAD_SECONDS + 5)

        assert answer == b"HTTP/1.1 200 OK"
        assert time.monotonic() - started < HEAD_SECONDS + 3
        for conn in stalled:  # the server ended the stalled connections
            conn.settimeout(5)
            assert conn.recv(100) == b""
    finally:
        for conn in stalled:
            conn.close()


def test_one_address_trickling_bodies_holds_at_most_half_the_threads(
    small_server: Serve,
) -> None:
    """The head deadline can't help here: the heads are in, the bodies never end."""
    slow: list[ssl.SSLSocket] = []

    def hold() -> None:  # a handshake beyond the address's share waits for a thread
        with contextlib.suppress(OSError):
            slow.append(trickled_body(small_server.port, small_server.cafile, "127.0.0.20"))

    holders = [threading.Thread(target=hold, daemon=True) for _ in range(THREADS)]
    try:
        for holder in holders:
            holder.start()
        time.sleep(1.0)
        assert slow  # one of them is in: its thread waits for the body

        assert probe(small_server.port, small_server.cafile, wait=5) == b"HTTP/1.1 200 OK"
    finally:
        for holder in holders:
            holder.join(10)
        for conn in slow:
            conn.close()


def test_a_client_address_gets_half_the_threads() -> None:
    assert [worker.client_threads(n) for n in (1, 2, 3, 8)] == [1, 1, 1, 4]


# ------------------------------------------------------------------ the client's pace
@contextlib.contextmanager
def tcp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A loopback TCP connection (TCP_INFO needs TCP): (server side, client side)."""
    with socket.create_server((LOOPBACK, 0)) as listener:
        client_side = socket.create_connection(listener.getsockname())
        server_side, _ = listener.accept()
    with server_side, client_side:
        yield server_side, client_side


def eventually(check: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_bytes_moved_counts_what_the_client_sent_or_acknowledged() -> None:
    with tcp_pair() as (server_side, client_side):
        received = bytes_moved(server_side, sending=False)
        acked = bytes_moved(client_side, sending=True)
        answered = bytes_moved(server_side, sending=True)
        assert received is not None
        assert acked is not None

        client_side.sendall(b"x" * 1000)
        assert server_side.recv(2000) == b"x" * 1000

        assert bytes_moved(server_side, sending=False) == received + 1000  # from its client
        assert eventually(lambda: bytes_moved(client_side, sending=True) == acked + 1000)
        assert bytes_moved(server_side, sending=True) == answered  # it sent nothing


def test_a_client_below_the_rate_is_cut_and_the_blocked_read_ends() -> None:
    pace = ClientPace(window=5.0)
    with tcp_pair() as (server_side, client_side):
        reader, got = blocked_reader(server_side)
        pace.waiting(SimpleNamespace(sock=server_side), sending=False)
        assert pace.expire(100.0) == 0  # the window starts at the watchdog's first look
        client_side.sendall(b"x")  # a trickle: 1 byte in a 5 s window
        assert eventually(lambda: got == [b"x"])
        reader, got = blocked_reader(server_side)

        assert pace.expire(104.9) == 0  # the window isn't over yet
        assert pace.expire(105.0) == 1
        reader.join(5)
        assert not reader.is_alive()
        assert got == [b""]  # as if the client had gone: gthread closes the connection


def read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        data += sock.recv(size - len(data))
    return data


def test_a_client_that_keeps_the_rate_is_left_alone_window_after_window() -> None:
    pace = ClientPace(window=2.0)
    window_bytes = CLIENT_MIN_BYTES_PER_SECOND * 2
    with tcp_pair() as (server_side, client_side):
        pace.waiting(SimpleNamespace(sock=server_side), sending=False)
        pace.expire(0.0)
        for window in (1, 2, 3):
            client_side.sendall(b"x" * window_bytes)
            read_exactly(server_side, window_bytes)
            assert pace.expire(2.0 * window) == 0
        client_side.sendall(b"still open")
        assert read_exactly(server_side, 10) == b"still open"


def test_a_connection_no_longer_waiting_on_its_client_is_left_alone() -> None:
    pace = ClientPace(window=1.0)
    with tcp_pair() as (server_side, client_side):
        conn = SimpleNamespace(sock=server_side)
        pace.waiting(conn, sending=False)
        pace.expire(0.0)
        pace.done(conn)  # the app works now: its time is not the client's

        assert pace.expire(60.0) == 0
        client_side.sendall(b"still open")
        assert read_exactly(server_side, 10) == b"still open"


@pytest.mark.parametrize("chatty", [False, True], ids=["silent", "sending-meanwhile"])
def test_a_client_that_stops_reading_the_answer_is_cut_and_the_blocked_write_ends(
    chatty: bool,
) -> None:
    """Only the answer's bytes count while it is sent: bytes the client sends meanwhile
    (pipelined junk the kernel buffers for a later request) don't keep it alive."""
    pace = ClientPace(window=1.0)
    with tcp_pair() as (server_side, client_side):
        client_side.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        failed: list[BaseException] = []

        def write_answer() -> None:
            try:
                server_side.sendall(b"x" * (64 * 1024 * 1024))  # far more than the buffers
            except OSError as exc:
                failed.append(exc)

        writer = threading.Thread(target=write_answer, daemon=True)
        pace.waiting(SimpleNamespace(sock=server_side), sending=True)
        writer.start()
        time.sleep(0.5)  # the buffers are full: sendall blocks
        pace.expire(0.0)
        if chatty:
            client_side.sendall(b"GET / HTTP/1.1\r\n" * 200)  # 3,200 bytes, never read
        time.sleep(0.5)

        assert pace.expire(1.0) == 1
        writer.join(5)
        assert not writer.is_alive()
        assert failed  # the write ended with an error: gthread closes the connection


# A server whose clients must keep the pace over 2 s windows (the default is 20 s).
PACE_SECONDS = 2


@pytest.fixture(scope="module")
def paced_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    running = start_serve(
        tmp_path_factory.mktemp("paced"),
        BASTION_THREADS=str(THREADS),
        BASTION_SLOW_CLIENT_SECONDS=str(PACE_SECONDS),
        BASTION_RATELIMIT_DEFAULT="10000 per minute",
    )
    try:
        yield running
    finally:
        running.process.stop()


def trickle(conn: ssl.SSLSocket, stop: threading.Event) -> None:
    """Send the body one byte every half second (2 bytes/s) until stopped or cut off."""
    with contextlib.suppress(OSError):
        while not stop.wait(0.5):
            conn.sendall(b"a")


def closed_by_server(conn: ssl.SSLSocket) -> bool:
    """The server ended the connection: an end of stream, or a reset (when a trickled
    byte arrived after the server had closed its side)."""
    conn.settimeout(5)
    try:
        return conn.recv(100) == b""
    except ConnectionResetError:
        return True


def test_bodies_trickled_from_several_addresses_do_not_stop_the_server(
    paced_server: Serve,
) -> None:
    """The address cap can't help here: one trickling body per address, on every thread."""
    stop = threading.Event()
    slow = [
        trickled_body(paced_server.port, paced_server.cafile, f"127.0.0.{30 + n}")
        for n in range(THREADS)
    ]
    tricklers = [threading.Thread(target=trickle, args=(conn, stop), daemon=True) for conn in slow]
    try:
        for trickler in tricklers:
            trickler.start()
        time.sleep(0.5)  # each has a thread now, reading its body
        started = time.monotonic()

        answer = probe(paced_server.port, paced_server.cafile, wait=PACE_SECONDS + 8)

        assert answer == b"HTTP/1.1 200 OK"
        assert time.monotonic() - started < PACE_SECONDS + 4
        stop.set()
        for trickler in tricklers:
            trickler.join(5)
        assert all(closed_by_server(conn) for conn in slow)  # cut off, each of them
    finally:
        stop.set()
        for conn in slow:
            conn.close()


def test_a_body_sent_slowly_but_above_the_rate_is_read_whole(paced_server: Serve) -> None:
    body = b"email=a%40example.com&password=x&pad=" + b"p" * 3000
    per_tick = 600  # 1,200 bytes/s: over twice the minimum, for three windows
    with tls_connection(paced_server.port, paced_server.cafile, "127.0.0.40", wait=15) as conn:
        conn.sendall(
            b"POST /auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
        )
        for offset in range(0, len(body), per_tick):
            conn.sendall(body[offset : offset + per_tick])
            time.sleep(0.5)

        status = conn.recv(100).split(b"\r\n")[0]
    # Read whole, then refused for its missing CSRF token: an answer, not a cut connection.
    assert status == b"HTTP/1.1 400 BAD REQUEST"


# ------------------------------------------------------- a download that is never read
PASSWORD = "slow reader orchard 4417 lantern"
DOWNLOAD_BYTES = 12 * 1024 * 1024  # more than the socket buffers on both sides hold
URLENCODED = "application/x-www-form-urlencoded"


class Browser:
    """Just enough of a browser for one signed-in session over TLS: a cookie and tokens."""

    def __init__(self, server: Serve) -> None:
        self.server = server
        self.cookie = ""

    def request(
        self, method: str, path: str, body: bytes = b"", content_type: str = ""
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPSConnection(
            LOOPBACK, self.server.port, context=client_context(self.server.cafile), timeout=60
        )
        headers = {"Cookie": self.cookie} if self.cookie else {}
        if content_type:
            headers["Content-Type"] = content_type
        try:
            conn.request(method, path, body=body or None, headers=headers)
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        for cookie in response.msg.get_all("Set-Cookie") or []:
            if cookie.startswith("__Host-session="):
                self.cookie = cookie.split(";", 1)[0]
        return response.status, dict(response.getheaders()), data

    def token(self, path: str) -> str:
        _, _, page = self.request("GET", path)
        return csrf_token_from(page.decode())


def stored_document(server: Serve) -> tuple[str, str]:
    """Sign a new user in and upload a large text file: (session cookie, document path)."""
    created = subprocess.run(
        [str(BIN / "bastion"), "users", "create", "--email", "slow@example.com", "--name", "S"],
        input=PASSWORD + "\n",
        env=server.env,
        cwd=server.workdir,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert created.returncode == 0, created.stderr
    browser = Browser(server)
    form = f"email=slow%40example.com&password={PASSWORD.replace(' ', '+')}"
    token = browser.token("/auth/login")
    status, _, _ = browser.request(
        "POST", "/auth/login", f"{form}&csrf_token={token}".encode(), URLENCODED
    )
    assert status == 303
    token = browser.token("/documents/upload")
    boundary = "slowreaderboundary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n{token}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.txt"\r\n'
        "Content-Type: text/plain\r\n\r\n"
    ).encode() + (b"slow reader test line\n" * (DOWNLOAD_BYTES // 22 + 1))[:DOWNLOAD_BYTES]
    body += f"\r\n--{boundary}--\r\n".encode()
    status, headers, _ = browser.request(
        "POST", "/documents/upload", body, f"multipart/form-data; boundary={boundary}"
    )
    assert status == 303, status
    return browser.cookie, headers["Location"] + "/download"


def unread_download(server: Serve, cookie: str, path: str, source: str) -> ssl.SSLSocket:
    """A download whose client reads nothing: the server's write blocks once buffers fill."""
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.settimeout(10)
    raw.bind((source, 0))
    raw.connect((LOOPBACK, server.port))
    conn = client_context(server.cafile).wrap_socket(raw, server_hostname=LOOPBACK)
    conn.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {cookie}\r\n\r\n".encode())
    return conn


def test_downloads_never_read_from_several_addresses_do_not_stop_the_server(
    paced_server: Serve,
) -> None:
    cookie, path = stored_document(paced_server)
    stalled = [
        unread_download(paced_server, cookie, path, f"127.0.0.{50 + n}") for n in range(THREADS)
    ]
    try:
        time.sleep(1.0)  # each holds a thread now, blocked writing the answer
        started = time.monotonic()

        answer = probe(paced_server.port, paced_server.cafile, wait=PACE_SECONDS + 8)

        assert answer == b"HTTP/1.1 200 OK"
        assert time.monotonic() - started < PACE_SECONDS + 4
    finally:
        for conn in stalled:
            conn.close()

    # A client that does read gets the whole file through the same paced writes.
    browser = Browser(paced_server)
    browser.cookie = cookie
    status, _, data = browser.request("GET", path)
    assert status == 200
    assert len(data) == DOWNLOAD_BYTES


def test_half_sent_requests_on_every_redirector_thread_do_not_stop_it(
    small_server: Serve,
) -> None:
    """The plain-HTTP redirector (4 threads) has the same head deadline as the app."""
    stalled = []
    for n in range(4):
        conn = socket.create_connection(
            (LOOPBACK, small_server.http_port), timeout=5, source_address=(f"127.0.0.{60 + n}", 0)
        )
        conn.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        stalled.append(conn)
    try:
        time.sleep(0.5)
        started = time.monotonic()
        with socket.create_connection(
            (LOOPBACK, small_server.http_port), timeout=HEAD_SECONDS + 5
        ) as probe_conn:
            probe_conn.sendall(b"GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            answer = b""
            with contextlib.suppress(TimeoutError):
                answer = probe_conn.recv(100).split(b"\r\n")[0]

        assert answer.startswith(b"HTTP/1.1 301 ")
        assert time.monotonic() - started < HEAD_SECONDS + 3
    finally:
        for conn in stalled:
            conn.close()
