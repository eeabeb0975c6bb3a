"""No template or static file refers to another origin (control 128).

The CSP (`default-src 'none'`, asserted exactly on every kind of response in
security/test_headers.py) would block a third-party asset in a browser; this scan keeps one
from being written at all, in every template and static file, not only on the pages the
browser suite visits. It looks for absolute URLs of any scheme, protocol-relative URLs in
src/href/action/url() values, and `@import` of remote CSS.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "bastion"
ASSET_FOLDERS = {"templates", "static"}

OTHER_ORIGIN = {
    "absolute URL": re.compile(r"\b[a-z][a-z0-9+.-]*://", re.IGNORECASE),
    # Browsers read `\` as `/` in URLs, so `/\host` and `\\host` name another host too.
    "protocol-relative URL": re.compile(
        r"""(?:\b(?:src|srcset|href|action|formaction|poster|data|xlink:href)\s*=\s*["']?"""
        r"""|\burl\(\s*["']?)\s*[/\\]{2}""",
        re.IGNORECASE,
    ),
    "@import of remote CSS": re.compile(
        r"""@import\s+(?:url\(\s*)?["']?\s*(?:[a-z][a-z0-9+.-]*:|[/\\]{2})""", re.IGNORECASE
    ),
}

# Reviewed exceptions (path under src/bastion/ -> exact text -> why it loads nothing).
ALLOWED: dict[str, dict[str, str]] = {
    "static/favicon.svg": {
        'xmlns="http://www.w3.org/2000/svg"': "the SVG namespace: a name, never fetched",
    },
}


def asset_files(package: Path) -> list[Path]:
    """Every file under any `templates` or `static` folder of `package`."""
    folders = [p for p in package.rglob("*") if p.is_dir() and p.name in ASSET_FOLDERS]
    return sorted({path for folder in folders for path in folder.rglob("*") if path.is_file()})


def scan(package: Path) -> list[str]:
    """Return `path:line: kind` for each reference to another origin, allowed text excepted."""
    offenders: list[str] = []
    for path in asset_files(package):
        name = path.relative_to(package).as_posix()
        text = path.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), start=1):
            for allowed in ALLOWED.get(name, {}):
                line = line.replace(allowed, "")
            for kind, pattern in OTHER_ORIGIN.items():
                if pattern.search(line):
                    offenders.append(f"{name}:{number}: {kind}")
    return offenders


def test_templates_and_static_files_name_no_other_origin() -> None:
    scanned = {path.relative_to(PACKAGE).as_posix() for path in asset_files(PACKAGE)}

    offenders = scan(PACKAGE)

    assert {"templates/base.html", "static/app.css", "static/favicon.svg"} <= scanned
    assert len(scanned) >= 40  # every feature's templates, not just the base ones
    assert offenders == [], "references to other origins:\n" + "\n".join(offenders)


def test_each_allowed_exception_is_still_in_its_file() -> None:
    for name, snippets in ALLOWED.items():
        text = (PACKAGE / name).read_text(encoding="utf-8")
        for snippet, reason in snippets.items():
            assert reason
            assert snippet in text, f"{name} no longer has {snippet!r}: drop the entry"


@pytest.mark.parametrize(
    ("name", "content", "kind"),
    [
        ("templates/base.html", '<script src="https://cdn.example/x.js"></script>', "absolute URL"),
        ("templates/page.html", '<link href="HTTP://cdn.example/a.css">', "absolute URL"),
        ("templates/page.html", '<img src="//cdn.example/pixel.gif">', "protocol-relative URL"),
        ("templates/page.html", "<img src='/\\cdn.example/pixel.gif'>", "protocol-relative URL"),
        ("templates/page.html", '<img srcset="//cdn.example/a.png 2x">', "protocol-relative URL"),
        ("templates/page.html", "<form action=//evil.example/steal>", "protocol-relative URL"),
        ("feature/templates/feature/x.html", '<a href="//evil.example">', "protocol-relative URL"),
        (
            "static/app.css",
            "a { background: url( '//cdn.example/i.png' ) }",
            "protocol-relative URL",
        ),
        ("static/app.css", '@import "//fonts.example/font.css";', "@import of remote CSS"),
        ("static/app.css", "@import url(https://fonts.example/f.css);", "@import of remote CSS"),
        ("static/app.js", 'fetch("wss://collector.example/beacon");', "absolute URL"),
        # The allowed namespace is allowed in its own file only.
        ("templates/page.html", '<svg xmlns="http://www.w3.org/2000/svg">', "absolute URL"),
    ],
)
def test_scanner_finds_each_kind_of_reference(
    tmp_path: Path, name: str, content: str, kind: str
) -> None:
    path = tmp_path / name
    path.parent.mkdir(parents=True)
    path.write_text(content + "\n")

    assert f"{name}:1: {kind}" in scan(tmp_path)


def test_scanner_passes_same_origin_references(tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "page.html").write_text(
        "<link rel=\"stylesheet\" href=\"{{ url_for('static', filename='app.css') }}\">\n"
        '<a href="#main">skip</a> <a href="/auth/reset">reset</a>\n'
        '<form action="{{ url_for(\'accounts.logout\') }}" method="post"></form>\n'
    )
    (tmp_path / "static").mkdir()
    (tmp_path / "static" / "app.css").write_text(
        "/* a comment */ .logo { background: url(favicon.svg); }\n"
    )
    (tmp_path / "static" / "app.js").write_text("// a line comment\nconst path = '/api/x';\n")
    (tmp_path / "static" / "favicon.svg").write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"></svg>\n'
    )

    assert scan(tmp_path) == []
