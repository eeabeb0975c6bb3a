"""Same-site redirect targets only (ASVS 3.7.2: no open redirects through `next`)."""

from __future__ import annotations

from urllib.parse import urlsplit


def safe_next(target: str | None, default: str = "/") -> str:
    """Return `target` if it is a local path on this site, else `default`.

    Refuses other hosts, scheme-relative `//host`, backslash tricks browsers normalise to
    `//`, `javascript:` and any control character.
    """
    if not target or len(target) > 2048:
        return default
    if any(ord(ch) < 32 or ch == "\x7f" or ch == "\\" for ch in target):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return default
    return target
