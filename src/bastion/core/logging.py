"""Structured JSON logs with a request id, and nothing secret in them.

structlog's default dict tracebacks serialise local variables (`show_locals=True`), which
would put passwords and tokens into the log; we render tracebacks without locals, drop
secret-named keys, and let the JSON renderer escape CR/LF (log injection, ASVS 16.4.1).
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections.abc import MutableMapping
from contextlib import suppress
from typing import Any, TextIO

import structlog
from structlog.tracebacks import ExceptionDictTransformer

SECRET_MARKERS = ("password", "token", "secret", "cookie", "authorization", "csrf", "api_key")
_SECRET_KEY = re.compile("|".join(SECRET_MARKERS), re.IGNORECASE)


def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Replace the value of any key that names a secret."""
    for key in [key for key in event if _SECRET_KEY.search(key)]:
        event[key] = "[redacted]"
    return event


BATCH_LINES = 64  # lines a batching handler holds at most
BATCH_SECONDS = 1.0  # and for how long


class BatchingStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler that, once batching is on, writes INFO lines a batch at a time.

    Why: every write is a system call, made with the handler's lock held and the GIL let
    go. Under load the thread that let the GIL go waits to get it back while the other
    request threads queue on the lock; py-spy showed `Handler.acquire` as 16 % of a busy
    worker's samples. Held lines go out when `BATCH_LINES` are waiting, together with any
    WARNING or worse (never held), after `BATCH_SECONDS` (a flusher thread), and at exit
    (`logging.shutdown`, which the interpreter runs as a gunicorn worker ends). A worker
    killed outright loses at most that last second of INFO lines; what must not be lost
    (security events) is in the audit table, written in the request's transaction.

    Until `start_batching` every line is written at once, as StreamHandler does (the CLI,
    the tests, `flask run`).
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream)
        self.hold_lines = 1
        self._held: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._held.append(self.format(record) + self.terminator)
            if len(self._held) >= self.hold_lines or record.levelno >= logging.WARNING:
                self._write_held()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]  # created in Handler.__init__
            if self._held:
                self._write_held()
            super().flush()

    def start_batching(self) -> None:
        """Hold lines from now on; a daemon thread writes them out every BATCH_SECONDS."""
        self.hold_lines = BATCH_LINES
        threading.Thread(target=self._flush_regularly, name="log-flusher", daemon=True).start()

    def _write_held(self) -> None:
        text = "".join(self._held)
        self._held.clear()
        self.stream.write(text)
        self.stream.flush()

    def _flush_regularly(self) -> None:
        while True:
            time.sleep(BATCH_SECONDS)
            with suppress(OSError, ValueError):  # stderr closed under us: nothing to do
                self.flush()


def start_batching() -> None:
    """Batch the app's log lines (gunicorn workers: bastion.serving.gunicorn_conf)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, BatchingStreamHandler):
            handler.start_batching()


def configure_logging(level: str = "INFO", stream: TextIO | None = None) -> None:
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact,
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        # Extras first, so `redact` (in `shared`) sees them; native events were redacted by
        # `shared` already, so the formatter doesn't redact a second time.
        foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *shared],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False)),
            structlog.processors.JSONRenderer(),
        ],
    )
    # No caller lookup (file, line, function) for each record: nothing we log shows it, and
    # walking the stack was a quarter of an access line's cost (41 -> 29 us). The logging
    # HOWTO's "Optimization" section documents this switch.
    logging._srcfile = None
    handler = BatchingStreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
