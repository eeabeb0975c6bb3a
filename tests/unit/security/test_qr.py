"""The QR helper draws exactly segno's modules, with presentation attributes only."""

from __future__ import annotations

import re

import segno

from bastion.security.qr import QUIET_ZONE, qr_svg

URI = "otpauth://totp/Bastion:alice%40example.com?secret=JBSWY3DPEHPK3PXP&issuer=Bastion"


def drawn_modules(svg: str) -> set[tuple[int, int]]:
    """Every (x, y) module the path paints: each segment is `M x y h n v1 h-n z`."""
    path = re.search(r' d="([^"]*)"', svg)
    assert path
    cells: set[tuple[int, int]] = set()
    for x, y, length in re.findall(r"M(\d+) (\d+)h(\d+)v1h-\3z", path.group(1)):
        cells.update((int(x) + i, int(y)) for i in range(int(length)))
    return cells


def test_the_svg_paints_exactly_the_dark_modules() -> None:
    svg = str(qr_svg(URI, title="t"))
    matrix = [list(row) for row in segno.make(URI, error="m").matrix_iter(border=QUIET_ZONE)]
    dark = {(x, y) for y, row in enumerate(matrix) for x, cell in enumerate(row) if cell}
    assert drawn_modules(svg) == dark
    size = len(matrix)
    assert f'viewBox="0 0 {size} {size}"' in svg


def test_only_presentation_attributes_and_no_active_content() -> None:
    svg = str(qr_svg(URI, title="t"))
    attributes = set(re.findall(r"\s([A-Za-z:-]+)=", svg))
    allowed = {
        "xmlns",
        "class",
        "role",
        "width",
        "height",
        "viewBox",
        "shape-rendering",
        "fill",
        "d",
    }
    assert attributes <= allowed
    for forbidden in ("style", "data:", "<script", "href", "<foreignobject", "<image"):
        assert forbidden not in svg.lower()


def test_the_title_is_escaped() -> None:
    svg = str(qr_svg(URI, title='<script>alert("x")</script>'))
    assert "<script>" not in svg
    assert "&lt;script&gt;" in svg


def test_the_encoded_data_never_reaches_the_markup() -> None:
    hostile = 'otpauth://totp/"><script>alert(1)</script>?secret=AAAA'
    svg = str(qr_svg(hostile, title="t"))
    assert "script" not in svg
    assert "otpauth" not in svg
