"""SQLite runs on the event loop's thread (store/inline_sqlite.py): a transaction's statements
run back to back, and a writer that finds another process holding SQLite's write lock waits
for it without blocking the loop, for up to the busy timeout."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import OperationalError

import store.db
from store.db import Database
from store.models import Action

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'inline.db'}")
    await database.migrate()
    yield database
    await database.dispose()


def _other_process(path: Path) -> sqlite3.Connection:
    """A connection of its own, as another process's would be (SQLite locks per connection)."""
    return sqlite3.connect(path, isolation_level=None, check_same_thread=False)


async def _count_ticks(stop: asyncio.Event, ticks: list[int]) -> None:
    while not stop.is_set():
        ticks[0] += 1
        await asyncio.sleep(0.005)


async def _add_action(db: Database, external_id: str) -> None:
    async with db.write() as session:
        session.add(Action(
            source="flokit", external_id=external_id, type="t", title="x", status="ready", raw={},
            updated_at=NOW, first_seen_at=NOW,
        ))


async def _count_actions(db: Database) -> int:
    async with db.read() as session:
        return (await session.exec(sa.select(sa.func.count()).select_from(Action))).one()[0]


async def test_a_transactions_statements_run_back_to_back_without_yielding_to_the_loop(db: Database) -> None:
    # With a driver thread, every statement is a round trip through the loop; under load the
    # transaction (and SQLite's only write slot) waits for the loop between statements.
    others_ran = 0

    async def other() -> None:
        nonlocal others_ran
        while True:
            others_ran += 1
            await asyncio.sleep(0)

    task = asyncio.ensure_future(other())
    await asyncio.sleep(0)
    try:
        async with db.write() as session:
            before = others_ran
            for _ in range(20):
                await session.exec(sa.select(sa.func.count()).select_from(Action))
            during = others_ran - before
    finally:
        task.cancel()
    assert during == 0


async def test_a_writer_waits_for_another_processs_write_lock_without_blocking_the_loop(
    db: Database, tmp_path: Path
) -> None:
    holder = _other_process(tmp_path / "inline.db")
    holder.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.4, lambda: holder.execute("COMMIT"))
    stop, ticks = asyncio.Event(), [0]
    ticker = asyncio.ensure_future(_count_ticks(stop, ticks))
    release.start()
    try:
        started = asyncio.get_running_loop().time()
        await _add_action(db, "A-1")
        waited = asyncio.get_running_loop().time() - started
    finally:
        stop.set()
        await ticker
        release.join()
        holder.close()
    assert waited >= 0.3  # it did wait for the other writer...
    assert ticks[0] >= 20  # ...while the loop went on serving others (every 5 ms)
    assert await _count_actions(db) == 1


async def test_a_writer_gives_up_after_the_busy_timeout_and_writes_nothing(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store.db, "SQLITE_BUSY_TIMEOUT_MS", 200)
    holder = _other_process(tmp_path / "inline.db")
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(OperationalError, match="locked"):
            await _add_action(db, "A-1")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert await _count_actions(db) == 0
    await _add_action(db, "A-2")  # the connection went back to the pool healthy
    assert await _count_actions(db) == 1


async def test_readers_are_not_held_up_by_another_processs_writer(db: Database, tmp_path: Path) -> None:
    await _add_action(db, "A-1")
    holder = _other_process(tmp_path / "inline.db")
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("DELETE FROM actions")
    try:
        assert await asyncio.wait_for(_count_actions(db), timeout=1) == 1  # WAL: the last commit
    finally:
        holder.execute("ROLLBACK")
        holder.close()


async def test_a_migration_waits_for_another_processs_write_lock(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    first = Database(f"sqlite:///{path}")
    await first.ping()  # the file exists, in WAL
    tries = [0]
    open_migrator = first._open_migrator

    async def counted(stack: contextlib.AsyncExitStack) -> Any:
        tries[0] += 1
        return await open_migrator(stack)

    first._open_migrator = counted  # type: ignore[method-assign]
    events: list[str] = []
    holder = _other_process(path)
    holder.execute("BEGIN IMMEDIATE")
    migrating = asyncio.ensure_future(first.migrate())
    migrating.add_done_callback(lambda _: events.append("migrated"))
    try:
        # Refused while the other process holds the lock, it tries again (with the loop free)...
        async with asyncio.timeout(10):
            while tries[0] < 3:
                assert not migrating.done(), "the migration ended while another process held the lock"
                await asyncio.sleep(0.005)
        assert not migrating.done() and await first.schema_revision() is None
        events.append("released")
        holder.execute("COMMIT")
        # ...and migrates once it is released.
        await asyncio.wait_for(migrating, timeout=10)
        await first.check_schema()
    finally:
        if holder.in_transaction:
            holder.execute("ROLLBACK")
        holder.close()
        if not migrating.done():
            migrating.cancel()
        await first.dispose()
    assert events == ["released", "migrated"]


async def test_streamed_results_come_row_by_row(db: Database) -> None:
    for i in range(5):
        await _add_action(db, f"A-{i}")
    async with db.read() as session:
        result = await session.stream_scalars(sa.select(Action.external_id).order_by(Action.id))
        seen = [row async for row in result]
    assert seen == [f"A-{i}" for i in range(5)]

