"""Read-only SQL for the ``/signoff`` command: finding an action by what someone typed, actions
by status a page at a time, the latest audit entries, and decision stats over a window.

Small keyword-only functions taking a session, like ``store.queries``; none of them writes.
Every query is bounded (a page, a limit, a time window), so a large store is never loaded whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from sources.base import Op
from store.models import Action, AuditEvent, Card, Decision, Outbox, OutboxState, Watch


@dataclass(frozen=True)
class ActionRow:
    """What a list line shows about one action, with where its card is (if posted)."""

    id: int
    source: str
    external_id: str
    type: str
    title: str
    status: str
    created_at: datetime | None  # as the upstream reports it
    first_seen_at: datetime | None
    card_channel: str | None
    card_ts: str | None


@dataclass(frozen=True)
class AuditRow:
    """One audit entry with the action it belongs to."""

    decision: Decision
    source: str
    external_id: str
    title: str


@dataclass(frozen=True)
class DecisionCount:
    actor: str
    op: str
    count: int


@dataclass(frozen=True)
class DecisionTime:
    """When an action was first seen, and when its first approval or rejection was confirmed."""

    action_id: int
    first_seen_at: datetime
    decided_at: datetime


async def find_actions(
    session: AsyncSession,
    *,
    action_id: int | None = None,
    source: str | None = None,
    external_id: str | None = None,
    limit: int = 2,
) -> list[Action]:
    """Actions matching a reference: the store's id, else the upstream id (in ``source`` if
    given). More than one match means the upstream id is known in several sources."""
    if action_id is not None:
        found = await session.get(Action, action_id)
        if found is not None:
            return [found]
        # A source whose ids are numbers: the number may be theirs.
        external_id = external_id if external_id is not None else str(action_id)
    if not external_id:
        return []
    stmt = select(Action).where(Action.external_id == external_id)
    if source is not None:
        stmt = stmt.where(Action.source == source)
    return list((await session.exec(stmt.order_by(col(Action.id)).limit(limit))).all())


async def count_by_status(session: AsyncSession, *, status: str) -> int:
    stmt = select(sa.func.count()).select_from(Action).where(Action.status == status)
    return int((await session.exec(stmt)).one())


async def actions_by_status(session: AsyncSession, *, status: str, offset: int, limit: int) -> list[ActionRow]:
    """One page of the actions in ``status``, newest first (the most recently discovered)."""
    stmt = (
        select(  # type: ignore[call-overload]  # sqlmodel's select() is typed for at most 4 columns
            Action.id,
            Action.source,
            Action.external_id,
            Action.type,
            Action.title,
            Action.status,
            Action.upstream_created_at,
            Action.first_seen_at,
            Card.channel,
            Card.ts,
        )
        .select_from(Action)
        .join(Card, col(Card.action_id) == col(Action.id), isouter=True)
        .where(Action.status == status)
        .order_by(col(Action.id).desc())
        .offset(offset)
        .limit(limit)
    )
    return [ActionRow(*row) for row in (await session.exec(stmt)).all()]


async def card_of(session: AsyncSession, *, action_id: int) -> tuple[str, str] | None:
    """(channel, ts) of the action's card, once posted."""
    stmt = select(Card.channel, Card.ts).where(Card.action_id == action_id, col(Card.ts).is_not(None))
    row = (await session.exec(stmt)).first()
    return (row[0], row[1]) if row is not None and row[1] is not None else None


async def latest_entries(session: AsyncSession, *, limit: int) -> list[AuditRow]:
    """The newest audit entries across actions (discoveries left out), newest first."""
    stmt = (
        select(Decision, Action.source, Action.external_id, Action.title)
        .join(Action, col(Action.id) == col(Decision.action_id))
        .where(Decision.event != AuditEvent.DISCOVERED.value)
        .order_by(col(Decision.id).desc())
        .limit(limit)
    )
    return [AuditRow(d, source, ext, title) for d, source, ext, title in (await session.exec(stmt)).all()]


async def confirmed_counts(session: AsyncSession, *, since: datetime) -> list[DecisionCount]:
    """Confirmed decisions since ``since``, counted by who made them and their op."""
    count = sa.func.count().label("n")
    stmt = (
        select(Decision.actor, Decision.op, count)
        .where(Decision.event == AuditEvent.CONFIRMED.value, col(Decision.at) >= since, col(Decision.op).is_not(None))
        .group_by(col(Decision.actor), col(Decision.op))
    )
    return [DecisionCount(actor, op, int(n)) for actor, op, n in (await session.exec(stmt)).all() if op is not None]


async def decision_times(session: AsyncSession, *, since: datetime, limit: int) -> list[DecisionTime]:
    """For each action whose approval or rejection was confirmed since ``since``: when it was
    first seen and when that decision was first confirmed (at most ``limit`` actions)."""
    first = (
        select(col(Decision.action_id).label("action_id"), sa.func.min(Decision.at).label("decided_at"))
        .where(
            Decision.event == AuditEvent.CONFIRMED.value,
            col(Decision.op).in_([Op.APPROVE.value, Op.REJECT.value]),
            col(Decision.at) >= since,
        )
        .group_by(col(Decision.action_id))
        .subquery()
    )
    stmt = (
        select(first.c.action_id, Action.first_seen_at, first.c.decided_at)
        .join(Action, col(Action.id) == first.c.action_id)
        .where(col(Action.first_seen_at).is_not(None))
        .order_by(first.c.decided_at.desc())
        .limit(limit)
    )
    rows: Sequence[tuple[int, datetime, datetime]] = (await session.exec(stmt)).all()  # type: ignore[assignment]
    return [DecisionTime(aid, seen, decided) for aid, seen, decided in rows]


@dataclass(frozen=True)
class Backlog:
    """Decisions not yet settled upstream, per source: how many to send, how many followed
    (accepted, still running upstream), and when the oldest of them was recorded."""

    depth: dict[tuple[str, str], int]  # (source, "send" | "track") -> count
    oldest: dict[str, datetime]


async def backlog(session: AsyncSession) -> Backlog:
    """One aggregate over the pending outbox entries (an index on ``state``): cheap per scrape."""
    tracked = col(Outbox.reference).is_not(None)
    rows = (
        await session.exec(
            select(Action.source, tracked, sa.func.count(), sa.func.min(Outbox.created_at))
            .join(Action, col(Action.id) == col(Outbox.action_id))
            .where(col(Outbox.state) == OutboxState.PENDING.value)
            .group_by(Action.source, tracked)
        )
    ).all()
    depth: dict[tuple[str, str], int] = {}
    oldest: dict[str, datetime] = {}
    for source, is_tracked, count, first in rows:
        depth[(source, "track" if is_tracked else "send")] = int(count)
        if first is not None and (source not in oldest or first < oldest[source]):
            oldest[source] = first
    return Backlog(depth, oldest)


async def rule_states(session: AsyncSession) -> dict[str, int]:
    """Active rollback rules by state: ``tripped``, else how their last check went."""
    state = sa.case((col(Watch.tripped), sa.literal("tripped")), else_=col(Watch.reading))
    rows = (await session.exec(select(state, sa.func.count()).where(col(Watch.active)).group_by(state))).all()
    return {str(s): int(n) for s, n in rows}
