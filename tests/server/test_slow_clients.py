"""Slow clients can't hold the worker's threads (serving/worker.py).

Controls proven: a connection whose request head has not arrived within HEAD_SECONDS of a
thread taking it up is shut down (`HeadDeadlines`), so connections that send half a
request and stop (slowloris) free their threads instead of holding them for as long as
they stay open; and one client address runs on at most half the threads
(`client_threads`), so a client that trickles its request bodies can't hold them all.
Before these, as many such connections as the worker has threads stopped the server from
answering anyone.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from bastion.serving import worker
from bastion.serving.worker import HEAD_SECONDS, HeadDeadlines
from tests.server.conftest import LOOPBACK, Serve, client_context, start_serve

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
