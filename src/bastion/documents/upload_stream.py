"""Uploads written straight into the staging area while they are parsed.

werkzeug spools every file part of a form into a temporary file of its own; the upload
service then copied that file into its staging area, hashing it on the way: the whole
upload written twice. For the upload route, `UploadRequest` gives werkzeug's parser a
`StagedUpload` instead: the staging file itself, hashed and counted as the parser writes.
The service takes it as it is (documents/service.py `_staged`).

Clean-up is the request's: when the request ends, every `StagedUpload` it opened is
closed, and closing one removes its file unless storage already moved it away. That
includes the parts werkzeug never handed over: a body that stops inside a file part (a
dropped connection, a cut-off form) or passes the size limit mid-file (a chunked upload has
no Content-Length to refuse it by) fails the parse after the part was opened, and such a
part is in no `request.files` for Flask to close. Only a crash mid-upload leaves a `.part`
file, which `bastion storage gc` removes.
"""

from __future__ import annotations

import hashlib
import io
from http import HTTPStatus
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

from flask import Request, current_app
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge
from werkzeug.formparser import FormDataParser
from werkzeug.utils import cached_property
from werkzeug.wrappers import Response

from bastion.core.errors import error_response
from bastion.security.body_limit import ChunkedBodyLimit

UPLOAD_ENDPOINT = "documents.upload"
URLENCODED = "application/x-www-form-urlencoded"
VAULT_KEY = "bastion.documents.vault"  # the app's service.Vault, in app.extensions


class StagedUpload:
    """A file part written into the staging area, counted and hashed as it arrives."""

    def __init__(self, path: Path, stream: BinaryIO) -> None:
        self.path = path
        self._stream = stream
        self._digest = hashlib.sha256()
        self.size = 0

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def write(self, data: bytes) -> int:
        self.size += len(data)
        self._digest.update(data)
        return self._stream.write(data)

    def flush(self) -> None:
        self._stream.flush()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._stream.seek(offset, whence)

    def tell(self) -> int:
        return self._stream.tell()

    def read(self, size: int = -1) -> bytes:
        return self._stream.read(size)

    def readline(self, size: int = -1) -> bytes:
        return self._stream.readline(size)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    @property
    def closed(self) -> bool:
        return self._stream.closed

    def finish(self) -> None:
        """Close the stream (everything written); the file stays for the service."""
        self._stream.close()

    def close(self) -> None:
        self._stream.close()
        self.path.unlink(missing_ok=True)  # gone already if storage moved it

    def __enter__(self) -> StagedUpload:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class UnreadableForm(BadRequest):
    """The body claimed to be a form but did not parse as one."""

    description = "The form did not arrive whole (cut off or malformed). Please send it again."


def handle_unreadable_form(error: UnreadableForm) -> Response:
    """The 400 page with what went wrong (generic error pages name no cause)."""
    return error_response(HTTPStatus.BAD_REQUEST, UnreadableForm.description)


class StrictFormDataParser(FormDataParser):
    """A body that does not parse as the form it says it is gets a 400 of its own, and a
    url-encoded form with more fields than MAX_FORM_PARTS a 413.

    werkzeug's parser reads a cut-off or malformed body as an empty form by default. The
    CSRF check then found no token, and a dropped connection mid-upload was audited as a
    CSRF failure and counted towards the alerts (security/alerts.py) for the uploader.

    werkzeug applies MAX_FORM_PARTS to multipart bodies only. A 1 MB url-encoded body of
    ``a=&a=&…`` is 350,000 fields: measured through gunicorn, 0.6 s of the worker's CPU
    with the GIL held and ~60 MiB of memory, from one anonymous POST to any route. Its
    fields are counted (one C-speed scan) before it is parsed.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{**kwargs, "silent": False})

    def parse(
        self,
        stream: IO[bytes],
        mimetype: str,
        content_length: int | None,
        options: dict[str, str] | None = None,
    ) -> Any:
        if mimetype == URLENCODED and self.max_form_parts is not None:
            body = stream.read()
            if body.count(b"&") >= self.max_form_parts:
                raise RequestEntityTooLarge("The form has too many fields.")
            stream = io.BytesIO(body)
        try:
            return super().parse(stream, mimetype, content_length, options)
        except ValueError as exc:
            raise UnreadableForm from exc


class UploadRequest(Request):
    """The app's request class: file parts of the upload route go to the staging area, a
    form body that does not parse is refused (`StrictFormDataParser`), and so is a chunked
    body over the limit (`ChunkedBodyLimit`)."""

    form_data_parser_class = StrictFormDataParser

    @cached_property
    def stream(self) -> IO[bytes]:
        chunked = self.content_length is None and self.environ.get("wsgi.input_terminated")
        limit = self.max_content_length
        if chunked and limit is not None and not self.shallow:
            return cast(IO[bytes], ChunkedBodyLimit(self.environ["wsgi.input"], limit))
        return super().stream

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._staged: list[StagedUpload] = []

    def _get_file_stream(
        self,
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None = None,
        content_length: int | None = None,
    ) -> IO[bytes]:
        if self.endpoint != UPLOAD_ENDPOINT:
            return super()._get_file_stream(
                total_content_length, content_type, filename, content_length
            )
        vault: Any = current_app.extensions[VAULT_KEY]
        path, stream = vault.staging.create()
        staged = StagedUpload(path, stream)
        self._staged.append(staged)
        return staged  # type: ignore[return-value]

    def close(self) -> None:
        """Close the parsed files (werkzeug), then every part this request staged."""
        try:
            super().close()
        finally:
            for staged in self._staged:
                staged.close()
