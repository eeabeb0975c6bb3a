"""Hostile uploads are refused with a clear 4xx and leave nothing behind.

Nothing = no document, text, share or blob row and no file under the upload folder (not
even a temp file), on both storage backends and both profiles. Each refusal is audited.
"""

from __future__ import annotations

import io
from http import HTTPStatus

import pytest

from bastion.audit import EventTag
from tests import documents_helpers as fixtures
from tests.data.uploads.make_corpus import REJECT, pdf, zip_bomb
from tests.documents_helpers import Person, Vault, corpus
from tests.security.helpers import audit_rows

# The vault fixtures: every test here runs on both storage backends.
storage = fixtures.storage
settings_overrides = fixtures.settings_overrides
vault = fixtures.vault
alice = fixtures.alice

REASONS = {
    "html-disguised.png": "not a PNG",
    "executable.pdf": "not a PDF",
    "elf.jpg": "not a JPEG",
    "png-as.pdf": "not a PDF",
    "polyglot-trailer.png": "web page code",
    "polyglot-text-chunk.png": "web page code",
    "polyglot.gif": "web page code",
    "polyglot.pdf": "web page code",
    "image.svg": "not accepted",
    "page.html": "not accepted",
    "page.txt": "looks like a web page",
    "svg.txt": "looks like a web page",
    "latin1.txt": "UTF-8",
    "nul.csv": "binary content",
    "utf16.txt": "binary content",
    "zip-slip.docx": "unsafe name",
    "absolute.xlsx": "unsafe name",
    "symlink.docx": "link",
    "macro.docx": "macros",
    "not-office.docx": "not a valid .docx",
    "docx-as.xlsx": "not a valid .xlsx",
    "empty.txt": "empty",
    "truncated.docx": "not a valid .docx",
}


def assert_refused(vault: Vault, response: object, status: int, words: str) -> None:
    assert response.status_code == status  # type: ignore[attr-defined]
    assert words in response.get_data(as_text=True)  # type: ignore[attr-defined]
    vault.assert_empty()


def test_the_reject_corpus_is_covered() -> None:
    assert set(REASONS) == set(REJECT)


def test_every_file_of_the_reject_corpus_is_refused(vault: Vault, alice: Person) -> None:
    for name, words in REASONS.items():
        response = alice.upload(name, corpus("reject", name), content_type="image/png")
        assert response.status_code == HTTPStatus.BAD_REQUEST, name
        assert words in response.get_data(as_text=True), name
    vault.assert_empty()
    refusals = audit_rows(vault.app, EventTag.DOCUMENT_UPLOAD_REFUSED)
    assert len(refusals) == len(REASONS)


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("../../etc/passwd", "not accepted"),
        ("..\\..\\windows\\win.ini", "not accepted"),
        ("shell.php\x00.pdf", "not allowed"),
        ("shell.php", "not accepted"),
        ("report.pdf.exe", "not accepted"),
        ("...", "needs a name"),
        ("\u202e\u200b", "needs a name"),
        (".htaccess", "not accepted"),
    ],
)
def test_hostile_names_are_refused(vault: Vault, alice: Person, name: str, words: str) -> None:
    response = alice.upload(name, pdf("x"))
    assert_refused(vault, response, HTTPStatus.BAD_REQUEST, words)


def test_a_traversal_name_with_a_good_extension_keeps_only_its_last_part(
    vault: Vault, alice: Person
) -> None:
    document_id = alice.upload_ok("../../../etc/cron.d/report.pdf", pdf("x"))
    found = vault.document(document_id)
    assert found is not None
    assert found.filename == "report.pdf"
    assert all(vault.upload_dir in path.parents for path in vault.files())


@pytest.mark.settings(max_upload_mb=1)
def test_oversize_by_content_length_is_refused_before_reading(vault: Vault, alice: Person) -> None:
    response = alice.upload("big.txt", b"a" * (2 * 1024 * 1024))
    assert_refused(vault, response, HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "at most 1 MB")
    assert response.headers["Connection"] == "close"


@pytest.mark.settings(max_upload_mb=1)
def test_oversize_inside_the_multipart_allowance_is_refused_while_copying(
    vault: Vault, alice: Person
) -> None:
    response = alice.upload("big.txt", b"a" * (1024 * 1024 + 1))
    assert_refused(vault, response, HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "1 MB limit")


def test_a_body_cut_off_mid_file_leaves_nothing(vault: Vault, alice: Person) -> None:
    """A client that stops sending inside the file part (a dropped connection looks the
    same) must not leave the part already written in the staging folder."""
    boundary, body = alice.upload_form("notes.txt", b"some text\n" * 20_000)
    cut = body[: len(body) // 2]  # Content-Length says so: the form just ends early

    response = alice.client.post(
        "/documents/upload", data=cut, content_type=f"multipart/form-data; boundary={boundary}"
    )

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert "did not arrive whole" in response.get_data(as_text=True)
    vault.assert_empty()
    # A dropped connection is no forged request: nothing for the CSRF alerts to count.
    assert audit_rows(vault.app, EventTag.CSRF_FAILURE) == []


@pytest.mark.settings(max_upload_mb=1)
def test_an_oversized_body_without_content_length_is_refused_mid_file_and_leaves_nothing(
    vault: Vault, alice: Person
) -> None:
    """Chunked uploads carry no Content-Length: the limit can only stop them while the
    file part is being written, and that part must not stay behind."""
    boundary, body = alice.upload_form("notes.txt", b"a" * (3 * 1024 * 1024))

    response = alice.client.post(
        "/documents/upload",
        input_stream=io.BytesIO(body),
        content_type=f"multipart/form-data; boundary={boundary}",
        headers={"Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )

    assert response.status_code == HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    vault.assert_empty()


def test_a_zip_bomb_is_refused_by_streaming_with_caps(vault: Vault, alice: Person) -> None:
    bomb = zip_bomb("docx")
    assert len(bomb) < 1024 * 1024  # 64 MiB of zeros declared honestly, ~1000:1
    response = alice.upload("bomb.docx", bomb)
    assert_refused(vault, response, HTTPStatus.BAD_REQUEST, "zip bomb")


def test_a_failed_store_leaves_nothing(
    vault: Vault, alice: Person, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash after the object is stored (the audit write fails) rolls everything back."""

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("database went away mid-upload")

    monkeypatch.setattr("bastion.documents.service.record", broken)
    response = alice.upload("notes.txt", corpus("accept", "notes.txt"))
    assert response.status_code == HTTPStatus.INTERNAL_SERVER_ERROR
    vault.assert_empty()


def test_uploads_need_a_csrf_token(vault: Vault, alice: Person) -> None:
    response = alice.client.post(
        "/documents/upload", data={"file": (io.BytesIO(b"text"), "notes.txt")}
    )
    assert response.status_code == HTTPStatus.BAD_REQUEST
    vault.assert_empty()


def test_extra_file_parts_leave_nothing_in_the_staging_area(vault: Vault, alice: Person) -> None:
    """Every file part of the upload route is written into staging while it is parsed
    (documents/upload_stream.py): parts the form does not use are removed with the request.
    """
    response = alice.client.post(
        "/documents/upload",
        data={
            "csrf_token": alice.csrf(),
            "file": (io.BytesIO(b"kept"), "notes.txt"),
            "extra": (io.BytesIO(b"smuggled"), "other.txt"),
            "file2": (io.BytesIO(b"more"), "more.txt"),
        },
    )
    assert response.status_code == HTTPStatus.SEE_OTHER
    assert vault.rows()["documents"] == 1
    staged = [p for p in vault.files() if p.relative_to(vault.upload_dir).parts[0] == "tmp"]
    assert staged == []


def test_a_refused_request_leaves_no_staged_file(vault: Vault, alice: Person) -> None:
    response = alice.client.post(
        "/documents/upload",
        data={"csrf_token": "forged", "file": (io.BytesIO(b"x" * 1000), "notes.txt")},
    )
    assert response.status_code == HTTPStatus.BAD_REQUEST
    vault.assert_empty()


@pytest.mark.settings(ratelimit_user_upload="2 per hour")
def test_uploads_are_rate_limited_per_user(vault: Vault, alice: Person) -> None:
    alice.upload_ok("one.txt", b"1")
    alice.upload_ok("two.txt", b"2")
    response = alice.upload("three.txt", b"3")
    assert response.status_code == HTTPStatus.TOO_MANY_REQUESTS
    assert "Retry-After" in response.headers
    assert vault.rows()["documents"] == 2
