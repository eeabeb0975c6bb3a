"""The instance folder and the secrets `bastion serve` creates on first run.

Every secret file is created atomically with mode 0600 and never overwritten: it is written
to a private temporary file in the same directory, fsynced, then hard-linked to its final
name. ``link()`` fails when the name exists, so a concurrent or repeated start can never
replace (or half-write) a key that is already in use; a crash leaves at most a stray
temporary file, never a truncated key.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from bastion.serving import tls

SECRET_KEY_FILE = "secret_key"  # noqa: S105 - a file name, not a secret
DATA_KEY_FILE = "data_key"
TLS_DIR = "tls"
CERT_FILE = "cert.pem"
KEY_FILE = "key.pem"
CERT_ENV = "BASTION_TLS_CERT"
KEY_ENV = "BASTION_TLS_KEY"


class BootstrapError(RuntimeError):
    """The instance folder cannot be prepared; the message is one line for the operator."""


@dataclass(frozen=True)
class TLSFiles:
    cert: Path
    key: Path


def ensure_private_dir(path: Path) -> bool:
    """Create `path` (mode 0700) if missing; return True when it was created."""
    try:
        path.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        if not path.is_dir():
            raise BootstrapError(f"{path} exists and is not a directory") from None
        return False
    except OSError as exc:
        raise BootstrapError(f"cannot create {path}: {exc.strerror}") from None
    path.chmod(0o700)  # mkdir's mode is filtered by the umask; make it exact
    return True


def create_secret_file(path: Path, data: bytes) -> bool:
    """Atomically create `path` with mode 0600; return False, untouched, if it exists."""
    if path.exists():
        return False
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(tmp, flags, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o600)  # exact, whatever the umask
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        _fsync_dir(path.parent)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_private(path: Path) -> bool:
    """True when no one but the owner may read or write `path`."""
    return not stat.S_IMODE(path.stat().st_mode) & 0o077


def ensure_secret_key(instance_path: Path) -> bool:
    """Generate ``instance/secret_key`` (384 random bits) unless it exists."""
    return create_secret_file(
        instance_path / SECRET_KEY_FILE, (secrets.token_urlsafe(48) + "\n").encode()
    )


def ensure_data_key(instance_path: Path) -> bool:
    """Generate ``instance/data_key`` (a Fernet key for data at rest) unless it exists."""
    from cryptography.fernet import Fernet

    return create_secret_file(instance_path / DATA_KEY_FILE, Fernet.generate_key() + b"\n")


def tls_files(instance_path: Path, environ: Mapping[str, str]) -> TLSFiles:
    """Where the certificate and key live: BASTION_TLS_CERT/KEY, else ``instance/tls/``."""
    cert, key = environ.get(CERT_ENV) or "", environ.get(KEY_ENV) or ""
    if cert or key:
        if not (cert and key):
            raise BootstrapError(f"set both {CERT_ENV} and {KEY_ENV}, or neither")
        return TLSFiles(Path(cert).resolve(), Path(key).resolve())
    return TLSFiles(instance_path / TLS_DIR / CERT_FILE, instance_path / TLS_DIR / KEY_FILE)


def ensure_tls_files(
    instance_path: Path, environ: Mapping[str, str], hosts: Iterable[str] = tls.DEFAULT_HOSTS
) -> tuple[TLSFiles, bool]:
    """Return the TLS files, generating a self-signed pair in ``instance/tls/`` on first run.

    Files named by BASTION_TLS_CERT/KEY are the operator's: they must exist and are never
    generated. Returns (files, generated).
    """
    files = tls_files(instance_path, environ)
    if environ.get(CERT_ENV):
        for path in (files.cert, files.key):
            if not path.is_file():
                raise BootstrapError(f"TLS file {path} does not exist")
        return files, False
    if files.cert.is_file() and files.key.is_file():
        return files, False
    if files.cert.exists() and not files.key.exists():
        raise BootstrapError(
            f"{files.cert} exists without {files.key.name}; move it away to generate a new pair"
        )
    ensure_private_dir(files.key.parent)
    # The key first: if we stop between the two files, the next start certifies that key.
    create_secret_file(files.key, tls.new_private_key())
    certificate = tls.self_signed_certificate(files.key.read_bytes(), hosts)
    created = create_secret_file(files.cert, certificate)
    return files, created


__all__ = [
    "BootstrapError",
    "TLSFiles",
    "create_secret_file",
    "ensure_data_key",
    "ensure_private_dir",
    "ensure_secret_key",
    "ensure_tls_files",
    "is_private",
    "tls_files",
]
