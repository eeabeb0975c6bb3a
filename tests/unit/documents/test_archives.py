"""Office zip checks: names, links, macros, and a streamed byte and ratio cap."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.documents import archives
from bastion.documents.archives import ArchiveRefused, check_office
from tests.data.uploads.make_corpus import office, zip_bomb


def write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "file.zip"
    path.write_bytes(data)
    return path


def test_a_real_docx_and_xlsx_pass(tmp_path: Path) -> None:
    check_office(write(tmp_path, office("docx")), "docx")
    check_office(write(tmp_path, office("xlsx")), "xlsx")


@pytest.mark.parametrize(
    "member", ["../x", "a/../../x", "/abs", "C:/x", "a\\b", "word/../../../etc/passwd"]
)
def test_unsafe_member_names_are_refused(tmp_path: Path, member: str) -> None:
    with pytest.raises(ArchiveRefused, match="unsafe name"):
        check_office(write(tmp_path, office("docx", {member: b"x"})), "docx")


def test_the_declared_size_is_not_trusted(tmp_path: Path) -> None:
    """The cap counts inflated bytes: a bomb is stopped whatever its header claims."""
    with pytest.raises(ArchiveRefused, match="zip bomb"):
        check_office(write(tmp_path, zip_bomb("docx", expanded=16 * 1024 * 1024)), "docx")


def test_the_absolute_cap_holds_for_big_archives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(archives, "MAX_TOTAL_BYTES", 4 * 1024 * 1024)
    monkeypatch.setattr(archives, "MAX_RATIO", 10**6)
    with pytest.raises(ArchiveRefused, match="zip bomb"):
        check_office(write(tmp_path, zip_bomb("docx", expanded=8 * 1024 * 1024)), "docx")


def test_too_many_members_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archives, "MAX_MEMBERS", 3)
    with pytest.raises(ArchiveRefused, match="too many"):
        check_office(write(tmp_path, office("docx", {"a": b"", "b": b""})), "docx")


def test_a_crc_mismatch_is_refused(tmp_path: Path) -> None:
    data = bytearray(office("docx"))
    marker = data.find(b"word/document.xml") + len(b"word/document.xml")
    data[marker + 5] ^= 0xFF  # corrupt the compressed bytes of the main part
    with pytest.raises(ArchiveRefused):
        check_office(write(tmp_path, bytes(data)), "docx")
