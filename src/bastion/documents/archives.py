"""Office (OOXML) files are zip containers: check them before they are stored.

Every member name is checked (no absolute paths, drive letters, `..`, backslashes, NUL or
symbolic links; no duplicates), and every member is decompressed by streaming while the
real output is counted against a byte cap and a ratio cap: the sizes a zip *declares* are
the attacker's word, so they are never trusted (OWASP File Upload CS; zip bombs, zip slip).
Macro-enabled content is refused: a .docx/.xlsx never carries a VBA project.
"""

from __future__ import annotations

import stat
import zipfile
import zlib
from pathlib import Path, PurePosixPath

CHUNK = 64 * 1024
MAX_MEMBERS = 2_000
MAX_TOTAL_BYTES = 256 * 1024 * 1024
MAX_RATIO = 200  # decompressed bytes per byte of archive, over the whole file
RATIO_SLACK = 1024 * 1024  # tiny archives of small XML parts may compress very well
MAX_CONTENT_TYPES = 1024 * 1024

MAIN_PARTS = {
    "docx": (
        "word/document.xml",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml",
    ),
    "xlsx": (
        "xl/workbook.xml",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml",
    ),
}


class ArchiveRefused(ValueError):
    """The archive is malformed, hostile or not the Office type it claims to be."""


def _check_name(name: str) -> None:
    if not name or "\x00" in name or "\\" in name or name.startswith("/"):
        raise ArchiveRefused("The document contains a file with an unsafe name.")
    parts = PurePosixPath(name).parts
    if ".." in parts or ":" in parts[0]:
        raise ArchiveRefused("The document contains a file with an unsafe name.")


def _is_link(info: zipfile.ZipInfo) -> bool:
    mode = info.external_attr >> 16
    return info.create_system == 3 and stat.S_ISLNK(mode)  # 3: Unix


def _check_members(infos: list[zipfile.ZipInfo]) -> None:
    if len(infos) > MAX_MEMBERS:
        raise ArchiveRefused("The document contains too many parts.")
    seen: set[str] = set()
    for info in infos:
        _check_name(info.filename)
        if info.filename in seen:
            raise ArchiveRefused("The document contains duplicate parts.")
        seen.add(info.filename)
        if _is_link(info):
            raise ArchiveRefused("The document contains a link, which is not allowed.")
        if info.flag_bits & 0x1:
            raise ArchiveRefused("Encrypted documents are not accepted.")
        if info.filename.lower().endswith("vbaproject.bin"):
            raise ArchiveRefused("Documents with macros are not accepted.")


def _inflate_all(archive: zipfile.ZipFile, infos: list[zipfile.ZipInfo], budget: int) -> None:
    """Decompress every member, counting real bytes; raise as soon as `budget` is spent."""
    total = 0
    for info in infos:
        if info.is_dir():
            continue
        with archive.open(info) as member:
            while chunk := member.read(CHUNK):
                total += len(chunk)
                if total > budget:
                    raise ArchiveRefused(
                        "The document expands to too much data (a possible zip bomb)."
                    )


def check_office(path: Path, kind: str) -> None:
    """Raise ArchiveRefused unless `path` is a safe Office file of `kind` (docx | xlsx)."""
    main_part, main_type = MAIN_PARTS[kind]
    size = path.stat().st_size
    budget = min(MAX_TOTAL_BYTES, size * MAX_RATIO + RATIO_SLACK)
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            _check_members(infos)
            names = {info.filename for info in infos}
            if "[Content_Types].xml" not in names or main_part not in names:
                raise ArchiveRefused(f"The file is not a valid .{kind} document.")
            _inflate_all(archive, infos, budget)
            with archive.open("[Content_Types].xml") as types:
                declared = types.read(MAX_CONTENT_TYPES)
    except ArchiveRefused:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
        raise ArchiveRefused(f"The file is not a valid .{kind} document.") from exc
    except (OSError, ValueError) as exc:
        raise ArchiveRefused(f"The file is not a valid .{kind} document.") from exc
    # A substring test, not an XML parser: nothing in the archive is ever parsed as XML.
    if main_type.encode() not in declared:
        raise ArchiveRefused(f"The file is not a valid .{kind} document.")
