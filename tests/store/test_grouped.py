"""Group commit (``store.db.Grouped``): store work arriving while a transaction of the group is
under way shares the next one; alone it runs at once; one piece's failure is its caller's only.
On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa
from sqlmodel.ext.asyncio.session import AsyncSession

from store.db import Database, Grouped
from store.models import Action

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def _add(external_id: str):  # type: ignore[no-untyped-def]
    async def work(session: AsyncSession) -> str:
        session.add(Action(
            source="flokit", external_id=external_id, type="t", title="x", status="ready", raw={},
            updated_at=NOW, first_seen_at=NOW,
        ))
        await session.flush()
        return external_id

    return work


async def _stored(db: Database) -> set[str]:
    async with db.read() as session:
        return {row[0] for row in (await session.exec(sa.select(Action.external_id))).all()}


async def test_alone_a_piece_runs_at_once_in_a_transaction_of_its_own(db: Database) -> None:
    group = Grouped(db.write)
    before = db.transactions.writes
    assert await group.run(_add("a1")) == "a1"
    assert db.transactions.writes == before + 1
    assert await _stored(db) == {"a1"}


async def test_pieces_arriving_while_one_runs_share_the_next_transaction(db: Database) -> None:
    group = Grouped(db.write)
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow(session: AsyncSession) -> str:
        entered.set()
        await release.wait()
        return await _add("first")(session)

    first = asyncio.create_task(group.run(slow))
    await entered.wait()
    before = db.transactions.writes
    rest = [asyncio.create_task(group.run(_add(f"r{i}"))) for i in range(10)]
    await asyncio.sleep(0)  # all ten queued behind the first
    release.set()
    assert await first == "first"
    assert [await t for t in rest] == [f"r{i}" for i in range(10)]
    assert db.transactions.writes == before + 1  # ten pieces, one transaction
    assert await _stored(db) == {"first", *(f"r{i}" for i in range(10))}


async def test_a_failing_piece_fails_only_its_caller(db: Database) -> None:
    group = Grouped(db.write)
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow(session: AsyncSession) -> str:
        entered.set()
        await release.wait()
        return "slow"

    async def broken(session: AsyncSession) -> str:
        await session.exec(sa.text("SELECT * FROM no_such_table"))  # type: ignore[call-overload]
        return "never"

    first = asyncio.create_task(group.run(slow))
    await entered.wait()
    good = asyncio.create_task(group.run(_add("good")))
    bad = asyncio.create_task(group.run(broken))
    after = asyncio.create_task(group.run(_add("after")))
    await asyncio.sleep(0)
    release.set()
    assert await first == "slow"
    assert await good == "good"
    assert await after == "after"
    with pytest.raises(sa.exc.SQLAlchemyError):
        await bad
    assert await _stored(db) == {"good", "after"}  # the shared transaction rolled back, each ran again alone


async def test_a_cancelled_caller_leaves_the_others_pieces_to_them(db: Database) -> None:
    group = Grouped(db.write)
    entered = asyncio.Event()

    async def hangs(session: AsyncSession) -> str:
        entered.set()
        await asyncio.Event().wait()
        return "never"

    blocker = asyncio.create_task(group.run(hangs))
    await entered.wait()
    waiting = [asyncio.create_task(group.run(_add(f"w{i}"))) for i in range(3)]
    await asyncio.sleep(0)
    blocker.cancel()
    with pytest.raises(asyncio.CancelledError):
        await blocker
    assert [await t for t in waiting] == ["w0", "w1", "w2"]
    assert await _stored(db) == {"w0", "w1", "w2"}


async def test_a_caller_cancelled_inside_a_shared_transaction_hands_the_rest_back(db: Database) -> None:
    """The task running the shared transaction is cancelled after others' pieces joined it:
    nothing of that transaction is committed, and the others' pieces still run, once."""
    group = Grouped(db.write)
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow(session: AsyncSession) -> str:
        entered.set()
        await release.wait()
        return "slow"

    first = asyncio.create_task(group.run(slow))
    await entered.wait()
    second_entered = asyncio.Event()

    async def joins_and_hangs(session: AsyncSession) -> str:
        await _add("in-shared")(session)
        second_entered.set()
        await asyncio.Event().wait()
        return "never"

    hanger = asyncio.create_task(group.run(joins_and_hangs))
    others = [asyncio.create_task(group.run(_add(f"o{i}"))) for i in range(2)]
    await asyncio.sleep(0)
    release.set()
    assert await first == "slow"
    await second_entered.wait()  # the hanger's task now runs the shared transaction for all three
    hanger.cancel()
    with pytest.raises(asyncio.CancelledError):
        await hanger
    assert [await t for t in others] == ["o0", "o1"]
    assert await _stored(db) == {"o0", "o1"}
