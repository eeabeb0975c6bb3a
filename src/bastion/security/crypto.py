"""Encrypt small secrets at rest (TOTP seeds) with the data key, never with SECRET_KEY.

``BASTION_DATA_KEY`` holds one or more Fernet keys, newest first. `MultiFernet` encrypts
with the first and decrypts with any, so a key rotation is: put a new key in front, let
values re-encrypt as they are used (`Decrypted.stale`), drop the old key later. The data
key is separate from the secret key (ASVS 11.1.x): rotating the one that signs cookies and
links never makes stored secrets unreadable, and a leaked secret key reveals no TOTP seed.

Each value is bound to a context string (e.g. ``totp:42`` for user 42), so a ciphertext
copied into another user's row does not decrypt there.

`cryptography` is imported on first use: it adds ~7 MiB to every worker, and only 2FA
enrolment and sign-in need it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import current_app

if TYPE_CHECKING:
    from cryptography.fernet import Fernet, MultiFernet

__all__ = ["DataKeyMissing", "Decrypted", "DecryptionFailed", "build_cipher", "decrypt", "encrypt"]

_EXTENSION = "bastion.data_cipher"
_SEPARATOR = "\x00"


class DataKeyMissing(RuntimeError):
    """No data key is configured, so nothing can be encrypted or decrypted."""


class DecryptionFailed(ValueError):
    """The value was tampered with, belongs to another context, or no key opens it."""


@dataclass(frozen=True)
class Decrypted:
    value: str
    stale: bool  # encrypted with an older key: re-encrypt when convenient


@dataclass(frozen=True)
class _Cipher:
    newest: Fernet
    any_key: MultiFernet


def build_cipher(keys: Sequence[str]) -> _Cipher:
    """Return the cipher for `keys` (newest first); raise DataKeyMissing if there are none."""
    if not keys:
        raise DataKeyMissing("BASTION_DATA_KEY is not configured")
    from cryptography.fernet import Fernet, MultiFernet

    fernets = [Fernet(key.encode("ascii")) for key in keys]
    return _Cipher(newest=fernets[0], any_key=MultiFernet(fernets))


def _cipher() -> _Cipher:
    found: _Cipher | None = current_app.extensions.get(_EXTENSION)
    if found is None:
        found = build_cipher(current_app.extensions["bastion.settings"].data_key)
        current_app.extensions[_EXTENSION] = found
    return found


def encrypt(value: str, *, context: str) -> str:
    """Return `value` encrypted with the newest data key and bound to `context`."""
    plaintext = f"{context}{_SEPARATOR}{value}".encode()
    return _cipher().any_key.encrypt(plaintext).decode("ascii")


def decrypt(token: str, *, context: str) -> Decrypted:
    """Return the value `encrypt` sealed for this `context`, or raise DecryptionFailed."""
    from cryptography.fernet import InvalidToken

    cipher = _cipher()
    try:
        plaintext = cipher.any_key.decrypt(token.encode("ascii")).decode()
    except (InvalidToken, UnicodeError):
        raise DecryptionFailed from None
    bound, separator, value = plaintext.partition(_SEPARATOR)
    if not separator or bound != context:
        raise DecryptionFailed
    try:
        cipher.newest.decrypt(token.encode("ascii"))
        stale = False
    except InvalidToken:
        stale = True
    return Decrypted(value=value, stale=stale)
