"""Full-text search over titles and document text, with the visibility rule inside the SQL.

- SQLite (embedded): an FTS5 table over ``document_texts``. FTS5 parses its MATCH string
  as a query language and reports syntax errors even through bound parameters, so every
  user term is quoted as an FTS5 string (``"term"``, inner quotes doubled): ``' OR 1=1 --``
  is four harmless words, never a 500.
- PostgreSQL: a generated ``tsvector`` column with a GIN index, queried with
  ``websearch_to_tsquery``, which accepts any input without syntax errors.

Both are bound parameters in ``text()`` statements. The visibility filter (owner, a share
for the viewer's address, or documents:all:read) is part of the WHERE clause, so LIMIT
counts only what the viewer may see. Snippets are marked with private-use sentinels that
were removed from every indexed text and every query first; ``highlight`` escapes the
snippet and only then turns the sentinels into ``<mark>``.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup, escape
from sqlalchemy import text

from bastion.core.db import db
from bastion.documents.names import SENTINELS

START, STOP = SENTINELS
MAX_QUERY_CHARS = 200
MAX_TERMS = 12
MAX_INDEXED_CHARS = 200_000
# PostgreSQL: ts_headline reads this much of a hit's text for its snippet. Its cost grows
# faster than the text: over the bench's 200,000-character documents one headline took
# 9-14 ms from the first 100,000 characters (236 ms for one unlucky word) and 2.4-3 ms from
# the first 20,000, and a large document matches almost every query. A match further in
# still finds the document; its snippet is then the opening text, unmarked.
HEADLINE_CHARS = 20_000
PER_PAGE = 20


# Objects migration 0005 creates with raw SQL, which the ORM does not model: the FTS5 table
# (and its shadow tables, triggers) on SQLite; the tsvector column and GIN index on PostgreSQL.
_INDEX_OBJECTS = frozenset({"search_vector", "ix_document_texts_search_vector"})


def is_search_index_object(name: str | None) -> bool:
    """True for the raw-SQL full-text objects (models-vs-migrations comparison skips them)."""
    return name is not None and (name.startswith("document_search") or name in _INDEX_OBJECTS)


class QueryRefused(ValueError):
    """The search query is too long; the message says so."""


@dataclass(frozen=True)
class Viewer:
    """Who is looking: their id, their (normalised) email and whether they may read all."""

    user_id: int
    email: str
    read_all: bool = False


@dataclass(frozen=True)
class Hit:
    id: str
    filename: str
    kind: str
    size: int
    owner_id: int
    title_marked: str
    snippet_marked: str


@dataclass(frozen=True)
class Results:
    hits: list[Hit]
    page: int
    has_next: bool


def _without_sentinels(value: str) -> str:
    return value.replace(START, "").replace(STOP, "")


# Deleted from every indexed text: the sentinels, NUL and the other C0/C1 controls but
# tab and newline (str.translate: C speed over the 200,000 characters a document may have).
_INDEX_DELETE: dict[int, None] = dict.fromkeys(
    [*map(ord, SENTINELS), *(c for c in range(0x20) if chr(c) not in "\t\n"), *range(0x7F, 0xA0)]
)


def index_text(raw: str) -> str:
    """The text to index: no sentinels, NULs or other control characters; capped."""
    return raw[: MAX_INDEXED_CHARS * 2].translate(_INDEX_DELETE)[:MAX_INDEXED_CHARS]


def clean_query(raw: str) -> str:
    """Return the query as searched (sentinels and controls removed) or raise QueryRefused."""
    if len(raw) > MAX_QUERY_CHARS:
        raise QueryRefused(f"Search for at most {MAX_QUERY_CHARS} characters.")
    kept = "".join(ch for ch in raw if not unicodedata.category(ch).startswith("C"))
    return " ".join(_without_sentinels(kept).split())


def fts5_query(query: str) -> str:
    """Quote every term as an FTS5 string; a trailing `*` stays a prefix search."""
    parts: list[str] = []
    for term in query.split()[:MAX_TERMS]:
        prefix = len(term) > 1 and term.endswith("*")
        bare = term.rstrip("*") if prefix else term
        parts.append('"' + bare.replace('"', '""') + '"' + ("*" if prefix else ""))
    return " ".join(parts)


def highlight(marked: str) -> Markup:
    """Escape `marked`, then turn its sentinel pairs into <mark> elements.

    Reviewed Markup: every character of `marked` passes through `escape` first; the only
    markup added is the literal <mark>/</mark>, and only where the search engine put a
    sentinel (no input can contain one: index_text and clean_query remove them).
    """
    escaped = str(escape(marked))
    if escaped.count(START) != escaped.count(STOP):
        escaped = _without_sentinels(escaped)
    # Reviewed: escaped above; the only markup added is <mark> (see the docstring).
    return Markup(  # noqa: S704  # nosec B704
        escaped.replace(START, "<mark>").replace(STOP, "</mark>")
    )


# Both statements are fixed text with bound parameters only; the visibility rule (owner, a
# share for the viewer's address, or documents:all:read) is spelled out in each, before LIMIT.
_SQLITE = text(
    """
    SELECT d.id, d.filename, d.kind, d.size, d.owner_id,
           highlight(document_search, 0, :start, :stop) AS title_marked,
           snippet(document_search, 1, :start, :stop, '…', 24) AS snippet_marked
    FROM document_search
    JOIN document_texts t ON t.id = document_search.rowid
    JOIN documents d ON d.id = t.document_id
    WHERE document_search MATCH :query
      AND d.deleted_at IS NULL
      AND (d.owner_id = :user_id OR :read_all OR EXISTS (
          SELECT 1 FROM document_shares s WHERE s.document_id = d.id AND s.email = :email))
    ORDER BY bm25(document_search, 5.0, 1.0), d.id
    LIMIT :limit OFFSET :offset
    """
)

# The inner query ranks and limits; ts_headline (costly) runs on the page's rows only.
_POSTGRES = text(
    """
    SELECT hit.id, hit.filename, hit.kind, hit.size, hit.owner_id,
           ts_headline('simple', hit.title, hit.q, :title_options) AS title_marked,
           CASE WHEN hit.body = '' THEN ''
                ELSE ts_headline('simple', left(hit.body, :headline_chars), hit.q, :body_options)
           END AS snippet_marked
    FROM (
        SELECT d.id, d.filename, d.kind, d.size, d.owner_id, t.title, t.body, q.q,
               ts_rank(t.search_vector, q.q) AS rank
        FROM document_texts t
        JOIN documents d ON d.id = t.document_id
        CROSS JOIN (SELECT websearch_to_tsquery('simple', :query) AS q) AS q
        WHERE t.search_vector @@ q.q
          AND d.deleted_at IS NULL
          AND (d.owner_id = :user_id OR :read_all OR EXISTS (
              SELECT 1 FROM document_shares s WHERE s.document_id = d.id AND s.email = :email))
        ORDER BY rank DESC, d.id
        LIMIT :limit OFFSET :offset
    ) AS hit
    ORDER BY hit.rank DESC, hit.id
    """
)

_OPTIONS = f"StartSel={START}, StopSel={STOP}"
TITLE_OPTIONS = _OPTIONS + ", HighlightAll=true"
BODY_OPTIONS = _OPTIONS + ', MaxFragments=2, MaxWords=24, MinWords=8, FragmentDelimiter=" … "'


def search(viewer: Viewer, raw_query: str, page: int = 1) -> Results:
    """Return one page of the documents `viewer` may see that match `raw_query`.

    Raises QueryRefused for an over-long query; any other input gives normal results.
    """
    query = clean_query(raw_query)
    if not query:
        return Results([], page, has_next=False)
    params: dict[str, Any] = {
        "user_id": viewer.user_id,
        "email": viewer.email,
        "read_all": viewer.read_all,
        "start": START,
        "stop": STOP,
        "limit": PER_PAGE + 1,
        "offset": (page - 1) * PER_PAGE,
    }
    if db.engine.dialect.name == "postgresql":
        params.update(
            query=query,
            title_options=TITLE_OPTIONS,
            body_options=BODY_OPTIONS,
            headline_chars=HEADLINE_CHARS,
        )
        statement = _POSTGRES
    else:
        fts = fts5_query(query)
        if not fts:
            return Results([], page, has_next=False)
        params["query"] = fts
        statement = _SQLITE
    if statement is _POSTGRES:
        # The planner prices filtering rows with `@@` as cheap, but each row costs a
        # detoasted tsvector: a sequential scan, or a walk of another index that filters
        # every row (chosen for the terms its statistics know to be common), takes 60-120 ms
        # over 10,000 documents against 5-12 ms through the GIN index (bench/documents.py).
        # Both are off for this one statement, which leaves the GIN bitmap scan.
        db.session.execute(text("SET LOCAL enable_seqscan = off"))
        db.session.execute(text("SET LOCAL enable_indexscan = off"))
        rows = db.session.execute(statement, params).all()
        db.session.execute(text("RESET enable_seqscan"))
        db.session.execute(text("RESET enable_indexscan"))
    else:
        rows = db.session.execute(statement, params).all()
    hits = [
        Hit(
            id=row.id,
            filename=row.filename,
            kind=row.kind,
            size=int(row.size),
            owner_id=int(row.owner_id),
            title_marked=row.title_marked or "",
            snippet_marked=row.snippet_marked or "",
        )
        for row in rows[:PER_PAGE]
    ]
    return Results(hits, page, has_next=len(rows) > PER_PAGE)
