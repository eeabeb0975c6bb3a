"""Search: injection payloads give normal answers, visibility is in the SQL, XSS is inert.

SQL and FTS5 syntax in a query must never reach the database as syntax: a quoted term per
word (SQLite) or websearch_to_tsquery (PostgreSQL). Titles, file names and document text
with markup render escaped on the list, detail and search pages; the only markup a
snippet adds is <mark>.
"""

from __future__ import annotations

import re
from http import HTTPStatus

import pytest
from flask import Flask
from markupsafe import Markup

from bastion.core.db import db
from bastion.documents.search import (
    HEADLINE_CHARS,
    MAX_QUERY_CHARS,
    PER_PAGE,
    START,
    STOP,
    clean_query,
    fts5_query,
    highlight,
    index_text,
)
from tests import documents_helpers as fixtures
from tests.documents_helpers import Person, Vault

storage = fixtures.storage
settings_overrides = fixtures.settings_overrides
vault = fixtures.vault
alice = fixtures.alice
bob = fixtures.bob

RESULT_RE = re.compile(r'<li>\s*<a href="/documents/([A-Za-z0-9_-]{22})">')

INJECTIONS = [
    "' OR 1=1 --",
    '" OR 1=1 --',
    "lighthouse' UNION SELECT password_hash FROM users --",
    "lighthouse; DROP TABLE documents; --",
    'lighthouse" OR "a"="a',
    "NEAR(lighthouse keeper, 2)",
    "title:lighthouse",
    "lighthouse AND OR NOT",
    "^lighthouse",
    "lighthouse*",
    "*",
    '"',
    "(((",
    "-lighthouse",
    "\\",
    "%_%",
    "{lighthouse}",
    "\x00lighthouse",
    f"{START}lighthouse{STOP}",
]

XSS = [
    "<script>alert('xss')</script>",
    '"><img src=x onerror=alert(1)>',
    "<svg/onload=alert(1)>",
    "javascript:alert(1)",
]


def result_ids(page: str) -> list[str]:
    return RESULT_RE.findall(page)


@pytest.fixture
def library(alice: Person, bob: Person) -> dict[str, str]:
    """Alice's three documents, one shared with Bob; Bob's own one."""
    ids = {
        "keeper": alice.upload_ok("keeper.txt", b"The lighthouse keeper counts ships."),
        "report": alice.upload_ok("report.csv", b"lighthouse,3\nharbour,5\n"),
        "other": alice.upload_ok("other.txt", b"Nothing to see here."),
        "bobs": bob.upload_ok("bob.txt", b"Bob's lighthouse notes."),
    }
    alice.share(ids["keeper"], bob.email)
    return ids


def test_search_finds_titles_and_text_of_visible_documents(
    alice: Person, bob: Person, library: dict[str, str]
) -> None:
    mine = result_ids(alice.search("lighthouse").get_data(as_text=True))
    assert sorted(mine) == sorted([library["keeper"], library["report"]])
    shared = result_ids(bob.search("lighthouse").get_data(as_text=True))
    assert sorted(shared) == sorted([library["keeper"], library["bobs"]])
    assert result_ids(alice.search("keeper.txt").get_data(as_text=True)) == [library["keeper"]]


def test_snippets_mark_the_match(alice: Person, library: dict[str, str]) -> None:
    page = alice.search("ships").get_data(as_text=True)
    assert "<mark>ships</mark>" in page


def test_postgresql_snippets_read_only_the_opening_text(app: Flask, alice: Person) -> None:
    """ts_headline's cost grows faster than the text it reads (search.HEADLINE_CHARS).

    A match past the cap still finds its document; only the snippet goes unmarked.
    """
    with app.app_context():
        if db.engine.dialect.name != "postgresql":
            pytest.skip("SQLite's snippet() works from the FTS5 index, not a text scan")
    filler = b"harbour " * (HEADLINE_CHARS // 8 + 500)
    near = alice.upload_ok("near.txt", b"quayside " + filler)
    far = alice.upload_ok("far.txt", filler + b"quayside")

    page = alice.search("quayside").get_data(as_text=True)

    assert sorted(result_ids(page)) == sorted([near, far])
    assert page.count("<mark>quayside</mark>") == 1


def test_injection_payloads_get_normal_answers(
    vault: Vault, alice: Person, library: dict[str, str]
) -> None:
    visible = {library["keeper"], library["report"], library["other"]}
    for query in INJECTIONS:
        response = alice.search(query)
        assert response.status_code == HTTPStatus.OK, query
        # Never more than Alice may see, whatever the payload says.
        assert set(result_ids(response.get_data(as_text=True))) <= visible, query
    assert vault.rows()["documents"] == 4
    # The payloads that contain a real word still find it.
    page = alice.search('lighthouse" OR "a"="a').get_data(as_text=True)
    assert library["keeper"] in page or "No documents match." in page


def test_or_1_equals_1_does_not_list_everything(alice: Person, library: dict[str, str]) -> None:
    assert result_ids(alice.search("' OR 1=1 --").get_data(as_text=True)) == []


def test_visibility_is_applied_before_limit(vault: Vault, alice: Person, bob: Person) -> None:
    # More of Bob's matching documents than one page holds: Alice must still find hers.
    for number in range(PER_PAGE + 2):
        bob.upload_ok(f"bob-{number}.txt", b"zephyr winds")
    mine = alice.upload_ok("alice.txt", b"zephyr winds")
    page = alice.search("zephyr").get_data(as_text=True)
    assert result_ids(page) == [mine]
    assert 'rel="next"' not in page


def test_results_are_paginated(alice: Person) -> None:
    for number in range(PER_PAGE + 1):
        alice.upload_ok(f"doc-{number}.txt", b"marigold")
    first = alice.search("marigold").get_data(as_text=True)
    second = alice.search("marigold", page="2").get_data(as_text=True)
    assert len(result_ids(first)) == PER_PAGE
    assert 'rel="next"' in first
    assert len(result_ids(second)) == 1
    assert alice.search("marigold", page="-1").status_code == HTTPStatus.BAD_REQUEST


def test_an_over_long_query_is_refused_clearly(alice: Person) -> None:
    response = alice.search("a" * (MAX_QUERY_CHARS + 1))
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert f"at most {MAX_QUERY_CHARS} characters" in response.get_data(as_text=True)


@pytest.mark.settings(ratelimit_user_search="2 per minute")
def test_search_is_rate_limited_per_user(alice: Person) -> None:
    assert alice.search("a").status_code == HTTPStatus.OK
    assert alice.search("b").status_code == HTTPStatus.OK
    assert alice.search("c").status_code == HTTPStatus.TOO_MANY_REQUESTS


def test_xss_in_titles_names_and_text_renders_inert(alice: Person) -> None:
    for payload in XSS:
        document_id = alice.upload_ok(
            f"{payload}.txt", f"needle {payload} haystack".encode(), title=payload
        )
        share = alice.client.get(f"/documents/{document_id}/share")
        pages = [
            alice.client.get("/documents/").get_data(as_text=True),
            alice.client.get(f"/documents/{document_id}").get_data(as_text=True),
            share.get_data(as_text=True),
            alice.search("needle").get_data(as_text=True),
            alice.search(payload).get_data(as_text=True),
        ]
        for page in pages:
            if "<" in payload:
                assert payload not in page
            for tag in ("<script", "<img", "<svg", 'href="javascript'):
                assert tag not in page.lower(), (payload, tag)


# ------------------------------------------------------------ the helpers themselves
def test_fts5_query_quotes_every_term() -> None:
    assert fts5_query("' OR 1=1 --") == '"\'" "OR" "1=1" "--"'
    assert fts5_query('say "hi"') == '"say" """hi"""'
    assert fts5_query("light*") == '"light"*'
    assert fts5_query("*") == '"*"'


def test_clean_query_strips_sentinels_and_controls() -> None:
    assert clean_query(f"a{START}b{STOP}\x00c\u202e") == "abc"
    with pytest.raises(ValueError, match="at most"):
        clean_query("x" * (MAX_QUERY_CHARS + 1))


def test_index_text_strips_sentinels() -> None:
    assert index_text(f"x{START}<b>{STOP}y\x00") == "x<b>y"


def test_highlight_escapes_before_marking() -> None:
    marked = f"<script>{START}alert{STOP}</script> & co"
    assert highlight(marked) == Markup("&lt;script&gt;<mark>alert</mark>&lt;/script&gt; &amp; co")
    assert highlight(f"{START}unbalanced") == Markup("unbalanced")
