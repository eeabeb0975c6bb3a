"""What an upload really is: the extension allow-list AND the content must agree.

Binary types are identified by their magic bytes (puremagic); the client's Content-Type
is never read. A signature alone "should not be used on its own" (OWASP File Upload CS),
so each type gets a structural check too: images are scanned for markup (an image that
is also an HTML page is a polyglot), PNGs may carry nothing after IEND, Office files go
through archives.check_office, and text must be valid UTF-8 without NUL or control bytes
that does not start like HTML/XML (what a browser's MIME sniffer would render).
SVG and HTML are never accepted: they are documents that run script.
"""

from __future__ import annotations

import codecs
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bastion.documents.archives import ArchiveRefused, check_office

HEAD_BYTES = 8192
CHUNK = 64 * 1024


@dataclass(frozen=True)
class Kind:
    """An allow-listed type: its name, the content type we serve, how it is recognised."""

    name: str
    content_type: str
    extensions: frozenset[str]
    magic: frozenset[str]  # puremagic extensions that identify it ('' for text)
    image: bool = False
    text: bool = False


def _kind(name: str, content_type: str, extensions: str, magic: str, **flags: bool) -> Kind:
    return Kind(
        name, content_type, frozenset(extensions.split()), frozenset(magic.split()), **flags
    )


_OOXML_MAGIC = ".docx .xlsx .pptx .zip .xlsb .docm .xlsm .jar .odt .ods .epub .apk"
KINDS: tuple[Kind, ...] = (
    _kind("pdf", "application/pdf", "pdf", ".pdf"),
    _kind("png", "image/png", "png", ".png", image=True),
    _kind("jpeg", "image/jpeg", "jpg jpeg", ".jpg .jpeg .jfif .jpe", image=True),
    _kind("gif", "image/gif", "gif", ".gif", image=True),
    _kind("webp", "image/webp", "webp", ".webp", image=True),
    _kind("txt", "text/plain; charset=utf-8", "txt", "", text=True),
    _kind("csv", "text/csv; charset=utf-8", "csv", "", text=True),
    _kind(
        "docx",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "docx",
        _OOXML_MAGIC,
    ),
    _kind(
        "xlsx",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "xlsx",
        _OOXML_MAGIC,
    ),
)
BY_EXTENSION: dict[str, Kind] = {ext: kind for kind in KINDS for ext in kind.extensions}
BY_NAME: dict[str, Kind] = {kind.name: kind for kind in KINDS}
ALLOWED_TEXT = "PDF, PNG, JPEG, GIF, WebP, plain text (.txt), CSV, Word (.docx) or Excel (.xlsx)"

# What a browser's MIME sniffer takes for HTML/XML at the start of a text (WHATWG MIME
# Sniffing 7.1, plus SVG/XML and PHP), after optional whitespace and a BOM.
_HTML_START = re.compile(
    rb"^[\t\n\x0c\r ]*(<!doctype\s+html|<html|<head|<script|<iframe|<h1|<div|<font|<table"
    rb"|<a[\s>]|<style|<title|<b[\s>]|<body|<br|<p[\s>]|<!--|<\?xml|<svg|<\?php)",
    re.IGNORECASE,
)
# Markup that has no business inside an image: its presence makes a polyglot.
_MARKUP = re.compile(rb"<(script|html|svg|iframe|body|!doctype|\?php|object|embed)", re.I)
_MARKUP_OVERLAP = 16
# C0 controls other than tab, LF, FF, CR and ESC, and DEL: binary, not text.
_TEXT_CONTROLS = bytes([*range(0x00, 0x09), 0x0B, *range(0x0E, 0x1B), *range(0x1C, 0x20), 0x7F])


class ContentRefused(ValueError):
    """The content is not what the name says, or is not safe to keep; the message says why."""


def kind_for_extension(extension: str) -> Kind:
    """Return the allow-listed kind for `extension` or raise ContentRefused."""
    kind = BY_EXTENSION.get(extension)
    if kind is None:
        raise ContentRefused(f"This type of file is not accepted. Upload {ALLOWED_TEXT}.")
    return kind


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK):
            yield chunk


def _magic_names(head: bytes) -> set[str]:
    # Imported on first upload: puremagic's signature tables add ~1.4 MiB to every worker.
    import puremagic

    try:
        matches = puremagic.magic_string(head)
    except (puremagic.PureError, ValueError):
        return set()
    return {match.extension.lower() for match in matches}


def _contains_markup(path: Path, limit: int | None = None) -> bool:
    tail = b""
    seen = 0
    for chunk in _chunks(path):
        window = tail + chunk
        if _MARKUP.search(window):
            return True
        tail = window[-_MARKUP_OVERLAP:]
        seen += len(chunk)
        if limit is not None and seen >= limit:
            return False
    return False


def _png_is_clean(path: Path) -> bool:
    """Walk the PNG chunks: IHDR first, IEND last, nothing appended after IEND."""
    with path.open("rb") as stream:
        stream.seek(8)
        first = True
        while True:
            header = stream.read(8)
            if len(header) < 8:
                return False
            length, chunk_type = struct.unpack(">I4s", header)
            if first and chunk_type != b"IHDR":
                return False
            first = False
            stream.seek(length + 4, 1)  # data and CRC
            if chunk_type == b"IEND":
                return stream.read(1) == b""


def _check_binary(path: Path, kind: Kind, head: bytes) -> None:
    if not _magic_names(head) & kind.magic:
        raise ContentRefused(
            f"The file's content is not a {kind.name.upper()} file, whatever its name says."
        )
    if kind.image:
        if _contains_markup(path):
            raise ContentRefused("The image contains web page code and was refused.")
        if kind.name == "png" and not _png_is_clean(path):
            raise ContentRefused("The PNG file is malformed or carries extra data.")
    elif kind.name == "pdf":
        # Browsers and readers sniff the first KiB; a PDF that starts like a page is refused.
        if _contains_markup(path, limit=1024):
            raise ContentRefused("The PDF contains web page code and was refused.")
    else:
        try:
            check_office(path, kind.name)
        except ArchiveRefused as exc:
            raise ContentRefused(str(exc)) from exc


def _check_text(path: Path, kind: Kind, head: bytes) -> None:
    body = head.removeprefix(codecs.BOM_UTF8)
    if _HTML_START.match(body):
        raise ContentRefused("The text file looks like a web page and was refused.")
    decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
    try:
        for chunk in _chunks(path):
            if len(chunk.translate(None, _TEXT_CONTROLS)) != len(chunk):  # C speed
                raise ContentRefused(
                    f"A .{kind.name} file must be plain text: this one has binary content."
                )
            decoder.decode(chunk)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        raise ContentRefused(f"A .{kind.name} file must be UTF-8 text.") from exc


def inspect(path: Path, kind: Kind) -> None:
    """Raise ContentRefused unless the file at `path` really is an acceptable `kind`."""
    with path.open("rb") as stream:
        head = stream.read(HEAD_BYTES)
    if not head:
        raise ContentRefused("The file is empty.")
    if kind.text:
        _check_text(path, kind, head)
    else:
        _check_binary(path, kind, head)
