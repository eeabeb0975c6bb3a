"""Sniffing over the upload corpus: every accept/ file passes, every reject/ file fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.documents.names import extension_of
from bastion.documents.sniffing import ContentRefused, inspect, kind_for_extension
from tests.data.uploads.make_corpus import png

CORPUS = Path(__file__).parents[2] / "data" / "uploads"


def check(path: Path) -> None:
    inspect(path, kind_for_extension(extension_of(path.name)))


@pytest.mark.parametrize("path", sorted((CORPUS / "accept").iterdir()), ids=lambda p: p.name)
def test_accepted(path: Path) -> None:
    check(path)


@pytest.mark.parametrize("path", sorted((CORPUS / "reject").iterdir()), ids=lambda p: p.name)
def test_refused(path: Path) -> None:
    with pytest.raises(ContentRefused):
        check(path)


@pytest.mark.parametrize("extension", ["svg", "html", "htm", "xhtml", "js", "exe", "php", ""])
def test_dangerous_extensions_are_not_on_the_list(extension: str) -> None:
    with pytest.raises(ContentRefused, match="not accepted"):
        kind_for_extension(extension)


def test_markup_split_across_read_chunks_is_found(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    # Put "<script" across the 64 KiB chunk boundary of the scanner.
    payload = png(text_chunk=b"A" * (64 * 1024 - 52) + b"<script>")
    path.write_bytes(payload)
    assert payload.index(b"<script") < 64 * 1024 < payload.index(b"<script") + 7
    with pytest.raises(ContentRefused, match="web page code"):
        check(path)


def test_text_with_a_bom_and_crlf_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(b"\xef\xbb\xbfa,b\r\n1,2\r\n")
    check(path)


def test_invalid_utf8_split_at_the_end_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.txt"
    path.write_bytes(b"ok " + "é".encode()[:1])
    with pytest.raises(ContentRefused, match="UTF-8"):
        check(path)
