"""Display names keep Unicode but lose everything that could mislead or break a header."""

from __future__ import annotations

import pytest

from bastion.documents.names import (
    MAX_NAME_CHARS,
    NameRefused,
    content_disposition,
    display_name,
    extension_of,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("отчёт.pdf", "отчёт.pdf"),
        ("東京 レポート.xlsx", "東京 レポート.xlsx"),
        ("cafe\u0301.txt", "caf\u00e9.txt"),  # NFC
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\eve\\report.pdf", "report.pdf"),
        ("...hidden.txt", "hidden.txt"),
        ("-rf.txt", "rf.txt"),
        ("evil\u202efdp.exe", "evilfdp.exe"),  # bidi override removed
        ("tab\there\r\n.txt", "tab here.txt"),
        ("trailing. . .", "trailing"),
    ],
)
def test_display_names(raw: str, expected: str) -> None:
    assert display_name(raw) == expected


@pytest.mark.parametrize("raw", ["", "...", "/", "\u200b\u202e", "a/b/"])
def test_empty_names_are_refused(raw: str) -> None:
    with pytest.raises(NameRefused):
        display_name(raw)


def test_nul_bytes_are_refused() -> None:
    with pytest.raises(NameRefused, match="not allowed"):
        display_name("shell.php\x00.jpg")


@pytest.mark.parametrize("length", [500, 5_000])
def test_long_names_keep_their_extension(length: int) -> None:
    name = display_name("я" * length + ".pdf")
    assert len(name) == MAX_NAME_CHARS
    assert name.endswith("я.pdf")


def test_extension_of() -> None:
    assert extension_of("a.tar.PDF") == "pdf"
    assert extension_of("pdf") == ""
    assert extension_of(".pdf") == ""


def test_content_disposition_has_an_ascii_fallback_and_rfc6266_filename() -> None:
    header = content_disposition("attachment", "отчёт 2026.pdf")
    assert header == (
        'attachment; filename="_____ 2026.pdf"; '
        "filename*=UTF-8''%D0%BE%D1%82%D1%87%D1%91%D1%82%202026.pdf"
    )


@pytest.mark.parametrize("name", ['a";\r\nSet-Cookie: x=1; b=".txt', "x\\y%00;.pdf"])
def test_content_disposition_cannot_be_broken_out_of(name: str) -> None:
    header = content_disposition("attachment", name)
    assert "\r" not in header
    assert "\n" not in header
    assert header.count('"') == 2
    assert header.isascii()


def test_content_disposition_for_a_name_without_ascii() -> None:
    assert 'filename="download.pdf"' in content_disposition("inline", "東京.pdf")
