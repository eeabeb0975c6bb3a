"""Display names for uploaded files, and the Content-Disposition header that carries them.

The stored object never uses the client's name (it gets a random key); the name is kept
for display and for the download header only. Werkzeug's ``secure_filename`` would turn
'отчёт.pdf' into 'pdf', so the name is cleaned here instead, keeping Unicode:
NFC-normalised, control/format characters and path components removed, no leading dots
or hyphens, length capped (OWASP File Upload CS).
"""

from __future__ import annotations

import unicodedata
from urllib.parse import quote

MAX_NAME_CHARS = 150
RAW_NAME_CHARS = 10 * MAX_NAME_CHARS  # of a client's name, at most this much is cleaned
RAW_TAIL_CHARS = 16  # an over-long name keeps its last characters: "." + the extension
MAX_TITLE_CHARS = 200
# Private-use characters the search snippets use as highlight markers (documents/search.py);
# they are removed from every indexed text and every query so no input can forge a <mark>.
SENTINELS = ("\ue000", "\ue001")
# RFC 5987 attr-char: what may stand unescaped in filename*=UTF-8''...
_ATTR_CHARS = "!#$&+-.^_`|~"


class NameRefused(ValueError):
    """The file name is empty or contains characters no honest client sends (NUL)."""


def _visible(text: str) -> str:
    # Categories C*: controls, format characters (bidi overrides such as U+202E that make
    # 'evil\u202efdp.exe' display as 'evilexe.pdf'), surrogates, private use, unassigned.
    return "".join(ch for ch in text if not unicodedata.category(ch).startswith("C"))


def clean_text(raw: str, limit: int) -> str:
    """NFC-normalise, drop invisible characters, collapse whitespace and cap the length."""
    text = _visible(unicodedata.normalize("NFC", raw).replace("\t", " "))
    return " ".join(text.split())[:limit].strip()


def display_name(raw: str) -> str:
    """Return the display name for a client-supplied file name, or raise NameRefused."""
    if "\x00" in raw:
        # Null-byte truncation ('shell.php\x00.jpg') is an attack, not a typo.
        raise NameRefused("The file name contains characters that are not allowed.")
    name = unicodedata.normalize("NFC", raw)
    # Keep the last path component only: '../../etc/passwd' and 'C:\\x\\a.pdf' lose their
    # directories; no separator survives.
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    if len(name) > RAW_NAME_CHARS:
        # Bound the cleaning work, but keep the tail: the extension decides the type.
        name = name[: RAW_NAME_CHARS - RAW_TAIL_CHARS] + name[-RAW_TAIL_CHARS:]
    name = clean_text(name, RAW_NAME_CHARS)
    name = name.lstrip(".- ").rstrip(". ")
    if len(name) > MAX_NAME_CHARS:
        stem, dot, extension = name.rpartition(".")
        if dot and 0 < len(extension) <= 10:
            name = stem[: MAX_NAME_CHARS - len(extension) - 1].rstrip(". ") + "." + extension
        else:
            name = name[:MAX_NAME_CHARS]
    if not name:
        raise NameRefused("The file needs a name.")
    return name


def extension_of(name: str) -> str:
    """The lower-cased last extension ('report.tar.PDF' -> 'pdf'), '' when there is none."""
    stem, dot, extension = name.rpartition(".")
    return extension.lower() if dot and stem else ""


def _ascii_fallback(name: str) -> str:
    decomposed = unicodedata.normalize("NFKD", name)
    kept = "".join(
        ch if 32 <= ord(ch) < 127 and ch not in '"\\%;' else "_"
        for ch in decomposed
        if not unicodedata.combining(ch)
    )
    stem, dot, extension = kept.rpartition(".")
    if dot and not stem.strip("_ "):
        return "download." + extension
    return kept if kept.strip("_ .") else "download"


def content_disposition(disposition: str, name: str) -> str:
    """Return a Content-Disposition value with an ASCII `filename` and RFC 6266 `filename*`."""
    fallback = _ascii_fallback(name)
    encoded = quote(name, safe=_ATTR_CHARS)
    return f"{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"
