"""The batching log handler (core/logging.py): lines held under load are never lost.

Held INFO lines go out at the batch size, with any WARNING, after BATCH_SECONDS and at
exit (logging.shutdown); before batching starts, every line is written at once.
"""

from __future__ import annotations

import io
import logging
import time
import weakref
from collections.abc import Iterator

import pytest

from bastion.core import logging as app_logging
from bastion.core.logging import BATCH_LINES, BatchingStreamHandler


class CountingStream(io.StringIO):
    """A stream that counts its writes (each one a system call on a real stderr)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


Logged = tuple[logging.Logger, BatchingStreamHandler, CountingStream]


@pytest.fixture
def logger() -> Iterator[Logged]:
    stream = CountingStream()
    handler = BatchingStreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    log = logging.getLogger("bastion.test-batching")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    yield log, handler, stream
    log.removeHandler(handler)
    log.propagate = True


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_before_batching_every_line_is_written_at_once(logger: Logged) -> None:
    log, _, stream = logger
    log.info("one")
    log.info("two")
    assert lines(stream) == ["INFO one", "INFO two"]
    assert stream.writes == 2


def test_held_lines_go_out_in_one_write_at_the_batch_size(logger: Logged) -> None:
    log, handler, stream = logger
    handler.start_batching()
    for n in range(BATCH_LINES - 1):
        log.info("line %d", n)
    assert stream.getvalue() == ""  # held
    log.info("line %d", BATCH_LINES - 1)
    assert lines(stream) == [f"INFO line {n}" for n in range(BATCH_LINES)]
    assert stream.writes == 1


def test_a_warning_is_never_held_and_takes_the_held_lines_along(logger: Logged) -> None:
    log, handler, stream = logger
    handler.start_batching()
    log.info("request")
    log.warning("hash slots exhausted")
    assert lines(stream) == ["INFO request", "WARNING hash slots exhausted"]


def test_logging_shutdown_at_exit_writes_what_is_held(logger: Logged) -> None:
    log, handler, stream = logger
    handler.start_batching()
    log.info("last words")
    logging.shutdown([weakref.ref(handler)])  # what the interpreter runs at exit
    assert lines(stream) == ["INFO last words"]


def test_held_lines_go_out_after_batch_seconds(
    logger: Logged,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(app_logging, "BATCH_SECONDS", 0.05)
    log, handler, stream = logger
    handler.start_batching()
    log.info("quiet moment")
    deadline = time.monotonic() + 10
    while not stream.getvalue() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert lines(stream) == ["INFO quiet moment"]
