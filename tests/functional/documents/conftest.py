"""The vault fixtures (tests/documents_helpers.py) for every test in this folder."""

from tests.documents_helpers import (  # noqa: F401 - fixtures
    alice,
    bob,
    mallory,
    settings_overrides,
    storage,
    vault,
)
