"""The SQL behind the App Home: what a Home shows (the ready queue, a viewer's recent
decisions, the actions under rollback watch) and the ``homes`` bookkeeping (who opened their
Home lately, and the fingerprint of what it last showed).

Like ``store.queries``: keyword-only functions taking a session; callers own the transaction.
Reads select only the columns a Home shows (never an action's raw JSON).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from sources.base import Status
from store.models import Action, AuditEvent, Decision, Home, Watch

WATCHED = (Status.APPROVED, Status.RUNNING)
_CHUNK = 500


@dataclass(frozen=True)
class ReadyRow:
    id: int
    version: int
    source: str
    external_id: str
    type: str
    title: str
    requested_by: str | None
    created_at: datetime | None
    expected_impact: dict[str, Any] | None
    guardrail_checks: list[Any] | None
    risk: str | None = None
    options: list[Any] | None = None  # as stored: the source's own options, where it names them


@dataclass(frozen=True)
class DecisionRow:
    id: int
    actor: str
    action_id: int
    op: str | None
    note: str | None
    at: datetime
    title: str
    source: str
    status: str  # the action's status now


@dataclass(frozen=True)
class WatchRow:
    position: int
    condition: str
    reading: str
    detail: str | None
    tripped: bool
    baseline: float | None
    active: bool
    ended: str | None


@dataclass(frozen=True)
class WatchedRow:
    id: int
    version: int
    source: str
    title: str
    status: str
    watches: tuple[WatchRow, ...]


@dataclass(frozen=True)
class HomeRow:
    user_id: str
    fingerprint: str | None


# ---- what a Home shows --------------------------------------------------------------------


async def ready_queue(session: AsyncSession, *, limit: int) -> tuple[list[ReadyRow], int]:
    """The newest ``limit`` ready actions (newest first), and how many are ready in all."""
    rows = await session.exec(
        select(  # type: ignore[call-overload, misc]  # sqlmodel's select() is typed for at most 4 columns
            Action.id,
            Action.version,
            Action.source,
            Action.external_id,
            Action.type,
            Action.title,
            Action.requested_by,
            Action.upstream_created_at,
            Action.expected_impact,
            Action.guardrail_checks,
            Action.risk,
            Action.options,
        )
        .where(Action.status == Status.READY.value)
        .order_by(col(Action.id).desc())
        .limit(limit)
    )
    page = [ReadyRow(*row) for row in rows]
    if len(page) < limit:
        return page, len(page)
    total = (
        await session.exec(select(sa.func.count()).select_from(Action).where(Action.status == Status.READY.value))
    ).one()
    return page, int(total)


def _under_watch() -> Any:
    return sa.exists().where(col(Watch.action_id) == col(Action.id), col(Watch.active))


async def watched_actions(session: AsyncSession, *, limit: int) -> tuple[list[WatchedRow], int]:
    """Approved or running actions with an active rollback watch: those with a tripped rule
    first, then newest first; with all their watches, and how many there are in all."""
    tripped = sa.exists().where(col(Watch.action_id) == col(Action.id), col(Watch.active), col(Watch.tripped))
    where = (col(Action.status).in_([s.value for s in WATCHED]), _under_watch())
    actions = list(
        await session.exec(
            select(Action.id, Action.version, Action.source, Action.title, Action.status)  # type: ignore[call-overload]  # sqlmodel's select() is typed for at most 4 columns
            .where(*where)
            .order_by(sa.case((tripped, 0), else_=1), col(Action.id).desc())
            .limit(limit)
        )
    )
    if not actions:
        return [], 0
    ids = [row[0] for row in actions]
    watches: dict[int, list[WatchRow]] = {i: [] for i in ids}
    for w in await session.exec(
        select(Watch).where(col(Watch.action_id).in_(ids)).order_by(col(Watch.action_id), col(Watch.position))
    ):
        watches[w.action_id].append(
            WatchRow(
                position=w.position,
                condition=w.condition,
                reading=w.reading,
                detail=w.reading_detail,
                tripped=w.tripped,
                baseline=w.baseline,
                active=w.active,
                ended=w.ended,
            )
        )
    page = [
        WatchedRow(id=aid, version=version, source=source, title=title, status=status, watches=tuple(watches[aid]))
        for aid, version, source, title, status in actions
    ]
    if len(page) < limit:
        return page, len(page)
    total = (await session.exec(select(sa.func.count()).select_from(Action).where(*where))).one()
    return page, int(total)


async def recent_decisions(
    session: AsyncSession, *, user_ids: Iterable[str], limit: int
) -> dict[str, list[DecisionRow]]:
    """Each user's newest ``limit`` decisions (the audit entries of their requests), newest
    first, with the title and current status of the action decided on. One query per 500 users."""
    users = sorted(set(user_ids))
    out: dict[str, list[DecisionRow]] = {u: [] for u in users}
    for start in range(0, len(users), _CHUNK):
        chunk = users[start : start + _CHUNK]
        rank = sa.func.row_number().over(partition_by=col(Decision.actor), order_by=col(Decision.id).desc())
        ranked = (
            select(  # type: ignore[call-overload]  # sqlmodel's select() is typed for at most 4 columns
                col(Decision.id).label("id"),
                col(Decision.actor).label("actor"),
                col(Decision.action_id).label("action_id"),
                col(Decision.op).label("op"),
                col(Decision.note).label("note"),
                col(Decision.at).label("at"),
                rank.label("rank"),
            )
            .where(col(Decision.actor).in_(chunk), Decision.event == AuditEvent.REQUESTED.value)
            .subquery()
        )
        rows = await session.exec(
            select(  # type: ignore[call-overload]  # sqlmodel's select() is typed for at most 4 columns
                ranked.c.id,
                ranked.c.actor,
                ranked.c.action_id,
                ranked.c.op,
                ranked.c.note,
                ranked.c.at,
                Action.title,
                Action.source,
                Action.status,
            )
            .join(Action, col(Action.id) == ranked.c.action_id)
            .where(ranked.c.rank <= limit)
            .order_by(ranked.c.actor, ranked.c.id.desc())
        )
        for row in rows:
            decision = DecisionRow(*row)
            out[decision.actor].append(decision)
    return out


# ---- homes --------------------------------------------------------------------------------


async def record_open(session: AsyncSession, *, user_id: str, now: datetime) -> str | None:
    """The user opened their Home now (an upsert); returns the fingerprint last published."""
    dialect = session.get_bind().dialect.name
    insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(Home)
    stmt = insert.values(user_id=user_id, opened_at=now).on_conflict_do_update(
        index_elements=["user_id"], set_={"opened_at": now}
    )
    await session.exec(stmt)
    return (await session.exec(select(Home.fingerprint).where(Home.user_id == user_id))).first()


async def recent_homes(session: AsyncSession, *, since: datetime) -> Sequence[HomeRow]:
    """Users who opened their Home since ``since``, with the fingerprint last published."""
    rows = await session.exec(
        select(Home.user_id, Home.fingerprint).where(col(Home.opened_at) >= since).order_by(col(Home.user_id))
    )
    return [HomeRow(user_id, fingerprint) for user_id, fingerprint in rows]


async def save_fingerprint(
    session: AsyncSession, *, user_id: str, previous: str | None, fingerprint: str, now: datetime
) -> bool:
    """Record that the Home with ``fingerprint`` was published, if the row still holds
    ``previous`` (the one this publisher read). Otherwise another publisher got there in
    between and the order of the two publishes is unknown: unless both showed the same,
    the fingerprint is cleared, so the next refresh publishes again. Returns True if saved."""
    saved = await session.exec(
        sa.update(Home)
        .where(col(Home.user_id) == user_id, col(Home.fingerprint).is_not_distinct_from(previous))
        .values(fingerprint=fingerprint, published_at=now)
    )
    if saved.rowcount == 1:
        return True
    await session.exec(
        sa.update(Home)
        .where(col(Home.user_id) == user_id, col(Home.fingerprint).is_distinct_from(fingerprint))
        .values(fingerprint=None)
    )
    return False
