"""The store's tests share one migrated database per test, on SQLite and PostgreSQL (a module
may define its own ``db``: an unmigrated one, or a SQLite file of its own)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from store.db import Database


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    await database.migrate()
    yield database
    await database.dispose()
