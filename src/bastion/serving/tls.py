"""The TLS policy gunicorn enforces, and the self-signed certificate for the embedded profile.

Policy (Mozilla "intermediate", without the legacy DHE suites): TLS 1.2 and 1.3 only, and
for TLS 1.2 only ECDHE key exchange with AEAD ciphers (AES-GCM, ChaCha20-Poly1305), so
every session has forward secrecy and no CBC/SHA-1 construction is ever negotiated. The
TLS 1.3 suites OpenSSL offers are all AEAD already. Client-initiated TLS 1.2 renegotiation
is disabled (a cheap CPU-exhaustion lever for clients).
"""

from __future__ import annotations

import ipaddress
import os
import ssl
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

TLS12_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)
MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2
CERT_LIFETIME = timedelta(days=365)
DEFAULT_HOSTS = ("localhost", "127.0.0.1")


def harden(context: ssl.SSLContext) -> ssl.SSLContext:
    """Apply Bastion's TLS policy to a server context (certificates already loaded)."""
    context.minimum_version = MINIMUM_VERSION
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    return context


class ContextCache:
    """One hardened server context per process, rebuilt when the certificate files change.

    gunicorn's gthread worker asks for a new SSLContext for *every* connection; building one
    loads the system CA store and the key pair (several ms of CPU) and, since TLS session
    caches live in the context, makes every reconnect a full handshake. A renewed
    certificate or key (new mtime, size or inode) is still picked up on the next connection.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stamp: tuple[tuple[int, int, int], ...] | None = None
        self._context: ssl.SSLContext | None = None

    def get(self, files: Iterable[str], build: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        try:
            stamp = tuple(_stamp(path) for path in files)
        except OSError:
            return harden(build())  # let the factory report the missing file
        with self._lock:
            if self._context is None or stamp != self._stamp:
                self._context = harden(build())
                self._stamp = stamp
            return self._context


def _stamp(path: str) -> tuple[int, int, int]:
    info = os.stat(path)
    return info.st_mtime_ns, info.st_size, info.st_ino


def new_private_key() -> bytes:
    """A fresh ECDSA P-256 key as unencrypted PKCS#8 PEM (the file itself is mode 0600)."""
    # Imported here: serving workers never generate certificates, and x509 costs
    # each of them memory (this module is loaded by the gunicorn config).
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def self_signed_certificate(
    key_pem: bytes, hosts: Iterable[str] = DEFAULT_HOSTS, *, now: datetime | None = None
) -> bytes:
    """A one-year self-signed server certificate for `hosts` (DNS names or IP addresses)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = serialization.load_pem_private_key(key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("the TLS key is not an EC key")
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):  # keep order, drop duplicates
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    start = (now or datetime.now(UTC)) - timedelta(minutes=5)  # tolerate small clock skew
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Bastion (self-signed)"),
            x509.NameAttribute(NameOID.COMMON_NAME, "localhost"),
        ]
    )
    public_key = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + CERT_LIFETIME)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


__all__ = [
    "DEFAULT_HOSTS",
    "TLS12_CIPHERS",
    "ContextCache",
    "harden",
    "new_private_key",
    "self_signed_certificate",
]
