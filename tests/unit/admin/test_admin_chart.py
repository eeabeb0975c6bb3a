"""The dashboard's SVG chart: escaped, presentation attributes only, bars in proportion."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pytest
from markupsafe import Markup

from bastion.admin.chart import _scale_top, hourly_bar_chart

SVG = "{http://www.w3.org/2000/svg}"
START = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)
# What the chart may use: geometry, presentation attributes and accessibility hooks.
ALLOWED_ATTRIBUTES = {
    "xmlns", "viewBox", "class", "role", "aria-labelledby", "id",
    "x", "y", "x1", "x2", "y1", "y2", "width", "height",
    "fill", "stroke", "font-size", "text-anchor",
}  # fmt: skip
ALLOWED_ELEMENTS = {"svg", "title", "desc", "line", "text", "rect"}


def hours(*counts: int) -> list[tuple[datetime, int]]:
    return [(START + timedelta(hours=i), n) for i, n in enumerate(counts)]


def render(counts: list[tuple[datetime, int]], title: str = "Failures") -> ET.Element:
    chart = hourly_bar_chart(counts, title=title, description="desc", element_id="c")
    assert isinstance(chart, Markup)
    return ET.fromstring(str(chart))  # noqa: S314 - our own output, parsed to check it


def test_only_presentation_attributes_and_known_elements() -> None:
    root = render(hours(*range(48)))
    for element in root.iter():
        assert element.tag.removeprefix(SVG) in ALLOWED_ELEMENTS
        assert set(element.attrib) <= ALLOWED_ATTRIBUTES, element.attrib


def test_text_is_escaped() -> None:
    hostile = '<script>alert(1)</script>" onload="x'
    chart = hourly_bar_chart(hours(1), title=hostile, description=hostile, element_id="c")
    assert "<script" not in chart
    assert 'onload="x' not in chart
    root = ET.fromstring(str(chart))  # noqa: S314 - our own output, parsed to check it
    assert root.find(f"{SVG}title").text == hostile  # type: ignore[union-attr]


def test_element_names_cannot_be_injected() -> None:
    from bastion.admin.chart import _element

    with pytest.raises(ValueError, match="SVG names"):
        _element("rect onload", {})
    with pytest.raises(ValueError, match="SVG names"):
        _element("rect", {'x" onload="alert(1)': 1})


def test_bars_only_for_hours_with_counts_and_in_proportion() -> None:
    root = render(hours(0, 5, 0, 10, 1))
    bars = root.findall(f"{SVG}rect")
    assert len(bars) == 3
    heights = [float(bar.attrib["height"]) for bar in bars]
    assert heights[1] == pytest.approx(2 * heights[0])
    assert heights[2] == pytest.approx(heights[1] / 10)
    tips = [bar.find(f"{SVG}title").text for bar in bars]  # type: ignore[union-attr]
    assert tips[0] == "2026-03-01 01:00 UTC: 5"


def test_midnights_are_labelled() -> None:
    root = render(hours(*([0] * 72)))
    labels = [t.text for t in root.findall(f"{SVG}text")]
    assert "01 Mar" in labels
    assert "02 Mar" in labels
    assert "03 Mar" in labels


def test_empty_chart_has_no_bars() -> None:
    assert render(hours(0, 0, 0)).findall(f"{SVG}rect") == []
    assert render([]).findall(f"{SVG}rect") == []


@pytest.mark.parametrize(
    ("peak", "top"), [(0, 1), (1, 1), (2, 2), (3, 5), (6, 10), (11, 20), (101, 200), (999, 1000)]
)
def test_scale_top_is_a_round_number(peak: int, top: int) -> None:
    assert _scale_top(peak) == top
