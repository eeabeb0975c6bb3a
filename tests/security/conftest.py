"""Fixtures for the security suite: more apps on the same backend (key rotation, outages),
and the app's own log lines, captured."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog
from flask import Flask

from bastion import create_app
from bastion.app import close_app
from tests.conftest import Backend, HttpsClient


@pytest.fixture
def make_app(app: Flask, backend: Backend) -> Iterator[Callable[..., Flask]]:
    """Build another app sharing this test's database and Redis prefix.

    Depends on `app`, whose teardown empties the tables and the Redis prefix afterwards.
    """
    built: list[Flask] = []

    def factory(**overrides: Any) -> Flask:
        other = create_app(backend.settings(**overrides))
        other.test_client_class = HttpsClient
        built.append(other)
        return other

    yield factory
    for other in built:
        close_app(other)


class Captured:
    """Every formatted log line, as the app's own JSON formatter writes it."""

    def __init__(self) -> None:
        self.stream = io.StringIO()

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def records(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.text.splitlines() if line.startswith("{")]


@pytest.fixture
def logs(app: Flask) -> Iterator[Captured]:
    root = logging.getLogger()
    formatters = [
        h.formatter
        for h in root.handlers
        if isinstance(h.formatter, structlog.stdlib.ProcessorFormatter)
    ]
    assert formatters, "the app did not install its JSON log formatter"
    captured = Captured()
    handler = logging.StreamHandler(captured.stream)
    handler.setFormatter(formatters[0])
    handler.setLevel(logging.DEBUG)
    root.addHandler(handler)
    previous = root.level
    root.setLevel(logging.DEBUG)  # even debug lines must not carry secrets
    yield captured
    root.setLevel(previous)
    root.removeHandler(handler)
