"""The ack path on the driver's connection (``store.hot``): what it reads is what a session
reads, what it writes is what ``queries.begin_decision`` writes, a lost race says what won, and
a driver's error is SQLAlchemy's. On SQLite and PostgreSQL, and through sessions where the
driver's connection is not used (plain aiosqlite)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import object_session
from sqlmodel import col, select

from core import watch
from core.lifecycle import TRANSITIONS
from sources.base import Op, Option, Status
from store import hot, queries
from store.db import Database
from store.models import Action, AuditEvent, Card, Decision, Digest, Notice, Outbox, Watch
from tests.fakes.cards import change_action

NOW = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=timezone.utc)
APPROVE = TRANSITIONS[Op.APPROVE]


async def _action(db: Database, external_id: str = "a1", **fields: Any) -> Action:
    async with db.write() as session:
        action = Action(
            source="flokit", external_id=external_id, type="budget_shift", title="Shift budget",
            status=Status.READY.value, raw={"nested": {"k": [1, 2.5, "x"]}, "ünï": "çødé"}, updated_at=NOW,
            first_seen_at=NOW, data_signals=[{"name": "ctr", "value": 0.031}], guardrail_checks=[{"passed": False}],
            risk="high", requested_by="agent@example.com", upstream_created_at=NOW - timedelta(days=1), **fields,
        )
        session.add(action)
        await session.flush()
        assert action.id is not None
        session.add(Card(action_id=action.id, channel="C1", state="posted", ts=f"{action.id}.0"))
    async with db.read() as session:
        read = await queries.get_action(session, action_id=action.id)
    assert read is not None
    return read


def _begin_args(action: Action, *, key: str, seen: Action | None, **more: Any) -> dict[str, Any]:
    return {
        "action_id": action.id, "op": Op.APPROVE, "allowed_from": APPROVE.allowed_from,
        "in_flight": APPROVE.in_flight, "actor": "U1", "note": "ok", "idempotency_key": key,
        "notify_channel": "C1", "now": NOW + timedelta(seconds=1), "seen": seen, **more,
    }


@pytest.fixture(params=["driver", "sessions"])
def path(request: pytest.FixtureRequest, db: Database) -> hot.HotPath:
    """The database's own ack path, and the session-based one (what plain aiosqlite uses)."""
    if request.param == "sessions":
        return hot.SessionHotPath(read=db.read, write=db.write)
    return db.hot


async def test_the_database_uses_the_drivers_connection(db: Database) -> None:
    assert isinstance(db.hot, hot.SQLiteHotPath if db.is_sqlite else hot.PostgresHotPath)


async def test_an_action_reads_as_a_session_reads_it(db: Database, path: hot.HotPath) -> None:
    stored = await _action(db)
    read = await path.action(action_id=stored.id or 0)
    assert read is not None
    assert read.model_dump() == stored.model_dump()  # JSON, datetimes (aware, UTC), every column
    assert read.upstream_created_at == NOW - timedelta(days=1) and read.updated_at.tzinfo is not None  # type: ignore[union-attr]
    assert object_session(read) is None
    assert await path.action(action_id=(stored.id or 0) + 1000) is None


async def test_a_clicks_check_finds_the_message_showing_the_action(db: Database, path: hot.HotPath) -> None:
    action = await _action(db)
    other = await _action(db, external_id="a2")
    aid = action.id or 0
    async with db.write() as session:
        session.add(Notice(action_id=aid, key="n1", kind="status", payload={}, ts="77.0", created_at=NOW, next_attempt_at=NOW))
        session.add(Notice(action_id=aid, key="n2", kind="escalation", payload={}, ts="88.0", channel="C9", created_at=NOW, next_attempt_at=NOW))
        digest = Digest(channel="C5", ts="99.0", state="posted", created_at=NOW)
        session.add(digest)
        await session.flush()
        card = (await session.exec(select(Card).where(Card.action_id == aid))).one()
        card.digest_id = digest.id
        session.add(card)

    async def shown(channel: str | None, ts: str | None, action_id: int = aid) -> bool:
        found, ok = await path.click_check(action_id=action_id, channel=channel, ts=ts)
        assert found is not None and found.id == action_id
        return ok

    assert await shown("C1", f"{aid}.0")  # its card
    assert await shown("C1", "77.0")  # a notice in the card's thread
    assert await shown("C9", "88.0")  # an escalation posted elsewhere
    assert await shown("C5", "99.0")  # a digest listing it
    assert await shown(None, None)  # no message given (a command, the App Home)
    assert not await shown("C1", f"{other.id}.0")  # another action's card
    assert not await shown("C2", f"{aid}.0")  # right ts, wrong channel
    assert not await shown("C1", "88.0")  # the escalation is not in the card's channel
    assert await path.click_check(action_id=aid + 1000, channel="C1", ts=f"{aid}.0") == (None, True)


async def test_a_decision_is_written_as_begin_decision_writes_it(db: Database, path: hot.HotPath) -> None:
    seen = await _action(db)
    option = Option(kind=Op.APPROVE, label="Ship it", key="opt-1")
    begun = await path.begin_decision(**_begin_args(
        seen, key="k1", seen=seen, option=option, actor_identifier="ann@example.com",
        claim=queries.Claim(NOW + timedelta(seconds=30)),
    ))
    assert isinstance(begun, queries.Begun)
    async with db.read() as session:
        action = await queries.get_action(session, action_id=seen.id or 0)
        decisions = list((await session.exec(select(Decision).where(Decision.action_id == seen.id))).all())
        outbox = list((await session.exec(select(Outbox).where(Outbox.action_id == seen.id))).all())
        card = (await session.exec(select(Card).where(Card.action_id == seen.id))).one()
    assert action is not None
    # What was returned is what was stored, field by field.
    assert begun.action.model_dump() == action.model_dump()
    assert [d.model_dump() for d in decisions] == [begun.decision.model_dump()]
    assert [o.model_dump() for o in outbox] == [begun.outbox.model_dump()]
    assert action.status == APPROVE.in_flight.value and action.version == 2 and action.updated_at == NOW + timedelta(seconds=1)
    d = decisions[0]
    assert (d.event, d.op, d.actor, d.note, d.from_status, d.to_status, d.option) == (
        "requested", "approve", "U1", "ok", "ready", APPROVE.in_flight.value, "Ship it"
    )
    o = outbox[0]
    assert (o.decision_id, o.idempotency_key, o.state, o.attempts, o.option_key, o.option_label, o.actor_identifier) == (
        d.id, "k1", "pending", 0, "opt-1", "Ship it", "ann@example.com"
    )
    assert o.lease_until == NOW + timedelta(seconds=30) and o.reference is None and o.request_body is None
    assert card.dirty and card.wanted_version == 2 and card.lease_until == NOW + timedelta(seconds=30)
    # The objects are as a session leaves them: detached, nothing pending.
    assert object_session(begun.outbox) is None and begun.outbox.id == o.id


@pytest.mark.parametrize("claimed", [False, True])
async def test_on_postgresql_a_decision_from_the_version_seen_is_one_statement_writing_what_four_write(
    db: Database, claimed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if db.is_sqlite:
        pytest.skip("PostgreSQL's WITH runs UPDATEs and INSERTs; SQLite's does not")
    one, four = await _action(db, external_id="a1"), await _action(db, external_id="a2")
    claim = queries.Claim(NOW + timedelta(seconds=30)) if claimed else None
    option = Option(kind=Op.APPROVE, label="Ship it", key="opt-1")
    statements: list[str] = []
    for name in ("raw", "raws", "one", "rows", "scalar", "rowcount", "many"):
        method = getattr(hot._PgConn, name)

        def counting(self: Any, q: Any, params: Any, _method: Any = method) -> Any:
            statements.append(q.sql)
            return _method(self, q, params)

        monkeypatch.setattr(hot._PgConn, name, counting)
    begun = await db.hot.begin_decision(**_begin_args(one, key="k1", seen=one, option=option, claim=claim))
    assert isinstance(begun, queries.Begun) and len(statements) == 1 and statements[0].startswith("WITH")
    async with db.write() as session:
        other = await queries.begin_decision(session, **_begin_args(four, key="k2", seen=four, option=option, claim=claim))
    assert other is not None

    async def stored(action_id: int) -> list[dict[str, Any]]:
        async with db.read() as session:
            rows: list[Any] = [await queries.get_action(session, action_id=action_id)]
            rows += (await session.exec(select(Decision).where(Decision.action_id == action_id))).all()
            rows += (await session.exec(select(Outbox).where(Outbox.action_id == action_id))).all()
            rows += (await session.exec(select(Card).where(Card.action_id == action_id))).all()
        skip = {"id", "action_id", "decision_id", "external_id", "idempotency_key", "ts"}
        return [{k: v for k, v in r.model_dump().items() if k not in skip} for r in rows]

    assert await stored(one.id or 0) == await stored(four.id or 0)
    # What it returned is what it stored.
    async with db.read() as session:
        outbox = (await session.exec(select(Outbox).where(Outbox.action_id == one.id))).one()
        decision = (await session.exec(select(Decision).where(Decision.action_id == one.id))).one()
    assert begun.outbox.model_dump() == outbox.model_dump() and begun.decision.model_dump() == decision.model_dump()
    # From a version no longer stored (``one`` as first read): the statement writes nothing.
    statements.clear()
    stale = one.model_copy(update={"version": 1, "status": Status.READY.value})
    assert isinstance(await db.hot.begin_decision(**_begin_args(stale, key="k3", seen=stale), strict=True), hot.Moved)
    assert len(statements) == 1
    assert len(await stored(one.id or 0)) == 4  # still one decision and one outbox entry


async def test_a_second_decision_from_the_same_read_loses_and_says_what_won(db: Database, path: hot.HotPath) -> None:
    seen = await _action(db)
    stale = seen.model_copy()
    first = await path.begin_decision(**_begin_args(seen, key="k1", seen=seen))
    assert isinstance(first, queries.Begun)
    lost = await path.begin_decision(**_begin_args(stale, key="k2", seen=stale))
    assert isinstance(lost, hot.Lost)
    assert lost.action is not None and lost.action.status == APPROVE.in_flight.value
    assert lost.latest is not None and lost.latest.id == first.decision.id
    async with db.read() as session:
        outbox = list((await session.exec(select(Outbox).where(Outbox.action_id == seen.id))).all())
        decisions = list((await session.exec(select(Decision).where(Decision.action_id == seen.id))).all())
    assert [o.idempotency_key for o in outbox] == ["k1"] and len(decisions) == 1


async def test_an_action_changed_since_the_read_is_decided_as_it_is_now(db: Database, path: hot.HotPath) -> None:
    # The upstream changed the title meanwhile (a new version, still ready): the decision is
    # still possible, taken from the row as it is now (a locked re-read).
    seen = await _action(db)
    await change_action(db, seen.id or 0, title="renamed")
    begun = await path.begin_decision(**_begin_args(seen, key="k1", seen=seen))
    assert isinstance(begun, queries.Begun)
    assert begun.action.title == "renamed" and begun.action.version == 3
    async with db.read() as session:
        action = await queries.get_action(session, action_id=seen.id or 0)
        card = (await session.exec(select(Card).where(Card.action_id == seen.id))).one()
    assert action is not None and action.version == 3 and action.status == APPROVE.in_flight.value
    assert card.wanted_version == 3


async def test_racing_decisions_one_wins(db: Database) -> None:
    seen = await _action(db)
    results = await asyncio.gather(*(
        db.hot.begin_decision(**_begin_args(seen, key=f"k{i}", seen=seen.model_copy())) for i in range(8)
    ))
    assert sum(isinstance(r, queries.Begun) for r in results) == 1
    async with db.read() as session:
        outbox = list((await session.exec(select(Outbox).where(Outbox.action_id == seen.id))).all())
    assert len(outbox) == 1


async def test_the_ack_path_counts_its_transactions(db: Database) -> None:
    seen = await _action(db)
    before = (db.transactions.reads, db.transactions.writes)
    await db.hot.click_check(action_id=seen.id or 0, channel="C1", ts="1.0")
    await db.hot.action(action_id=seen.id or 0)
    await db.hot.begin_decision(**_begin_args(seen, key="k1", seen=seen))
    assert (db.transactions.reads, db.transactions.writes) == (before[0] + 2, before[1] + 1)


async def test_sqlite_waits_for_another_process_holding_the_write_lock(tmp_path: Any) -> None:
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    await db.migrate()
    try:
        seen = await _action(db)
        other = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process's writer
        loop = asyncio.get_running_loop()
        loop.call_later(0.3, other.execute, "COMMIT")
        begun = await db.hot.begin_decision(**_begin_args(seen, key="k1", seen=seen))
        assert isinstance(begun, queries.Begun)  # waited, without blocking the loop, then wrote
        other.close()
    finally:
        await db.dispose()


async def test_a_store_that_does_not_answer_is_sqlalchemys_error(database_url: str, tmp_path: Any) -> None:
    if database_url.startswith("sqlite"):
        db = Database(f"sqlite:///{tmp_path / 'missing' / 'x.db'}")  # a directory that does not exist
    else:
        db = Database("postgresql://postgres@127.0.0.1:1/none?connect_timeout=2")  # nothing listens
    try:
        with pytest.raises(DBAPIError):
            await db.hot.action(action_id=1)
    finally:
        await db.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_postgres_connections_the_server_dropped_are_replaced(db: Database, database_url: str) -> None:
    import psycopg

    seen = await _action(db)
    assert await db.hot.action(action_id=seen.id or 0) is not None  # the path's pool is open
    name = database_url.rsplit("/", 1)[1]
    # Blocking calls on purpose: the loop does not run until the decision's write, so the
    # pool cannot have noticed the drop, and hands the dead connection out.
    with psycopg.connect(database_url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as admin:
        others = "FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"
        admin.execute(f"SELECT pg_terminate_backend(pid) {others}", (name,))
        for _ in range(500):
            if admin.execute(f"SELECT count(*) {others}", (name,)).fetchone() == (0,):
                break
            time.sleep(0.01)
        else:
            raise AssertionError("the server did not drop the connections")
    writes = db.transactions.writes
    begun = await db.hot.begin_decision(**_begin_args(seen, key="k1", seen=seen))
    assert isinstance(begun, queries.Begun)
    assert db.transactions.writes == writes + 2  # the first try met the dropped connection
    assert await db.hot.action(action_id=seen.id or 0) is not None


async def test_a_clicks_read_is_kept_once_for_its_decision(db: Database) -> None:
    stored = await _action(db)
    aid = stored.id or 0
    await db.hot.click_check(action_id=aid, channel="C1", ts=f"{aid}.0")
    reads = db.transactions.reads
    kept = db.hot.kept(action_id=aid)
    assert kept is not None and kept.model_dump() == stored.model_dump()
    assert db.hot.kept(action_id=aid) is None  # kept once
    assert db.transactions.reads == reads  # no read: the click's row
    await db.hot.click_check(action_id=aid, channel=None, ts=None)
    assert await db.hot.action(action_id=aid) is not None  # a read of its own forgets it too
    assert db.hot.kept(action_id=aid) is None


async def test_a_strict_decision_from_a_version_no_longer_stored_writes_nothing(db: Database, path: hot.HotPath) -> None:
    seen = await _action(db)
    await change_action(db, seen.id or 0, risk="low")
    moved = await path.begin_decision(**_begin_args(seen, key="k1", seen=seen), strict=True)
    assert isinstance(moved, hot.Moved)
    async with db.read() as session:
        outbox = list((await session.exec(select(Outbox).where(Outbox.action_id == seen.id))).all())
        action = await queries.get_action(session, action_id=seen.id or 0)
    assert outbox == [] and action is not None and action.status == Status.READY.value and action.version == 2
    current = await path.action(action_id=seen.id or 0)
    assert isinstance(await path.begin_decision(**_begin_args(seen, key="k1", seen=current), strict=True), queries.Begun)


async def test_a_cards_reads_return_what_a_sessions_reads_return(db: Database) -> None:
    """Every read a card is rendered from, on the driver's connection, against the same read
    through a session: the same rows, as the same model objects (floats, JSON, times, IN lists)."""
    stored = await _action(db, watch_started_at=NOW)
    other = await _action(db, external_id="a2")
    bare = await _action(db, external_id="a3")  # no history at all
    aid = stored.id or 0
    at = [NOW + timedelta(seconds=i) for i in range(8)]
    async with db.write() as session:
        for i, (event, to_status) in enumerate(
            [
                (AuditEvent.DISCOVERED, Status.READY), (AuditEvent.ENDORSED, Status.READY),
                (AuditEvent.REQUESTED, Status.READY), (AuditEvent.ENDORSED, Status.READY),
                (AuditEvent.ENDORSED, Status.READY), (AuditEvent.CONFIRMED, Status.APPROVED),
            ]
        ):
            session.add(Decision(action_id=aid, event=event.value, actor=f"U{i}", to_status=to_status.value, at=at[i]))
        session.add(Decision(action_id=other.id or 0, event=AuditEvent.CONFIRMED.value, actor="U9", at=at[7]))
        await session.flush()
        session.add(Outbox(action_id=aid, decision_id=1, op="approve", actor="U1", idempotency_key="k1", created_at=at[1], next_attempt_at=at[1]))
        session.add(Outbox(action_id=aid, decision_id=2, op="approve", actor="U2", idempotency_key="k2", created_at=at[2], next_attempt_at=at[2]))
        for position, baseline in ((1, None), (0, 0.125)):
            session.add(
                Watch(
                    action_id=aid, position=position, condition="ctr < 1%", rule={"metric": "ctr", "op": "<"},
                    metric="ctr", baseline=baseline, last_value=3.5, started_at=NOW, next_check_at=at[3],
                )
            )
        for i, (kind, state, ts) in enumerate(
            [
                ("trip", "posted", "9.1"), ("status", "posted", "9.2"), ("escalation", "posted", "9.3"),
                ("trip", "pending", None), ("status", "posting", None), ("status", "failed", None),
            ]
        ):
            session.add(
                Notice(action_id=aid, key=f"n{i}", kind=kind, payload={"i": i, "é": [1.5]}, state=state, ts=ts, created_at=at[i], next_attempt_at=at[i])
            )
    async with db.read() as session:
        notice_ids = [n.id or 0 for n in (await session.exec(select(Notice).order_by(Notice.id))).all()]

    async def everything(reads: hot.Reads) -> list[Any]:
        got: list[Any] = [await reads.action(action_id=aid), await reads.action(action_id=aid + 1000)]
        got += [await reads.card_for_action(action_id=aid), await reads.card_for_action(action_id=aid + 1000)]
        for a in (aid, other.id or 0, aid + 1000):
            got += [
                await reads.latest_decision(action_id=a), await reads.latest_outbox(action_id=a),
                await reads.latest_confirmed(action_id=a), await reads.endorsements(action_id=a),
                await reads.watches_for(action_id=a),
            ]
        for a in (aid, other.id or 0, bare.id or 0, aid + 1000):
            latest = await reads.latest(action_id=a)
            # One statement, the same rows as the three reads it stands for.
            assert dumped([latest.decision, latest.outbox, latest.confirmed]) == dumped([
                await reads.latest_decision(action_id=a), await reads.latest_outbox(action_id=a),
                await reads.latest_confirmed(action_id=a),
            ])
            got += [latest.decision, latest.outbox, latest.confirmed]
            shown = await reads.card_shown(action_id=a)
            if a == aid + 1000:
                assert shown is None  # no such action (nor card)
            else:
                assert shown is not None
                card, action, also = shown
                assert dumped([card, action, also.decision, also.outbox, also.confirmed]) == dumped([
                    await reads.card_for_action(action_id=a), await reads.action(action_id=a),
                    latest.decision, latest.outbox, latest.confirmed,
                ])
                got += [card, action]
        for kinds in (["trip", "escalation"], frozenset({"trip"}), ["status"], []):
            got.append(await reads.posted_notices(action_id=aid, kinds=kinds))
        for ids in (notice_ids, notice_ids[3:4], [notice_ids[4], 10_000], []):
            got.append(await reads.notices_by_id(notice_ids=ids))
        return got

    def dumped(value: Any) -> Any:
        if isinstance(value, list | tuple):
            return [dumped(v) for v in value]
        return value.model_dump() if value is not None else None

    async def kind(reads: hot.Reads) -> type:
        return type(reads)

    assert await db.hot.read(kind) is hot._DriverReads  # on the driver's connection, not a session
    on_driver = await db.hot.read(everything)
    async with db.read() as session:
        through_session = await everything(hot.SessionReads(session))
    assert dumped(on_driver) == dumped(through_session)
    assert [len(v) for v in on_driver[-8:]] == [2, 1, 1, 0, 2, 1, 1, 0]  # the IN lists were applied
    assert [w.baseline for w in on_driver[8]] == [0.125, None]  # ordered by position, floats as floats
    assert [d.actor for d in on_driver[7]] == ["U3", "U4"]  # endorsements since the last return to ready
    assert all(object_session(v) is None for v in on_driver[0:1] + on_driver[8])
    reads = db.transactions.reads
    await db.hot.read(everything)
    assert db.transactions.reads == reads + 1  # one read transaction for all of it


# ---- a session's exec on the driver's connection (HotPath.writing) ----------------------------


async def _landed(db: Database, session: Any, outbox_id: int) -> Action | None:
    """What the settle does in its transaction: land the decision, start the action's watch."""
    claim = queries.Claim(NOW + timedelta(seconds=60))
    action = await queries.outbox_delivered(
        session, outbox_id=outbox_id, upstream=None, outcome=Status.APPROVED, now=NOW, claim=claim, note="landed"
    )
    if action is not None:
        await watch.set_up_now(session, action, now=NOW, metrics=True)
    return action


async def _rows(db: Database, action_id: int) -> dict[str, Any]:
    """Everything stored about an action, without ids and keys that differ between two."""

    def plain(obj: Any) -> dict[str, Any]:
        return {k: v for k, v in obj.model_dump().items() if k not in ("id", "action_id", "decision_id", "key", "external_id", "idempotency_key", "ts")}

    async with db.read() as session:
        found: dict[str, Any] = {"action": plain(await queries.get_action(session, action_id=action_id))}
        for model in (Card, Decision, Outbox, Notice, Watch):
            rows = (await session.exec(select(model).where(model.action_id == action_id).order_by(model.id))).all()  # type: ignore[attr-defined]
            found[model.__name__] = [plain(r) for r in rows]
    return found


async def test_the_settle_writes_on_the_driver_what_it_writes_through_a_session(db: Database) -> None:
    action_a = await _action(db, external_id="a1", rollback_conditions=["roas drops below 1.5 within 24h", "cpa > $50", "not a rule"])
    action_b = await _action(db, external_id="a2", rollback_conditions=["roas drops below 1.5 within 24h", "cpa > $50", "not a rule"])
    outboxes = []
    for action in (action_a, action_b):
        begun = await db.hot.begin_decision(**_begin_args(action, key=f"k{action.id}", seen=action))
        assert isinstance(begun, queries.Begun)
        outboxes.append(begun.outbox.id or 0)
    writes = db.transactions.writes
    async with db.write() as session:
        through_session = await _landed(db, session, outboxes[0])
    async with db.hot.writing() as driver:
        assert isinstance(driver, hot.DriverSession)
        on_driver = await _landed(db, driver, outboxes[1])
    assert db.transactions.writes == writes + 2
    assert through_session is not None and on_driver is not None
    assert on_driver.status == Status.APPROVED.value and on_driver.watch_started_at == NOW
    a, b = await _rows(db, action_a.id or 0), await _rows(db, action_b.id or 0)
    assert a == b
    assert [w["position"] for w in b["Watch"]] == [0, 1]
    assert [n["kind"] for n in b["Notice"]] == ["status"] and b["Outbox"][0]["state"] == "done"
    async with db.hot.writing() as driver:
        assert await _landed(db, driver, outboxes[1]) is None  # settled already: nothing written again
    assert await _rows(db, action_b.id or 0) == b


async def test_a_driver_session_answers_as_a_session_does(db: Database) -> None:
    stored = await _action(db)
    aid = stored.id or 0
    async with db.hot.writing() as session:
        action = await queries.get_action(session, action_id=aid, lock=True)
        assert action is not None and action.model_dump() == stored.model_dump() and object_session(action) is None
        card = await queries.card_for_action(session, action_id=aid)
        assert card is not None and card.ts == f"{aid}.0"
        assert (await session.exec(select(Card.id, Card.ts).where(Card.action_id == aid))).all() == [(card.id, card.ts)]
        assert (await session.exec(select(Card.id).where(Card.action_id == aid))).all() == [card.id]  # as sqlmodel's
        assert (await session.exec(select(Card).where(Card.action_id == aid))).scalar_one().id == card.id
        assert await queries.card_rendered(session, card_id=card.id or 0, version=5) is False
        result = await session.exec(sa.update(Card).where(col(Card.id) == -1).values(dirty=True))
        assert result.rowcount == 0
        await queries.release_claim(session, card_id=card.id, notice_ids=[1, 2, 3])  # an IN list of its own
        with pytest.raises(AttributeError, match="add"):
            session.add(card)
        given = {"action_id": aid, "position": 7, "condition": "cpa > 50", "rule": {}, "metric": "cpa", "started_at": NOW}
        given["next_check_at"] = NOW
        await session.exec(sa.insert(Watch), params=given)  # the columns left out take their defaults
        claimed = await queries.claim_watches(session, now=NOW, lease=timedelta(seconds=30), limit=5)
        assert [(type(w), type(a), w.position, a.id) for w, a in claimed] == [(Watch, Action, 7, aid)]  # rows of two models
        assert claimed[0][0].lease_until == NOW + timedelta(seconds=30)
    async with db.read() as session:
        stored_card = await queries.card_for_action(session, action_id=aid)
        watches = await queries.watches_for(session, action_id=aid)
    assert stored_card is not None and stored_card.rendered_version == 5
    assert [(w.active, w.reading, w.tripped, w.trips) for w in watches] == [(True, "pending", False, 0)]
    assert watches[0].lease_until == NOW + timedelta(seconds=30)  # the claim's lease, an UPDATE with an IN list


async def test_an_in_list_is_compiled_once_per_length_and_binds_each_calls_values(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second, third = [await _action(db, external_id=e) for e in ("a1", "a2", "a3")]
    compiled: list[str] = []
    init = hot._Compiled.__init__

    def counting(self: Any, stmt: Any, *args: Any, **kwargs: Any) -> None:
        compiled.append(f"{stmt} expanded={kwargs.get('expanded')}")
        init(self, stmt, *args, **kwargs)

    monkeypatch.setattr(hot._Compiled, "__init__", counting)
    stmt = (
        select(Action.external_id)
        .where(col(Action.id).in_(sa.bindparam("p_ids", expanding=True)), Action.source == sa.bindparam("p_source"))
        .order_by(col(Action.id))
    )
    got = []
    for ids in ([first.id], [second.id], [first.id, third.id], [third.id, second.id], [], [third.id]):
        async with db.hot.writing() as session:
            got.append((await session.exec(stmt, params={"p_ids": ids, "p_source": "flokit"})).all())
    assert got == [["a1"], ["a2"], ["a1", "a3"], ["a2", "a3"], [], ["a3"]]
    # Found to have an IN list, then compiled for lengths 1, 2 and 0: each once.
    assert [c.endswith("True") for c in compiled] == [False, True, True, True], compiled


async def test_a_driver_session_rolls_back_what_failed_and_says_so_as_sqlalchemy_does(db: Database) -> None:
    stored = await _action(db)
    aid = stored.id or 0
    with pytest.raises(RuntimeError):
        async with db.hot.writing() as session:
            await session.exec(sa.update(Card).where(col(Card.action_id) == aid).values(dirty=True))
            raise RuntimeError("the work failed")
    with pytest.raises(DBAPIError):
        async with db.hot.writing() as session:
            await session.exec(sa.update(Card).where(col(Card.action_id) == aid).values(dirty=True))
            await session.exec(sa.insert(Card), params={"action_id": aid, "channel": "C1"})  # a second card: refused
    async with db.read() as session:
        card = await queries.card_for_action(session, action_id=aid)
    assert card is not None and card.dirty is False  # neither transaction's update stayed
    async with db.hot.writing() as session:  # and the connection is fine for the next one
        await session.exec(sa.update(Card).where(col(Card.action_id) == aid).values(dirty=True))
    async with db.read() as session:
        card = await queries.card_for_action(session, action_id=aid)
    assert card is not None and card.dirty is True
