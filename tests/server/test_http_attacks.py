"""Hostile HTTP/1.1 through the real server (gunicorn + LaneThreadWorker + TLS).

Controls proven: a body that breaks its chunked framing while the app reads it gets one
400 and the connection ends (serving/slow_clients.py `MalformedBody`); requests whose
framing is ambiguous (the request-smuggling shapes) are refused and the connection
closed, so bytes sent after them are never served as a request; the bytes of a refused
oversized body are never parsed as requests; oversized and malformed heads get a fast
4xx, and the server goes on serving.

Each exchange sends everything at once and reads until the server closes the connection,
so "nothing else was answered" is checked on every byte the server sent.
"""

from __future__ import annotations

import http.client
import io
import secrets
import socket
import time

import pytest

from tests.server.conftest import LOOPBACK, Serve, client_context, get, log_lines

pytestmark = pytest.mark.server

READ_SECONDS = 8.0  # longer than gunicorn's keep-alive (2 s): a kept-open connection fails
FORM = "application/x-www-form-urlencoded"


class _Kept(io.BytesIO):
    def close(self) -> None:  # HTTPResponse closes its file after the body: keep the rest
        pass


class _Replay:
    """What the server sent, for `http.client.HTTPResponse` to parse."""

    def __init__(self, data: bytes) -> None:
        self.file = _Kept(data)

    def makefile(self, mode: str) -> io.BytesIO:
        return self.file


def exchange(server: Serve, request: bytes) -> tuple[http.client.HTTPResponse, bytes, bytes]:
    """Send `request`, read until the server closes; (first response, its body, the rest).

    Fails when the server keeps the connection open past READ_SECONDS.
    """
    context = client_context(server.cafile)
    received = bytearray()
    with (
        socket.create_connection((LOOPBACK, server.port), timeout=READ_SECONDS) as raw,
        context.wrap_socket(raw, server_hostname=LOOPBACK) as tls,
    ):
        tls.sendall(request)
        deadline = time.monotonic() + READ_SECONDS
        while time.monotonic() < deadline:
            try:
                chunk = tls.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            received += chunk
        else:
            pytest.fail("the server kept the connection open")
    replay = _Replay(bytes(received))
    response = http.client.HTTPResponse(replay)  # type: ignore[arg-type]
    response.begin()
    body = response.read()
    return response, body, replay.file.read()


def head(server: Serve, *lines: str) -> bytes:
    """A request head for this server: the request line, a Host, `lines`, the blank line."""
    fields = [f"Host: {LOOPBACK}:{server.port}", *lines]
    return "\r\n".join(fields).encode() + b"\r\n\r\n"


def tail(server: Serve) -> bytes:
    """A second request to send behind an attack."""
    return f"GET /smuggled-{secrets.token_hex(4)} HTTP/1.1\r\n".encode() + head(server)


def access_lines(server: Serve, request_id: str) -> list[dict[str, object]]:
    """The server's log lines for one request, once its access line is out (bounded)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [
            line
            for line in log_lines(server.process.stderr())
            if line.get("request_id") == request_id
        ]
        if any(line.get("logger") == "bastion.access" for line in lines):
            return lines
        time.sleep(0.05)
    pytest.fail(f"no access line for request {request_id}")


def assert_alone_and_still_serving(server: Serve, rest: bytes) -> None:
    """Nothing but the first answer came back (so no request sent behind the attack was
    served), and a new connection is served."""
    assert rest == b"", f"the server answered more than once: {rest[:200]!r}"
    response, _ = get(server.port, "/healthz", server.cafile)
    assert response.status == 200


# ----------------------------------------------------------- bodies that break framing
@pytest.mark.parametrize(
    "chunks",
    [
        pytest.param(b"-1\r\nA\r\n0\r\n\r\n", id="negative-size"),
        pytest.param(b"0x1\r\nA\r\n0\r\n\r\n", id="hex-prefix-size"),
        pytest.param(b"1\r\nAB\r\n0\r\n\r\n", id="missing-chunk-terminator"),
        pytest.param(b"1\nA\n0\n\n", id="bare-lf-chunk-lines"),
        pytest.param(b"1;a=\x01\r\nA\r\n0\r\n\r\n", id="bad-chunk-extension"),
    ],
)
def test_a_body_that_breaks_its_chunked_framing_gets_one_400_and_the_connection_ends(
    server: Serve, chunks: bytes
) -> None:
    """Before MalformedBody: a 500 logged as an unhandled exception, sent keep-alive."""
    second = tail(server)
    request = (
        b"POST /auth/login HTTP/1.1\r\n"
        + head(server, f"Content-Type: {FORM}", "Transfer-Encoding: chunked")
        + chunks
        + second
    )

    response, body, rest = exchange(server, request)

    assert response.status == 400
    assert response.getheader("Connection") == "close"
    assert b"could not be understood" in body
    assert_alone_and_still_serving(server, rest)
    lines = access_lines(server, response.getheader("X-Request-ID", ""))
    assert not [line for line in lines if line.get("level") == "error"]
    assert not [line for line in lines if line.get("audit_event") == "security.csrf.failure"]


# ------------------------------------------------------- ambiguous framing (smuggling)
SMUGGLING_SHAPES = {
    "content-length-and-chunked": ["Content-Length: 4", "Transfer-Encoding: chunked"],
    "chunked-and-content-length": ["Transfer-Encoding: chunked", "Content-Length: 40"],
    "two-content-lengths": ["Content-Length: 0", "Content-Length: 50"],
    "same-content-length-twice": ["Content-Length: 0", "Content-Length: 0"],
    "content-length-list": ["Content-Length: 0, 0"],
    "signed-content-length": ["Content-Length: +0"],
    "chunked-then-identity": ["Transfer-Encoding: chunked, identity"],
    "chunked-twice": ["Transfer-Encoding: chunked", "Transfer-Encoding: chunked"],
    "space-before-colon": ["Transfer-Encoding : chunked", "Content-Length: 5"],
    "obs-fold": ["X-A: a", " Transfer-Encoding: chunked", "Content-Length: 5"],
    "nul-in-value": ["X-A: a\x00b"],
    "cr-in-value": ["X-A: a\rb"],
    "space-in-name": ["X A: b"],
    "two-hosts": ["Host: evil.example"],
}


@pytest.mark.parametrize("fields", list(SMUGGLING_SHAPES.values()), ids=list(SMUGGLING_SHAPES))
def test_ambiguous_framing_is_refused_and_nothing_after_it_is_served(
    server: Serve, fields: list[str]
) -> None:
    second = tail(server)
    request = b"POST /auth/login HTTP/1.1\r\n" + head(server, *fields) + b"0\r\n\r\n" + second

    response, _, rest = exchange(server, request)

    assert response.status == 400
    assert_alone_and_still_serving(server, rest)


@pytest.mark.parametrize(
    "request_head",
    [
        pytest.param("GET /healthz HTTP/1.1\nHost: {host}\n\n", id="bare-lf"),
        pytest.param("POST /auth/login HTTP/1.0\r\nHost: {host}\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", id="chunked-on-http-1.0"),
    ],
)  # fmt: skip
def test_bare_lf_and_chunked_http_1_0_are_refused(server: Serve, request_head: str) -> None:
    second = tail(server)
    request = request_head.format(host=f"{LOOPBACK}:{server.port}").encode() + second

    response, _, rest = exchange(server, request)

    assert response.status == 400
    assert_alone_and_still_serving(server, rest)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_the_bytes_of_a_refused_body_are_never_parsed_as_requests(
    server: Serve, chunked: bool
) -> None:
    """A 2 MB body made of requests gets its 413; none of those requests is answered."""
    inner = tail(server)
    body = inner * (2 * 1024 * 1024 // len(inner))
    if chunked:
        framed = b"".join(
            b"%x\r\n%s\r\n" % (len(piece), piece)
            for piece in (body[i : i + 65536] for i in range(0, len(body), 65536))
        )
        request = (
            b"POST /auth/login HTTP/1.1\r\n"
            + head(server, f"Content-Type: {FORM}", "Transfer-Encoding: chunked")
            + framed
            + b"0\r\n\r\n"
        )
    else:
        request = (
            b"POST /auth/login HTTP/1.1\r\n"
            + head(server, f"Content-Type: {FORM}", f"Content-Length: {len(body)}")
            + body
        )

    response, _, rest = exchange(server, request)

    assert response.status == 413
    assert_alone_and_still_serving(server, rest)


# ---------------------------------------------------------- oversized and malformed heads
@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        pytest.param(b"GET /healthz HTTP/1.1\r\n" + b"X-H: v\r\n" * 1000, 431, id="1000-headers"),
        pytest.param(b"GET /healthz HTTP/1.1\r\nX-A: " + b"a" * 65536 + b"\r\n", 431,
                     id="64-kb-header"),
        pytest.param(b"GET /auth/login HTTP/1.1\r\nCookie: " + b"c=v; " * 2000 + b"\r\n", 431,
                     id="10-kb-cookie"),
        pytest.param(b"GET /" + b"a" * 65536 + b" HTTP/1.1\r\n", 414, id="64-kb-url"),
        pytest.param(b"GET /\xff\xfe\xc0\xaf HTTP/1.1\r\n", 400, id="raw-invalid-utf8-path"),
        pytest.param(b"GET /auth/login?next=\xff HTTP/1.1\r\n", 400, id="raw-invalid-utf8-query"),
        pytest.param(b"get /healthz HTTP/1.1\r\n", 400, id="lower-case-method"),
        pytest.param(b"GET /healthz HTTP/2.0\r\n", 400, id="http-2-over-1.1"),
    ],
)  # fmt: skip
def test_oversized_and_malformed_heads_get_a_fast_4xx(
    server: Serve, request_bytes: bytes, status: int
) -> None:
    started = time.monotonic()

    response, _, rest = exchange(server, request_bytes + head(server))

    assert response.status == status
    assert time.monotonic() - started < 2  # gunicorn's own refusal, no keep-alive wait
    assert_alone_and_still_serving(server, rest)


@pytest.mark.parametrize(
    "target",
    [
        "/%zz%%%c0%af",
        "/admin/%c0%ae%c0%ae/",
        "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/auth/login?next=%ff%fe&" + "&".join(f"p{n}=%ff" for n in range(300)),
        "/auth/login?" + "a" + "[b]" * 1000 + "=1",
    ],
)
def test_malformed_targets_the_server_passes_on_get_a_clean_answer(
    server: Serve, target: str
) -> None:
    """Percent-decoding to invalid UTF-8, traversal, many or nested parameters: no 500."""
    response, _ = get(server.port, target, server.cafile)

    assert response.status in {200, 404}


def test_an_http_1_1_request_without_a_host_gets_a_400(server: Serve) -> None:
    """RFC 9112 §3.2; gunicorn passes such a request on, so the app's host check answers."""
    response, _, _ = exchange(server, b"GET /auth/login HTTP/1.1\r\nConnection: close\r\n\r\n")

    assert response.status == 400
