"""The vault's rules: upload, load-and-authorise, share, revoke, delete, purge, gc.

Services take explicit arguments (who is asking, ids, data, the storage) and never read
the request, so they are tested without HTTP. Whoever may not see a document gets
DocumentNotFound (a 404): ids cannot be probed.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from http import HTTPStatus
from pathlib import Path
from typing import BinaryIO

import structlog
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import Select, exists, func, select

from bastion.audit import Actor, EventTag, record, record_failure
from bastion.core.clock import utcnow
from bastion.core.db import db
from bastion.documents import pdftext, sniffing
from bastion.documents.models import Document, DocumentShare, DocumentText, new_document_id
from bastion.documents.names import (
    MAX_TITLE_CHARS,
    NameRefused,
    clean_text,
    display_name,
    extension_of,
)
from bastion.documents.search import MAX_INDEXED_CHARS, PER_PAGE, Viewer, index_text
from bastion.documents.storage import Staging, Storage, new_key
from bastion.documents.upload_stream import StagedUpload

log = structlog.get_logger("bastion.documents")

COPY_CHUNK = 256 * 1024
MiB = 1024 * 1024
_ID = re.compile(r"[A-Za-z0-9_-]{16,32}")


class Action(StrEnum):
    READ = "read"  # view, download: owner, shared users, documents:all:read holders
    MANAGE = "manage"  # share, revoke, delete: the owner only


class DocumentError(ValueError):
    """A request the user can correct; the message is shown to them as is."""

    status = HTTPStatus.BAD_REQUEST


class UploadRefused(DocumentError):
    """The upload was refused; nothing was stored."""

    def __init__(self, message: str, reason: str, status: HTTPStatus = HTTPStatus.BAD_REQUEST):
        super().__init__(message)
        self.reason = reason
        self.status = status


class DocumentNotFound(LookupError):
    """No such document, or not one this viewer may see (the same answer, on purpose)."""


@dataclass(frozen=True)
class UploadPolicy:
    max_bytes: int
    quota_bytes: int
    pdf_seconds: float = 10.0
    pdf_memory_bytes: int = 512 * MiB


@dataclass(frozen=True)
class Vault:
    """Where uploads go: the backend for stored objects and the local staging area."""

    storage: Storage
    staging: Staging


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("bytes", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{int(value)} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} bytes"  # pragma: no cover - the loop always returns


# ------------------------------------------------------------------------- access
def _is_shared_with(document_id: str, email: str) -> bool:
    return bool(
        db.session.scalar(
            select(
                exists().where(
                    DocumentShare.document_id == document_id, DocumentShare.email == email
                )
            )
        )
    )


def get_for(viewer: Viewer, document_id: str, action: Action = Action.READ) -> Document:
    """Load a live document and check `viewer` may do `action` with it.

    Raises DocumentNotFound when it does not exist, was deleted, or is not the viewer's
    to see (or, for MANAGE, not the viewer's own): the caller answers 404 in every case.
    """
    if not _ID.fullmatch(document_id):
        raise DocumentNotFound(document_id)
    document = db.session.get(Document, document_id)
    if document is None or document.deleted_at is not None:
        raise DocumentNotFound(document_id)
    if document.owner_id == viewer.user_id:
        return document
    if action is Action.READ and (viewer.read_all or _is_shared_with(document.id, viewer.email)):
        return document
    raise DocumentNotFound(document_id)


def owned_query(viewer: Viewer) -> Select[Document]:
    return (
        select(Document)
        .where(Document.owner_id == viewer.user_id, Document.deleted_at.is_(None))
        .order_by(Document.created_at.desc(), Document.id)
    )


def shared_query(viewer: Viewer) -> Select[Document]:
    return (
        select(Document)
        .join(DocumentShare, DocumentShare.document_id == Document.id)
        .where(
            DocumentShare.email == viewer.email,
            Document.owner_id != viewer.user_id,
            Document.deleted_at.is_(None),
        )
        .order_by(DocumentShare.created_at.desc(), Document.id)
    )


@dataclass(frozen=True)
class Listing:
    documents: list[Document]
    page: int
    has_next: bool


def page_of(statement: Select[Document], page: int, per_page: int = PER_PAGE) -> Listing:
    """One page of `statement`: fetch one row more than shown to know if a next page exists."""
    rows = list(db.session.scalars(statement.limit(per_page + 1).offset((page - 1) * per_page)))
    return Listing(rows[:per_page], page, has_next=len(rows) > per_page)


def usage_bytes(user_id: int) -> int:
    total = db.session.scalar(
        select(func.coalesce(func.sum(Document.size), 0)).where(
            Document.owner_id == user_id, Document.deleted_at.is_(None)
        )
    )
    return int(total or 0)


# ------------------------------------------------------------------------- upload
def _refuse_if_too_large(size: int, limit: int) -> None:
    if size > limit:
        raise UploadRefused(
            f"The file is larger than the {limit // MiB} MB limit.",
            "too_large",
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        )


def _copy(source: BinaryIO, target: BinaryIO, limit: int) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    while chunk := source.read(COPY_CHUNK):
        size += len(chunk)
        _refuse_if_too_large(size, limit)
        digest.update(chunk)
        target.write(chunk)
    return size, digest.hexdigest()


@contextmanager
def _staged(source: BinaryIO, staging: Staging, limit: int) -> Iterator[tuple[Path, int, str]]:
    """The upload as a complete staging file: (path, size, SHA-256); removed afterwards.

    A `StagedUpload` (the upload route's own request class) is the staging file already,
    hashed while it was parsed; any other stream is copied into a new one.
    """
    if isinstance(source, StagedUpload):
        with source:
            source.finish()
            _refuse_if_too_large(source.size, limit)
            yield source.path, source.size, source.sha256
        return
    with staging.file() as (path, stream):
        size, sha256 = _copy(source, stream, limit)
        stream.close()
        yield path, size, sha256


def _text_for_search(path: Path, kind: sniffing.Kind, policy: UploadPolicy) -> str:
    if kind.text:
        with path.open("rb") as stream:
            head = stream.read(MAX_INDEXED_CHARS * 4)
        return index_text(head.decode("utf-8", errors="ignore").removeprefix("\ufeff"))
    if kind.name == "pdf":
        return index_text(
            pdftext.extract(
                path,
                max_chars=MAX_INDEXED_CHARS,
                seconds=policy.pdf_seconds,
                memory_bytes=policy.pdf_memory_bytes,
            )
        )
    return ""


# Uploads of one user are stored one at a time (the quota check and the commit under the
# same lock), or two concurrent uploads could each pass the check and together exceed the
# quota. Striped locks serialise one process; the owner's row lock (FOR UPDATE, PostgreSQL)
# serialises processes and nodes. SQLite runs one process (settings.py refuses more).
_QUOTA_LOCKS = tuple(threading.Lock() for _ in range(64))


def _lock_quota(user_id: int) -> threading.Lock:
    return _QUOTA_LOCKS[user_id % len(_QUOTA_LOCKS)]


def _lock_owner_row(user_id: int) -> None:
    users = db.metadata.tables["users"]  # the table, not the model: accounts is a sibling
    db.session.execute(select(users.c.id).where(users.c.id == user_id).with_for_update())


def _check_quota(user_id: int, size: int, quota: int) -> None:
    used = usage_bytes(user_id)
    if used + size > quota:
        raise UploadRefused(
            f"This upload would exceed your storage quota: you use {human_size(used)} of "
            f"{human_size(quota)} and the file needs {human_size(size)}. "
            "Delete documents you no longer need, then try again.",
            "quota",
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        )


def upload(
    viewer: Viewer,
    *,
    source: BinaryIO,
    filename: str,
    title: str | None,
    policy: UploadPolicy,
    vault: Vault,
    actor: Actor,
) -> Document:
    """Check and store one upload; return the new document.

    Raises UploadRefused (after a standalone audit event) when the name, type, content,
    size or quota is refused; a refused or failed upload leaves neither a row nor a file.
    """
    try:
        return _upload(viewer, source, filename, title, policy, vault, actor)
    except UploadRefused as refused:
        record_failure(
            EventTag.DOCUMENT_UPLOAD_REFUSED,
            actor,
            details={"reason": refused.reason, "extension": extension_of(filename)[:10]},
        )
        raise


def _upload(
    viewer: Viewer,
    source: BinaryIO,
    filename: str,
    title: str | None,
    policy: UploadPolicy,
    vault: Vault,
    actor: Actor,
) -> Document:
    try:
        name = display_name(filename)
    except NameRefused as exc:
        raise UploadRefused(str(exc), "name") from exc
    try:
        kind = sniffing.kind_for_extension(extension_of(name))
    except sniffing.ContentRefused as exc:
        raise UploadRefused(str(exc), "extension") from exc
    with _staged(source, vault.staging, policy.max_bytes) as (staged, size, sha256):
        if size == 0:
            raise UploadRefused("The file is empty.", "empty")
        _check_quota(viewer.user_id, size, policy.quota_bytes)  # early: before the costly checks
        try:
            sniffing.inspect(staged, kind)
        except sniffing.ContentRefused as exc:
            raise UploadRefused(str(exc), "content") from exc
        body = _text_for_search(staged, kind, policy)
        document_title = clean_text(title or "", MAX_TITLE_CHARS) or clean_text(
            name, MAX_TITLE_CHARS
        )
        document = Document(
            id=new_document_id(),
            owner_id=viewer.user_id,
            title=document_title,
            filename=name,
            kind=kind.name,
            content_type=kind.content_type,
            size=size,
            sha256=sha256,
            storage_key=new_key(),
            created_at=utcnow(),
        )
        with _lock_quota(viewer.user_id):
            try:
                _lock_owner_row(viewer.user_id)
                _check_quota(viewer.user_id, size, policy.quota_bytes)  # now authoritative
            except UploadRefused:
                db.session.rollback()  # release the row lock before the refusal is audited
                raise
            _store(document, staged, body, vault.storage, actor)
    log.info("document uploaded", document_id=document.id, kind=kind.name, size=size)
    return document


def _store(document: Document, staged: Path, body: str, storage: Storage, actor: Actor) -> None:
    stored = False
    try:
        storage.put(document.storage_key, staged)
        stored = True
        db.session.add(document)
        db.session.flush()
        db.session.add(DocumentText(document_id=document.id, title=document.title, body=body))
        record(
            EventTag.DOCUMENT_UPLOAD,
            actor,
            target=document.id,
            details={"kind": document.kind, "size": document.size, "sha256": document.sha256},
        )
        db.session.commit()
    except BaseException:
        db.session.rollback()
        if stored:
            _discard(storage, document.storage_key)
        raise


def _discard(storage: Storage, key: str) -> None:
    """Remove an object whose row never committed; gc retries if this fails too."""
    try:
        storage.delete(key)
        db.session.commit()
    except Exception:  # the original error matters more; gc removes the orphan later
        db.session.rollback()
        log.warning("could not discard a stored object after a failed upload")


# ------------------------------------------------------------------------ sharing
def normalise_email(raw: str) -> str:
    try:
        return validate_email(raw.strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError:
        raise DocumentError("Enter a valid email address.") from None


def shares_of(document: Document) -> list[DocumentShare]:
    return list(
        db.session.scalars(
            select(DocumentShare)
            .where(DocumentShare.document_id == document.id)
            .order_by(DocumentShare.email)
        )
    )


def share(viewer: Viewer, document_id: str, raw_email: str, actor: Actor) -> str:
    """Share read-only with an address; return the (normalised) address.

    The outcome never depends on whether the address has an account: a share is kept by
    address, and takes effect for whoever signs in with it (accounts confirm addresses).
    """
    document = get_for(viewer, document_id, Action.MANAGE)
    email = normalise_email(raw_email)
    if email == viewer.email:
        raise DocumentError("This is your own document; there is no need to share it with you.")
    if not _is_shared_with(document.id, email):
        db.session.add(DocumentShare(document_id=document.id, email=email, created_at=utcnow()))
        record(EventTag.DOCUMENT_SHARE, actor, target=document.id, details={"email": email})
        db.session.commit()
    return email


def revoke(viewer: Viewer, document_id: str, share_id: int, actor: Actor) -> str:
    """Remove one share of the viewer's document; return the address it was for."""
    document = get_for(viewer, document_id, Action.MANAGE)
    found = db.session.get(DocumentShare, share_id)
    if found is None or found.document_id != document.id:
        raise DocumentNotFound(document_id)
    email = found.email
    db.session.delete(found)
    record(EventTag.DOCUMENT_SHARE_REVOKE, actor, target=document.id, details={"email": email})
    db.session.commit()
    return email


# ----------------------------------------------------------------------- download
def open_for_download(
    viewer: Viewer, document_id: str, storage: Storage, actor: Actor, *, inline: bool = False
) -> tuple[Document, Iterator[bytes]]:
    """Authorise, audit, and return the document with an iterator over its bytes.

    Raises DocumentNotFound (404) when the viewer may not read it.
    """
    document = get_for(viewer, document_id, Action.READ)
    chunks = storage.chunks(document.storage_key)
    record(
        EventTag.DOCUMENT_DOWNLOAD,
        actor,
        target=document.id,
        details={"owner": document.owner_id == viewer.user_id, "inline": inline},
    )
    db.session.commit()
    return document, chunks


# ----------------------------------------------------------------- delete & purge
def delete(viewer: Viewer, document_id: str, storage: Storage, actor: Actor) -> Document:
    """Soft-delete the viewer's document (gone from every view at once), then purge it."""
    document = get_for(viewer, document_id, Action.MANAGE)
    document.deleted_at = utcnow()
    record(EventTag.DOCUMENT_DELETE, actor, target=document.id, details={"title": document.title})
    db.session.commit()
    try:
        purge(document, storage)
    except Exception:  # the soft delete stands; `bastion storage gc` finishes the purge
        db.session.rollback()
        log.warning("purge after delete failed; gc will retry", document_id=document.id)
    return document


def purge(document: Document, storage: Storage) -> None:
    """Remove a soft-deleted document's stored object, then its row (shares, text cascade)."""
    if document.deleted_at is None:
        raise ValueError("only a soft-deleted document can be purged")
    storage.delete(document.storage_key)
    document_id = document.id
    db.session.delete(document)
    record(EventTag.DOCUMENT_PURGE, Actor.system(), target=document_id)
    db.session.commit()


@dataclass(frozen=True)
class GcReport:
    temp_files: int
    purged: int
    orphans: int


def gc(
    vault: Vault, *, grace: timedelta = timedelta(hours=1), now: datetime | None = None
) -> GcReport:
    """Remove stale temp files, purge soft-deleted documents, remove unreferenced objects.

    Only files and objects older than `grace` are touched, so an upload in progress keeps
    its temp file and its just-stored object.
    """
    cutoff = (now or utcnow()) - grace
    temp_files = vault.staging.sweep(cutoff)
    purged = 0
    deleted = db.session.scalars(select(Document).where(Document.deleted_at.is_not(None))).all()
    for document in deleted:
        purge(document, vault.storage)
        purged += 1

    def is_live(key: str) -> bool:
        return bool(db.session.scalar(select(exists().where(Document.storage_key == key))))

    orphans = vault.storage.sweep(is_live, cutoff)
    return GcReport(temp_files, purged, orphans)
