"""Fixtures and helpers for the document vault tests (functional and security suites).

Import the fixtures into a test module (`from tests.documents_helpers import ...`): every
test that uses them runs once per storage backend (`filesystem`, `database`), with its
own upload folder so "nothing left behind" can be checked exactly.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from werkzeug.datastructures import FileStorage
from werkzeug.test import TestResponse, encode_multipart

from bastion.core.db import db
from bastion.documents.models import Document, DocumentBlob, DocumentShare, DocumentText
from tests.conftest import AuthActions, csrf_token_from

CORPUS = Path(__file__).parent / "data" / "uploads"
DETAIL_RE = re.compile(r"/documents/([A-Za-z0-9_-]{22})$")
ALICE = "alice@example.com"
BOB = "bob@example.com"
MALLORY = "mallory@example.com"


@pytest.fixture(params=["filesystem", "database"])
def storage(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def settings_overrides(
    request: pytest.FixtureRequest, storage: str, tmp_path: Path
) -> dict[str, Any]:
    """The settings marker's overrides, on this test's storage backend and upload folder."""
    values: dict[str, Any] = {"storage": storage, "upload_dir": str(tmp_path / "uploads")}
    marker = request.node.get_closest_marker("settings")
    if marker:
        values.update(marker.kwargs)
    return values


def browser_escaped(name: str) -> str:
    """A file name as browsers put it in multipart/form-data (WHATWG: " CR LF escaped)."""
    return name.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


@dataclass
class Person:
    """A signed-in user with their own browser."""

    email: str
    client: FlaskClient
    auth: AuthActions

    def csrf(self, path: str = "/documents/upload") -> str:
        return csrf_token_from(self.client.get(path).get_data(as_text=True))

    def upload_form(
        self,
        name: str,
        data: bytes,
        title: str | None = None,
        content_type: str = "application/octet-stream",
    ) -> tuple[str, bytes]:
        """The upload form with a fresh CSRF token, encoded: (boundary, body).

        Encoded in memory: the test client would spool bodies over 500 KB to a temp file
        it never closes (a ResourceWarning, which this suite treats as an error).
        """
        form: dict[str, Any] = {
            "csrf_token": self.csrf(),
            "file": FileStorage(
                io.BytesIO(data), filename=browser_escaped(name), content_type=content_type
            ),
        }
        if title is not None:
            form["title"] = title
        return encode_multipart(form)

    def upload(
        self,
        name: str,
        data: bytes,
        title: str | None = None,
        content_type: str = "application/octet-stream",
        **headers: str,
    ) -> TestResponse:
        boundary, body = self.upload_form(name, data, title, content_type)
        return self.client.post(
            "/documents/upload",
            data=body,
            content_type=f"multipart/form-data; boundary={boundary}",
            headers=headers or None,
        )

    def upload_ok(self, name: str, data: bytes, title: str | None = None) -> str:
        """Upload and return the new document's id (fails the test if refused)."""
        response = self.upload(name, data, title)
        assert response.status_code == 303, response.get_data(as_text=True)[:2000]
        match = DETAIL_RE.search(response.headers["Location"])
        assert match, response.headers["Location"]
        return match.group(1)

    def post(self, path: str, data: dict[str, str] | None = None) -> TestResponse:
        form = {"csrf_token": self.csrf(), **(data or {})}
        return self.client.post(path, data=form)

    def share(self, document_id: str, email: str) -> TestResponse:
        return self.post(f"/documents/{document_id}/share", {"email": email})

    def delete(self, document_id: str) -> TestResponse:
        return self.post(f"/documents/{document_id}/delete")

    def search(self, query: str, **params: str) -> TestResponse:
        return self.client.get("/documents/search", query_string={"q": query, **params})


class Vault:
    """The app under test with helpers to make people and look at what is stored."""

    def __init__(self, app: Flask, auth: AuthActions, upload_dir: Path) -> None:
        self.app = app
        self.auth = auth
        self.upload_dir = upload_dir

    def person(self, email: str, role: str = "user", client: FlaskClient | None = None) -> Person:
        browser = client or self.app.test_client()
        actions = AuthActions(self.app, browser)
        actions.create_user(email=email, role=role, name=email.split("@")[0].title())
        response = actions.login(email=email)
        assert response.status_code in (302, 303), response.status_code
        return Person(email, browser, actions)

    def rows(self) -> dict[str, int]:
        with self.app.app_context():
            return {
                model.__tablename__: int(
                    db.session.scalar(select(func.count()).select_from(model)) or 0
                )
                for model in (Document, DocumentText, DocumentShare, DocumentBlob)
            }

    def files(self) -> list[Path]:
        """Every file under the upload folder: stored objects and temp files."""
        if not self.upload_dir.exists():
            return []
        return sorted(path for path in self.upload_dir.rglob("*") if path.is_file())

    def assert_empty(self) -> None:
        assert self.rows() == {
            "documents": 0,
            "document_texts": 0,
            "document_shares": 0,
            "document_blobs": 0,
        }
        assert self.files() == []

    def document(self, document_id: str) -> Document | None:
        with self.app.app_context():
            found = db.session.get(Document, document_id)
            if found is not None:
                db.session.expunge(found)
            return found


@pytest.fixture
def vault(app: Flask, client: FlaskClient, auth: AuthActions, tmp_path: Path) -> Vault:
    # `client` makes every test client of this app an HTTPS one (tests/conftest.py).
    return Vault(app, auth, tmp_path / "uploads")


@pytest.fixture
def alice(vault: Vault, client: FlaskClient) -> Person:
    return vault.person(ALICE, client=client)


@pytest.fixture
def bob(vault: Vault) -> Person:
    return vault.person(BOB)


@pytest.fixture
def mallory(vault: Vault) -> Person:
    return vault.person(MALLORY)


def corpus(kind: str, name: str) -> bytes:
    return (CORPUS / kind / name).read_bytes()


__all__ = [
    "ALICE",
    "BOB",
    "MALLORY",
    "Person",
    "Vault",
    "alice",
    "bob",
    "corpus",
    "mallory",
    "settings_overrides",
    "storage",
    "vault",
]
