"""QR codes as inline SVG that a strict CSP accepts.

The page's CSP allows no inline style and images only from 'self', so the QR code is
neither a ``data:`` image nor styled markup: it is an ``<svg>`` element drawn with
presentation attributes (``fill``, ``viewBox``) only. segno computes the module matrix;
this module writes every byte of the SVG itself from integers and one escaped title, so
nothing the encoded data contains can reach the markup.

This is a reviewed `Markup` producer (see tests/unit/test_no_unsafe_markup.py).
"""

from __future__ import annotations

from markupsafe import Markup, escape

__all__ = ["qr_svg"]

QUIET_ZONE = 4  # modules of white border, as ISO/IEC 18004 requires for reliable scanning


def _dark_runs(row: list[int]) -> list[tuple[int, int]]:
    """Return (start, length) of each run of dark modules in one row."""
    runs: list[tuple[int, int]] = []
    start: int | None = None
    for x, dark in enumerate([*row, 0]):
        if dark and start is None:
            start = x
        elif not dark and start is not None:
            runs.append((start, x - start))
            start = None
    return runs


def qr_svg(data: str, *, title: str, pixels_per_module: int = 5) -> Markup:
    """Return `data` as a QR code in an inline SVG element (presentation attributes only)."""
    import segno  # only the enrolment page draws QR codes; workers needn't load it

    code = segno.make(data, error="m", micro=False)
    rows = [list(row) for row in code.matrix_iter(scale=1, border=QUIET_ZONE)]
    size = len(rows)
    path = "".join(
        f"M{x} {y}h{length}v1h-{length}z"
        for y, row in enumerate(rows)
        for x, length in _dark_runs(row)
    )
    pixels = size * pixels_per_module
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="qr" role="img" '
        f'width="{pixels}" height="{pixels}" viewBox="0 0 {size} {size}" '
        f'shape-rendering="crispEdges"><title>{escape(title)}</title>'
        f'<rect width="{size}" height="{size}" fill="#ffffff"/>'
        f'<path fill="#000000" d="{path}"/></svg>'
    )
    # Reviewed: every byte above is an integer we computed or the escaped title.
    return Markup(svg)  # noqa: S704  # nosec B704
