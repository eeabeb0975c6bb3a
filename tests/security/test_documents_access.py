"""Who may see a document: the owner, the users it is shared with, documents:all:read.

Everyone else gets 404 on every route (view, download, preview, share, revoke, delete) and
never finds it in a listing or a search, so ids cannot be probed. The IDOR matrix runs on
both storage backends.
"""

from __future__ import annotations

from http import HTTPStatus

import pytest

from bastion.audit import EventTag
from bastion.security.permissions import ROLE_PERMISSIONS, Permission, Role
from tests import documents_helpers as fixtures
from tests.documents_helpers import MALLORY, Person, Vault, corpus
from tests.security.helpers import audit_rows

storage = fixtures.storage
settings_overrides = fixtures.settings_overrides
vault = fixtures.vault
alice = fixtures.alice
bob = fixtures.bob
mallory = fixtures.mallory

SECRET = "zanzibar-ledger"


def _alice_secret(alice: Person, bob: Person) -> tuple[str, int]:
    """Alice's image shared with Bob; returns its id and the share's id."""
    document_id = alice.upload_ok("pixel.png", corpus("accept", "pixel.png"), title=SECRET)
    alice.share(document_id, bob.email)
    with alice.auth.app.app_context():
        from bastion.core.db import db
        from bastion.documents.models import DocumentShare

        share_id = db.session.query(DocumentShare.id).scalar()
    return document_id, int(share_id)


def test_another_users_id_is_404_everywhere(
    vault: Vault, alice: Person, bob: Person, mallory: Person
) -> None:
    document_id, share_id = _alice_secret(alice, bob)
    base = f"/documents/{document_id}"

    for path in (base, f"{base}/download", f"{base}/preview", f"{base}/share"):
        response = mallory.client.get(path)
        assert response.status_code == HTTPStatus.NOT_FOUND, path
        assert SECRET not in response.get_data(as_text=True)
    for path, data in (
        (f"{base}/share", {"email": MALLORY}),
        (f"{base}/share/{share_id}/revoke", {}),
        (f"{base}/delete", {}),
    ):
        assert mallory.post(path, data).status_code == HTTPStatus.NOT_FOUND, path

    for path in ("/documents/", "/documents/shared"):
        assert SECRET not in mallory.client.get(path).get_data(as_text=True), path
    found = mallory.search(SECRET).get_data(as_text=True)
    assert document_id not in found
    assert "No documents match." in found
    # Nothing changed: Alice still has it, Bob's share stands, Mallory got no share.
    assert vault.rows()["documents"] == 1
    assert vault.rows()["document_shares"] == 1
    assert bob.client.get(base).status_code == HTTPStatus.OK


def test_unknown_ids_and_malformed_ids_are_404(alice: Person) -> None:
    for document_id in ("A" * 22, "1", "..%2F..%2Fetc%2Fpasswd", "x" * 200, "%00"):
        response = alice.client.get(f"/documents/{document_id}")
        assert response.status_code == HTTPStatus.NOT_FOUND, document_id


def test_a_revoke_of_another_documents_share_is_404(
    vault: Vault, alice: Person, bob: Person, mallory: Person
) -> None:
    _alice_id, alice_share = _alice_secret(alice, bob)
    mallory_doc = mallory.upload_ok("m.txt", b"mine")
    # Mallory owns mallory_doc, but the share id belongs to Alice's document.
    response = mallory.post(f"/documents/{mallory_doc}/share/{alice_share}/revoke")
    assert response.status_code == HTTPStatus.NOT_FOUND
    assert vault.rows()["document_shares"] == 1


def test_anonymous_visitors_are_sent_to_sign_in(vault: Vault, alice: Person) -> None:
    document_id = alice.upload_ok("notes.txt", b"text")
    anonymous = vault.app.test_client()
    for path in (
        "/documents/",
        "/documents/shared",
        "/documents/upload",
        f"/documents/{document_id}",
        f"/documents/{document_id}/download",
        "/documents/search?q=text",
    ):
        response = anonymous.get(path)
        assert response.status_code == HTTPStatus.FOUND, path
        assert response.headers["Location"].startswith("/auth/login")


def test_read_all_is_granted_to_no_role_by_default() -> None:
    for role in Role:
        assert Permission.DOCUMENTS_READ_ALL not in ROLE_PERMISSIONS[role], role


def test_a_read_all_holder_can_read_but_not_manage(
    vault: Vault, alice: Person, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(
        ROLE_PERMISSIONS,
        Role.AUDITOR,
        ROLE_PERMISSIONS[Role.AUDITOR] | {Permission.DOCUMENTS_READ_ALL},
    )
    auditor = vault.person("auditor@example.com", role=Role.AUDITOR.value)
    document_id = alice.upload_ok("notes.txt", b"quarterly zanzibar figures")

    assert auditor.client.get(f"/documents/{document_id}").status_code == HTTPStatus.OK
    download = auditor.client.get(f"/documents/{document_id}/download")
    assert download.get_data() == b"quarterly zanzibar figures"
    assert "notes.txt" in auditor.search("zanzibar").get_data(as_text=True)
    assert auditor.delete(document_id).status_code == HTTPStatus.NOT_FOUND
    assert auditor.share(document_id, "x@example.com").status_code == HTTPStatus.NOT_FOUND


def test_downloads_are_audited_with_the_reader(vault: Vault, alice: Person, bob: Person) -> None:
    document_id, _share = _alice_secret(alice, bob)
    bob.client.get(f"/documents/{document_id}/download").get_data()
    rows = audit_rows(vault.app, EventTag.DOCUMENT_DOWNLOAD)
    assert [row.target for row in rows] == [document_id]
    assert rows[0].actor_email == bob.email


def test_deleted_documents_vanish_for_everyone(vault: Vault, alice: Person, bob: Person) -> None:
    document_id, _share = _alice_secret(alice, bob)
    alice.delete(document_id)
    for person in (alice, bob):
        assert person.client.get(f"/documents/{document_id}").status_code == 404
        assert "No documents match." in person.search(SECRET).get_data(as_text=True)


@pytest.mark.settings(ratelimit_user_download="2 per hour", ratelimit_user_share="1 per hour")
def test_downloads_and_shares_are_rate_limited_per_user(alice: Person) -> None:
    document_id = alice.upload_ok("notes.txt", b"text")
    path = f"/documents/{document_id}/download"
    assert alice.client.get(path).status_code == HTTPStatus.OK
    assert alice.client.get(path).status_code == HTTPStatus.OK
    assert alice.client.get(path).status_code == HTTPStatus.TOO_MANY_REQUESTS
    assert alice.share(document_id, "a@example.com").status_code == HTTPStatus.SEE_OTHER
    assert alice.share(document_id, "b@example.com").status_code == HTTPStatus.TOO_MANY_REQUESTS


@pytest.mark.parametrize(
    "validators",
    [
        {"Range": "bytes=0-3"},
        {"Range": "bytes=-4"},
        {"If-None-Match": "*"},
        {"If-Modified-Since": "Mon, 01 Jan 2035 00:00:00 GMT"},
    ],
    ids=["range", "suffix-range", "if-none-match", "if-modified-since"],
)
def test_a_file_answer_is_never_cached_and_range_or_validators_change_nothing(
    alice: Person, bob: Person, validators: dict[str, str]
) -> None:
    """A shared cache must not keep a file, and a partial or conditional request gets no
    way around the access check: the whole file to a reader, 404 to anyone else."""
    data = corpus("accept", "pixel.png")
    document_id = alice.upload_ok("pixel.png", data)

    for route in ("download", "preview"):
        path = f"/documents/{document_id}/{route}"
        served = alice.client.get(path, headers=validators)
        refused = bob.client.get(path, headers=validators)

        assert served.status_code == HTTPStatus.OK
        assert served.get_data() == data
        assert served.headers["Cache-Control"] == "no-store"
        assert "Cookie" in served.headers.get("Vary", "")
        assert "ETag" not in served.headers
        assert refused.status_code == HTTPStatus.NOT_FOUND
        assert refused.headers["Cache-Control"] == "no-store"
