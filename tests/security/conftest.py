"""Fixtures for the security suite: more apps on the same backend (key rotation, outages)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
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
