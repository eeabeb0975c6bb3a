"""The migrations build exactly the schema the models describe, on this run's backend."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask import Flask

from bastion.core.db import db
from bastion.documents.search import is_search_index_object


def _modelled(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    # The documents full-text index is raw SQL in migration 0005 (FTS5 / tsvector + GIN).
    return not (reflected and compare_to is None and is_search_index_object(name))


def test_models_and_migrations_agree(app: Flask) -> None:
    with app.app_context(), db.engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "include_object": _modelled}
        )
        differences = compare_metadata(context, db.metadata)
    assert differences == [], f"models differ from migrations: {differences}"
