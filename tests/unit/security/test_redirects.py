"""safe_next: only local paths on this site survive; everything else becomes the default."""

from __future__ import annotations

import pytest

from bastion.security.redirects import safe_next

REFUSED = [
    None,
    "",
    "https://evil.example",
    "HTTPS://evil.example",
    "http://evil.example/",
    "//evil.example",
    "///evil.example",
    "//evil.example/path",
    "/\\evil.example",
    "\\/evil.example",
    "\\\\evil.example",
    "\\evil.example",
    "/\\/evil.example",
    "javascript:alert(1)",
    "JAVASCRIPT:alert(1)",
    "jav\tascript:alert(1)",
    "data:text/html,hi",
    "vbscript:msgbox(1)",
    "http:evil.example",
    "http:/evil.example",
    "https:evil.example",
    "ftp://evil.example",
    "evil.example",
    "evil.example/",
    "account/",
    " /account/",
    "@evil.example",
    "/\t/evil.example",
    "/\n/evil.example",
    "/\r/evil.example",
    "/\x00",
    "/\x1f",
    "/\x7f",
    "/account/\r\nSet-Cookie: x=1",
    "/" + "a" * 2048,
]

ACCEPTED = [
    "/",
    "/account/",
    "/account/?tab=security",
    "/account/#top",
    "/auth/login?next=/account/",
    "/documents/42",
    "/a%2F%2Fb",
    "/caf\u00e9",
]


@pytest.mark.parametrize("target", REFUSED)
def test_unsafe_targets_fall_back_to_the_default(target: str | None) -> None:
    assert safe_next(target) == "/"
    assert safe_next(target, "/home") == "/home"


@pytest.mark.parametrize("target", ACCEPTED)
def test_local_paths_are_kept(target: str) -> None:
    assert safe_next(target, "/home") == target
