"""HMAC-SHA-256 for every value Bastion signs itself; SHA-1 read only while it can matter.

itsdangerous 2.2 signs with HMAC-SHA-1 and derives its key with SHA-1 ("django-concat")
unless told otherwise. ASVS 5.0 Appendix C lists SHA-1 as unsuitable for HMAC and key
derivation (ASVS 11.4.1), so every signer we build passes ``digest_method=hashlib.sha256``,
which itsdangerous uses for both.

The transition from SHA-1 (values signed before the switch), ASVS 11.2.2 crypto agility:
- SHA-1 signatures are *verified*, never produced, and only for values that die on their
  own within 7 days: the session cookie (its server-side record lives at most 8 hours; the
  cookie is re-signed with SHA-256 on its next response, as after a key rotation) and the
  one-time tokens (their signed timestamp expires them after at most 7 days, the
  invitation's ``MAX_AGE``). Both accept SHA-1 under the current key and the fallbacks.
- Nothing longer-lived reads SHA-1: the 14-day remember cookie refuses it as it refuses an
  old key (sessions.py), and the device cookie was signed with SHA-256 from the start.
- So seven days after an installation upgrades, no SHA-1 value can still be valid there.
  `LEGACY_DIGEST` is deleted in the first release after this one (docs/deploy.md,
  "Key rotation"); dropping a fallback key drops its SHA-1 signatures with it.

Flask-WTF's CSRF tokens are signed by that library with itsdangerous' default (SHA-1);
docs/security.md's cryptographic inventory records that legacy use and why it is left.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from itsdangerous import Signer

DIGEST = hashlib.sha256
LEGACY_DIGEST = hashlib.sha1  # verify only, see the module docstring

# For itsdangerous serializers (one-time tokens): sign with SHA-256; read SHA-1 too.
SERIALIZER_OPTIONS: dict[str, Any] = {
    "signer_kwargs": {"digest_method": DIGEST},
    "fallback_signers": [{"digest_method": LEGACY_DIGEST}],
}

Keys = str | bytes | Iterable[str] | Iterable[bytes]


def signer(keys: Keys, salt: str) -> Signer:
    """An HMAC-SHA-256 signer: signs with the last of `keys`, verifies with any of them."""
    return Signer(keys, salt=salt, digest_method=DIGEST)


def legacy_signer(keys: Keys, salt: str) -> Signer:
    """An HMAC-SHA-1 signer that verifies values signed before the switch; never sign with it."""
    return Signer(keys, salt=salt, digest_method=LEGACY_DIGEST)
