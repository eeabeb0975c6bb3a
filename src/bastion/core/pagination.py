"""Offset pagination: one page of rows, the total, and what the page links need.

The page number comes from the query string, so it is parsed strictly: a bad value is a
client error, never a 500 or a surprise page.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session, scoped_session

T = TypeVar("T")

MAX_PAGE = 100_000  # far past any real table; keeps OFFSET bounded


class PageError(ValueError):
    """The page number is not a whole number between 1 and MAX_PAGE."""


def page_number(raw: str | None) -> int:
    """Return the page asked for (1 when absent) or raise PageError."""
    if raw is None or raw == "":
        return 1
    if not raw.isascii() or not raw.isdigit() or len(raw) > len(str(MAX_PAGE)):
        raise PageError("The page number must be a whole number.")
    number = int(raw)
    if not 1 <= number <= MAX_PAGE:
        raise PageError("The page number is out of range.")
    return number


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of `items` out of `total`, numbered from 1."""

    items: Sequence[T]
    number: int
    per_page: int
    total: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))

    @property
    def has_prev(self) -> bool:
        return self.number > 1

    @property
    def has_next(self) -> bool:
        return self.number < self.pages

    @property
    def first_index(self) -> int:
        """The 1-based position of the first item shown (0 when the page is empty)."""
        return (self.number - 1) * self.per_page + 1 if self.items else 0

    @property
    def last_index(self) -> int:
        return (self.number - 1) * self.per_page + len(self.items) if self.items else 0


def clamp(number: int, total: int, per_page: int) -> int:
    """The page to show: `number`, or the last page when `number` is past the end."""
    last = max(1, -(-total // per_page))
    return min(max(1, number), last)


def paginate(
    session: Session | scoped_session[Any], statement: Select[Any], *, number: int, per_page: int
) -> Page[Any]:
    """Run `statement` for page `number` (clamped to the last page) and count its rows."""
    counted = select(func.count()).select_from(statement.order_by(None).subquery())
    total = int(session.scalar(counted) or 0)
    number = clamp(number, total, per_page)
    rows = session.scalars(statement.limit(per_page).offset((number - 1) * per_page)).all()
    return Page(items=list(rows), number=number, per_page=per_page, total=total)
