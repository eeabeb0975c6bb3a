"""TLS as served by gunicorn: 1.2 and 1.3 with AEAD ciphers only; 1.1 and 1.0 refused."""

from __future__ import annotations

import socket
import ssl
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.conftest import LOOPBACK, Serve, client_context

pytestmark = pytest.mark.server

LEGACY_CIPHERS = "DEFAULT:@SECLEVEL=0"  # lets OpenSSL 3 speak TLS 1.0/1.1 (SHA-1 signatures)


def handshake(port: int, context: ssl.SSLContext) -> tuple[str | None, str]:
    """Complete a handshake and return (protocol version, cipher name)."""
    with (
        socket.create_connection((LOOPBACK, port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=LOOPBACK) as tls,
    ):
        cipher = tls.cipher()
        assert cipher is not None
        return tls.version(), cipher[0]


def pinned(cafile: Path, version: ssl.TLSVersion, ciphers: str | None = None) -> ssl.SSLContext:
    context = client_context(cafile)
    with warnings.catch_warnings():  # TLSv1/TLSv1_1 are deprecated constants: that's the point
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = version
        context.maximum_version = version
    if ciphers:
        context.set_ciphers(ciphers)
    return context


def legacy_client(cafile: Path, version: ssl.TLSVersion) -> ssl.SSLContext:
    return pinned(cafile, version, LEGACY_CIPHERS)


@pytest.fixture
def permissive_server(server: Serve) -> Iterator[int]:
    """A throwaway Python TLS server that accepts TLS 1.0+ at security level 0.

    It proves our legacy client really can complete a TLS 1.0/1.1 handshake here, so a
    failure against gunicorn means gunicorn refused, not that this OpenSSL can't.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(
        server.instance / "tls" / "cert.pem", server.instance / "tls" / "key.pem"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
    context.set_ciphers(LEGACY_CIPHERS)
    listener = socket.create_server((LOOPBACK, 0))
    listener.settimeout(0.1)  # so the thread notices `stop` quickly
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(10)
            with conn:
                try:
                    with context.wrap_socket(conn, server_side=True) as tls:
                        tls.recv(1)  # wait for the client to close
                except (OSError, ssl.SSLError):
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join(timeout=10)
        listener.close()


@pytest.mark.parametrize(
    ("version", "name"),
    [(ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")],
)
def test_tls_12_and_13_handshakes_succeed_with_aead_ciphers(
    server: Serve, version: ssl.TLSVersion, name: str
) -> None:
    negotiated, cipher = handshake(server.port, pinned(server.cafile, version))
    assert negotiated == name
    assert "GCM" in cipher or "CHACHA20" in cipher, cipher
    if version is ssl.TLSVersion.TLSv1_2:
        assert cipher.startswith("ECDHE-"), cipher  # forward secrecy


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_1, ssl.TLSVersion.TLSv1])
def test_legacy_tls_is_refused(
    server: Serve, permissive_server: int, version: ssl.TLSVersion
) -> None:
    client = legacy_client(server.cafile, version)
    try:
        negotiated, _ = handshake(permissive_server, client)
    except ssl.SSLError as exc:  # pragma: no cover - depends on the local OpenSSL build
        pytest.skip(f"this OpenSSL can't speak {version.name} even at SECLEVEL=0: {exc}")
    assert negotiated == {ssl.TLSVersion.TLSv1_1: "TLSv1.1", ssl.TLSVersion.TLSv1: "TLSv1"}[version]

    with pytest.raises(ssl.SSLError) as refused:
        handshake(server.port, client)
    assert (
        "PROTOCOL_VERSION" in str(refused.value).upper()
        or "UNSUPPORTED" in str(refused.value).upper()
    ), refused.value


def test_tls12_cbc_cipher_is_refused(server: Serve) -> None:
    """TLS 1.2 without an AEAD cipher (CBC + SHA-2 HMAC, still in OpenSSL's DEFAULT) fails."""
    client = pinned(server.cafile, ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES128-SHA256")
    with pytest.raises(ssl.SSLError):
        handshake(server.port, client)


def test_certificate_verifies_for_localhost_and_loopback(server: Serve) -> None:
    for name in ("localhost", LOOPBACK):
        context = client_context(server.cafile)
        with (
            socket.create_connection((LOOPBACK, server.port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname=name) as tls,
        ):
            assert tls.version() in {"TLSv1.2", "TLSv1.3"}
