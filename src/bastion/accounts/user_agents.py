"""Readable device names for the session list, from the stored User-Agent header.

ua-parser (the maintained Python port of the Browserscope/uap-core rules) does the
parsing. The header is client-controlled text: it is capped at 512 characters when stored
(security/sessions.py) and only ever rendered through Jinja autoescaping.
"""

from __future__ import annotations

from functools import lru_cache

UNKNOWN = "Unknown device"


@lru_cache(maxsize=512)
def describe(user_agent: str | None) -> str:
    """Return e.g. "Firefox 120 on Linux" or "Mobile Safari 17 on iOS 17 (iPhone)"."""
    if not user_agent:
        return UNKNOWN
    from ua_parser import parse  # its regex tables load on first use, not in every worker

    result = parse(user_agent[:512])
    browser = result.user_agent
    system = result.os
    device = result.device
    parts: list[str] = []
    if browser is not None and browser.family != "Other":
        parts.append(" ".join(filter(None, (browser.family, browser.major))))
    if system is not None and system.family != "Other":
        parts.append("on " + " ".join(filter(None, (system.family, system.major))))
    if device is not None and device.family not in {"Other", "Spider"} and device.brand:
        parts.append(f"({device.family})")
    return " ".join(parts) or UNKNOWN
