"""HTTP behaviour through gunicorn + TLS: 413 pages, headers, proxy headers, the redirector."""

from __future__ import annotations

import http.client
import re
import secrets
import socket
import time
from pathlib import Path

import pytest

from tests.server.conftest import (
    LOOPBACK,
    Serve,
    client_context,
    get,
    log_lines,
    start_serve,
)

pytestmark = pytest.mark.server

BODY_BYTES = 20 * 1024 * 1024
SECURITY_HEADERS = (
    "Content-Security-Policy",
    "Strict-Transport-Security",
    "X-Content-Type-Options",
    "X-Frame-Options",
    "Referrer-Policy",
    "Permissions-Policy",
    "Cross-Origin-Opener-Policy",
    "Cross-Origin-Resource-Policy",
    "Cross-Origin-Embedder-Policy",
)


def test_20_mb_body_gets_a_real_413_page(server: Serve) -> None:
    """The client reads a 413 page, not a connection reset (gunicorn closes after 413).

    Without the drain in security/body_limit.py the server answers and closes with 20 MB
    unread in its receive buffer; the kernel then resets the connection and this test fails
    while sending or reading.
    """
    context = client_context(server.cafile)
    head = (
        "POST /auth/login HTTP/1.1\r\n"
        f"Host: {LOOPBACK}:{server.port}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {BODY_BYTES}\r\n\r\n"
    ).encode()
    chunk = b"a" * 65536
    with (
        socket.create_connection((LOOPBACK, server.port), timeout=20) as raw,
        context.wrap_socket(raw, server_hostname=LOOPBACK) as tls,
    ):
        tls.sendall(head)
        sent = 0
        try:
            while sent < BODY_BYTES:
                sent += tls.send(chunk[: BODY_BYTES - sent])
            response = http.client.HTTPResponse(tls, method="POST")  # type: ignore[arg-type]
            response.begin()
            body = response.read().decode()
        except OSError as exc:
            pytest.fail(f"no 413 page: connection failed after {sent} body bytes: {exc!r}")
    assert response.status == 413
    assert response.getheader("Content-Type", "").startswith("text/html")
    assert "too large" in body.lower()
    assert "<html" in body.lower()


def test_server_header_names_no_product_or_version(server: Serve) -> None:
    response, _ = get(server.port, "/no-such-page", server.cafile)
    assert response.status == 404
    servers = [value for name, value in response.getheaders() if name.lower() == "server"]
    assert servers == ["webserver"]
    assert not re.search(r"gunicorn|werkzeug|python|\d", servers[0], re.IGNORECASE)


def test_security_headers_on_a_404_through_gunicorn(server: Serve) -> None:
    response, body = get(server.port, "/no-such-page", server.cafile)
    assert response.status == 404
    for name in SECURITY_HEADERS:
        assert response.getheader(name), f"{name} missing"
    assert response.getheader("Strict-Transport-Security", "").startswith("max-age=63072000")
    assert b"gunicorn" not in body.lower()


def test_a_forged_host_gets_a_400_through_gunicorn(server: Serve) -> None:
    forged, body = get(server.port, "/auth/login", server.cafile, {"Host": "evil.example"})
    assert forged.status == 400
    assert b"does not answer for that host name" in body
    assert b"evil.example" not in body
    served, _ = get(server.port, "/auth/login", server.cafile)
    assert served.status == 200


def test_forwarded_headers_from_a_client_change_nothing(server: Serve) -> None:
    """BASTION_TRUSTED_PROXIES=0: X-Forwarded-For/-Proto from a client are not believed."""
    probe = f"/xff-probe-{secrets.token_hex(6)}"
    response, _ = get(
        server.port,
        probe,
        server.cafile,
        {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "http"},
    )
    assert response.status == 404
    deadline = time.monotonic() + 5
    lines: list[dict[str, object]] = []
    while not lines and time.monotonic() < deadline:
        lines = [line for line in log_lines(server.process.stderr()) if line.get("path") == probe]
        time.sleep(0.05)
    assert len(lines) == 1, "no access log line for the probe"
    assert lines[0]["ip"] == LOOPBACK
    assert "203.0.113.9" not in server.process.stderr()


def raw_http(port: int, request: bytes) -> http.client.HTTPResponse:
    sock = socket.create_connection((LOOPBACK, port), timeout=10)
    sock.sendall(request)
    response = http.client.HTTPResponse(sock)
    response.begin()
    response.read()
    sock.close()
    return response


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/auth/login?next=%2F&x=1", "/auth/login?next=%2F&x=1"),
        ("/", "/"),
        ("//evil.example/steal", "//evil.example/steal"),
        ("/a%0d%0aSet-Cookie:%20x=1", "/a%0D%0ASet-Cookie:%20x=1"),
        ("http://evil.example/abs", "/abs"),
    ],
)
def test_redirector_sends_every_request_to_the_public_url(
    server: Serve, target: str, expected: str
) -> None:
    request = (
        f"GET {target} HTTP/1.1\r\nHost: evil.example\r\n"
        "X-Forwarded-Host: evil.example\r\nConnection: close\r\n\r\n"
    ).encode()
    response = raw_http(server.http_port, request)
    assert response.status == 301
    location = response.getheader("Location")
    assert location == server.public_url + expected
    assert "evil.example" not in (location or "").split("/")[2]  # the authority is ours
    assert response.getheader("Set-Cookie") is None
    assert response.getheader("Server") == "webserver"
    assert response.getheader("Cache-Control") == "no-store"
    assert response.getheader("X-Content-Type-Options") == "nosniff"


def test_redirector_speaks_no_tls(server: Serve) -> None:
    """The redirector is plain HTTP: the main server's TLS does not apply to its port."""
    response = raw_http(server.http_port, b"HEAD /x HTTP/1.0\r\n\r\n")
    assert response.status == 301
    assert response.getheader("Location") == server.public_url + "/x"


def test_a_stopping_worker_writes_the_log_lines_it_holds(tmp_path: Path) -> None:
    """Workers write INFO lines in batches (core/logging.py); stopping loses none of them."""
    serve = start_serve(tmp_path, "held-lines")
    probe = f"/held-line-{secrets.token_hex(6)}"
    try:
        response, _ = get(serve.port, probe, serve.cafile)
        assert response.status == 404
    finally:
        serve.process.stop()  # at once: well inside the batch's second
    lines = [line for line in log_lines(serve.process.stderr()) if line.get("path") == probe]
    assert len(lines) == 1
