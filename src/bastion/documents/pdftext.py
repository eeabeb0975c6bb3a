"""PDF text for search, extracted in a child process with a time limit and a memory limit.

A hostile PDF can make a parser loop or allocate without bound, and a thread cannot be
time-limited inside a gthread worker, so pypdf runs in a separate interpreter: the child
sets RLIMIT_AS (address space) and RLIMIT_CPU on itself before it imports pypdf, and the
parent kills it when the wall-clock limit passes. Any failure means "no text": the
upload itself stays valid, it is just not searchable by its content.

The child is ``python -I <this file> <path> <max_chars> <memory_bytes>``.
"""

from __future__ import annotations

# subprocess runs our own module with a fixed argument list, never a shell.
import subprocess  # nosec B404
import sys
from pathlib import Path

import structlog

log = structlog.get_logger("bastion.documents.pdftext")

MAX_PAGES = 2_000
CHILD = Path(__file__).resolve()


def extract(path: Path, *, max_chars: int, seconds: float, memory_bytes: int) -> str:
    """Return up to `max_chars` of the PDF's text, or '' when extraction fails or overruns."""
    # Run this file as a script, not `-m bastion...`: importing the package would import the
    # whole app (seconds); `-I` keeps the environment and the current folder out of it.
    command = [
        sys.executable,
        "-I",
        str(CHILD),
        str(path),
        str(max_chars),
        str(memory_bytes),
    ]
    try:
        done = subprocess.run(  # noqa: S603  # nosec B603
            command,
            capture_output=True,
            timeout=seconds,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        log.warning("pdf text extraction timed out", seconds=seconds)
        return ""
    except OSError as exc:
        log.warning("pdf text extraction could not start", error=type(exc).__name__)
        return ""
    if done.returncode != 0:
        log.warning("pdf text extraction failed", returncode=done.returncode)
        return ""
    return done.stdout.decode("utf-8", errors="replace")[:max_chars]


def _limit_self(memory_bytes: int, cpu_seconds: int) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds))


def _child(argv: list[str]) -> int:
    path, max_chars, memory_bytes = Path(argv[0]), int(argv[1]), int(argv[2])
    _limit_self(memory_bytes, cpu_seconds=60)
    import logging

    logging.disable(logging.CRITICAL)  # pypdf warns on every odd PDF; stderr is not read
    from pypdf import PdfReader

    reader = PdfReader(path)
    pieces: list[str] = []
    total = 0
    for number, page in enumerate(reader.pages):
        if number >= MAX_PAGES or total >= max_chars:
            break
        text = page.extract_text() or ""
        pieces.append(text)
        total += len(text) + 1
    sys.stdout.buffer.write("\n".join(pieces)[:max_chars].encode("utf-8", "replace"))
    return 0


if __name__ == "__main__":
    raise SystemExit(_child(sys.argv[1:]))
