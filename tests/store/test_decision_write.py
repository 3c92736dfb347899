"""The decision's write (``queries.begin_decision``): a compare-and-set on the version the caller
read, with a locked re-read only where the action moved on since; the audit and outbox rows as
Core inserts. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlmodel import select

from core.lifecycle import TRANSITIONS
from sources.base import Op, Status
from store import queries
from store.db import Database
from store.models import Action, Card, Decision, Outbox

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
APPROVE = TRANSITIONS[Op.APPROVE]


async def _action(db: Database, external_id: str = "a1") -> Action:
    async with db.write() as session:
        action = Action(
            source="flokit", external_id=external_id, type="t", title="x", status=Status.READY.value, raw={},
            updated_at=NOW, first_seen_at=NOW,
        )
        session.add(action)
        await session.flush()
        assert action.id is not None
        session.add(Card(action_id=action.id, channel="C1", state="posted", ts="1.0"))
    async with db.read() as session:
        read = await queries.get_action(session, action_id=action.id)
    assert read is not None
    return read


async def _begin(db: Database, action: Action, *, seen: Action | None, key: str) -> queries.Begun | None:
    assert action.id is not None
    async with db.write() as session:
        return await queries.begin_decision(
            session, action_id=action.id, op=Op.APPROVE, allowed_from=APPROVE.allowed_from,
            in_flight=APPROVE.in_flight, actor="U1", note="ok", idempotency_key=key, notify_channel="C1",
            now=NOW + timedelta(seconds=1), seen=seen, claim=queries.Claim(NOW + timedelta(seconds=30)),
        )


async def _rows(db: Database, action_id: int) -> tuple[Action, list[Decision], list[Outbox], Card]:
    async with db.read() as session:
        action = await queries.get_action(session, action_id=action_id)
        decisions = list((await session.exec(select(Decision).where(Decision.action_id == action_id))).all())
        outbox = list((await session.exec(select(Outbox).where(Outbox.action_id == action_id))).all())
        card = (await session.exec(select(Card).where(Card.action_id == action_id))).one()
    assert action is not None
    return action, decisions, outbox, card


async def test_decision_from_the_version_just_read(db: Database) -> None:
    seen = await _action(db)
    begun = await _begin(db, seen, seen=seen, key="k1")
    assert begun is not None
    action, decisions, outbox, card = await _rows(db, seen.id or 0)
    # What was returned is what was stored, ids included.
    assert action.status == APPROVE.in_flight.value == begun.action.status
    assert action.version == 2 == begun.action.version
    assert [(d.id, d.event, d.op, d.actor, d.from_status, d.to_status) for d in decisions] == [
        (begun.decision.id, "requested", "approve", "U1", "ready", APPROVE.in_flight.value)
    ]
    assert [(o.id, o.decision_id, o.idempotency_key, o.state, o.attempts) for o in outbox] == [
        (begun.outbox.id, begun.decision.id, "k1", "pending", 0)
    ]
    assert begun.outbox.lease_until == NOW + timedelta(seconds=30) == outbox[0].lease_until
    assert card.dirty and card.wanted_version == 2


async def test_a_second_decision_from_the_same_read_loses(db: Database) -> None:
    seen = await _action(db)
    stale = seen.model_copy()
    assert await _begin(db, seen, seen=seen, key="k1") is not None
    # Another click read the same version before the first committed: its compare-and-set
    # fails, the re-read finds the action in flight, and nothing more is recorded.
    assert await _begin(db, stale, seen=stale, key="k2") is None
    _action_row, decisions, outbox, _card = await _rows(db, seen.id or 0)
    assert len(decisions) == 1 and [o.idempotency_key for o in outbox] == ["k1"]
