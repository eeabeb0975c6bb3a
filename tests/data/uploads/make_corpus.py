"""Write the upload corpus: small good files (accept/) and hostile ones (reject/).

Run `python tests/data/uploads/make_corpus.py` to regenerate; the files are committed so a
reader can inspect them. The zip bomb is not here: tests build it at run time.
"""

from __future__ import annotations

import base64
import stat
import struct
import zipfile
import zlib
from io import BytesIO
from pathlib import Path

HERE = Path(__file__).parent

DOCX_TYPES = "application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"
XLSX_TYPES = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"


def pdf(text: str, prefix: bytes = b"") -> bytes:
    """A one-page PDF with `text` in an uncompressed content stream and a correct xref."""
    content = f"BT /F1 18 Tf 72 720 Td ({text}) Tj ET".encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = BytesIO()
    out.write(b"%PDF-1.4\n" + prefix)
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(
        b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    )
    return out.getvalue()


def png(extra_after_iend: bytes = b"", text_chunk: bytes = b"") -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0)  # 2x2, 8-bit RGB
    pixels = zlib.compress(b"\x00" + b"\xd0\x30\x30" * 2 + b"\x00" + b"\x30\x30\xd0" * 2)
    body = chunk(b"IHDR", header)
    if text_chunk:
        body += chunk(b"tEXt", b"Comment\x00" + text_chunk)
    body += chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body + extra_after_iend


GIF = base64.b64decode("R0lGODlhAQABAIAAAP///wAAACH5BAEAAAAALAAAAAABAAEAAAICRAEAOw==")
WEBP = base64.b64decode("UklGRhoAAABXRUJQVlA4TA0AAAAvAAAAEAcQERGIiP4HAA==")
JPEG = bytes.fromhex(
    "ffd8ffe000104a46494600010100000100010000ffdb004300080606070605080707070909080a0c"
    "140d0c0b0b0c1912130f141d1a1f1e1d1a1c1c20242e2720222c231c1c2837292c30313434341f27"
    "393d38323c2e333432ffc0000b080001000101011100ffc4001f0000010501010101010100000000"
    "000000000102030405060708090a0bffc400b5100002010303020403050504040000017d01020300"
    "041105122131410613516107227114328191a1082342b1c11552d1f02433627282090a161718191a"
    "25262728292a3435363738393a434445464748494a535455565758595a636465666768696a737475"
    "767778797a838485868788898a92939495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9ba"
    "c2c3c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae1e2e3e4e5e6e7e8e9eaf1f2f3f4f5f6f7f8f9faffda"
    "0008010100003f00fbd3ffd9"
)


def office(kind: str, members: dict[str, bytes] | None = None, *, main: bool = True) -> bytes:
    main_part, main_type = (
        ("word/document.xml", DOCX_TYPES) if kind == "docx" else ("xl/workbook.xml", XLSX_TYPES)
    )
    types = (
        '<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/'
        'package/2006/content-types"><Default Extension="xml" ContentType="application/xml"/>'
        f'<Override PartName="/{main_part}" ContentType="{main_type}"/></Types>'
    ).encode()
    parts = {"[Content_Types].xml": types, "_rels/.rels": b"<Relationships/>"}
    if main:
        parts[main_part] = b"<document><body>Quarterly lighthouse figures</body></document>"
    parts.update(members or {})
    out = BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in parts.items():
            archive.writestr(name, data)
    return out.getvalue()


def office_with_link() -> bytes:
    out = BytesIO(office("docx"))
    with zipfile.ZipFile(out, "a") as archive:
        info = zipfile.ZipInfo("word/media/link")
        info.create_system = 3
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(info, "/etc/passwd")
    return out.getvalue()


def zip_bomb(kind: str = "docx", expanded: int = 64 * 1024 * 1024) -> bytes:
    """An Office file whose one part inflates ~1000:1 (built at test time, not committed)."""
    out = BytesIO(office(kind))
    block = b"\x00" * (1024 * 1024)
    with (
        zipfile.ZipFile(out, "a", zipfile.ZIP_DEFLATED) as archive,
        archive.open("word/bomb.xml", "w", force_zip64=True) as member,
    ):
        for _ in range(expanded // len(block)):
            member.write(block)
    return out.getvalue()


ACCEPT: dict[str, bytes] = {
    "report.pdf": pdf("Quarterly lighthouse report"),
    "pixel.png": png(),
    "photo.jpg": JPEG,
    "dot.gif": GIF,
    "tiny.webp": WEBP,
    "notes.txt": "Meeting notes: the lighthouse keeper — отчёт, Zürich, 東京.\n".encode(),
    "table.csv": b"name,count\nlighthouse,3\nharbour,5\n",
    "letter.docx": office("docx"),
    "sheet.xlsx": office("xlsx"),
}

REJECT: dict[str, bytes] = {
    "html-disguised.png": b"<!doctype html><html><body><script>alert(1)</script></body></html>",
    "executable.pdf": b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + b"\x00" * 64,
    "elf.jpg": b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 64,
    "png-as.pdf": png(),
    "polyglot-trailer.png": png(extra_after_iend=b"<script>alert(1)</script>"),
    "polyglot-text-chunk.png": png(text_chunk=b"<html><script>alert(1)</script></html>"),
    "polyglot.gif": GIF[:-1] + b"<script>alert(document.domain)</script>;",
    "polyglot.pdf": pdf("x", prefix=b"<html><script>alert(1)</script></html>\n"),
    "image.svg": b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>',
    "page.html": b"<!doctype html><title>x</title><script>alert(1)</script>",
    "page.txt": b"  <!DOCTYPE html><html><script>alert(1)</script></html>",
    "svg.txt": b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>',
    "latin1.txt": "caf\u00e9 au lait".encode("latin-1"),
    "nul.csv": b"name,count\x00\nx,1\n",
    "utf16.txt": "hello".encode("utf-16"),
    "zip-slip.docx": office("docx", {"../../evil.sh": b"#!/bin/sh\nrm -rf /\n"}),
    "absolute.xlsx": office("xlsx", {"/etc/cron.d/evil": b"* * * * * root sh\n"}),
    "symlink.docx": office_with_link(),
    "macro.docx": office("docx", {"word/vbaProject.bin": b"\xd0\xcf\x11\xe0" + b"\x00" * 32}),
    "not-office.docx": office("docx", main=False),
    "docx-as.xlsx": office("docx"),
    "empty.txt": b"",
    "truncated.docx": office("docx")[:200],
}


def main() -> None:
    for folder, files in (("accept", ACCEPT), ("reject", REJECT)):
        target = HERE / folder
        target.mkdir(exist_ok=True)
        for name, data in files.items():
            (target / name).write_bytes(data)


if __name__ == "__main__":
    main()
