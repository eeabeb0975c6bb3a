"""The vault through the test client: upload, list, view, download, share, revoke, delete.

Every test runs on both storage backends (the `storage` fixture) and on the profile under
test (BASTION_TEST_PROFILE).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import threading
from http import HTTPStatus
from typing import Any
from urllib.parse import quote

import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient
from werkzeug.datastructures import FileStorage
from werkzeug.test import encode_multipart

from bastion.audit import EventTag
from bastion.cli import main as cli_main
from tests.documents_helpers import BOB, CORPUS, Person, Vault, corpus
from tests.security.helpers import audit_rows

EXPECTED_TYPES = {
    "report.pdf": "application/pdf",
    "pixel.png": "image/png",
    "photo.jpg": "image/jpeg",
    "dot.gif": "image/gif",
    "tiny.webp": "image/webp",
    "notes.txt": "text/plain; charset=utf-8",
    "table.csv": "text/csv; charset=utf-8",
    "letter.docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "sheet.xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


def test_every_allowed_type_round_trips(vault: Vault, alice: Person) -> None:
    for path in sorted((CORPUS / "accept").iterdir()):
        data = path.read_bytes()
        document_id = alice.upload_ok(path.name, data)

        page = alice.client.get(f"/documents/{document_id}")
        assert page.status_code == HTTPStatus.OK
        assert path.name in page.get_data(as_text=True)
        assert hashlib.sha256(data).hexdigest() in page.get_data(as_text=True)

        download = alice.client.get(f"/documents/{document_id}/download")
        assert download.status_code == HTTPStatus.OK
        assert download.get_data() == data
        assert download.headers["Content-Type"] == EXPECTED_TYPES[path.name]
        assert download.headers["Content-Disposition"].startswith("attachment;")
        assert download.headers["X-Content-Type-Options"] == "nosniff"
        assert download.headers["Content-Length"] == str(len(data))
    assert vault.rows()["documents"] == len(EXPECTED_TYPES)


def test_the_client_content_type_is_ignored(alice: Person) -> None:
    document_id = alice.upload_ok("notes.txt", corpus("accept", "notes.txt"))
    download = alice.client.get(f"/documents/{document_id}/download")
    assert download.headers["Content-Type"] == "text/plain; charset=utf-8"


def test_ids_are_random_and_unguessable(alice: Person) -> None:
    first = alice.upload_ok("a.txt", b"one")
    second = alice.upload_ok("b.txt", b"two")
    assert len(first) == len(second) == 22  # token_urlsafe(16): 128 bits
    assert first != second
    assert not first.isdigit()


def test_unicode_name_survives_to_the_download_header(alice: Person) -> None:
    name = "отчёт за квартал.pdf"
    document_id = alice.upload_ok(name, corpus("accept", "report.pdf"))

    page = alice.client.get(f"/documents/{document_id}").get_data(as_text=True)
    assert name in page
    header = alice.client.get(f"/documents/{document_id}/download").headers["Content-Disposition"]
    assert f"filename*=UTF-8''{quote(name, safe='')}" in header
    assert header.isascii()


def test_decomposed_unicode_is_normalised_to_nfc(vault: Vault, alice: Person) -> None:
    document_id = alice.upload_ok("cafe\u0301.txt", b"coffee")
    found = vault.document(document_id)
    assert found is not None
    assert found.filename == "caf\u00e9.txt"


def test_title_defaults_to_the_file_name_and_can_be_given(vault: Vault, alice: Person) -> None:
    plain = alice.upload_ok("minutes.txt", b"text")
    titled = alice.upload_ok("minutes.txt", b"text", title="  Board   minutes\u202e 2026 ")
    assert (doc := vault.document(plain)) is not None
    assert doc.title == "minutes.txt"
    assert (doc := vault.document(titled)) is not None
    assert doc.title == "Board minutes 2026"


def test_my_documents_lists_mine_only(vault: Vault, alice: Person, bob: Person) -> None:
    alice.upload_ok("alice-notes.txt", b"a")
    bob.upload_ok("bob-notes.txt", b"b")
    page = alice.client.get("/documents/").get_data(as_text=True)
    assert "alice-notes.txt" in page
    assert "bob-notes.txt" not in page
    assert "You use 1 bytes" in page


def test_lists_are_paginated(alice: Person) -> None:
    for number in range(21):
        alice.upload_ok(f"file-{number:02}.txt", b"x")
    first = alice.client.get("/documents/").get_data(as_text=True)
    second = alice.client.get("/documents/?page=2").get_data(as_text=True)
    assert first.count(".txt</td>") == 20
    assert 'rel="next"' in first
    assert second.count(".txt</td>") == 1
    assert 'rel="prev"' in second
    assert alice.client.get("/documents/?page=abc").status_code == HTTPStatus.BAD_REQUEST
    assert alice.client.get("/documents/?page=0").status_code == HTTPStatus.BAD_REQUEST


def test_share_read_only_then_revoke(vault: Vault, alice: Person, bob: Person) -> None:
    document_id = alice.upload_ok("plan.txt", b"the plan")

    answer = alice.share(document_id, "Bob@Example.com")
    assert answer.status_code == HTTPStatus.SEE_OTHER
    assert "plan.txt" in bob.client.get("/documents/shared").get_data(as_text=True)
    assert bob.client.get(f"/documents/{document_id}").status_code == HTTPStatus.OK
    assert bob.client.get(f"/documents/{document_id}/download").get_data() == b"the plan"
    # Read-only: the recipient may not share, delete or see the share list.
    assert bob.share(document_id, "x@example.com").status_code == HTTPStatus.NOT_FOUND
    assert bob.delete(document_id).status_code == HTTPStatus.NOT_FOUND
    assert bob.client.get(f"/documents/{document_id}/share").status_code == HTTPStatus.NOT_FOUND

    share_page = alice.client.get(f"/documents/{document_id}/share").get_data(as_text=True)
    assert BOB in share_page
    with vault.app.app_context():
        from bastion.core.db import db
        from bastion.documents.models import DocumentShare

        share_id = db.session.query(DocumentShare.id).scalar()
    revoked = alice.post(f"/documents/{document_id}/share/{share_id}/revoke")
    assert revoked.status_code == HTTPStatus.SEE_OTHER
    assert bob.client.get(f"/documents/{document_id}").status_code == HTTPStatus.NOT_FOUND
    assert "plan.txt" not in bob.client.get("/documents/shared").get_data(as_text=True)

    events = [row.event for row in audit_rows(vault.app)]
    assert EventTag.DOCUMENT_SHARE in events
    assert EventTag.DOCUMENT_SHARE_REVOKE in events
    assert EventTag.DOCUMENT_DOWNLOAD in events


def test_share_answer_is_the_same_for_unknown_addresses(alice: Person, bob: Person) -> None:
    document_id = alice.upload_ok("plan.txt", b"the plan")
    known = alice.share(document_id, BOB)
    unknown = alice.share(document_id, "nobody-here@example.com")
    assert known.status_code == unknown.status_code == HTTPStatus.SEE_OTHER
    assert known.headers["Location"] == unknown.headers["Location"]
    known_page = alice.client.get(known.headers["Location"]).get_data(as_text=True)
    alice.share(document_id, "nobody-else@example.com")
    unknown_page = alice.client.get(unknown.headers["Location"]).get_data(as_text=True)
    assert known_page.replace(BOB, "X").count("X") >= 1
    assert "Whoever signs in with that address" in unknown_page
    assert "no account" not in unknown_page.lower()


def test_share_refuses_a_malformed_address(alice: Person) -> None:
    document_id = alice.upload_ok("plan.txt", b"the plan")
    answer = alice.share(document_id, "not an address")
    assert answer.status_code == HTTPStatus.BAD_REQUEST
    assert "valid email address" in answer.get_data(as_text=True)


def test_delete_soft_deletes_then_purges(vault: Vault, alice: Person, bob: Person) -> None:
    document_id = alice.upload_ok("gone.txt", b"bye")
    alice.share(document_id, BOB)
    assert len(vault.files()) == (
        1 if vault.app.extensions["bastion.settings"].storage == "filesystem" else 0
    )

    answer = alice.delete(document_id)
    assert answer.status_code == HTTPStatus.SEE_OTHER
    assert alice.client.get(f"/documents/{document_id}").status_code == HTTPStatus.NOT_FOUND
    assert bob.client.get(f"/documents/{document_id}").status_code == HTTPStatus.NOT_FOUND
    vault.assert_empty()
    events = [row.event for row in audit_rows(vault.app)]
    assert EventTag.DOCUMENT_DELETE in events
    assert EventTag.DOCUMENT_PURGE in events


@pytest.mark.settings(upload_quota_mb=1)
def test_quota_gives_a_clear_error(vault: Vault, alice: Person) -> None:
    alice.upload_ok("big.txt", b"a" * 700_000)
    refused = alice.upload("more.txt", b"b" * 400_000)
    assert refused.status_code == HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    text = refused.get_data(as_text=True)
    assert "storage quota" in text
    assert "Delete documents" in text
    assert vault.rows()["documents"] == 1


# No script, no subresources, and no framing by another site (frame-ancestors is not
# covered by default-src, and the page policy's is replaced by this one).
FILE_POLICY = (
    "sandbox; default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def test_image_preview_is_inline_and_sandboxed(alice: Person) -> None:
    image = alice.upload_ok("pixel.png", corpus("accept", "pixel.png"))
    text = alice.upload_ok("notes.txt", b"text")
    page = alice.client.get(f"/documents/{image}").get_data(as_text=True)
    assert f"/documents/{image}/preview" in page

    preview = alice.client.get(f"/documents/{image}/preview")
    assert preview.status_code == HTTPStatus.OK
    assert preview.get_data() == corpus("accept", "pixel.png")
    assert preview.headers["Content-Type"] == "image/png"
    assert preview.headers["Content-Disposition"].startswith("inline;")
    assert preview.headers["Content-Security-Policy"] == FILE_POLICY
    assert alice.client.get(f"/documents/{text}/preview").status_code == HTTPStatus.NOT_FOUND
    download = alice.client.get(f"/documents/{text}/download")
    assert download.headers["Content-Security-Policy"] == FILE_POLICY


def test_storage_gc_removes_stale_temp_files(vault: Vault, alice: Person) -> None:
    alice.upload_ok("keep.txt", b"kept")
    staging = vault.upload_dir / "tmp"
    staging.mkdir(parents=True, exist_ok=True)
    stale = staging / ("0" * 32 + ".part")
    stale.write_bytes(b"half an upload")

    runner = CliRunner()
    with vault.app.app_context():
        from flask.cli import ScriptInfo

        result = runner.invoke(
            cli_main,
            ["storage", "gc", "--grace-minutes", "0"],
            obj=ScriptInfo(create_app=lambda: vault.app),
        )
    assert result.exit_code == 0, result.output
    assert "removed 1 temp files" in result.output
    assert not stale.exists()
    assert vault.rows()["documents"] == 1


def _gc(vault: Vault) -> str:
    from flask.cli import ScriptInfo

    result = CliRunner().invoke(
        cli_main,
        ["storage", "gc", "--grace-minutes", "0"],
        obj=ScriptInfo(create_app=lambda: vault.app),
    )
    assert result.exit_code == 0, result.output
    return str(result.output)


def test_a_failed_purge_is_finished_by_gc(
    vault: Vault, alice: Person, monkeypatch: pytest.MonkeyPatch
) -> None:
    document_id = alice.upload_ok("gone.txt", b"bye")
    storage_class = type(vault.app.extensions["bastion.documents.vault"].storage)

    def refuse(self: object, key: str) -> None:
        raise OSError("storage unavailable")

    with monkeypatch.context() as patch:
        patch.setattr(storage_class, "delete", refuse)
        assert alice.delete(document_id).status_code == HTTPStatus.SEE_OTHER
    # Soft-deleted: gone for everyone at once, though the object is still stored.
    assert alice.client.get(f"/documents/{document_id}").status_code == HTTPStatus.NOT_FOUND
    assert vault.rows()["documents"] == 1

    assert "purged 1 deleted documents" in _gc(vault)
    vault.assert_empty()


def test_gc_removes_objects_no_document_refers_to(vault: Vault, alice: Person) -> None:
    from bastion.core.db import db
    from bastion.documents.storage import new_key

    alice.upload_ok("keep.txt", b"kept")
    staged = vault.upload_dir / "orphan.part"
    staged.parent.mkdir(parents=True, exist_ok=True)
    staged.write_bytes(b"an object whose row never committed")
    with vault.app.app_context():
        vault.app.extensions["bastion.documents.vault"].storage.put(new_key(), staged)
        db.session.commit()
    staged.unlink(missing_ok=True)  # the database backend copies it, the filesystem moves it

    assert "removed 1 unreferenced objects" in _gc(vault)
    rows = vault.rows()
    assert rows["documents"] == 1
    assert "keep.txt" in alice.client.get("/documents/").get_data(as_text=True)
    assert rows["document_blobs"] + len(vault.files()) == 1  # only the kept document's


@pytest.mark.settings(upload_quota_mb=1)
def test_concurrent_uploads_cannot_exceed_the_quota_together(
    vault: Vault, alice: Person, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two uploads that each fit but together don't: at most one is stored.

    Each upload, once it has passed the quota check, waits (up to 2 s) for the other to
    reach the same point: without serialisation both pass, store and commit.
    """
    from bastion.documents import service

    arrived = threading.Barrier(2)
    original = service._store

    def store_when_both_arrived(*args: Any, **kwargs: Any) -> None:
        # Broken after 2 s when the other upload is held back: serialised, as it should be.
        with contextlib.suppress(threading.BrokenBarrierError):
            arrived.wait(timeout=2)
        original(*args, **kwargs)

    monkeypatch.setattr(service, "_store", store_when_both_arrived)
    second = vault.app.test_client()
    second.set_cookie(
        "__Host-session",
        alice.client.get_cookie("__Host-session").value,  # type: ignore[union-attr]
        domain="localhost",
        secure=True,
    )
    tokens = [alice.csrf(), alice.csrf()]
    answers: list[int] = []

    def upload(client: FlaskClient, token: str, name: str) -> None:
        form = {"csrf_token": token, "file": FileStorage(io.BytesIO(b"x" * 700_000), name)}
        boundary, body = encode_multipart(form)  # in memory: see Person.upload
        answer = client.post(
            "/documents/upload",
            data=body,
            content_type=f"multipart/form-data; boundary={boundary}",
        )
        answers.append(answer.status_code)

    threads = [
        threading.Thread(target=upload, args=(alice.client, tokens[0], "one.txt")),
        threading.Thread(target=upload, args=(second, tokens[1], "two.txt")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(answers) == [HTTPStatus.SEE_OTHER, HTTPStatus.REQUEST_ENTITY_TOO_LARGE]
    assert vault.rows()["documents"] == 1
