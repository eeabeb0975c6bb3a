"""Readable device names for the session list and the new-device mail, from User-Agent.

ua-parser (the maintained Python port of the Browserscope/uap-core rules) does the
parsing. The header is client-controlled text: it is capped at 512 characters when stored
(security/sessions.py) and only ever rendered through Jinja autoescaping. ua-parser's
names are not safe text either: its catch-all rules copy words out of the header (a
User-Agent of "Visit evil.example now to keep your account Bot/1.0" parses as the
browser "now to keep your account Bot"), so a mail names only browsers and systems from
a fixed list.
"""

from __future__ import annotations

from functools import lru_cache

UNKNOWN = "Unknown device"
UNLISTED = "a browser Bastion does not recognise"
# Families ua-parser reports for the browsers and systems people sign in with; anything
# else is described as UNLISTED in mail, whatever the header said.
MAIL_BROWSERS = frozenset(
    {
        "Brave", "Chrome", "Chrome Mobile", "Chrome Mobile iOS", "Chromium",
        "DuckDuckGo Mobile", "Edge", "Edge Mobile", "Firefox", "Firefox Mobile",
        "Firefox iOS", "HeadlessChrome", "Mobile Safari", "Opera", "Opera Mobile",
        "Safari", "Samsung Internet", "UC Browser", "Vivaldi", "Yandex Browser",
    }
)  # fmt: skip
MAIL_SYSTEMS = frozenset(
    {
        "Android", "Chrome OS", "Debian", "Fedora", "FreeBSD", "iOS", "iPadOS", "Linux",
        "Mac OS X", "Ubuntu", "Windows",
    }
)  # fmt: skip


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


def _version(major: str | None) -> str | None:
    return major if major and major.isdigit() and len(major) <= 4 else None


def describe_for_mail(user_agent: str | None) -> str:
    """Like `describe`, but made only of listed names and numbers: text for a mail that a
    stranger who knows the password (not the second factor) can make us send."""
    if not user_agent:
        return UNLISTED
    from ua_parser import parse

    result = parse(user_agent[:512])
    browser, system = result.user_agent, result.os
    if browser is None or browser.family not in MAIL_BROWSERS:
        return UNLISTED
    parts = [browser.family, _version(browser.major)]
    if system is not None and system.family in MAIL_SYSTEMS:
        parts += ["on", system.family, _version(system.major)]
    return " ".join(part for part in parts if part)
