"""All of Signoff's SQL, as small keyword-only functions taking a session.

Callers own the transaction (``Database.write()``); these functions never commit. Every
change of an action's status bumps ``Action.version`` (so the card sync re-renders it) and
appends to the audit trail, which has no update or delete path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import aliased, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from sources.base import IN_FLIGHT, Op, Option, Status, UpstreamAction
from store.models import (
    Action,
    ApiRateBucket,
    AuditEvent,
    Card,
    CardState,
    Decision,
    Digest,
    Notice,
    NoticeState,
    Outbox,
    OutboxState,
    Reading,
    UTCDateTime,
    Watch,
)


@dataclass
class Claim:
    """Work a transaction makes for this process to do at once (its card re-rendered, its
    notices posted), leased to it until ``until`` so that the sweeps leave it alone; if the
    process dies first, the sweeps take it over when the lease ends. ``notices`` collects
    the notices the transaction owed, leased so."""

    until: datetime
    notices: list[int] = field(default_factory=list)


# ---- actions ----------------------------------------------------------------------------


def _upstream_fields(upstream: UpstreamAction) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "upstream_status": upstream.upstream_status,
        "decided_at": upstream.decided_at,
        "decided_by": upstream.decided_by,
    }
    if upstream.options is not None:
        fields["options"] = [o.to_json() for o in upstream.options]
    if upstream.detailed:
        impact = upstream.expected_impact
        fields.update(
            type=upstream.type,
            title=upstream.title,
            rationale=upstream.rationale,
            expected_impact=None
            if impact is None
            else {"metric": impact.metric, "direction": impact.direction, "magnitude": impact.magnitude},
            data_signals=[{"label": s.label, "value": s.value} for s in upstream.data_signals],
            guardrail_checks=[
                {"check": g.check, "passed": g.passed, "detail": g.detail} for g in upstream.guardrail_checks
            ],
            rollback_conditions=list(upstream.rollback_conditions),
            requested_by=upstream.requested_by,
            risk=upstream.risk,
            upstream_created_at=upstream.created_at,
            raw=upstream.raw,
            details={"fields": [[d.label, d.value] for d in upstream.details], "url": upstream.url}
            if upstream.details or upstream.url
            else None,
        )
    return fields


async def insert_action(
    session: AsyncSession,
    *,
    source: str,
    upstream: UpstreamAction,
    channel: str,
    now: datetime,
    digest_id: int | None = None,
) -> Action | None:
    """Store a newly seen action with its (not yet posted) card, or listed in a digest.
    Returns None if another poller stored it first: the unique key makes discovery idempotent."""
    values = {
        "source": source,
        "external_id": upstream.external_id,
        "status": upstream.status.value,
        "version": 1,
        "first_seen_at": now,
        "updated_at": now,
        **_upstream_fields(upstream),
    }
    dialect = session.get_bind().dialect.name
    insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(Action)
    stmt = insert.values(**values).on_conflict_do_nothing(index_elements=["source", "external_id"])
    result = await session.exec(stmt.returning(col(Action.id)))
    action_id = result.scalar_one_or_none()
    if action_id is None:
        return None
    state = CardState.DIGESTED if digest_id is not None else CardState.PENDING
    if upstream.options is not None and not upstream.options:
        state = CardState.HELD  # nothing to decide: no card until the source offers something
    session.add(Card(action_id=action_id, channel=channel, state=state.value, digest_id=digest_id))
    await append_audit(
        session,
        action_id=action_id,
        event=AuditEvent.DISCOVERED,
        actor="upstream",
        to_status=upstream.status.value,
        now=now,
    )
    return await session.get(Action, action_id)


# The statements of the decision's hot path are built once, with bound parameters: building
# one and computing its cache key costs more than running it (bench/README.md).
_ACTION_BY_ID = (
    select(Action).where(col(Action.id) == sa.bindparam("action_id")).execution_options(populate_existing=True)
)
_ACTION_BY_ID_LOCKED = _ACTION_BY_ID.with_for_update()


def as_loaded(model: type[SQLModel], values: dict[str, Any]) -> Any:
    """The model object a session would have loaded for ``values`` (a row as stored),
    detached: built as the ORM builds a loaded row, without the model's constructor (its
    validation and bookkeeping cost more than the statement). Fields not given take their
    defaults."""
    fields = model.model_fields
    for name in fields.keys() - values.keys():
        values[name] = fields[name].get_default(call_default_factory=True)
    obj = model._sa_class_manager.new_instance()  # type: ignore[attr-defined]
    obj.__dict__.update(values)
    make_transient_to_detached(obj)
    return obj


async def get_action(session: AsyncSession, *, action_id: int, lock: bool = False) -> Action | None:
    stmt = _ACTION_BY_ID_LOCKED if lock else _ACTION_BY_ID
    return (await session.exec(stmt, params={"action_id": action_id})).first()


async def known_actions(
    session: AsyncSession, *, source: str, external_ids: Iterable[str]
) -> dict[str, tuple[int, str]]:
    """external id -> (id, status) for those of ``external_ids`` already stored."""
    ids = list(external_ids)
    out: dict[str, tuple[int, str]] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        rows = await session.exec(
            select(Action.external_id, Action.id, Action.status).where(
                Action.source == source, col(Action.external_id).in_(chunk)
            )
        )
        out.update({ext: (aid, status) for ext, aid, status in rows})  # type: ignore[misc]
    return out


async def count_in_status(session: AsyncSession, *, source: str, statuses: Iterable[Status]) -> int:
    stmt = (
        select(sa.func.count())
        .select_from(Action)
        .where(Action.source == source, col(Action.status).in_([s.value for s in statuses]))
    )
    return int((await session.exec(stmt)).one())


async def actions_in_status(
    session: AsyncSession, *, source: str, statuses: Iterable[Status], after_id: int = 0, limit: int = 1000
) -> list[tuple[int, str]]:
    """(id, external id) of stored actions in one of ``statuses``, by id after ``after_id``:
    a page at a time, so a large store is never loaded whole."""
    rows = await session.exec(
        select(Action.id, Action.external_id)
        .where(
            Action.source == source,
            col(Action.status).in_([s.value for s in statuses]),
            col(Action.id) > after_id,
        )
        .order_by(col(Action.id))
        .limit(limit)
    )
    return [(aid, ext) for aid, ext in rows]  # type: ignore[misc]


async def adopt_upstream(
    session: AsyncSession,
    *,
    action_id: int,
    upstream: UpstreamAction,
    now: datetime,
    observed_at: datetime | None = None,
    event: AuditEvent = AuditEvent.UPSTREAM,
    in_flight_from: Callable[[Status], frozenset[Status]] = lambda _status: frozenset(),
) -> bool:
    """Take the upstream's word for the action's state. Returns True if anything changed.

    While a decision is in flight and the upstream still shows the state it was made in,
    Signoff keeps its own in-flight state (the decision has not reached the upstream yet):
    ``in_flight_from`` says, for an in-flight state, which states its decision was made in.
    A word read at ``observed_at`` is ignored if the action changed here since: the store
    already knows something newer (a decision delivered meanwhile), and the next read will tell.
    """
    action = await get_action(session, action_id=action_id, lock=True)
    if action is None:
        return False
    if observed_at is not None and action.updated_at is not None and action.updated_at > observed_at:
        return False
    current = Status(action.status)
    if current in IN_FLIGHT and upstream.status in in_flight_from(current):
        return False
    if current is Status.EXPIRED and upstream.status is Status.READY:
        return False  # expired here; still ready upstream, which is no news
    fields = _upstream_fields(upstream)
    changed = current != upstream.status or any(getattr(action, k) != v for k, v in fields.items())
    if not changed:
        return False
    for key, value in fields.items():
        setattr(action, key, value)
    if current != upstream.status:
        action.status = upstream.status.value
        action.last_error = None
        entry = await append_audit(
            session,
            action_id=action_id,
            event=event,
            actor="upstream",
            from_status=current.value,
            to_status=upstream.status.value,
            note=upstream.decided_by,
            now=now,
        )
        await _status_notice(session, decision=entry, now=now)
    action.version += 1
    action.updated_at = now
    session.add(action)
    await _card_dirty(session, action_id=action_id, version=action.version)
    if upstream.options:
        await _unhold_card(session, action_id=action_id)
    return True


async def claim_refresh(
    session: AsyncSession,
    *,
    sources: Sequence[str],
    statuses: Iterable[Status],
    now: datetime,
    lease: timedelta,
    limit: int,
) -> list[tuple[int, str, str, int]]:
    """Lease up to ``limit`` open actions of ``sources`` that are due to be read again:
    (id, source, external id, reads in a row that found nothing new). Rows another worker
    holds are skipped; the lease is the next ``refresh_at`` should this worker die."""
    stmt = (
        select(Action.id, Action.source, Action.external_id, Action.refresh_misses)
        .where(
            col(Action.source).in_(list(sources)),
            col(Action.status).in_([s.value for s in statuses]),
            sa.or_(col(Action.refresh_at).is_(None), col(Action.refresh_at) <= now),
        )
        .order_by(col(Action.refresh_at).asc().nulls_first(), col(Action.id))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    rows = [(int(aid or 0), src, ext, misses or 0) for aid, src, ext, misses in await session.exec(stmt)]
    if rows:
        await session.exec(
            sa.update(Action).where(col(Action.id).in_([r[0] for r in rows])).values(refresh_at=now + lease)
        )
    return rows


async def refreshed(session: AsyncSession, *, action_id: int, next_at: datetime, misses: int) -> None:
    """When the action is read again, and how many reads in a row found nothing new."""
    await session.exec(
        sa.update(Action).where(col(Action.id) == action_id).values(refresh_at=next_at, refresh_misses=misses)
    )


async def _unhold_card(session: AsyncSession, *, action_id: int) -> None:
    """The action offers something to decide now: a card held back until then is posted."""
    await session.exec(
        sa.update(Card)
        .where(col(Card.action_id) == action_id, col(Card.state) == CardState.HELD.value)
        .values(state=CardState.PENDING.value)
    )


async def _card_dirty(session: AsyncSession, *, action_id: int, version: int, claim: Claim | None = None) -> None:
    """The action changed to ``version``: its card must be re-rendered (by this process at
    once, under a ``claim``; else by the card sync)."""
    if claim is None:
        await session.exec(_CARD_DIRTY, params={"p_action": action_id, "p_version": version})
    else:
        await session.exec(
            _CARD_DIRTY_CLAIMED, params={"p_action": action_id, "p_version": version, "p_until": claim.until}
        )


_CARDS = Card.__table__  # type: ignore[attr-defined]
_CARD_DIRTY = (
    sa.update(_CARDS)
    .where(_CARDS.c.action_id == sa.bindparam("p_action"))
    .values(dirty=True, wanted_version=sa.bindparam("p_version"))
)
_CARD_DIRTY_CLAIMED = _CARD_DIRTY.values(lease_until=sa.bindparam("p_until", type_=UTCDateTime()))


# ---- decisions --------------------------------------------------------------------------


async def begin_decision(
    session: AsyncSession,
    *,
    action_id: int,
    op: Op,
    allowed_from: frozenset[Status],
    in_flight: Status,
    actor: str,
    note: str | None,
    idempotency_key: str,
    notify_channel: str | None,
    now: datetime,
    option: Option | None = None,
    actor_identifier: str | None = None,
    claim: Claim | None = None,
    seen: Action | None = None,
    strict: bool = False,
) -> Begun | None:
    """Compare-and-set the action from one of ``allowed_from`` into ``in_flight``, append the
    decision and queue its upstream call, all in the caller's transaction. Returns None when
    the action is not in such a state (someone else decided first).

    ``seen``: the action as the caller read it moments ago. Where it is still at that version
    (every change of an action bumps it), the compare-and-set needs no read of its own; where
    it moved on, the row is read again under lock (``strict``: None at once, nothing written).
    Under a ``claim`` the outbox entry (and the card) are leased to this process, which
    delivers it at once; ``actor_identifier``, where already known, is stored with it."""

    async def move(row: Action) -> bool:
        moved = await session.exec(
            _ACTION_MOVE_SEEN,
            params={"p_action": action_id, "p_version": row.version, "p_status": in_flight.value, "p_now": now},
        )
        return bool(moved.rowcount == 1)

    action: Action | None = seen
    if seen is None or seen.id != action_id or Status(seen.status) not in allowed_from or not await move(seen):
        if strict and seen is not None:
            return None
        action = await get_action(session, action_id=action_id, lock=True)
        if action is None or Status(action.status) not in allowed_from or not await move(action):
            return None
    assert action is not None
    await _card_dirty(session, action_id=action_id, version=action.version + 1, claim=claim)
    audit, queued = _decision_rows(
        action,
        op=op,
        in_flight=in_flight,
        actor=actor,
        note=note,
        idempotency_key=idempotency_key,
        notify_channel=notify_channel,
        now=now,
        option=option,
        actor_identifier=actor_identifier,
        claim=claim,
    )
    audit["id"] = queued["decision_id"] = (await session.exec(_INSERT_DECISION, params=audit)).scalar_one()
    queued["id"] = (await session.exec(_INSERT_OUTBOX, params=queued)).scalar_one()
    return _begun(action, audit, queued)


def _decision_rows(
    action: Action,
    *,
    op: Op,
    in_flight: Status,
    actor: str,
    note: str | None,
    idempotency_key: str,
    notify_channel: str | None,
    now: datetime,
    option: Option | None,
    actor_identifier: str | None,
    claim: Claim | None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A decision's audit entry and outbox entry, as ``begin_decision`` inserts them (the
    entry's ``decision_id`` and both ids are the inserts')."""
    audit = _audit_row(
        action_id=action.id or 0,
        event=AuditEvent.REQUESTED,
        op=op,
        actor=actor,
        note=note,
        from_status=action.status,
        to_status=in_flight.value,
        now=now,
        option=option.label if option else None,
    )
    queued: dict[str, Any] = {
        "action_id": action.id,
        "decision_id": None,  # the audit entry's, once inserted
        "op": op.value,
        "actor": actor,
        "note": note,
        "idempotency_key": idempotency_key,
        "state": OutboxState.PENDING.value,
        "attempts": 0,
        "next_attempt_at": now,
        "notify_channel": notify_channel,
        "created_at": now,
        "option_key": option.key if option else None,
        "option_label": option.label if option else None,
        "actor_identifier": actor_identifier,
        "lease_until": claim.until if claim is not None else None,
    }
    return audit, queued


# An outbox entry's fields as a decision queues it, but for its action's and audit entry's ids.
_QUEUED_FIELDS = (
    "op",
    "actor",
    "note",
    "idempotency_key",
    "state",
    "attempts",
    "next_attempt_at",
    "notify_channel",
    "created_at",
    "option_key",
    "option_label",
    "actor_identifier",
    "lease_until",
)


def _begun(action: Action, audit: dict[str, Any], queued: dict[str, Any]) -> Begun:
    """What ``begin_decision`` wrote, the action as the compare-and-set left it (``seen``
    included: it is the caller's view of the row), without marking it changed (no flush
    writes it again)."""
    for key, value in (
        ("status", audit["to_status"]),
        ("version", action.version + 1),
        ("last_error", None),
        ("updated_at", audit["at"]),
    ):
        set_committed_value(action, key, value)
    return Begun(as_loaded(Decision, audit), as_loaded(Outbox, queued), action)


async def begin_decision_in_one(
    session: AsyncSession,
    *,
    action_id: int,
    op: Op,
    allowed_from: frozenset[Status],
    in_flight: Status,
    actor: str,
    note: str | None,
    idempotency_key: str,
    notify_channel: str | None,
    now: datetime,
    seen: Action,
    option: Option | None = None,
    actor_identifier: str | None = None,
    claim: Claim | None = None,
) -> Begun | None:
    """``begin_decision`` from ``seen``, as one statement (PostgreSQL only: its WITH runs
    UPDATEs and INSERTs): the compare-and-set, the card marked, the audit entry and the
    outbox entry. None, with nothing written, where the action is no longer at ``seen``'s
    version or ``seen`` cannot be decided so. One round trip in the caller's transaction,
    where ``begin_decision`` takes four."""
    if seen.id != action_id or Status(seen.status) not in allowed_from:
        return None
    audit, queued = _decision_rows(
        seen,
        op=op,
        in_flight=in_flight,
        actor=actor,
        note=note,
        idempotency_key=idempotency_key,
        notify_channel=notify_channel,
        now=now,
        option=option,
        actor_identifier=actor_identifier,
        claim=claim,
    )
    params = {
        **audit,
        **queued,
        "p_action": action_id,
        "p_version": seen.version,
        "p_status": in_flight.value,
        "p_now": now,
    }
    ids = (await session.exec(_BEGUN_IN_ONE[claim is not None], params=params)).first()
    if ids is None:
        return None
    queued["id"], decision_id = ids
    audit["id"] = queued["decision_id"] = decision_id
    return _begun(seen, audit, queued)


_ACTIONS = Action.__table__  # type: ignore[attr-defined]
# Core statements on the table (no ORM session bookkeeping): the decision path's writes.
_ACTION_MOVE_SEEN = (
    sa.update(_ACTIONS)
    .where(_ACTIONS.c.id == sa.bindparam("p_action"), _ACTIONS.c.version == sa.bindparam("p_version"))
    .values(
        status=sa.bindparam("p_status"),
        version=_ACTIONS.c.version + 1,
        last_error=None,
        updated_at=sa.bindparam("p_now", type_=UTCDateTime()),
    )
)
_INSERT_OUTBOX = sa.insert(Outbox.__table__).returning(Outbox.__table__.c.id)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Begun:
    """A decision recorded: its audit entry, its outbox entry, and the action as it now is."""

    decision: Decision
    outbox: Outbox
    action: Action


async def retry_failed(
    session: AsyncSession,
    *,
    action_id: int,
    actor: str,
    now: datetime,
    transition_for: Callable[[Op], tuple[frozenset[Status], Status]],
    new_key: str | None = None,
) -> Outbox | None:
    """Put an action's failed upstream call back in the queue (same decision, same key, or
    ``new_key`` where the source keys its requests), if the action is still where the decision
    can be made (``transition_for`` gives, for the decision's kind, the states it is allowed
    from and its in-flight state)."""
    action = await get_action(session, action_id=action_id, lock=True)
    outbox = await latest_outbox(session, action_id=action_id)
    if action is None or outbox is None or outbox.state != OutboxState.FAILED.value or action.last_error is None:
        return None
    allowed_from, in_flight = transition_for(Op(outbox.op))
    if Status(action.status) not in allowed_from:
        return None
    before = action.status
    action.status = in_flight.value
    action.last_error = None
    action.version += 1
    action.updated_at = now
    if new_key is not None:
        # A new decision for an upstream that keys them: the old key would only replay the
        # old failure. Its body is built again, once, for the new key.
        outbox.idempotency_key = new_key
        outbox.request_body = None
    outbox.state = OutboxState.PENDING.value
    outbox.attempts = 0
    outbox.next_attempt_at = now
    outbox.lease_until = None
    outbox.reference = None
    session.add_all([action, outbox])
    await _card_dirty(session, action_id=action_id, version=action.version)
    await append_audit(
        session,
        action_id=action_id,
        event=AuditEvent.RETRIED,
        op=Op(outbox.op),
        actor=actor,
        from_status=before,
        to_status=in_flight.value,
        now=now,
        option=outbox.option_label,
    )
    return outbox


async def append_audit(
    session: AsyncSession,
    *,
    action_id: int,
    event: AuditEvent,
    actor: str,
    now: datetime,
    op: Op | None = None,
    note: str | None = None,
    from_status: str | None = None,
    to_status: str | None = None,
    option: str | None = None,
) -> Decision:
    values = _audit_row(
        action_id=action_id,
        event=event,
        op=op,
        actor=actor,
        note=note,
        from_status=from_status,
        to_status=to_status,
        now=now,
        option=option,
    )
    # A Core INSERT: the audit trail is never updated, so the row needs no session tracking.
    values["id"] = (await session.exec(_INSERT_DECISION, params=values)).scalar_one()
    decision: Decision = as_loaded(Decision, values)
    return decision


def _audit_row(
    *,
    action_id: int,
    event: AuditEvent,
    actor: str,
    now: datetime,
    op: Op | None,
    note: str | None,
    from_status: str | None,
    to_status: str | None,
    option: str | None,
) -> dict[str, Any]:
    return {
        "action_id": action_id,
        "event": event.value,
        "op": op.value if op else None,
        "actor": actor,
        "note": note,
        "from_status": from_status,
        "to_status": to_status,
        "at": now,
        "option": option,
    }


_DECISIONS = Decision.__table__  # type: ignore[attr-defined]
_INSERT_DECISION = sa.insert(_DECISIONS).returning(_DECISIONS.c.id)


def _begin_in_one(claimed: bool) -> sa.Insert:
    """``begin_decision_in_one``'s statement: the audit entry's and outbox entry's values are
    bound by their column names, the compare-and-set's as in ``_ACTION_MOVE_SEEN``."""
    outbox = Outbox.__table__  # type: ignore[attr-defined]
    moved = _ACTION_MOVE_SEEN.returning(_ACTIONS.c.id, _ACTIONS.c.version).cte("moved")
    given: dict[str, Any] = {}

    def values(table: sa.Table, names: Sequence[str]) -> list[Any]:
        return [given.setdefault(n, sa.bindparam(n, type_=table.c[n].type)) for n in names]

    card = sa.update(_CARDS).where(_CARDS.c.action_id == moved.c.id).values(dirty=True, wanted_version=moved.c.version)
    if claimed:
        card = card.values(lease_until=values(outbox, ["lease_until"])[0])

    audit = ("event", "op", "actor", "note", "from_status", "to_status", "at", "option")
    decision = (
        sa.insert(_DECISIONS)
        .from_select(("action_id", *audit), sa.select(moved.c.id, *values(_DECISIONS, audit)))
        .returning(_DECISIONS.c.id)
        .cte("decision")
    )
    queued = _QUEUED_FIELDS
    return (
        sa.insert(outbox)
        .from_select(
            ("action_id", "decision_id", *queued),
            sa.select(moved.c.id, decision.c.id, *values(outbox, queued)),
        )
        .returning(outbox.c.id, outbox.c.decision_id)
        .add_cte(card.cte("card"))
    )


_BEGUN_IN_ONE = {False: _begin_in_one(False), True: _begin_in_one(True)}


async def latest_decision(session: AsyncSession, *, action_id: int) -> Decision | None:
    """The newest audit entry worth showing on a card (anything but discovery)."""
    return (await session.exec(_LATEST_DECISION, params={"action_id": action_id})).first()


_LATEST_DECISION = (
    select(Decision)
    .where(col(Decision.action_id) == sa.bindparam("action_id"), Decision.event != AuditEvent.DISCOVERED.value)
    .order_by(col(Decision.id).desc())
    .limit(1)
)


async def latest_confirmed(session: AsyncSession, *, action_id: int) -> Decision | None:
    """The newest decision of ours the upstream accepted."""
    return (await session.exec(_LATEST_CONFIRMED, params={"action_id": action_id})).first()


_LATEST_CONFIRMED = (
    select(Decision)
    .where(col(Decision.action_id) == sa.bindparam("action_id"), Decision.event == AuditEvent.CONFIRMED.value)
    .order_by(col(Decision.id).desc())
    .limit(1)
)


@dataclass(frozen=True)
class Latest:
    """What a card shows of an action's history: its newest audit entry worth showing
    (``latest_decision``), its newest outbox entry (``latest_outbox``) and its newest
    decision the upstream accepted (``latest_confirmed``)."""

    decision: Decision | None
    outbox: Outbox | None
    confirmed: Decision | None


async def latest(session: AsyncSession, *, action_id: int) -> Latest:
    """``latest_decision``, ``latest_outbox`` and ``latest_confirmed`` in one statement."""
    row = (await session.exec(_LATEST, params={"action_id": action_id})).first()
    return Latest(*row) if row is not None else Latest(None, None, None)


def _newest(table: sa.Table, *where: Any) -> Any:
    return (
        sa.select(sa.func.max(table.c.id))
        .where(table.c.action_id == sa.bindparam("action_id"), *where)
        .scalar_subquery()
    )


_SHOWN, _CONFIRMED = aliased(Decision, name="shown"), aliased(Decision, name="confirmed")
_NEWEST_OUTBOX = aliased(Outbox, name="newest")


def _with_latest(stmt: Any) -> Any:
    """``stmt`` (a select from actions, the action's id bound as ``action_id``) joined to the
    three rows of ``Latest`` (each may be missing)."""
    return (
        stmt.outerjoin(_SHOWN, col(_SHOWN.id) == _newest(_DECISIONS, _DECISIONS.c.event != AuditEvent.DISCOVERED.value))
        .outerjoin(_NEWEST_OUTBOX, col(_NEWEST_OUTBOX.id) == _newest(Outbox.__table__))  # type: ignore[attr-defined]
        .outerjoin(
            _CONFIRMED, col(_CONFIRMED.id) == _newest(_DECISIONS, _DECISIONS.c.event == AuditEvent.CONFIRMED.value)
        )
        .where(_ACTIONS.c.id == sa.bindparam("action_id"))
        .execution_options(populate_existing=True)
    )


# ``latest``: rows of Decision's, Outbox's and Decision's columns, in that order (``store.hot``
# reads them so), for an action that exists.
_LATEST = _with_latest(select(_SHOWN, _NEWEST_OUTBOX, _CONFIRMED).select_from(_ACTIONS))


async def card_shown(session: AsyncSession, *, action_id: int) -> tuple[Card, Action, Latest] | None:
    """An action's card, the action, and ``latest``, in one statement (None: no card)."""
    row = (await session.exec(_CARD_SHOWN, params={"action_id": action_id})).first()
    if row is None:
        return None
    card, action, *latest = row
    return card, action, Latest(*latest)


# ``card_shown``: rows of Card's and Action's columns, then ``_LATEST``'s.
_CARD_SHOWN = _with_latest(
    sa.select(Card, Action, _SHOWN, _NEWEST_OUTBOX, _CONFIRMED).join(Action, col(Action.id) == col(Card.action_id))
)


async def audit_trail(session: AsyncSession, *, action_id: int) -> Sequence[Decision]:
    stmt = select(Decision).where(Decision.action_id == action_id).order_by(col(Decision.id))
    return (await session.exec(stmt)).all()


async def endorsements(session: AsyncSession, *, action_id: int) -> list[Decision]:
    """The approvals recorded toward a multi-approver decision since the action last became
    ready (an approval that failed upstream, say, starts the count again)."""
    return list((await session.exec(_ENDORSEMENTS, params={"action_id": action_id})).all())


_ENDORSEMENTS_SINCE = (
    select(sa.func.coalesce(sa.func.max(Decision.id), 0))
    .where(
        col(Decision.action_id) == sa.bindparam("action_id"),
        Decision.event != AuditEvent.ENDORSED.value,
        Decision.to_status == Status.READY.value,
    )
    .scalar_subquery()
)
_ENDORSEMENTS = (
    select(Decision)
    .where(
        col(Decision.action_id) == sa.bindparam("action_id"),
        Decision.event == AuditEvent.ENDORSED.value,
        col(Decision.id) > _ENDORSEMENTS_SINCE,
    )
    .order_by(col(Decision.id))
)


@dataclass(frozen=True)
class Endorsement:
    state: str  # "not_ready" | "duplicate" | "pending" | "complete"
    approvers: tuple[str, ...]  # distinct approvers so far, first first


async def endorse(
    session: AsyncSession, *, action_id: int, actor: str, note: str | None, required: int, now: datetime
) -> Endorsement:
    """Record one approval toward ``required`` distinct ones, under the action's row lock (so
    racing approvals count one after another). "complete" means this one was the last needed:
    the caller then begins the approve decision in the same transaction."""
    action = await get_action(session, action_id=action_id, lock=True)
    if action is None or action.status != Status.READY.value:
        return Endorsement("not_ready", ())
    approvers = tuple(dict.fromkeys(d.actor for d in await endorsements(session, action_id=action_id)))
    if actor in approvers:
        return Endorsement("duplicate", approvers)
    await append_audit(
        session,
        action_id=action_id,
        event=AuditEvent.ENDORSED,
        op=Op.APPROVE,
        actor=actor,
        note=note,
        from_status=Status.READY.value,
        to_status=Status.READY.value,
        now=now,
    )
    approvers += (actor,)
    if len(approvers) >= required:
        return Endorsement("complete", approvers)
    action.version += 1
    session.add(action)
    await _card_dirty(session, action_id=action_id, version=action.version)
    return Endorsement("pending", approvers)


# ---- outbox -----------------------------------------------------------------------------


async def outbox_keyed(session: AsyncSession, *, action_id: int, idempotency_key: str) -> Outbox | None:
    """The action's outbox entry with this key, if a decision was recorded under it."""
    stmt = select(Outbox).where(Outbox.action_id == action_id, Outbox.idempotency_key == idempotency_key)
    return (await session.exec(stmt)).first()


async def latest_outbox(session: AsyncSession, *, action_id: int) -> Outbox | None:
    return (await session.exec(_LATEST_OUTBOX, params={"action_id": action_id})).first()


_LATEST_OUTBOX = (
    select(Outbox)
    .where(col(Outbox.action_id) == sa.bindparam("action_id"))
    .order_by(col(Outbox.id).desc())
    .limit(1)
    .execution_options(populate_existing=True)
)


async def claim_outbox(
    session: AsyncSession, *, now: datetime, lease: timedelta, limit: int, sources: Sequence[str] | None = None
) -> list[Outbox]:
    """Lease up to ``limit`` due entries (of actions of ``sources``, where given) to this
    worker. Rows another worker holds are skipped (``SKIP LOCKED`` on PostgreSQL; SQLite's
    write lock serialises claims)."""
    of_sources = (
        col(Outbox.action_id).in_(select(Action.id).where(col(Action.source).in_(list(sources))))
        if sources is not None
        else sa.true()
    )
    stmt = (
        select(Outbox)
        .where(
            of_sources,
            Outbox.state == OutboxState.PENDING.value,
            col(Outbox.next_attempt_at) <= now,
            sa.or_(col(Outbox.lease_until).is_(None), col(Outbox.lease_until) < now),
        )
        .order_by(col(Outbox.next_attempt_at), col(Outbox.id))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    rows = list((await session.exec(stmt)).all())
    for row in rows:
        row.lease_until = now + lease
        session.add(row)
    return rows


async def renew_outbox_lease(session: AsyncSession, *, outbox_id: int, held_until: datetime, until: datetime) -> bool:
    """Extend this worker's lease on an entry, if it is still this worker's (no one claimed it
    since: the lease is still the one it was given)."""
    result = await session.exec(
        sa.update(Outbox)
        .where(
            col(Outbox.id) == outbox_id,
            col(Outbox.state) == OutboxState.PENDING.value,
            col(Outbox.lease_until) == held_until,
        )
        .values(lease_until=until)
    )
    return result.rowcount == 1


async def next_outbox_due(session: AsyncSession) -> datetime | None:
    stmt = select(sa.func.min(Outbox.next_attempt_at)).where(Outbox.state == OutboxState.PENDING.value)
    return (await session.exec(stmt)).first()


async def get_outbox(session: AsyncSession, *, outbox_id: int) -> Outbox | None:
    return (await session.exec(_OUTBOX_BY_ID_LOCKED, params={"p_outbox": outbox_id})).first()


_OUTBOX_BY_ID_LOCKED = (
    select(Outbox)
    .where(col(Outbox.id) == sa.bindparam("p_outbox"))
    .with_for_update()
    .execution_options(populate_existing=True)
)


async def set_outbox_identifier(session: AsyncSession, *, outbox_id: int, identifier: str) -> None:
    await session.exec(
        sa.update(Outbox)
        .where(col(Outbox.id) == outbox_id, col(Outbox.actor_identifier).is_(None))
        .values(actor_identifier=identifier)
    )


async def set_outbox_body(session: AsyncSession, *, outbox_id: int, body: str) -> str:
    """Store the body built for a decision, unless one is stored already (another replica
    built it first); returns the one stored, which every attempt then sends."""
    await session.exec(
        sa.update(Outbox)
        .where(col(Outbox.id) == outbox_id, col(Outbox.request_body).is_(None))
        .values(request_body=body)
    )
    stored = (await session.exec(select(Outbox.request_body).where(Outbox.id == outbox_id))).first()
    return stored if stored is not None else body


async def _settle(
    session: AsyncSession, *, outbox_id: int, state: OutboxState, error: str | None, now: datetime
) -> tuple[Outbox, Action] | None:
    """Close a pending outbox entry and lock its action, or None if it was settled already."""
    outbox = await get_outbox(session, outbox_id=outbox_id)
    if outbox is None or outbox.state != OutboxState.PENDING.value:
        return None
    action = await get_action(session, action_id=outbox.action_id, lock=True)
    assert action is not None
    # Written by ``_moved``, which every caller goes on to (Core statements, not a flush).
    for key, value in (("state", state.value), ("completed_at", now), ("lease_until", None), ("last_error", error)):
        set_committed_value(outbox, key, value)
    return outbox, action


def _update_by_id(table: sa.Table, names: Sequence[str]) -> sa.Update:
    """``UPDATE table SET name = :p_name, ... WHERE id = :p_id``, each parameter typed as its column."""
    return (
        sa.update(table)
        .where(table.c.id == sa.bindparam("p_id"))
        .values({name: sa.bindparam(f"p_{name}", type_=table.c[name].type) for name in names})
    )


_OUTBOX_CLOSED_FIELDS = ("state", "completed_at", "lease_until", "last_error")
_OUTBOX_CLOSED = _update_by_id(Outbox.__table__, _OUTBOX_CLOSED_FIELDS)  # type: ignore[attr-defined]
# What a landing (or a failure, or a conflict) may change on the action.
_ACTION_MOVED_FIELDS = (
    "status",
    "last_error",
    "version",
    "updated_at",
    "refresh_at",
    "refresh_misses",
    "upstream_status",
    "decided_at",
    "decided_by",
    "options",
)
_ACTION_MOVED = _update_by_id(_ACTIONS, _ACTION_MOVED_FIELDS)


async def _moved(
    session: AsyncSession,
    *,
    outbox: Outbox,
    action: Action,
    status: str,
    error: str | None,
    event: AuditEvent,
    actor: str,
    note: str | None,
    now: datetime,
    claim: Claim | None = None,
) -> Action:
    """Put the action in ``status`` and append the audit entry saying why."""
    before = action.status
    action.status = status
    action.last_error = error
    action.version += 1
    action.updated_at = now
    action.refresh_at, action.refresh_misses = None, 0  # where it is read again: soon
    # Both rows as Core UPDATEs, the objects first marked as stored, so that no flush (an
    # autoflush before the statements included) writes these changes a second time.
    moved = {k: getattr(action, k) for k in _ACTION_MOVED_FIELDS}
    for key, value in moved.items():
        set_committed_value(action, key, value)
    await session.exec(
        _OUTBOX_CLOSED, params={"p_id": outbox.id, **{f"p_{k}": getattr(outbox, k) for k in _OUTBOX_CLOSED_FIELDS}}
    )
    await session.exec(_ACTION_MOVED, params={"p_id": action.id, **{f"p_{k}": v for k, v in moved.items()}})
    await _card_dirty(session, action_id=action.id or 0, version=action.version, claim=claim)
    entry = await append_audit(
        session,
        action_id=action.id or 0,
        event=event,
        op=Op(outbox.op),
        actor=actor,
        note=note,
        from_status=before,
        to_status=status,
        now=now,
        option=outbox.option_label,
    )
    await _status_notice(session, decision=entry, now=now, error=error, claim=claim)
    return action


async def outbox_delivered(
    session: AsyncSession,
    *,
    outbox_id: int,
    upstream: UpstreamAction | None,
    outcome: Status,
    now: datetime,
    claim: Claim | None = None,
    note: str | None = None,
) -> Action | None:
    """The upstream acted on the decision: land the action in ``outcome`` (the decision's),
    or in the state the upstream reports, where it reports one. ``note``: how it landed, where
    that is worth saying (added to the person's own note in the audit trail and on the card)."""
    settled = await _settle(session, outbox_id=outbox_id, state=OutboxState.DONE, error=None, now=now)
    if settled is None:
        return None
    outbox, action = settled
    if upstream is not None:
        outcome = upstream.status if upstream.status not in IN_FLIGHT else outcome
        action.upstream_status = upstream.upstream_status or action.upstream_status
        action.decided_at = upstream.decided_at or action.decided_at
        action.decided_by = upstream.decided_by or action.decided_by
        if upstream.options is not None:
            action.options = [o.to_json() for o in upstream.options]
    said = " — ".join(n for n in (outbox.note, note) if n) or None
    return await _moved(
        session,
        outbox=outbox,
        action=action,
        status=outcome.value,
        error=None,
        event=AuditEvent.CONFIRMED,
        actor=outbox.actor,
        note=said,
        now=now,
        claim=claim,
    )


async def outbox_conflict(
    session: AsyncSession, *, outbox_id: int, upstream: UpstreamAction, now: datetime, claim: Claim | None = None
) -> Action | None:
    """The upstream refused (409) and shows another state: adopt it; the decision is moot."""
    error = f"conflict: upstream shows {upstream.status.value}"
    settled = await _settle(session, outbox_id=outbox_id, state=OutboxState.DONE, error=error, now=now)
    if settled is None:
        return None
    outbox, action = settled
    for key, value in _upstream_fields(upstream).items():
        setattr(action, key, value)
    return await _moved(
        session,
        outbox=outbox,
        action=action,
        status=upstream.status.value,
        error=None,
        event=AuditEvent.CONFLICT,
        actor="upstream",
        note=upstream.decided_by,
        now=now,
        claim=claim,
    )


async def outbox_accepted(session: AsyncSession, *, outbox_id: int, reference: str, next_attempt_at: datetime) -> None:
    """The upstream accepted the decision and works on it: follow ``reference`` from now on
    (the card says so: it is re-rendered)."""
    result = await session.exec(
        sa.update(Outbox)
        .where(col(Outbox.id) == outbox_id, col(Outbox.state) == OutboxState.PENDING.value)
        .values(reference=reference, attempts=0, last_error=None, next_attempt_at=next_attempt_at, lease_until=None)
    )
    if result.rowcount == 1:
        outbox = await session.get(Outbox, outbox_id)
        if outbox is not None:
            await _bump(session, action_id=outbox.action_id)


async def outbox_retry_later(
    session: AsyncSession, *, outbox_id: int, error: str, next_attempt_at: datetime, count: bool = True
) -> None:
    """Try the entry again at ``next_attempt_at``; ``count``: this was a failed attempt (not
    a read of a decision still running upstream)."""
    attempts = Outbox.attempts + 1 if count else Outbox.attempts
    await session.exec(
        sa.update(Outbox)
        .where(col(Outbox.id) == outbox_id, col(Outbox.state) == OutboxState.PENDING.value)
        .values(attempts=attempts, last_error=error, next_attempt_at=next_attempt_at, lease_until=None)
    )


async def outbox_failed(
    session: AsyncSession, *, outbox_id: int, error: str, now: datetime, claim: Claim | None = None
) -> Action | None:
    """The upstream call failed for good: put the action back where the decision found it,
    with the error on the card and a Retry offered."""
    settled = await _settle(session, outbox_id=outbox_id, state=OutboxState.FAILED, error=error, now=now)
    if settled is None:
        return None
    outbox, action = settled
    outbox.attempts += 1
    decision = await session.get(Decision, outbox.decision_id)
    status = action.status
    if Status(action.status) in IN_FLIGHT and decision is not None and decision.from_status:
        status = decision.from_status
    return await _moved(
        session,
        outbox=outbox,
        action=action,
        status=status,
        error=error,
        event=AuditEvent.FAILED,
        actor="signoff",
        note=error,
        now=now,
        claim=claim,
    )


# ---- cards ------------------------------------------------------------------------------


def _card_due(now: datetime) -> Any:
    return sa.and_(
        sa.or_(col(Card.lease_until).is_(None), col(Card.lease_until) < now),
        sa.or_(col(Card.next_attempt_at).is_(None), col(Card.next_attempt_at) <= now),
        sa.or_(
            col(Card.state).in_([CardState.PENDING.value, CardState.POSTING.value]),
            sa.and_(col(Card.dirty), col(Card.state) != CardState.HELD.value),
        ),
    )


async def claim_cards(
    session: AsyncSession, *, now: datetime, lease: timedelta, limit: int
) -> list[tuple[Card, Action]]:
    """Lease cards that need posting or re-rendering to this worker (rows another worker
    holds are skipped)."""
    stmt = (
        select(Card, Action)
        .join(Action, col(Action.id) == col(Card.action_id))
        .where(_card_due(now))
        .order_by(col(Card.id))
        .limit(limit)
        .with_for_update(of=Card, skip_locked=True)
    )
    rows = [(card, action) for card, action in (await session.exec(stmt)).all()]
    for card, _action in rows:
        card.lease_until = now + lease
        card.attempts += 1
        session.add(card)
    return rows


async def mark_card_posting(session: AsyncSession, *, card_id: int) -> None:
    await session.exec(
        sa.update(Card)
        .where(col(Card.id) == card_id, col(Card.state) == CardState.PENDING.value)
        .values(state=CardState.POSTING.value)
    )


def _still_dirty(version: int) -> Any:
    """Whether the action changed again after the version just shown (read from the card's
    own row, so that PostgreSQL re-checks it against a change committed meanwhile)."""
    return col(Card.wanted_version) > version


async def card_posted(session: AsyncSession, *, card_id: int, ts: str, version: int, now: datetime) -> None:
    await session.exec(
        sa.update(Card)
        .where(col(Card.id) == card_id)
        .values(
            ts=ts,
            state=CardState.POSTED.value,
            posted_at=now,
            rendered_version=version,
            dirty=_still_dirty(version),
            lease_until=None,
            attempts=0,
            next_attempt_at=None,
            last_error=None,
        )
    )


async def card_rendered(
    session: AsyncSession, *, card_id: int, version: int, keep_lease_if_newer: bool = False
) -> bool:
    """The card shows ``version``. Returns whether a newer one is wanted already. With
    ``keep_lease_if_newer`` the lease stays while it is: the caller renders that one too (so
    no sweep renders it meanwhile, twice)."""
    params = {"card_id": card_id, "version": version}
    result = await session.exec(_CARD_RENDERED_KEEP if keep_lease_if_newer else _CARD_RENDERED, params=params)
    wanted = result.scalar_one_or_none()
    return wanted is not None and wanted > version


def _card_rendered(*, keep_lease_if_newer: bool) -> Any:
    # A Core UPDATE on the table (no ORM session bookkeeping), answering the wanted version.
    c = _CARDS.c
    version = sa.bindparam("version", type_=sa.Integer)
    newer = c.wanted_version > version
    return (
        sa.update(_CARDS)
        .where(c.id == sa.bindparam("card_id"))
        .values(
            rendered_version=sa.case((c.rendered_version > version, c.rendered_version), else_=version),
            dirty=newer,
            lease_until=sa.case((newer, c.lease_until), else_=None) if keep_lease_if_newer else None,
            attempts=0,
            next_attempt_at=None,
            last_error=None,
        )
        .returning(c.wanted_version)
    )


_CARD_RENDERED = _card_rendered(keep_lease_if_newer=False)
_CARD_RENDERED_KEEP = _card_rendered(keep_lease_if_newer=True)


async def card_failed(session: AsyncSession, *, card_id: int, error: str, next_attempt_at: datetime) -> None:
    params = {"p_id": card_id, "p_last_error": error, "p_next_attempt_at": next_attempt_at, "p_lease_until": None}
    await session.exec(_CARD_FAILED, params=params)


_CARD_FAILED = _update_by_id(_CARDS, ("last_error", "next_attempt_at", "lease_until"))


async def card_for_message(session: AsyncSession, *, channel: str, ts: str) -> Card | None:
    stmt = select(Card).where(Card.channel == channel, Card.ts == ts)
    return (await session.exec(stmt)).first()


async def card_for_action(session: AsyncSession, *, action_id: int) -> Card | None:
    return (await session.exec(_CARD_FOR_ACTION, params={"action_id": action_id})).first()


_CARD_FOR_ACTION = select(Card).where(col(Card.action_id) == sa.bindparam("action_id"))


async def _status_notice(
    session: AsyncSession, *, decision: Decision, now: datetime, error: str | None = None, claim: Claim | None = None
) -> None:
    """Tell the card's thread about a state change that landed (never a request in flight)."""
    assert decision.id is not None
    await add_notice(
        session,
        action_id=decision.action_id,
        key=f"audit:{decision.id}",
        kind="status",
        now=now,
        claim=claim,
        payload={
            "event": decision.event,
            "op": decision.op,
            "actor": decision.actor,
            "note": decision.note,
            "from_status": decision.from_status,
            "to_status": decision.to_status,
            "error": error,
        },
    )


# ---- notices ----------------------------------------------------------------------------


async def add_notice(
    session: AsyncSession,
    *,
    action_id: int,
    key: str,
    kind: str,
    payload: dict[str, Any],
    now: datetime,
    broadcast: bool = False,
    channel: str | None = None,
    claim: Claim | None = None,
) -> bool:
    """Owe a message in the action's card thread (or at the top of ``channel``), once per
    ``key``; False if already owed, or not owed at all. Under a ``claim`` it is leased to this
    process, which posts it at once (counted as a first attempt: a later sweep looks before
    posting again).

    Nothing is owed in the thread of a card held back (an action with nothing to decide, such
    as an API action whose type needs no approval): there is no thread to post it in, and it
    would wait for one for ever. Such an action's changes are in the audit trail (and, for
    the API's, in what its client reads)."""
    if channel is None:
        held = await session.exec(_HELD_CARD, params={"p_action": action_id})
        if held.first() is not None:
            return False
    result = await session.exec(
        _INSERT_NOTICE[session.get_bind().dialect.name == "postgresql"],
        params={
            "action_id": action_id,
            "key": key,
            "kind": kind,
            "payload": payload,
            "broadcast": broadcast,
            "channel": channel,
            "state": NoticeState.PENDING.value,
            "attempts": 1 if claim is not None else 0,
            "next_attempt_at": now,
            "created_at": now,
            "lease_until": claim.until if claim is not None else None,
        },
    )
    notice_id = result.scalar_one_or_none()
    if notice_id is not None and claim is not None:
        claim.notices.append(notice_id)
    return notice_id is not None


_HELD_CARD = select(Card.id).where(
    col(Card.action_id) == sa.bindparam("p_action"), col(Card.state) == CardState.HELD.value
)
_NOTICES = Notice.__table__  # type: ignore[attr-defined]
# Built once per dialect (statement building costs more than running it); [is PostgreSQL].
_INSERT_NOTICE = {
    postgres: (postgresql.insert if postgres else sqlite.insert)(_NOTICES)
    .on_conflict_do_nothing(index_elements=["key"])
    .returning(_NOTICES.c.id)
    for postgres in (False, True)
}


async def claim_notices(
    session: AsyncSession, *, now: datetime, lease: timedelta, limit: int
) -> list[tuple[Notice, Card, str]]:
    """Lease due notices whose card (or the digest listing it) is posted, oldest first, each
    with the message whose thread it belongs in."""
    thread = sa.func.coalesce(col(Card.ts), col(Digest.ts))
    stmt = (
        select(Notice, Card, thread)
        .join(Card, col(Card.action_id) == col(Notice.action_id))
        .outerjoin(Digest, col(Digest.id) == col(Card.digest_id))
        .where(
            col(Notice.state).in_([NoticeState.PENDING.value, NoticeState.POSTING.value]),
            col(Notice.next_attempt_at) <= now,
            sa.or_(col(Notice.lease_until).is_(None), col(Notice.lease_until) < now),
            thread.is_not(None),
        )
        .order_by(col(Notice.id))
        .limit(limit)
        .with_for_update(of=Notice, skip_locked=True)
    )
    rows = [(notice, card, str(ts)) for notice, card, ts in (await session.exec(stmt)).all()]
    for notice, _card, _ts in rows:
        notice.lease_until = now + lease
        notice.attempts += 1
        if notice.state == NoticeState.PENDING.value:
            notice.state = NoticeState.POSTING.value
        session.add(notice)
    return rows


async def notices_by_id(session: AsyncSession, *, notice_ids: Sequence[int]) -> list[Notice]:
    """The given notices still owed (not posted or given up), oldest first."""
    if not notice_ids:
        return []
    return list((await session.exec(_NOTICES_BY_ID, params={"p_ids": list(notice_ids)})).all())


_NOTICES_BY_ID = (
    select(Notice)
    .where(
        col(Notice.id).in_(sa.bindparam("p_ids", expanding=True)),
        col(Notice.state).in_([NoticeState.PENDING.value, NoticeState.POSTING.value]),
    )
    .order_by(col(Notice.id))
)


async def release_claim(session: AsyncSession, *, card_id: int | None, notice_ids: Sequence[int]) -> None:
    """Hand work claimed for this process back to the sweeps, now."""
    if card_id is not None:
        await session.exec(_CARD_RELEASED, params={"p_id": card_id, "p_lease_until": None})
    if notice_ids:
        await session.exec(_NOTICES_RELEASED, params={"p_ids": list(notice_ids)})


_CARD_RELEASED = _update_by_id(_CARDS, ("lease_until",))
_NOTICES_RELEASED = (
    sa.update(_NOTICES).where(_NOTICES.c.id.in_(sa.bindparam("p_ids", expanding=True))).values(lease_until=None)
)


async def notice_posted(session: AsyncSession, *, notice_id: int, ts: str, now: datetime) -> None:
    await session.exec(_NOTICE_POSTED, params={"p_id": notice_id, "p_ts": ts, "p_now": now})


_NOTICE_POSTED = (
    sa.update(_NOTICES)
    .where(_NOTICES.c.id == sa.bindparam("p_id"))
    .values(
        state=NoticeState.POSTED.value,
        ts=sa.bindparam("p_ts"),
        posted_at=sa.bindparam("p_now", type_=UTCDateTime()),
        lease_until=None,
        last_error=None,
    )
)


async def notice_retry_later(session: AsyncSession, *, notice_id: int, error: str, next_attempt_at: datetime) -> None:
    params = {"p_id": notice_id, "p_last_error": error, "p_next_attempt_at": next_attempt_at, "p_lease_until": None}
    await session.exec(_NOTICE_RETRY_LATER, params=params)


_NOTICE_RETRY_LATER = _update_by_id(_NOTICES, ("last_error", "next_attempt_at", "lease_until"))


async def notice_failed(session: AsyncSession, *, notice_id: int, error: str) -> None:
    params = {"p_id": notice_id, "p_state": NoticeState.FAILED.value, "p_last_error": error, "p_lease_until": None}
    await session.exec(_NOTICE_FAILED, params=params)


_NOTICE_FAILED = _update_by_id(_NOTICES, ("state", "last_error", "lease_until"))


async def posted_notices(session: AsyncSession, *, action_id: int, kinds: Iterable[str]) -> Sequence[Notice]:
    return (await session.exec(_POSTED_NOTICES, params={"p_action": action_id, "p_kinds": list(kinds)})).all()


_POSTED_NOTICES = (
    select(Notice)
    .where(
        col(Notice.action_id) == sa.bindparam("p_action"),
        col(Notice.kind).in_(sa.bindparam("p_kinds", expanding=True)),
        Notice.state == NoticeState.POSTED.value,
        col(Notice.ts).is_not(None),
    )
    .order_by(col(Notice.id))
)


async def message_shows(session: AsyncSession, *, channel: str, ts: str, action_id: int) -> bool:
    """Whether a Signoff message shows this action: its card, a notice about it, an
    escalation of it, or a digest that lists it."""
    if await message_action(session, channel=channel, ts=ts) == action_id:
        return True
    params = {"action_id": action_id, "channel": channel, "ts": ts}
    return (await session.exec(_DIGEST_LISTS, params=params)).first() is not None


async def message_action(session: AsyncSession, *, channel: str, ts: str) -> int | None:
    """The action a Signoff message shows: its card, a notice in the card's thread, or an
    escalation posted to another channel."""
    params = {"channel": channel, "ts": ts}
    found = (await session.exec(_CARD_MESSAGE_ACTION, params=params)).first()
    if found is not None:
        return found
    return (await session.exec(_NOTICE_MESSAGE_ACTION, params=params)).first()


# A click's check (is this message one of ours, showing this action?): built once.
_CARD_MESSAGE_ACTION = select(Card.action_id).where(
    col(Card.channel) == sa.bindparam("channel"), col(Card.ts) == sa.bindparam("ts")
)
# An action, and whether its own card is the message (channel, ts): a click's check, one read.
_ACTION_CARD_AT = select(
    Action,
    sa.exists()
    .where(
        col(Card.action_id) == col(Action.id),
        col(Card.channel) == sa.bindparam("channel"),
        col(Card.ts) == sa.bindparam("ts"),
    )
    .label("card_at"),
).where(col(Action.id) == sa.bindparam("action_id"))
_NOTICE_MESSAGE_ACTION = (
    select(Notice.action_id)
    .join(Card, col(Card.action_id) == col(Notice.action_id))
    .where(
        col(Notice.ts) == sa.bindparam("ts"),
        sa.func.coalesce(col(Notice.channel), col(Card.channel)) == sa.bindparam("channel"),
    )
)
_DIGEST_LISTS = (
    select(Card.id)
    .join(Digest, col(Digest.id) == col(Card.digest_id))
    .where(
        col(Card.action_id) == sa.bindparam("action_id"),
        col(Digest.ts) == sa.bindparam("ts"),
        col(Digest.channel) == sa.bindparam("channel"),
    )
)


# ---- reminders --------------------------------------------------------------------------


async def undecided(session: AsyncSession, *, after_id: int, limit: int) -> list[tuple[Card, Action]]:
    """Posted cards of actions still awaiting a decision, by action id after ``after_id``."""
    stmt = (
        select(Card, Action)
        .join(Action, col(Action.id) == col(Card.action_id))
        .outerjoin(Digest, col(Digest.id) == col(Card.digest_id))
        .where(
            Action.status == Status.READY.value,
            sa.func.coalesce(col(Card.ts), col(Digest.ts)).is_not(None),
            col(Action.id) > after_id,
        )
        .order_by(col(Action.id))
        .limit(limit)
    )
    return [(card, action) for card, action in (await session.exec(stmt)).all()]


async def mark_reminded(session: AsyncSession, *, card_id: int, now: datetime, escalation: bool = False) -> bool:
    """Claim the card's one reminder (or escalation); False if it was sent already."""
    column = Card.escalated_at if escalation else Card.reminded_at
    result = await session.exec(
        sa.update(Card).where(col(Card.id) == card_id, col(column).is_(None)).values({column: now})
    )
    return result.rowcount == 1


async def expire_action(session: AsyncSession, *, action_id: int, after: timedelta, now: datetime) -> bool:
    """Nobody decided within ``after``: stop offering the action (compare-and-set from ready)."""
    action = await get_action(session, action_id=action_id, lock=True)
    if action is None or action.status != Status.READY.value:
        return False
    action.status = Status.EXPIRED.value
    action.version += 1
    action.updated_at = now
    session.add(action)
    await _card_dirty(session, action_id=action_id, version=action.version)
    hours = after.total_seconds() / 3600
    entry = await append_audit(
        session,
        action_id=action_id,
        event=AuditEvent.EXPIRED,
        actor="signoff",
        note=f"no decision within {hours:g}h",
        from_status=Status.READY.value,
        to_status=Status.EXPIRED.value,
        now=now,
    )
    await _status_notice(session, decision=entry, now=now)
    return True


# ---- watches ----------------------------------------------------------------------------


async def actions_to_watch(session: AsyncSession, *, statuses: Iterable[Status], limit: int) -> Sequence[Action]:
    """Approved or running actions whose watch is not set up yet."""
    stmt = (
        select(Action)
        .where(col(Action.status).in_([s.value for s in statuses]), col(Action.watch_started_at).is_(None))
        .order_by(col(Action.id))
        .limit(limit)
    )
    return (await session.exec(stmt)).all()


@dataclass(frozen=True)
class NewWatch:
    position: int
    condition: str
    rule: dict[str, Any]
    metric: str
    ends_at: datetime | None


async def start_watch(
    session: AsyncSession, *, action_id: int, started_at: datetime, watches: Sequence[NewWatch], now: datetime
) -> bool:
    """Set up an action's watch once: False if another worker did it first."""
    result = await session.exec(
        sa.update(Action)
        .where(col(Action.id) == action_id, col(Action.watch_started_at).is_(None))
        .values(watch_started_at=started_at)
    )
    if result.rowcount != 1:
        return False
    for w in watches:
        session.add(
            Watch(
                action_id=action_id,
                position=w.position,
                condition=w.condition,
                rule=w.rule,
                metric=w.metric,
                active=True,
                started_at=started_at,
                ends_at=w.ends_at,
                reading=Reading.PENDING.value,
                next_check_at=now,
            )
        )
    if watches:
        await _bump(session, action_id=action_id)
    return True


async def begin_watch(
    session: AsyncSession,
    *,
    action: Action,
    started_at: datetime,
    watches: Sequence[NewWatch],
    now: datetime,
    reading: CheckResult | None = None,
) -> None:
    """Set up an action's watch in the transaction that changed it (its row locked and its
    card already due for re-rendering): the watch rows, and when it started; ``reading``:
    what is already known of every rule (no metrics source at all, say)."""
    assert action.id is not None
    await session.exec(_WATCH_STARTED, params={"p_action": action.id, "p_started": started_at})
    set_committed_value(action, "watch_started_at", started_at)
    if watches:
        await session.exec(
            _INSERT_WATCH,
            params=[
                {
                    "action_id": action.id,
                    "position": w.position,
                    "condition": w.condition,
                    "rule": w.rule,
                    "metric": w.metric,
                    "active": True,
                    "started_at": started_at,
                    "ends_at": w.ends_at,
                    "reading": (reading.reading if reading else Reading.PENDING).value,
                    "reading_detail": reading.detail if reading else None,
                    "next_check_at": now,
                    "tripped": False,
                    "trips": 0,
                }
                for w in watches
            ],
        )


_WATCHES = Watch.__table__  # type: ignore[attr-defined]
_INSERT_WATCH = sa.insert(_WATCHES)
_WATCH_STARTED = (
    sa.update(_ACTIONS)
    .where(_ACTIONS.c.id == sa.bindparam("p_action"))
    .values(watch_started_at=sa.bindparam("p_started", type_=UTCDateTime()))
)


async def _bump(session: AsyncSession, *, action_id: int) -> None:
    """Something the card shows changed without the action's state changing: re-render it."""
    version = (await session.exec(_ACTION_BUMPED, params={"p_action": action_id})).scalar_one_or_none()
    if version is not None:
        await _card_dirty(session, action_id=action_id, version=version)


_ACTION_BUMPED = (
    sa.update(_ACTIONS)
    .where(_ACTIONS.c.id == sa.bindparam("p_action"))
    .values(version=_ACTIONS.c.version + 1)
    .returning(_ACTIONS.c.version)
)


async def claim_watches(
    session: AsyncSession, *, now: datetime, lease: timedelta, limit: int
) -> list[tuple[Watch, Action]]:
    """Lease due watches to this worker; rows another worker holds are skipped."""
    found = await session.exec(_WATCHES_DUE, params={"p_now": now, "p_limit": limit})
    rows = [(watch, action) for watch, action in found.all()]
    if rows:
        until = now + lease
        await session.exec(_WATCHES_LEASED, params={"p_ids": [w.id for w, _a in rows], "p_until": until})
        for watch, _action in rows:
            set_committed_value(watch, "lease_until", until)
    return rows


_WATCHES_DUE = (
    select(Watch, Action)
    .join(Action, col(Action.id) == col(Watch.action_id))
    .where(
        col(Watch.active),
        col(Watch.next_check_at) <= sa.bindparam("p_now", type_=UTCDateTime()),
        sa.or_(col(Watch.lease_until).is_(None), col(Watch.lease_until) < sa.bindparam("p_now", type_=UTCDateTime())),
    )
    .order_by(col(Watch.next_check_at), col(Watch.id))
    .limit(sa.bindparam("p_limit", type_=sa.Integer()))
    .with_for_update(of=Watch, skip_locked=True)
)
_WATCHES_LEASED = (
    sa.update(_WATCHES)
    .where(_WATCHES.c.id.in_(sa.bindparam("p_ids", expanding=True)))
    .values(lease_until=sa.bindparam("p_until", type_=UTCDateTime()))
)


async def get_watch(session: AsyncSession, *, watch_id: int) -> Watch | None:
    return (await session.exec(_WATCH_BY_ID_LOCKED, params={"p_watch": watch_id})).first()


_WATCH_BY_ID_LOCKED = (
    select(Watch)
    .where(col(Watch.id) == sa.bindparam("p_watch"))
    .with_for_update()
    .execution_options(populate_existing=True)
)


async def watches_for(session: AsyncSession, *, action_id: int) -> Sequence[Watch]:
    return (await session.exec(_WATCHES_FOR, params={"p_action": action_id})).all()


_WATCHES_FOR = select(Watch).where(col(Watch.action_id) == sa.bindparam("p_action")).order_by(col(Watch.position))


@dataclass(frozen=True)
class CheckResult:
    """What one check of a watch found, to be written back in one transaction."""

    reading: Reading
    detail: str | None = None
    value: float | None = None
    observed_at: datetime | None = None
    baseline: float | None = None  # set on the first fresh value, for relative rules
    tripped: bool | None = None  # None: not evaluated (no fresh value); keep the trip state
    ended: str | None = None  # stop watching, for this reason


async def record_check(
    session: AsyncSession, *, watch_id: int, result: CheckResult, now: datetime, next_check_at: datetime
) -> tuple[Watch, str | None] | None:
    """Write one check back. Returns the watch and its transition ("tripped", "recovered",
    "ended", or None), or None if the watch is gone or ended meanwhile. The trip flag is
    compared and set here, under the row lock: a trip is reported once however many workers
    looked."""
    watch = await get_watch(session, watch_id=watch_id)
    if watch is None or not watch.active:
        return None
    shown_before = (watch.reading, watch.tripped, watch.baseline is None, watch.active)
    transition: str | None = None
    watch.reading = result.reading.value
    watch.reading_detail = result.detail
    watch.checked_at = now
    if result.value is not None:
        watch.last_value = result.value
        watch.last_observed_at = result.observed_at
    if result.baseline is not None and watch.baseline is None:
        watch.baseline = result.baseline
        watch.baseline_at = result.observed_at or now
    if result.tripped is True and not watch.tripped:
        watch.tripped, watch.trips, watch.tripped_at = True, watch.trips + 1, now
        transition = "tripped"
    elif result.tripped is False and watch.tripped:
        watch.tripped = False
        transition = "recovered"
    if result.ended is not None:
        watch.active, watch.ended = False, result.ended
        transition = transition or "ended"
    watch.next_check_at = next_check_at
    watch.lease_until = None
    # A Core UPDATE of the row, the object first marked as stored (no flush writes it again).
    checked = {k: getattr(watch, k) for k in _WATCH_CHECKED_FIELDS}
    for key, value in checked.items():
        set_committed_value(watch, key, value)
    await session.exec(_WATCH_CHECKED, params={"p_id": watch.id, **{f"p_{k}": v for k, v in checked.items()}})
    if (watch.reading, watch.tripped, watch.baseline is None, watch.active) != shown_before:
        await _bump(session, action_id=watch.action_id)
    return watch, transition


# What a check may change on its watch.
_WATCH_CHECKED_FIELDS = (
    "reading",
    "reading_detail",
    "checked_at",
    "last_value",
    "last_observed_at",
    "baseline",
    "baseline_at",
    "tripped",
    "trips",
    "tripped_at",
    "active",
    "ended",
    "next_check_at",
    "lease_until",
)
_WATCH_CHECKED = _update_by_id(_WATCHES, _WATCH_CHECKED_FIELDS)


# ---- digests ----------------------------------------------------------------------------


async def create_digest(session: AsyncSession, *, channel: str, now: datetime) -> Digest:
    digest = Digest(channel=channel, state=CardState.PENDING.value, dirty=False, attempts=0, created_at=now)
    session.add(digest)
    await session.flush()
    return digest


async def claim_digests(session: AsyncSession, *, now: datetime, lease: timedelta, limit: int) -> list[Digest]:
    """Lease digests to post or re-render. Claiming clears ``dirty``: a change after this
    sets it again, and the digest is rendered once more."""
    stmt = (
        select(Digest)
        .where(
            sa.or_(col(Digest.state).in_([CardState.PENDING.value, CardState.POSTING.value]), col(Digest.dirty)),
            sa.or_(col(Digest.lease_until).is_(None), col(Digest.lease_until) < now),
            sa.or_(col(Digest.next_attempt_at).is_(None), col(Digest.next_attempt_at) <= now),
        )
        .order_by(col(Digest.id))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    rows = list((await session.exec(stmt)).all())
    for digest in rows:
        digest.lease_until = now + lease
        digest.attempts += 1
        digest.dirty = False
        if digest.state == CardState.PENDING.value:
            digest.state = CardState.POSTING.value
        session.add(digest)
    return rows


async def digest_items(session: AsyncSession, *, digest_id: int) -> list[Action]:
    stmt = (
        select(Action)
        .join(Card, col(Card.action_id) == col(Action.id))
        .where(Card.digest_id == digest_id)
        .order_by(col(Action.id))
    )
    return list((await session.exec(stmt)).all())


async def digest_posted(session: AsyncSession, *, digest_id: int, ts: str) -> None:
    await session.exec(
        sa.update(Digest)
        .where(col(Digest.id) == digest_id)
        .values(
            ts=ts,
            state=CardState.POSTED.value,
            lease_until=None,
            attempts=0,
            next_attempt_at=None,
            last_error=None,
        )
    )


async def digest_rendered(session: AsyncSession, *, digest_id: int) -> None:
    await session.exec(
        sa.update(Digest)
        .where(col(Digest.id) == digest_id)
        .values(
            lease_until=None,
            attempts=0,
            next_attempt_at=None,
            last_error=None,
        )
    )


async def digest_failed(session: AsyncSession, *, digest_id: int, error: str, next_attempt_at: datetime) -> None:
    await session.exec(
        sa.update(Digest)
        .where(col(Digest.id) == digest_id)
        .values(
            last_error=error,
            next_attempt_at=next_attempt_at,
            lease_until=None,
            dirty=True,
        )
    )


async def digested_card_shown(session: AsyncSession, *, card_id: int, digest_id: int, version: int) -> None:
    """A listed action changed: its digest re-renders instead of a card of its own."""
    await card_rendered(session, card_id=card_id, version=version)
    await session.exec(sa.update(Digest).where(col(Digest.id) == digest_id).values(dirty=True))


# ---- rate limits ------------------------------------------------------------------------


def _least(a: Any, b: Any) -> Any:
    return sa.case((a < b, a), else_=b)


def _greatest(a: Any, b: Any) -> Any:
    return sa.case((a > b, a), else_=b)


async def take_token(session: AsyncSession, *, client: str, now: float, per_second: float, burst: float) -> float:
    """Take one token from ``client``'s bucket (refilled at ``per_second`` up to ``burst``),
    shared by every replica: one atomic statement (an upsert whose update applies only when
    a token is there, under the row's lock). 0 when taken, else the seconds until one is."""
    tokens, at = col(ApiRateBucket.tokens), col(ApiRateBucket.at)
    refilled = _least(sa.literal(burst), tokens + _greatest(sa.literal(now) - at, sa.literal(0.0)) * per_second)
    dialect = session.get_bind().dialect.name
    insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(ApiRateBucket)
    stmt = insert.values(client=client, tokens=burst - 1, at=now).on_conflict_do_update(
        index_elements=["client"],
        set_={"tokens": refilled - 1, "at": _greatest(at, sa.literal(now))},
        where=refilled >= 1,
    )
    if (await session.exec(stmt.returning(tokens))).first() is not None:
        return 0.0
    row = await session.get(ApiRateBucket, client, populate_existing=True)
    if row is None:  # gone in between (nothing deletes buckets): take it as taken
        return 0.0
    left = min(burst, row.tokens + max(0.0, now - row.at) * per_second)
    return max(1e-3, (1 - left) / per_second)
