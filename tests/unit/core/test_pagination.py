"""Page numbers from the query string, and the arithmetic of a page."""

from __future__ import annotations

import pytest

from bastion.core.pagination import MAX_PAGE, Page, PageError, clamp, page_number


@pytest.mark.parametrize(("raw", "number"), [(None, 1), ("", 1), ("1", 1), ("42", 42)])
def test_page_number(raw: str | None, number: int) -> None:
    assert page_number(raw) == number


@pytest.mark.parametrize(
    "raw", ["0", "-1", "+1", "1.0", "abc", " 1", "\u0661", "\uff11", str(MAX_PAGE + 1), "9" * 50]
)
def test_bad_page_numbers(raw: str) -> None:
    with pytest.raises(PageError):
        page_number(raw)


def test_page_arithmetic() -> None:
    page = Page(items=[1, 2, 3], number=2, per_page=5, total=8)
    assert page.pages == 2
    assert page.has_prev
    assert not page.has_next
    assert (page.first_index, page.last_index) == (6, 8)
    empty = Page[int](items=[], number=1, per_page=5, total=0)
    assert empty.pages == 1
    assert not empty.has_next
    assert (empty.first_index, empty.last_index) == (0, 0)


@pytest.mark.parametrize(
    ("number", "total", "expected"), [(1, 0, 1), (3, 0, 1), (3, 11, 3), (9, 11, 3), (0, 11, 1)]
)
def test_clamp(number: int, total: int, expected: int) -> None:
    assert clamp(number, total, 5) == expected
