"""A server-side SVG bar chart, inline in the page: no script, no style, no chart library.

The chart is markup we build, so it is the one place in the admin console that returns
`Markup`. What makes that safe, for review:

- element and attribute names come only from this module's literals and are checked
  against a strict pattern;
- every attribute value and every text node goes through `markupsafe.escape`;
- only presentation attributes are used (``fill``, ``x``, ``height``…): no ``style``
  attribute, no ``<script>``, no event handlers, no external or ``data:`` URLs — so it
  renders under the strict CSP (style-src 'self', no inline script) without exceptions.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime

from markupsafe import Markup, escape

WIDTH, HEIGHT = 720, 220
LEFT, RIGHT, TOP, BOTTOM = 44, 8, 12, 34
BAR_FILL = "#b42318"  # the stylesheet's --danger: failures
GRID = "#d5d9e0"
INK = "#5a6270"
_NAME = re.compile(r"[a-z][a-zA-Z0-9-]*\Z")

Attrs = dict[str, str | int | float]


def _number(value: str | int | float) -> str:
    if isinstance(value, float):
        return f"{value:.2f}".rstrip("0").rstrip(".")
    return str(value)


def _element(name: str, attrs: Attrs, children: Sequence[str] | str = ()) -> str:
    """One escaped SVG element; `children` is escaped text or already-built elements."""
    if not _NAME.match(name) or not all(_NAME.match(key) for key in attrs):
        raise ValueError("SVG names come from this module only")
    rendered = "".join(f' {key}="{escape(_number(value))}"' for key, value in attrs.items())
    inner = str(escape(children)) if isinstance(children, str) else "".join(children)
    return f"<{name}{rendered}>{inner}</{name}>"


def _scale_top(peak: int) -> int:
    """A round number at or above `peak` for the y axis (1, 2 or 5 times a power of ten)."""
    top = 1
    while True:
        for step in (1, 2, 5):
            if top * step >= peak:
                return top * step
        top *= 10


def hourly_bar_chart(
    counts: Sequence[tuple[datetime, int]], *, title: str, description: str, element_id: str
) -> Markup:
    """Bars for hourly counts (oldest first), day ticks on the x axis, 0/½/max on the y axis."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(1, len(counts))
    top = _scale_top(max((n for _, n in counts), default=0))
    base = TOP + plot_h
    parts = [
        _element("title", {"id": f"{element_id}-title"}, title),
        _element("desc", {"id": f"{element_id}-desc"}, description),
    ]
    for value in (0, top / 2, top):
        y = base - plot_h * value / top
        parts.append(
            _element("line", {"x1": LEFT, "x2": WIDTH - RIGHT, "y1": y, "y2": y, "stroke": GRID})
        )
        label = _number(float(value)) if value else "0"
        parts.append(
            _element(
                "text",
                {"x": LEFT - 6, "y": y + 4, "text-anchor": "end", "font-size": 11, "fill": INK},
                label,
            )
        )
    for index, (hour, count) in enumerate(counts):
        x = LEFT + index * slot
        if hour.hour == 0 and x + 40 <= WIDTH:  # a tick and a label at each midnight (UTC)
            parts.append(
                _element("line", {"x1": x, "x2": x, "y1": base, "y2": base + 5, "stroke": INK})
            )
            parts.append(
                _element(
                    "text",
                    {"x": x + 2, "y": base + 18, "font-size": 11, "fill": INK},
                    hour.strftime("%d %b"),
                )
            )
        if count:
            height = plot_h * count / top
            bar: Attrs = {
                "x": x + slot * 0.1,
                "y": base - height,
                "width": slot * 0.8,
                "height": height,
                "fill": BAR_FILL,
            }
            tip = f"{hour:%Y-%m-%d %H}:00 UTC: {count}"
            parts.append(_element("rect", bar, [_element("title", {}, tip)]))
    parts.append(
        _element("line", {"x1": LEFT, "x2": WIDTH - RIGHT, "y1": base, "y2": base, "stroke": INK})
    )
    svg = _element(
        "svg",
        {
            "xmlns": "http://www.w3.org/2000/svg",
            "viewBox": f"0 0 {WIDTH} {HEIGHT}",
            "class": "chart",
            "role": "img",
            "aria-labelledby": f"{element_id}-title {element_id}-desc",
            "id": element_id,
        },
        parts,
    )
    return Markup(svg)  # noqa: S704 - all values escaped, see the docstring  # nosec B704
