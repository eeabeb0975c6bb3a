"""PDF text extraction runs in a child process with a time and a memory limit."""

from __future__ import annotations

from pathlib import Path

from bastion.documents import pdftext
from tests.data.uploads.make_corpus import pdf

MiB = 1024 * 1024


def test_text_is_extracted(tmp_path: Path) -> None:
    path = tmp_path / "a.pdf"
    path.write_bytes(pdf("Lighthouse keeper"))
    assert "Lighthouse keeper" in pdftext.extract(
        path, max_chars=1000, seconds=30, memory_bytes=512 * MiB
    )


def test_output_is_capped(tmp_path: Path) -> None:
    path = tmp_path / "a.pdf"
    path.write_bytes(pdf("Lighthouse keeper"))
    assert len(pdftext.extract(path, max_chars=5, seconds=30, memory_bytes=512 * MiB)) <= 5


def test_the_time_limit_kills_the_child(tmp_path: Path) -> None:
    path = tmp_path / "a.pdf"
    path.write_bytes(pdf("Lighthouse keeper"))
    assert pdftext.extract(path, max_chars=1000, seconds=0.01, memory_bytes=512 * MiB) == ""


def test_the_memory_limit_applies_to_the_child(tmp_path: Path) -> None:
    path = tmp_path / "a.pdf"
    path.write_bytes(pdf("Lighthouse keeper"))
    # 16 MiB of address space is not enough to import pypdf: the child fails, we get "".
    assert pdftext.extract(path, max_chars=1000, seconds=30, memory_bytes=16 * MiB) == ""


def test_a_broken_pdf_gives_no_text(tmp_path: Path) -> None:
    path = tmp_path / "a.pdf"
    path.write_bytes(b"%PDF-1.4\n" + b"garbage" * 100)
    assert pdftext.extract(path, max_chars=1000, seconds=30, memory_bytes=512 * MiB) == ""
