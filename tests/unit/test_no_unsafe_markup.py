"""Output is escaped by Jinja alone: no `|safe`, `Markup(`, `autoescape false` or
`render_template_string` in src/ outside a short allow-list of reviewed helpers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"

UNSAFE = {
    "|safe filter": re.compile(r"\|\s*safe\b"),
    "Markup(": re.compile(r"\bMarkup\s*\("),
    "autoescape false": re.compile(r"autoescape\s+false\b", re.IGNORECASE),
    "autoescape=False": re.compile(r"autoescape\s*=\s*False\b"),
    "render_template_string": re.compile(r"\brender_template_string\b"),
}
SCANNED_SUFFIXES = {".py", ".html", ".htm", ".jinja", ".j2", ".txt", ".xml", ".svg"}

# Reviewed producers of markup (path under src/ -> why it is safe). Keep this short: each
# entry is code that builds HTML/SVG itself and must escape every value it puts in.
ALLOWED: dict[str, str] = {
    "bastion/admin/chart.py": (
        "SVG bar chart: element/attribute names are module literals checked against a "
        "pattern, every value and text node goes through markupsafe.escape"
    ),
    "bastion/security/qr.py": (
        "QR code SVG: every byte is an integer computed from segno's matrix, or the escaped title"
    ),
    "bastion/documents/search.py": (
        "search highlight: the snippet is escaped first; only literal <mark> tags replace "
        "sentinels that index_text/clean_query strip from all input"
    ),
}


def scan(root: Path) -> list[str]:
    """Return `relative/path:line: pattern` for every unsafe-markup use under `root`."""
    offenders: list[str] = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.suffix not in SCANNED_SUFFIXES:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), start=1):
            for name, pattern in UNSAFE.items():
                if pattern.search(line):
                    offenders.append(f"{path.relative_to(root).as_posix()}:{number}: {name}")
    return offenders


def test_src_uses_no_unsafe_markup_outside_the_allow_list() -> None:
    offenders = [o for o in scan(SRC) if o.split(":", 1)[0] not in ALLOWED]

    assert offenders == [], "unsafe markup outside the reviewed allow-list:\n" + "\n".join(
        offenders
    )


def test_allow_listed_helpers_only_use_markup_and_still_exist() -> None:
    hits = scan(SRC)
    for path, reason in ALLOWED.items():
        assert reason
        found = [hit for hit in hits if hit.startswith(path + ":")]
        assert found, f"{path} is allow-listed but no longer builds markup: drop the entry"
        # Reviewed helpers build Markup; they never switch escaping off or render strings.
        assert all(hit.endswith(": Markup(") for hit in found), found


@pytest.mark.parametrize(
    ("name", "content", "pattern"),
    [
        ("page.html", "<p>{{ user.bio|safe }}</p>\n", "|safe filter"),
        ("spaced.html", "<p>{{ user.bio | safe }}</p>\n", "|safe filter"),
        ("block.html", "{% autoescape false %}{{ x }}{% endautoescape %}\n", "autoescape false"),
        ("view.py", "from markupsafe import Markup\nhtml = Markup(user_input)\n", "Markup("),
        ("spaced.py", "html = markupsafe.Markup (user_input)\n", "Markup("),
        ("render.py", "from flask import render_template_string\n", "render_template_string"),
        ("env.py", "env = Environment(autoescape=False)\n", "autoescape=False"),
    ],
)
def test_scanner_finds_each_pattern(tmp_path: Path, name: str, content: str, pattern: str) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / name).write_text(content)

    found = scan(tmp_path)

    assert any(hit.startswith(f"pkg/{name}:") and hit.endswith(pattern) for hit in found), found


def test_scanner_passes_clean_files(tmp_path: Path) -> None:
    (tmp_path / "ok.html").write_text("<p>{{ user.bio }}</p>{{ form.csrf_token }}\n")
    (tmp_path / "ok.py").write_text(
        "from markupsafe import escape\nsafe_value = escape(value)\nis_safe = True\n"
    )

    assert scan(tmp_path) == []
