"""Vault pages. Views stay thin: parse, call the service, render or stream."""

from __future__ import annotations

from collections.abc import Iterator
from http import HTTPStatus
from typing import Any, cast

from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.blueprints import BlueprintSetupState
from flask_login import current_user
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wrappers import Response

from bastion.core.errors import error_response
from bastion.documents import search as search_service
from bastion.documents import service
from bastion.documents.forms import ConfirmForm, ShareForm, UploadForm
from bastion.documents.models import Document
from bastion.documents.names import content_disposition
from bastion.documents.search import Viewer
from bastion.documents.sniffing import ALLOWED_TEXT, BY_NAME
from bastion.documents.storage import Staging, build_storage, upload_root
from bastion.documents.upload_stream import (
    VAULT_KEY,
    UnreadableForm,
    UploadRequest,
    handle_unreadable_form,
)
from bastion.security.body_limit import max_body
from bastion.security.identity import current_actor
from bastion.security.permissions import Permission
from bastion.security.policy import login_required
from bastion.security.rate_limit import LimitName, check
from bastion.settings import Settings, SettingsError

bp = Blueprint("documents", __name__, template_folder="templates", url_prefix="/documents")

MULTIPART_ALLOWANCE = 64 * 1024  # boundaries, part headers, the title and the CSRF token
MAX_PAGE = 10_000
# Whatever a stored file is, a browser that opens it gets no script, no plugins, no
# same-origin powers and no subresources (standards-notes F7). This policy replaces the
# page policy (security/headers.py keeps a view's own), so it repeats the directives that
# default-src does not cover: no other site may frame the file (ASVS 3.4.6).
FILE_CSP = (
    "sandbox; default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@bp.record
def _install(state: BlueprintSetupState) -> None:
    settings: Settings = state.app.extensions["bastion.settings"]
    root = upload_root(settings.instance_path, settings.upload_dir)
    try:
        storage = build_storage(settings.storage, root)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    if settings.max_upload_mb < 1 or settings.upload_quota_mb < 0:
        raise SettingsError("BASTION_MAX_UPLOAD_MB must be >= 1 and the quota >= 0")
    state.app.extensions[VAULT_KEY] = service.Vault(storage, Staging(root))
    # File parts of the upload route are written straight into the staging area, and a
    # form body that does not parse gets its own 400 (upload_stream.py).
    cast(Flask, state.app).request_class = UploadRequest
    state.app.register_error_handler(UnreadableForm, handle_unreadable_form)
    state.app.jinja_env.filters["filesize"] = service.human_size
    state.app.jinja_env.filters["highlight"] = search_service.highlight


def _settings() -> Settings:
    found: Settings = current_app.extensions["bastion.settings"]
    return found


def _vault() -> service.Vault:
    found: service.Vault = current_app.extensions[VAULT_KEY]
    return found


def _policy() -> service.UploadPolicy:
    settings = _settings()
    return service.UploadPolicy(
        max_bytes=settings.max_upload_mb * service.MiB,
        quota_bytes=settings.upload_quota_mb * service.MiB,
        pdf_seconds=settings.pdf_text_seconds,
        pdf_memory_bytes=settings.pdf_text_memory_mb * service.MiB,
    )


def upload_request_limit() -> int:
    """The upload route's body limit: the file limit plus a small multipart allowance."""
    return _settings().max_upload_mb * service.MiB + MULTIPART_ALLOWANCE


def _viewer() -> Viewer:
    return Viewer(
        user_id=int(current_user.id),
        email=current_user.email,
        read_all=current_user.can(Permission.DOCUMENTS_READ_ALL),
    )


def _limit(name: LimitName) -> None:
    check(name, str(current_user.id))


def _page() -> int:
    raw = request.args.get("page", "1")
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw[:6]) <= MAX_PAGE:
        abort(HTTPStatus.BAD_REQUEST)
    return int(raw)


def _load(document_id: str, action: service.Action = service.Action.READ) -> Document:
    try:
        return service.get_for(_viewer(), document_id, action)
    except service.DocumentNotFound:
        abort(HTTPStatus.NOT_FOUND)


@bp.errorhandler(RequestEntityTooLarge)
def _too_large(error: RequestEntityTooLarge) -> Response:
    response = error_response(
        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        f"The file is too large: uploads may be at most {_settings().max_upload_mb} MB.",
    )
    response.headers["Connection"] = "close"
    return response


# ----------------------------------------------------------------------- listings
@bp.route("/")
@login_required
def index() -> str:
    viewer = _viewer()
    listing = service.page_of(service.owned_query(viewer), _page())
    return render_template(
        "documents/list.html",
        listing=listing,
        heading="My documents",
        endpoint="documents.index",
        used=service.usage_bytes(viewer.user_id),
        quota=_settings().upload_quota_mb * service.MiB,
    )


@bp.route("/shared")
@login_required
def shared() -> str:
    listing = service.page_of(service.shared_query(_viewer()), _page())
    return render_template(
        "documents/list.html",
        listing=listing,
        heading="Shared with me",
        endpoint="documents.shared",
        used=None,
        quota=None,
    )


# ------------------------------------------------------------------------- upload
@bp.route("/upload", methods=["GET", "POST"])
@login_required
@max_body(upload_request_limit)
def upload() -> Response | tuple[str, int]:
    form = UploadForm()
    status = HTTPStatus.OK
    if request.method == "POST":
        _limit(LimitName.USER_UPLOAD)
    if form.validate_on_submit():
        upload_file = form.file.data
        try:
            document = service.upload(
                _viewer(),
                source=upload_file.stream,
                filename=upload_file.filename or "",
                title=form.title.data,
                policy=_policy(),
                vault=_vault(),
                actor=current_actor(),
            )
        except service.UploadRefused as refused:
            form.file.errors.append(str(refused))
            status = refused.status
        else:
            flash("Uploaded.", "success")
            return redirect(url_for("documents.detail", document_id=document.id), code=303)
    elif form.errors:
        status = HTTPStatus.BAD_REQUEST
    page = render_template(
        "documents/upload.html",
        form=form,
        max_mb=_settings().max_upload_mb,
        allowed=ALLOWED_TEXT,
    )
    return page, status


# ------------------------------------------------------------------ view, stream
@bp.route("/<document_id>")
@login_required
def detail(document_id: str) -> str:
    document = _load(document_id)
    owner = document.owner_id == int(current_user.id)
    kind = BY_NAME.get(document.kind)
    return render_template(
        "documents/detail.html",
        document=document,
        owner=owner,
        previewable=kind is not None and kind.image,
        shares=service.shares_of(document) if owner else [],
        delete_form=ConfirmForm(),
    )


def _stream(document: Document, chunks: Iterator[bytes], disposition: str) -> Response:
    kind = BY_NAME.get(document.kind)
    # The type we sniffed and allow-listed at upload, never what the client claimed.
    content_type = kind.content_type if kind is not None else "application/octet-stream"
    # No stream_with_context: the chunks need no request context (storage.py).
    response = Response(chunks, content_type=content_type, direct_passthrough=True)
    response.content_length = document.size
    response.headers["Content-Disposition"] = content_disposition(disposition, document.filename)
    response.headers["Content-Security-Policy"] = FILE_CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def _open(document_id: str, *, inline: bool = False) -> tuple[Document, Iterator[bytes]]:
    try:
        return service.open_for_download(
            _viewer(), document_id, _vault().storage, current_actor(), inline=inline
        )
    except service.DocumentNotFound:
        abort(HTTPStatus.NOT_FOUND)


@bp.route("/<document_id>/download")
@login_required
def download(document_id: str) -> Response:
    _limit(LimitName.USER_DOWNLOAD)
    document, chunks = _open(document_id)
    return _stream(document, chunks, "attachment")


@bp.route("/<document_id>/preview")
@login_required
def preview(document_id: str) -> Response:
    """An image shown inline on the detail page; anything else is download-only."""
    _limit(LimitName.USER_DOWNLOAD)
    kind = BY_NAME.get(_load(document_id).kind)
    if kind is None or not kind.image:
        abort(HTTPStatus.NOT_FOUND)
    document, chunks = _open(document_id, inline=True)
    return _stream(document, chunks, "inline")


# ------------------------------------------------------------------------ sharing
@bp.route("/<document_id>/share", methods=["GET", "POST"])
@login_required
def share(document_id: str) -> Response | tuple[str, int]:
    document = _load(document_id, service.Action.MANAGE)
    form = ShareForm()
    status = HTTPStatus.OK
    if request.method == "POST":
        _limit(LimitName.USER_SHARE)
    if form.validate_on_submit():
        try:
            email = service.share(_viewer(), document.id, form.email.data, current_actor())
        except service.DocumentError as exc:
            form.email.errors.append(str(exc))
            status = HTTPStatus.BAD_REQUEST
        except service.DocumentNotFound:
            abort(HTTPStatus.NOT_FOUND)
        else:
            # The same words whether or not the address has an account (no enumeration).
            flash(
                f"Shared with {email}. Whoever signs in with that address can open it, read-only.",
                "success",
            )
            return redirect(url_for("documents.share", document_id=document.id), code=303)
    elif form.errors:
        status = HTTPStatus.BAD_REQUEST
    page = render_template(
        "documents/share.html",
        document=document,
        form=form,
        shares=service.shares_of(document),
        revoke_form=ConfirmForm(),
    )
    return page, status


@bp.route("/<document_id>/share/<int:share_id>/revoke", methods=["POST"])
@login_required
def revoke(document_id: str, share_id: int) -> Response:
    if not ConfirmForm().validate_on_submit():
        abort(HTTPStatus.BAD_REQUEST)
    try:
        email = service.revoke(_viewer(), document_id, share_id, current_actor())
    except service.DocumentNotFound:
        abort(HTTPStatus.NOT_FOUND)
    flash(f"{email} can no longer open this document.", "success")
    return redirect(url_for("documents.share", document_id=document_id), code=303)


@bp.route("/<document_id>/delete", methods=["POST"])
@login_required
def delete(document_id: str) -> Response:
    if not ConfirmForm().validate_on_submit():
        abort(HTTPStatus.BAD_REQUEST)
    try:
        document = service.delete(_viewer(), document_id, _vault().storage, current_actor())
    except service.DocumentNotFound:
        abort(HTTPStatus.NOT_FOUND)
    flash(f"Deleted “{document.title}”.", "success")
    return redirect(url_for("documents.index"), code=303)


# ------------------------------------------------------------------------- search
@bp.route("/search")
@login_required
def search() -> tuple[str, int]:
    raw = request.args.get("q", "")
    page = _page()
    results: search_service.Results | None = None
    error: str | None = None
    status = HTTPStatus.OK
    if raw.strip():
        _limit(LimitName.USER_SEARCH)
        try:
            results = search_service.search(_viewer(), raw, page)
        except search_service.QueryRefused as exc:
            error, status = str(exc), HTTPStatus.BAD_REQUEST
    context: dict[str, Any] = {
        "query": raw[: search_service.MAX_QUERY_CHARS * 2],
        "results": results,
        "error": error,
        "max_query": search_service.MAX_QUERY_CHARS,
    }
    return render_template("documents/search.html", **context), status
